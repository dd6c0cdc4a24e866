"""The attack table: what a pull request tries, what the gate does, and what it reveals.

Each row runs the Action through the harness as a same-repository pull request (or a fork)
would, after the test set's owner registered the test set under the base branch's config. The
pull request's own commit carries the attack. For every row: the exit code, that no figure
computed from the test set reaches the team, and that the ledger holds only what it should.
docs/threat-model.md lists the same rows with their defences.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_action import (FLOAT, REPO, assert_no_test_set_numbers, git, harness,
                         inputs, make_workspace)


def _pr_commit(ws: Path, edit) -> str:
    edit(ws)
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "attack")
    return git(ws, "rev-parse", "HEAD")


def _append_config(text: str):
    def edit(ws: Path) -> None:
        with open(ws / ".easeml.yml", "a") as fh:
            fh.write(text)
    return edit


def _set_condition(condition: str):
    def edit(ws: Path) -> None:
        text = (ws / ".easeml.yml").read_text()
        lines = [f'condition: "{condition}"' if line.startswith("condition:") else line
                 for line in text.splitlines()]
        (ws / ".easeml.yml").write_text("\n".join(lines) + "\n")
    return edit


def _own_testset(ws: Path) -> None:
    """A test set the pull request made up, on which the worse model looks great."""
    worse = np.load(ws / "models" / "model.npy")
    rng = np.random.default_rng(0)
    np.savez(ws / "mine.npz", X=rng.normal(size=(len(worse), 3)), y=worse)


def _crafted_old(ws: Path) -> None:
    """An old model the pull request made up: wrong everywhere, so any new model beats it."""
    old = np.load(ws / "models" / "model.npy")
    np.save(ws / "models" / "crafted.npy", 1 - old)


def _both(*edits):
    def edit(ws: Path) -> None:
        for one in edits:
            one(ws)
    return edit


def _steps_in_ledger(gh) -> list[dict]:
    ref = gh.repos[REPO].refs.get("heads/easeml-ledger")
    if ref is None:
        return []
    files = [p for p in gh.repos[REPO].commits[ref]["tree"] if p.endswith(".jsonl")]
    entries = [json.loads(line) for f in files
               for line in gh.file_on_branch(REPO, "easeml-ledger", f).splitlines()]
    from easeml_ci.ledger.budget import steps_with_verdicts

    return [e for e in steps_with_verdicts(entries) if e["kind"] == "step"]


# (name, the PR's edit, extra inputs, config-from-base, expected exit, text the summary must show)
ATTACKS = [
    ("loosen the condition (config from base, the default)",
     _set_condition("n - o > -0.5 +/- 0.05"), {}, None, 1, "failed"),
    ("loosen the condition with config-from-base off",
     _set_condition("n - o > -0.5 +/- 0.05"), {}, "false", 2, "registered"),
    ("turn on show_metrics to read the estimate",
     _append_config("show_metrics: true\n"), {}, "false", 2, "show_metrics"),
    ("move the ledger to a fresh branch",
     _append_config("ledger:\n  backend: github\n  branch: fresh-budget\n"), {}, "false", 2,
     "ledger"),
    ("point the private sink elsewhere",
     _append_config("private_sink: https://attacker.example/hook\n"), {}, "false", 2,
     "private_sink"),
    ("rename the gate (its commit status and private records)",
     _append_config("name: another-gate\n"), {}, "false", 2, "name"),
    ("switch the test method",
     _append_config("method: easeml\n"), {}, "false", 2, "method"),
    ("change the output rule",
     _append_config("output: {threshold: 0.5}\n"), {}, "false", 2, "output"),
    ("rank the label request from its own pool",
     _both(_own_testset, _append_config("pool: mine.npz\n")), {}, "false", 2, "pool"),
    ("read another label column",
     _append_config("label_column: y2\n"), {}, "false", 2, "label_column"),
    ("redirect the alert webhook",
     _append_config("alerts:\n  webhook: https://attacker.example/hook\n"), {}, "false", 2,
     "alerts.webhook"),
    ("turn the alert issue off",
     _append_config("alerts:\n  issue: false\n"), {}, "false", 2, "alerts.issue"),
    ("turn the alert issue off by the Action's input",
     _append_config("# (the workflow's input does it)\n"), {"alert-issue": "false"}, None, 2,
     "alerts.issue"),
    ("compare with a crafted old model",
     _crafted_old, {"old-model": "models/crafted.npy"}, None, 2, "input old-model"),
    ("compare with a crafted old model from its own commit",
     _crafted_old, {"old-model": "git:HEAD:models/crafted.npy"}, None, 2, "input old-model"),
    ("allow any old model in its own config",
     _both(_crafted_old, _append_config("allow_any_old_model: true\n")),
     {"old-model": "models/crafted.npy"}, "false", 2, "allow_any_old_model"),
    ("bring its own test set",
     _own_testset, {"testset": "mine.npz"}, None, 2, "not registered"),
    ("bring its own test set and config",
     _own_testset, {"testset": "mine.npz"}, "false", 2, "not registered"),
]


@pytest.mark.parametrize("name, edit, extra, from_base, code, shown", ATTACKS,
                         ids=[a[0] for a in ATTACKS])
def test_a_pull_request_cannot_change_its_own_gate(gh, data, tmp_path, name, edit, extra,
                                                   from_base, code, shown):
    ws, base, _ = make_workspace(tmp_path, data, "worse")  # the PR's model is worse than old
    head = _pr_commit(ws, edit)
    given = inputs(data, **extra)
    if from_base is not None:
        given["config-from-base"] = from_base
    h = harness(gh, ws, base, head)
    h._done.add(given["testset"])  # the owner registered the real test set, not the PR's
    from test_action import register
    register(gh, ws, base, str(data["testset"]))
    result = h.run(given)
    assert result.exit_code == code, result.log
    assert shown in result.summary
    assert "Traceback" not in result.log
    config_figures = set(FLOAT.findall((ws / ".easeml.yml").read_text()))
    for text in (result.summary, result.stdout):  # only the configs' own figures may show
        assert_no_test_set_numbers(FLOAT.sub(
            lambda m: "" if m.group(0) in config_figures else m.group(0), text))
    steps = _steps_in_ledger(gh)
    assert len(steps) == (1 if code in (0, 1) else 0)  # a refused run spends and shows nothing
    if code == 2:
        assert json.loads(result.outputs["clauses"]) == []
        assert "fresh-budget" not in {r.split("/", 1)[-1] for r in gh.repos[REPO].refs}


def test_a_fork_cannot_spend_or_open_anything(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "worse")
    result = harness(gh, ws, base, head, token="ghs-read", fork=True).run(inputs(data))
    assert result.exit_code == 2 and "contents: write" in result.summary
    assert "loading test set" not in result.log and _steps_in_ledger(gh) == []


def test_a_model_that_reads_the_features_through_errors_gets_one_counted_fail(gh, data,
                                                                             tmp_path):
    """issue 12 item 3: the model's output length is n + X[0,0] / 1000. It passes every check
    on synthetic rows; on the test set its failure would spell out X[0,0]. The gate spends a
    step, shows a plain fail with a fixed text, and keeps the details for the owner."""
    from test_preflight import _length_attack

    y = np.load(data["testset"])["y"]
    X = np.random.default_rng(5).normal(size=(len(y), 6)).astype(np.float32)  # the attack's width
    X[0, 0] = 101257.3  # the secret the attack would read
    secret = tmp_path / "secret.npz"
    np.savez(secret, X=X, y=y)
    # the runner's default clock (300 s) would be waited out: the config keeps a short one, and
    # the harness does not wait out what is left of it (the clock is not this test's point)
    ws, base, _ = make_workspace(tmp_path, data, "new", extra="evaluation_time: 5s\n")
    head = _pr_commit(ws, lambda w: _length_attack(w / "models" / "attack.onnx"))
    given = inputs(data, testset=str(secret), **{"new-model": "models/attack.onnx",
                                                  "old-model": f"git:{base}:models/model.npy"})
    result = harness(gh, ws, base, head, extra_env={"HARNESS_CLOCK_PAD": "skip"}).run(given)
    assert result.exit_code == 1, result.log
    assert result.outputs["verdict"] == "fail"
    for text in (result.summary, result.stdout, result.stderr):
        # neither the secret nor the length that would spell it (n + 101) shows; a commit sha
        # on the page may contain any short digit run, so the test looks for these exactly
        assert "101257" not in text and f"{len(y) + 101}" not in text and "shape" not in text
    steps = _steps_in_ledger(gh)
    assert [s["passed"] for s in steps] == [False]  # one counted step, completed as a fail


def test_a_push_to_another_branch_cannot_register_a_test_set(gh, data, tmp_path):
    """A developer's branch may carry a workflow of its author's making, triggered on push: it
    must not be able to register a test set (its own labels) for a later pull request."""
    from action_harness import ActionHarness

    ws, base, head = make_workspace(tmp_path, data, "new")
    event = {"ref": "refs/heads/feature", "after": head, "before": base,
             "repository": {"full_name": REPO, "name": "models", "owner": {"login": "acme"},
                            "default_branch": "main"}}
    h = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO, event=event,
                      event_name="push", sha=head, extra_env={"GITHUB_REF": "refs/heads/feature"})
    result = h.run(inputs(data, **{"old-model": f"git:{base}:models/model.npy"}))
    assert result.exit_code == 2, result.log
    assert "is not registered" in result.summary and _steps_in_ledger(gh) == []
    assert h.run(inputs(data, register="true", **{"old-model": f"git:{base}:models/model.npy"})
                 ).exit_code == 2  # register: true only on the default branch
    assert _steps_in_ledger(gh) == []
    on_main = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO,
                            event={**event, "ref": "refs/heads/main"}, event_name="push",
                            sha=head, extra_env={"GITHUB_REF": "refs/heads/main"})
    old = {"old-model": f"git:{base}:models/model.npy"}
    unasked = on_main.run(inputs(data, **old))
    assert unasked.exit_code == 2 and "is not registered" in unasked.summary  # never by itself
    assert on_main.run(inputs(data, register="true", **old)
                       ).exit_code == 0  # the default branch registers when asked, and gates
