"""Renderers (Markdown for the Action, JSON of the ledger commands) and --old from git."""
from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from easeml_ci.gate.check import run_check
from easeml_ci.cli import main
from easeml_ci.cli.render import render_markdown, render_terminal

from test_check import Gate


@pytest.fixture
def gate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Gate(tmp_path)


def _run(gate, new="good.npy"):
    return run_check(gate.root / ".easeml.yml", new, None, "ts.npz", workdir=gate.root)


def test_markdown_shows_verdict_clauses_and_budget(gate):
    md = render_markdown(_run(gate, "bad.npy"))
    assert md.startswith("### ❌ easeml-ci `easeml-ci`: **fail**")
    assert "| `n > 0.6 +/- 0.1` | fail |" in md
    assert "**Budget:** 1 of 4 steps used, 3 remaining (active)" in md
    assert "estimate" not in md and "VOID" not in md


def test_markdown_with_show_metrics_says_the_guarantee_is_void(gate):
    gate.config(show_metrics=True)
    md = render_markdown(_run(gate))
    assert "guarantee of this gate is VOID" in md
    assert f"{gate.accuracy['good']:.6g}" in md


def test_markdown_under_none_shows_no_verdict(gate, tmp_path_factory):
    gate.config(adaptivity="none", private_sink=str(tmp_path_factory.mktemp("p") / "s.jsonl"))
    result = _run(gate)
    md = render_markdown(result) + render_terminal(result)
    assert "withheld" in md and "PASS" not in md and "| pass |" not in md


def test_markdown_carries_the_alert_on_the_last_step(gate):
    gate.config(steps=1)
    md = render_markdown(_run(gate))
    assert "#### New test set needed" in md and "Label request:" in md


def test_ledger_commands_speak_json(gate):
    _run(gate)
    runner = CliRunner()
    log = json.loads(runner.invoke(main, ["ledger", "log", "--json"]).stdout)
    [testset] = log["testsets"]
    assert [e["kind"] for e in testset["entries"]] == ["register", "step", "complete"]
    assert testset["authenticated"] is True and testset["forged"] == []
    verify = runner.invoke(main, ["ledger", "verify", "--json"])
    out = json.loads(verify.stdout)
    assert verify.exit_code == 0 and out["ok"] is True and out["testsets"][0]["entries"] == 3
    fp = testset["fingerprint"]
    status = json.loads(runner.invoke(main, ["ledger", "status", "--fingerprint", fp, "--json"]).stdout)
    assert status["testsets"][0]["used"] == 1


def test_old_model_from_a_git_ref(gate):
    gate.config(condition="n - o > 0.02 +/- 0.05")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(gate.root)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "old.npy"], check=True)
    subprocess.run(git + ["commit", "-qm", "old model"], check=True)
    (gate.root / "old.npy").unlink()  # only the committed copy remains
    result = gate.check("good.npy", "--json", old="git:HEAD:old.npy")
    assert result.exit_code == 0, result.output
    assert gate.steps()[0]["old"] == "git:HEAD:old.npy"
    missing = gate.check("good.npy", old="git:HEAD:nope.npy")
    assert missing.exit_code == 2 and "nope.npy" in missing.stderr
    assert len(gate.steps()) == 1
