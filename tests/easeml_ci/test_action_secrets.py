"""The Action, run as a runner would: a failing webhook leaves no part of its secret URL anywhere.

A Slack-style webhook URL carries its secret in the path. When the delivery fails, nothing the
run writes — the log, the job summary, the outputs, the repository ledger (a branch anyone with
``contents: read`` can read), the alert issue — may hold any part of that path. Lines that ask
the runner to mask it (``::add-mask::``) are the one place it may appear.
"""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import numpy as np

from action_harness import ActionHarness

REPO = "acme/models"
SECRET = "s3cr3tW3bh00kT0ken"
PARTS = (SECRET, "/services/", "T0A1B2C3D", "B0A1B2C3D")
CONFIG = """\
name: quality
reliability: 0.9
adaptivity: full
steps: 1
condition: "n > 0.6 +/- 0.1"
ledger:
  backend: github
"""


def _git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _workspace(root: Path) -> tuple[Path, str]:
    ws = root / "ws"
    (ws / "models").mkdir(parents=True)
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 2000)
    np.savez(root / "testset.npz", X=rng.normal(size=(2000, 3)), y=y)
    for name, error in (("new", 0.05), ("old", 0.3)):
        pred = np.where(rng.random(2000) < error, 1 - y, y)
        np.save(ws / "models" / f"{name}.npy", pred)
    (ws / ".easeml.yml").write_text(CONFIG)
    _git(ws, "init", "-q", "-b", "main")
    _git(ws, "config", "user.email", "ci@example.com")
    _git(ws, "config", "user.name", "ci")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-qm", "models")
    return ws, _git(ws, "rev-parse", "HEAD")


def test_a_failing_webhook_leaves_no_part_of_its_path_in_anything_the_action_writes(
        fake_github, tmp_path):
    gh = fake_github
    gh.add_repo(REPO)
    gh.add_token("ghs-write")
    ws, sha = _workspace(tmp_path)
    # nothing listens there: requests' error text would quote the path
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = f"http://127.0.0.1:{port}/services/T0A1B2C3D/B0A1B2C3D/{SECRET}"
    event = {"ref": "refs/heads/main", "after": sha,
             "repository": {"full_name": REPO, "name": "models", "owner": {"login": "acme"},
                            "default_branch": "main"}}
    harness = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO, event=event,
                            event_name="push", sha=sha)
    given = {"new-model": "models/new.npy", "old-model": "models/old.npy",
             "testset": str(tmp_path / "testset.npz"), "alert-webhook": hook, "register": "true"}

    runs = [harness.run(given) for _ in range(2)]
    assert [r.exit_code for r in runs] == [0, 3], [r.stdout + r.stderr for r in runs]

    ledger_files = [p for p in gh.repos[REPO].commits[gh.repos[REPO].refs["heads/easeml-ledger"]]
                    ["tree"] if p.startswith("ledger/")]
    recorded = b"".join(gh.file_on_branch(REPO, "easeml-ledger", p) for p in ledger_files).decode()
    assert recorded.count('"kind":"alert-result"') == 2  # tried by each run, failed each time
    issues = gh.issues_of(REPO)
    assert len(issues) == 1
    for r in runs:
        log = "\n".join(line for line in r.stdout.splitlines()
                        if not line.startswith("::add-mask::"))
        for text in (log, r.stderr, r.summary, "\n".join(r.outputs.values()), recorded,
                     issues[0]["body"]):
            for part in PARTS:
                assert part not in text
    assert f"no connection to 127.0.0.1:{port}" in recorded  # the host is named, nothing more
    masks = [line for line in runs[0].stdout.splitlines() if line.startswith("::add-mask::")]
    assert f"::add-mask::{SECRET}" in masks and f"::add-mask::{hook}" in masks
