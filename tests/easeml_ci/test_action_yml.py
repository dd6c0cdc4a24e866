"""Static checks of action.yml, the workflows and docs/action.md's table against each other."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from action_harness import ActionHarness, pull_request_event

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
STEPS = {s.get("id"): s for s in ACTION["runs"]["steps"]}


def test_composite_with_private_python():
    assert ACTION["runs"]["using"] == "composite"
    setup = STEPS["python"]
    assert setup["uses"].startswith("actions/setup-python@")
    assert str(setup["with"]["update-environment"]).lower() == "false"
    assert "${{ github.action_path }}" in STEPS["install"]["env"].values()


def test_no_expression_is_interpolated_into_a_shell_line():
    for step in ACTION["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), step.get("id")


def test_every_input_reaches_the_gate_through_env():
    env = STEPS["gate"]["env"]
    passed = {m for v in env.values() for m in re.findall(r"inputs\.([a-z0-9-]+)", v)}
    assert passed == set(ACTION["inputs"]) - {"python-version"}
    assert env["GITHUB_TOKEN"] == "${{ inputs.github-token }}"
    assert env["EASEML_TESTSET_KEY"] == "${{ inputs.testset-key }}"
    assert ACTION["inputs"]["github-token"]["default"] == "${{ github.token }}"
    assert set(ACTION["outputs"]) >= {"verdict", "clauses", "budget-remaining", "testset-status"}
    for name, spec in ACTION["outputs"].items():
        assert spec["value"] == f"${{{{ steps.gate.outputs.{name} }}}}"


def test_the_action_page_documents_every_input_and_output():
    page = (ROOT / "docs" / "action.md").read_text()
    section = page.split("## Inputs and outputs", 1)[1].split("\n## ", 1)[0]
    for name in list(ACTION["inputs"]) + list(ACTION["outputs"]):
        assert f"| `{name}` |" in section, name


def test_the_harness_refuses_an_expression_in_a_run_line(tmp_path):
    bad = dict(ACTION)
    bad["runs"] = {"using": "composite", "steps": [
        {"id": "gate", "shell": "bash", "run": 'easeml-ci action --new "${{ inputs.new-model }}"'}]}
    path = tmp_path / "action.yml"
    path.write_text(yaml.safe_dump(bad))
    h = ActionHarness(tmp_path, api_url="http://127.0.0.1:9", token="t", repository="a/b",
                      event=pull_request_event("a/b", 1, "0" * 40, "1" * 40), action_yml=path)
    with pytest.raises(AssertionError, match="expression inside a run"):
        h.run({"new-model": "m.onnx"})


KEYED_EVENTS = {"workflow_run", "push", "schedule", "workflow_dispatch"}


def test_no_workflow_gives_the_key_to_a_job_a_pull_request_defines():
    """easeml-gate.yml (the key in a pull_request job) is retired: every job of the examples and
    of this repository that reads EASEML_TESTSET_KEY from secrets runs in an environment, in a
    workflow triggered only by events whose definition is the default branch's
    (github/policy.py refuses the others at run time)."""
    assert not (ROOT / "examples/workflows/easeml-gate.yml").exists()
    keyed = []
    for path in sorted((ROOT / "examples/workflows").glob("*.yml")) + sorted(
            (ROOT / ".github/workflows").glob("*.yml")):
        wf = yaml.safe_load(path.read_text())
        on = wf.get("on", wf.get(True))
        events = {on} if isinstance(on, str) else set(on)
        for name, job in wf["jobs"].items():
            if "secrets.EASEML_TESTSET_KEY" in yaml.safe_dump(job):
                keyed.append((path.name, name))
                assert events <= KEYED_EVENTS, (path.name, events)
                assert job.get("environment") == "easeml-gate", (path.name, name)
                assert job["permissions"].get("actions") == "read", "the environment's policy"
    assert keyed == [("easeml-gate-fork-safe.yml", "gate"), ("easeml-rounds.yml", "close")]


def test_fork_safe_pattern_never_runs_pull_request_target():
    def code(name):
        text = (ROOT / "examples/workflows" / name).read_text()
        return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    trusted, untrusted = code("easeml-gate-fork-safe.yml"), code("easeml-model.yml")
    assert "pull_request_target" not in trusted + untrusted
    assert "workflow_run:" in trusted and "download-artifact@" in trusted
    assert "upload-artifact@" in untrusted
    # nothing in the trusted half is commented out: it is the workflow that runs
    assert "# jobs:" not in (ROOT / "examples/workflows/easeml-gate-fork-safe.yml").read_text()


def test_self_test_runs_this_action_on_the_demo_data():
    wf = yaml.safe_load((ROOT / ".github/workflows/self-test.yml").read_text())
    steps = wf["jobs"]["self-test"]["steps"]
    assert sum(s.get("uses") == "./" for s in steps) == 2
    assert any("make_demo_data.py" in s.get("run", "") for s in steps)
