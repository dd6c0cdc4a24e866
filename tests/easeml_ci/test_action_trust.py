"""Issue 20, attack 1 and the forged status, replayed through the Action harness.

Attack 1: the key is in reach of a pull request's own workflow. The README used to gate with
``on: pull_request`` in a job whose environment holds EASEML_TESTSET_KEY; a branch of the same
repository runs its own version of that workflow, so one added step prints the key. The gate
now reads the repository's settings through the API before it opens anything (the event, the
ref, the workflow's ref, the environment's deployment branches, the default branch's review
rule, the ledger branch's rules) and refuses (exit 2, nothing decided, nothing in the ledger)
with the setting to change. Before this change each refused run below decided (exit 0).

The forged status: any workflow with ``statuses: write`` can post ``easeml-ci/<gate>``. The
gate seals its own statuses (an HMAC under a key derived from the test-set key) so that
``easeml-ci status verify`` tells them from forged ones, posts with ``status-token`` when given,
and warns while no ruleset pins the required status to an App.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from action_harness import PR, REPO, ActionHarness, pull_request_event
from test_action import git, inputs, make_workspace, register

ROOT = Path(__file__).resolve().parents[2]
HEAD_EVENT_REPO = {"full_name": REPO, "name": REPO.split("/")[1],
                   "owner": {"login": REPO.split("/")[0]}, "default_branch": "main"}


def workflow_run_event(head_sha: str) -> dict:
    return {"action": "completed",
            "workflow_run": {"id": 9001, "name": "easeml-model", "event": "pull_request",
                             "status": "completed", "conclusion": "success",
                             "head_sha": head_sha, "head_branch": "feature",
                             "repository": {"full_name": REPO}, "pull_requests": []},
            "repository": HEAD_EVENT_REPO, "sender": {"login": "octocat", "type": "User"}}


def ledger_commits(gh) -> int:
    """How many commits the ledger branch has (0: none): a refused run adds none."""
    repo = gh.repos[REPO]
    sha, n = repo.refs.get("heads/easeml-ledger"), 0
    while sha:
        n += 1
        parents = repo.commits[sha]["parents"]
        sha = parents[0] if parents else None
    return n


@pytest.fixture
def keyed(gh, data, tmp_path):
    """The trusted job's world: main checked out, the test set encrypted and registered, the
    pull request's model (its head commit) as an artifact; the repository set up as the docs ask."""
    gh.secure(REPO)
    ws, base, head = make_workspace(tmp_path, data, "new")
    git(ws, "branch", "feature", head)
    git(ws, "reset", "-q", "--hard", base)
    gh.set_pull_request_head(REPO, PR, head)
    register(gh, ws, base, str(data["encrypted"]), data["key"])
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.npy").write_bytes(data["new"].read_bytes())

    def run(*, event_name="workflow_run", event=None, env=None, **given):
        h = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO,
                          event=event or workflow_run_event(head), event_name=event_name,
                          sha=base, extra_env=env)
        args = {"new-model": str(artifact / "model.npy"),
                "old-model": f"git:{base}:models/model.npy", "testset": str(data["encrypted"]),
                "testset-key": data["key"], "head-sha": head, "commit-status": "true",
                "config-from-base": "false"}
        args.update(given)
        return h.run({k: v for k, v in args.items() if v is not None})

    run.ws, run.base, run.head = ws, base, head
    return run


def assert_refused(result, gh, commits_before: int, *needles: str) -> None:
    assert result.exit_code == 2, result.log
    assert result.outputs["verdict"] == "error"
    assert json.loads(result.outputs["clauses"]) == []
    assert ledger_commits(gh) == commits_before  # nothing spent, nothing recorded
    assert "Traceback" not in result.log
    for needle in needles:
        assert needle in result.summary, (needle, result.summary)


