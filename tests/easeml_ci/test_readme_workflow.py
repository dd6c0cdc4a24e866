"""The README's quick start, copied as it stands, keeps the key away from pull requests' workflows
and keeps the budget across fresh runners.

The quick start is the `workflow_run` split: `easeml-model` (the pull request's code, no
secrets) and `easeml-gate-fork-safe` (the default branch's definition, the only job with the
key). The README's two blocks must be the files in examples/workflows/ (as parsed YAML), and the
keyed job, replayed through the Action harness on fresh runners (each a new clone of the default
branch), must keep the budget where it puts it by default (the repository ledger): after
``steps`` checks the next one is refused with exit 3, and exactly one alert issue is opened.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from action_harness import ActionHarness, resolve
from test_action import REPO, git, make_workspace, register

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples" / "workflows"


def readme_workflow(name: str) -> dict:
    text = README.read_text(encoding="utf-8")
    block = re.search(rf"```yaml\n(# \.github/workflows/{re.escape(name)}\b.*?)```", text, re.S)
    assert block, f"the README shows the workflow {name}"
    return yaml.safe_load(block.group(1))


def on(wf: dict) -> dict:
    return wf.get("on", wf.get(True))


def test_the_readme_workflows_are_the_example_files():
    for name in ("easeml-model.yml", "easeml-gate-fork-safe.yml"):
        assert readme_workflow(name) == yaml.safe_load((EXAMPLES / name).read_text()), name


def test_only_the_default_branchs_workflow_meets_the_key():
    untrusted, trusted = readme_workflow("easeml-model.yml"), readme_workflow("easeml-gate-fork-safe.yml")
    # the pull request's own workflow: no secrets, no environment, a read-only token
    assert set(on(untrusted)) == {"pull_request"}
    assert "secrets." not in yaml.safe_dump(untrusted)
    assert all("environment" not in job and job["permissions"] == {"contents": "read"}
               for job in untrusted["jobs"].values())
    # the keyed job runs from workflow_run (the default branch's definition) of that workflow
    assert set(on(trusted)) == {"workflow_run"}
    assert on(trusted)["workflow_run"]["workflows"] == [untrusted["name"]]
    assert trusted["permissions"] == {}  # nothing at workflow level; each job asks for its own
    keyed = [name for name, job in trusted["jobs"].items() if "secrets." in yaml.safe_dump(job)]
    assert keyed == ["gate"]
    job = trusted["jobs"]["gate"]
    assert job["environment"] == "easeml-gate"
    assert job["permissions"]["contents"] == "write"  # the repository ledger
    checkout = job["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"] == {"persist-credentials": False}  # the default branch, no ref
    step = job["steps"][-1]["with"]
    assert step["testset-key"] == "${{ secrets.EASEML_TESTSET_KEY }}"
    assert step["head-sha"] == "${{ github.event.workflow_run.head_sha }}"


def workflow_run_event(head_sha: str) -> dict:
    owner, name = REPO.split("/")
    return {"action": "completed",
            "workflow_run": {"id": 9001, "name": "easeml-model", "event": "pull_request",
                             "status": "completed", "conclusion": "success",
                             "head_sha": head_sha, "head_branch": "feature",
                             "repository": {"full_name": REPO}, "pull_requests": []},
            "repository": {"full_name": REPO, "name": name, "owner": {"login": owner},
                           "default_branch": "main"},
            "sender": {"login": "octocat", "type": "User"}}


def test_the_readme_workflow_keeps_the_budget_across_fresh_runners(fake_github, data, tmp_path):
    gh = fake_github
    gh.add_repo(REPO)
    gh.secure(REPO)  # the settings the quick start asks for; the gate reads them first
    token = "ghs-write"
    gh.add_token(token, permission="write")  # contents: write, as the README's job asks
    job = readme_workflow("easeml-gate-fork-safe.yml")["jobs"]["gate"]
    origin, base, head = make_workspace(tmp_path / "origin", data, "new", steps=3)
    git(origin, "branch", "feature", head)  # the pull request's head; main stays the base
    git(origin, "reset", "-q", "--hard", base)
    (origin / "testsets").mkdir()
    (origin / "testsets" / "current.enc").write_bytes(Path(data["encrypted"]).read_bytes())
    git(origin, "add", "testsets")
    git(origin, "commit", "-qm", "test set")
    main = git(origin, "rev-parse", "HEAD")
    gh.set_pull_request_head(REPO, 7, head)
    register(gh, origin, main, "testsets/current.enc", data["key"])  # the owner, once

    results = []
    for run in range(4):
        ws = tmp_path / f"runner-{run}" / "ws"
        ws.parent.mkdir()
        subprocess.run(["git", "clone", "-q", str(origin), str(ws)], check=True)  # main
        artifact = tmp_path / f"runner-{run}" / "temp"
        (artifact / "pr").mkdir(parents=True)
        (artifact / "pr" / "model.npy").write_bytes(data["new"].read_bytes())
        # the step's inputs as the runner resolves them, for this run
        contexts = {"runner": {"temp": str(artifact)},
                    "github": {"event": workflow_run_event(head)},
                    "needs": {"preflight": {"outputs": {"pr-hint": "7"}}},
                    "secrets": {"EASEML_TESTSET_KEY": data["key"]}}
        given = {k: resolve(v, contexts) for k, v in job["steps"][-1]["with"].items()}
        assert given["head-sha"] == head and given["testset-key"] == data["key"]
        # the harness's models are predictions files, not ONNX files: the same paths, .npy
        given["new-model"] = given["new-model"].replace("model.onnx", "model.npy")
        given["old-model"] = given["old-model"].replace("model.onnx", "model.npy")
        harness = ActionHarness(ws, api_url=gh.url, token=token, repository=REPO,
                                event=workflow_run_event(head), event_name="workflow_run",
                                sha=main)
        results.append(harness.run(given))
    codes = [r.exit_code for r in results]
    assert codes == [0, 0, 0, 3], [r.log for r in results]
    assert [r.outputs["budget-remaining"] for r in results[:3]] == ["2", "1", "0"]
    assert results[3].outputs["verdict"] == "exhausted"
    assert len(gh.issues_of(REPO)) == 1
    assert len(gh.comments_on(REPO, 7)) == 1  # one sticky comment, on the head's pull request
    statuses = gh.statuses_on(REPO, head)  # the verdict as a status branch protection requires
    assert {s["context"] for s in statuses} == {"easeml-ci/quality"}  # the config's gate name
    assert [s["state"] for s in statuses] == ["success"] * 3 + ["failure"], statuses
    for r in results:
        assert f"the repository ledger {REPO}@easeml-ledger" in r.summary
