"""The overfitting meter in the Action: a gauge beside the gate's verdict, a second sticky
comment, and a failed job only when `meter-fail-above` says so."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from action_harness import VENV_BIN, ActionHarness, pull_request_event
from test_action import REPO, git
from test_meter_cli import _dataset, _exactly, _model

CONFIG = """\
name: quality
condition: n > 0.3 +/- 0.1
reliability: 0.9
steps: 3
output: argmax
evaluation_time: 5s  # the runner's default clock (300 s) would be waited out (and this one
                    # is not: HARNESS_CLOCK_PAD, the clock is not this test's point)
meter:
  edges: [0.1, 0.2]
  tolerance: 0.05
  reliability: 0.8
  steps: 3
  adaptivity: full
  testset: meter.npz
"""


def _workspace(root: Path) -> tuple[Path, str, str]:
    ws = root / "ws"
    (ws / "models").mkdir(parents=True)
    rng = np.random.default_rng(4)
    git(ws, "init", "-q", "-b", "main")
    git(ws, "config", "user.email", "ci@example.com")
    git(ws, "config", "user.name", "ci")
    (ws / ".easeml.yml").write_text(CONFIG)
    # the model is right on 70% of the meter's test set and on 95% of the team's validation set
    _dataset(ws / "gate.npz", 2000, _exactly(2000, 1400, rng), rng)
    _dataset(ws / "meter.npz", 2000, _exactly(2000, 1400, rng), rng)
    _dataset(ws / "val.npz", 1000, _exactly(1000, 950, rng), rng)
    _model(ws / "models" / "model.onnx")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "base")
    base = git(ws, "rev-parse", "HEAD")
    git(ws, "commit", "-q", "--allow-empty", "-m", "pr")
    return ws, base, git(ws, "rev-parse", "HEAD")


def _owner_registers(gh, ws: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(ws.parent), "GITHUB_REPOSITORY": REPO,
           "GITHUB_TOKEN": "ghs-write", "GITHUB_API_URL": gh.url}
    for name in ("EASEML_LEDGER_KEY", "PYTHONPATH"):  # the ledger key; the code under test
        if os.environ.get(name):
            env[name] = os.environ[name]
    for args in (["testset", "register", "gate.npz"], ["meter", "register"]):
        done = subprocess.run([f"{VENV_BIN}/easeml-ci", *args, "--repository-ledger"], cwd=ws,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_meter_reports_a_gauge_and_fails_the_job_only_above_its_threshold(fake_github,
                                                                               tmp_path):
    gh = fake_github
    gh.add_repo(REPO)
    gh.add_pull_request(REPO, 7)
    gh.add_token("ghs-write")
    ws, base, head = _workspace(tmp_path)
    _owner_registers(gh, ws)
    harness = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO,
                            event=pull_request_event(REPO, 7, base, head),
                            extra_env={"HARNESS_CLOCK_PAD": "skip"})
    given = {"new-model": "models/model.onnx", "old-model": f"git:{base}:models/model.onnx",
             "testset": "gate.npz", "meter-validation": "val.npz"}
    shown = harness.run(given)
    assert shown.exit_code == 0, shown.log
    assert "easeml-meter" in shown.summary and "**[ 20% or more ]**" in shown.summary
    assert len(gh.comments_on(REPO, 7)) == 2  # the gate's and the meter's
    failing = harness.run({**given, "meter-fail-above": "0.1"})
    assert failing.exit_code == 1, failing.log
    assert failing.outputs["verdict"] == "pass"  # the gate itself passed
    assert any("meter-fail-above" in a.message for a in failing.annotations)
    bad = harness.run({**given, "meter-fail-above": "0.15"})
    assert bad.exit_code == 2 and "not one of the meter's edges" in bad.log
    assert "Traceback" not in bad.log and bad.outputs["verdict"] == "pass"