def test_the_documented_setup_gates_and_seals_its_status(gh, keyed, data):
    before = ledger_commits(gh)
    result = keyed()
    assert result.exit_code == 0, result.log
    assert result.outputs["verdict"] == "pass"
    assert ledger_commits(gh) == before + 2  # the step reserved before the open, then completed
    [status] = gh.statuses_on(REPO, keyed.head)
    assert status["state"] == "success" and " [seal " in status["description"]
    assert len(status["description"]) <= 140
    for text in (result.stdout.split("\n", 1)[1], result.stderr, result.summary):
        assert data["key"] not in text
    # the status is pinned to no App yet: the run says so, naming the ruleset setting
    assert any("Require status checks to pass" in a.message for a in result.annotations)


def test_attack_1_a_pull_request_workflow_holding_the_key_is_refused(gh, keyed, data):
    """The retired easeml-gate.yml: on pull_request, the key in the job's environment. A branch
    of this repository runs its own version of that file: the gate refuses to be part of it."""
    before = ledger_commits(gh)
    for event_name in ("pull_request", "pull_request_target"):
        event = pull_request_event(REPO, PR, keyed.base, keyed.head)
        result = keyed(event_name=event_name, event=event, **{"head-sha": None,
                                                               "commit-status": None})
        assert_refused(result, gh, before, f"on a {event_name} event", "workflow_run split",
                       "Migrating from easeml-gate.yml")
        assert data["key"] not in result.summary + result.stdout.split("\n", 1)[1]
    assert gh.statuses_on(REPO, keyed.head) == []


def test_a_keyed_run_on_another_branch_or_from_its_workflow_is_refused(gh, keyed):
    before = ledger_commits(gh)
    push = {"ref": "refs/heads/feature", "before": keyed.base, "repository": HEAD_EVENT_REPO}
    result = keyed(event_name="push", event=push, env={"GITHUB_REF": "refs/heads/feature"},
                   **{"head-sha": None, "commit-status": None})
    assert_refused(result, gh, before, "refs/heads/feature (GITHUB_REF)")
    wf = f"{REPO}/.github/workflows/mine.yml@refs/heads/feature"
    result = keyed(env={"GITHUB_WORKFLOW_REF": wf})
    assert_refused(result, gh, before, "(GITHUB_WORKFLOW_REF)")
    # the only status: the gate could not run (a merge that requires it stays blocked)
    assert [s["state"] for s in gh.statuses_on(REPO, keyed.head)] == ["error"]


@pytest.mark.parametrize("loosen, needles", [
    (lambda gh: gh.add_environment(REPO, "easeml-gate"),
     ["admits every branch", "Settings > Environments > easeml-gate"]),
    (lambda gh: gh.add_environment(REPO, "easeml-gate", branches=["main", "*"]),
     ["admits more than the default branch", "branch '*'"]),
    (lambda gh: gh.add_environment(REPO, "easeml-gate", protected_branches=True),
     ["'Protected branches only'"]),
    (lambda gh: gh.repos[REPO].environments.clear(), ["does not exist"]),
    (lambda gh: gh.repos[REPO].rules.__setitem__("main", []),
     ["'Require a pull request before merging'"]),
    (lambda gh: gh.repos[REPO].rules.__setitem__("easeml-ledger", [{"type": "deletion"}]),
     ["can be force-pushed", "'Block force pushes'", "Settings > Rules > Rulesets"]),
    (lambda gh: gh.repos[REPO].rules.pop("easeml-ledger"),
     ["can be force-pushed and deleted"]),
], ids=["env-every-branch", "env-pattern", "env-protected-branches", "env-missing",
        "main-unreviewed", "ledger-force-push", "ledger-unprotected"])
def test_each_missing_setting_is_refused_naming_it(gh, keyed, loosen, needles):
    before = ledger_commits(gh)
    loosen(gh)
    result = keyed()
    assert_refused(result, gh, before, *needles)
    assert "Nothing was opened" in result.summary or "nothing was opened" in result.summary
    assert [s["state"] for s in gh.statuses_on(REPO, keyed.head)] == ["error"]


