"""The README's workflow, copied as it stands, keeps the budget across fresh runners.

A hosted runner starts from nothing: each run here gets a fresh clone of the repository in a new
folder, so nothing a run leaves on disk reaches the next. The budget must live where the README's
workflow puts it by default (the repository ledger), so after ``steps`` checks the next one is
refused with exit 3, and exactly one alert issue is opened.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from action_harness import ActionHarness, pull_request_event
from test_action import REPO, git, make_workspace, register

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_workflow() -> dict:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(# \.github/workflows/easeml-gate\.yml\n.*?)```", text, re.S)
    assert block, "the README shows the gate's workflow"
    return yaml.safe_load(block.group(1))


def test_the_readme_workflow_asks_for_what_the_gate_needs():
    wf = readme_workflow()
    job = wf["jobs"]["gate"]
    assert wf["permissions"] == {}  # nothing at workflow level; the job asks for its own
    assert job["permissions"]["contents"] == "write"  # the repository ledger
    checkout = job["steps"][0]
    assert checkout["with"]["persist-credentials"] is False
    assert "secrets." in job["steps"][-1]["with"]["testset-key"] and job.get("environment")


def test_the_readme_workflow_keeps_the_budget_across_fresh_runners(fake_github, data, tmp_path):
    gh = fake_github
    gh.add_repo(REPO)
    gh.add_pull_request(REPO, 7)
    token = "ghs-write"
    gh.add_token(token, permission="write")  # contents: write, as the README's job asks
    job = readme_workflow()["jobs"]["gate"]
    given = dict(job["steps"][-1]["with"])
    origin, base, head = make_workspace(tmp_path / "origin", data, "new", steps=3)
    (origin / "testsets").mkdir()
    (origin / "testsets" / "current.enc").write_bytes(Path(data["encrypted"]).read_bytes())
    given["new-model"] = "models/model.npy"  # the harness's model is a predictions file
    given["testset-key"] = data["key"]
    git(origin, "add", "testsets")
    git(origin, "commit", "-qm", "test set")
    head = git(origin, "rev-parse", "HEAD")
    register(gh, origin, base, "testsets/current.enc", data["key"])  # the owner, once

    results = []
    for run in range(4):
        ws = tmp_path / f"runner-{run}" / "ws"
        ws.parent.mkdir()
        subprocess.run(["git", "clone", "-q", str(origin), str(ws)], check=True)
        event = pull_request_event(REPO, 7, base, head)
        harness = ActionHarness(ws, api_url=gh.url, token=token, repository=REPO, event=event)
        results.append(harness.run(given))
    codes = [r.exit_code for r in results]
    assert codes == [0, 0, 0, 3], [r.log for r in results]
    assert [r.outputs["budget-remaining"] for r in results[:3]] == ["2", "1", "0"]
    assert results[3].outputs["verdict"] == "exhausted"
    assert len(gh.issues_of(REPO)) == 1
    for r in results:
        assert f"the repository ledger {REPO}@easeml-ledger" in r.summary
