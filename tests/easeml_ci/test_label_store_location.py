"""A label store is refused inside the repository's work tree, as a private sink is.

A plaintext store holds the labels; a sealed one shows, by its size and its records, when labels
were added and how many, which tells the team whether a decision was possible (issue 20). So the
store must sit where the team cannot read it: every command that reads or writes one refuses a
location inside the repository of its working folder or of the test set (exit 2, naming the
option to pass), before anything is registered, spent or written. The Action takes the store's
location as its ``label-store`` input.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import yaml

from testset_files import cli, write_csv
from easeml_ci.testsets.labels import default_store_path

CONDITION = "n - o > 0.1 +/- 0.1"
ROWS = 600


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def repository(tmp_path: Path) -> Path:
    """A git work tree holding an unlabelled test set and a gate under `none`; the private sink
    and the owner's folder sit outside it."""
    ws = tmp_path / "ws"
    (ws / "testsets").mkdir(parents=True)
    git(ws, "init", "-q", "-b", "main")
    rng = np.random.default_rng(0)
    np.savez(ws / "testsets" / "ts.npz", X=rng.normal(size=(ROWS, 3)).astype(np.float32),
             ids=np.array([f"row-{k}" for k in range(ROWS)]))
    (ws / ".easeml.yml").write_text(yaml.safe_dump({
        "condition": CONDITION, "reliability": 0.6, "adaptivity": "none", "steps": 3,
        "private_sink": str(tmp_path / "sink.jsonl")}))
    np.save(ws / "new.npy", rng.integers(0, 2, ROWS))
    np.save(ws / "old.npy", rng.integers(0, 2, ROWS))
    (tmp_path / "owner").mkdir()
    return ws


def check(ws: Path, *extra):
    return cli(["check", "--config", str(ws / ".easeml.yml"), "--new", str(ws / "new.npy"),
                "--old", str(ws / "old.npy"), "--testset", str(ws / "testsets" / "ts.npz"),
                "--json", *extra])


def refused(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_the_default_store_beside_a_test_set_in_the_repository_is_refused_before_anything(
        tmp_path):
    ws = repository(tmp_path)
    refused(check(ws), "is inside the repository", "--labels PATH", "label-store")
    assert not (ws / ".easeml").exists(), "nothing registered, nothing spent"
    assert not default_store_path(ws / "testsets" / "ts.npz").exists()
    assert not (tmp_path / "sink.jsonl").exists()
    # the same check with the store outside the repository runs (and registers)
    store = tmp_path / "owner" / "ts.labels"
    done = check(ws, "--labels", str(store))
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["verdict"] == "withheld"


def test_a_store_named_inside_the_repository_is_refused_relative_or_absolute(tmp_path,
                                                                              monkeypatch):
    ws = repository(tmp_path)
    monkeypatch.chdir(ws)
    for given in ("labels/ts.labels", str(ws / "elsewhere.labels")):
        refused(check(ws, "--labels", given), f"label store {given}", "inside the repository")
    assert not (ws / ".easeml").exists()


def test_testset_label_refuses_a_store_in_the_repository_and_writes_nothing(tmp_path):
    ws = repository(tmp_path)
    labels = write_csv(tmp_path / "labels.csv", ["id", "label"], [["row-1", 1], ["row-2", 0]])
    refused(cli(["testset", "label", str(ws / "testsets" / "ts.npz"), str(labels)]),
            "TESTSET.labels", "--store PATH")
    assert not default_store_path(ws / "testsets" / "ts.npz").exists()
    store = tmp_path / "owner" / "ts.labels"
    done = cli(["testset", "label", str(ws / "testsets" / "ts.npz"), str(labels),
                "--store", str(store)])
    assert done.exit_code == 0, done.output
    assert store.exists()


def test_encrypt_and_register_take_the_store_of_the_labels_a_csv_carries(tmp_path, monkeypatch):
    from testset_files import KEY_ENV, new_key

    ws = repository(tmp_path)
    rows = [[f"row-{k}", 1.0, 2.0, (k % 2) if k < 5 else ""] for k in range(ROWS)]
    source = write_csv(tmp_path / "owner" / "partly.csv", ["id", "a", "b", "label"], rows)
    monkeypatch.setenv(KEY_ENV, new_key())
    out = ws / "testsets" / "current.enc"
    refused(cli(["testset", "encrypt", str(source), str(out)]), "--store PATH")
    assert not out.exists()
    store = tmp_path / "owner" / "current.labels"
    done = cli(["testset", "encrypt", str(source), str(out), "--store", str(store)])
    assert done.exit_code == 0, done.output
    assert store.exists() and not default_store_path(out).exists()
    # register of a partly labelled CSV inside the repository: the same rule
    inside = ws / "testsets" / "partly.csv"
    inside.write_bytes(source.read_bytes())
    refused(cli(["testset", "register", str(inside), "--config", str(ws / ".easeml.yml")]),
            "--store PATH")
    assert not (ws / ".easeml").exists()


def test_the_action_takes_the_store_from_its_label_store_input(gh, tmp_path):
    from test_action import harness

    ws = repository(tmp_path)
    (ws / "models").mkdir()
    (ws / "models" / "model.npy").write_bytes((ws / "old.npy").read_bytes())
    git(ws, "config", "user.email", "ci@example.com")
    git(ws, "config", "user.name", "ci")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "base")
    base = git(ws, "rev-parse", "HEAD")
    (ws / "models" / "model.npy").write_bytes((ws / "new.npy").read_bytes())
    git(ws, "commit", "-qam", "pr")
    head = git(ws, "rev-parse", "HEAD")
    import os
    h = harness(gh, ws, base, head,  # the owner's reading-order secret, as in their jobs
                extra_env={"EASEML_ORDER_KEY": os.environ["EASEML_ORDER_KEY"]})
    given = {"new-model": "models/model.npy", "testset": "testsets/ts.npz"}
    inside = h.run(dict(given))
    assert inside.exit_code == 2, inside.log
    assert "label-store" in inside.summary and "inside the repository" in inside.summary
    assert not (tmp_path / "sink.jsonl").exists()
    outside = h.run({**given, "label-store": str(tmp_path / "owner" / "ts.labels")})
    assert outside.exit_code == 0, outside.log
    assert outside.outputs["verdict"] == "withheld"
    assert json.loads((tmp_path / "sink.jsonl").read_text().splitlines()[-1])["verdict"] \
        == "awaiting labels"