def test_the_environment_input_names_the_environment_checked(gh, keyed):
    before = ledger_commits(gh)
    result = keyed(environment="prod-key")
    assert_refused(result, gh, before, "'prod-key' does not exist")
    gh.add_environment(REPO, "prod-key", branches=["main"])
    assert keyed(environment="prod-key").exit_code == 0


def test_without_a_key_the_settings_are_not_required(gh, data, tmp_path):
    """A plaintext test set (no key): nothing to keep from the pull request's workflow; the
    harness's many pull_request runs go on as before (tests/easeml_ci/test_action.py)."""
    from test_action import harness

    ws, base, head = make_workspace(tmp_path, data, "new")
    result = harness(gh, ws, base, head).run(inputs(data))
    assert result.exit_code == 0, result.log
    assert gh.calls("GET", r"/environments/") == []


# --- the forged status -----------------------------------------------------------------------

def verify(gh, sha: str, key: str, gate: str = "quality") -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": "ghs-write",
           "GITHUB_API_URL": gh.url, "EASEML_TESTSET_KEY": key, "HOME": "/tmp",
           "PYTHONPATH": str(ROOT)}  # this checkout's CLI
    return subprocess.run([sys.executable, "-c", "from easeml_ci.cli import main; main()",
                           "status", "verify", sha, "--gate", gate],
                          env=env, capture_output=True, text=True, timeout=120)


def test_a_forged_status_is_told_from_the_gates_own(gh, keyed, data):
    from easeml_ci.github.api import GitHubClient
    from easeml_ci.github.provenance import post_commit_status

    assert keyed().exit_code == 0
    genuine = verify(gh, keyed.head, data["key"])
    assert genuine.returncode == 0 and genuine.stdout.startswith("sealed: success"), genuine
    # a developer's branch workflow with statuses: write posts the context the rules require
    forger = GitHubClient("ghs-write", gh.url)
    post_commit_status(forger, REPO, keyed.head, "success",
                       "the model meets the gate's condition", "easeml-ci/quality")
    forged = verify(gh, keyed.head, data["key"])
    assert forged.returncode == 1 and forged.stdout.startswith("forged: success"), forged
    # the gate's sealed text re-posted as it was is the gate's own verdict on this commit (a
    # replay, docs/threat-model.md); moved to another state it is forged
    sealed = gh.statuses_on(REPO, keyed.head)[0]["description"]
    post_commit_status(forger, REPO, keyed.head, "success", sealed, "easeml-ci/quality")
    assert verify(gh, keyed.head, data["key"]).returncode == 0
    post_commit_status(forger, REPO, keyed.head, "failure", sealed, "easeml-ci/quality")
    assert verify(gh, keyed.head, data["key"]).stdout.startswith("forged: failure")
    # a wrong key cannot vouch for anything; a missing status is a usage error
    from easeml_ci.testsets import crypto
    assert verify(gh, keyed.head, crypto.generate_key()).returncode == 1
    assert verify(gh, "ab" * 20, data["key"]).returncode == 2


def test_the_status_token_posts_the_status_and_a_pinned_source_silences_the_warning(gh, keyed):
    gh.add_token("ghs-app", login="easeml-gate[bot]")
    gh.repos[REPO].rules["main"].append(
        {"type": "required_status_checks", "parameters": {"required_status_checks": [
            {"context": "easeml-ci/quality", "integration_id": 424242}]}})
    result = keyed(**{"status-token": "ghs-app"})
    assert result.exit_code == 0, result.log
    posts = gh.calls("POST", r"/statuses/")
    assert [p.token for p in posts] == ["ghs-app"]
    assert not any("Require status checks" in a.message for a in result.annotations)
    assert "ghs-app" not in result.stdout.split("::add-mask::ghs-app", 1)[-1]
    # pinned to GitHub Actions (every workflow's token): still forgeable, still a warning
    gh.repos[REPO].rules["main"][-1]["parameters"]["required_status_checks"][0][
        "integration_id"] = 15368
    assert any("can be posted by any workflow" in a.message for a in keyed().annotations)
