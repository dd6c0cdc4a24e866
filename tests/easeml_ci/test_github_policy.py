"""easeml_ci.github.policy against the fake GitHub: each repository setting that would let code a
pull request controls reach the key or the budget is refused (exit 2) with the setting named,
and the settings the docs ask for pass.
"""
from __future__ import annotations

import pytest

from easeml_ci.errors import ExitCode
from easeml_ci.github.api import GitHubClient
from easeml_ci.github.policy import (
    UnsafeSetting,
    check_default_branch_reviewed,
    check_environment,
    check_keyed_run,
    check_ledger_branch_protected,
    check_run_context,
)

REPO = "acme/models"
LEDGER = "easeml-ledger"
REVIEWED = {"type": "pull_request", "parameters": {
    "required_approving_review_count": 1, "dismiss_stale_reviews_on_push": True,
    "require_code_owner_review": False, "require_last_push_approval": False,
    "required_review_thread_resolution": False}}


@pytest.fixture
def repo(fake_github):
    fake_github.add_repo(REPO).rules.clear()  # no ruleset yet (the fake starts with one)
    fake_github.add_token("ghs-write")
    fake_github.add_token("pat-admin", installation=False, admin=True)
    return fake_github


def client(repo, token="ghs-write") -> GitHubClient:
    return GitHubClient(token, repo.url, sleep=lambda s: None)


def refusal(call) -> str:
    with pytest.raises(UnsafeSetting) as info:
        call()
    assert info.value.exit_code == ExitCode.USAGE
    return info.value.message


# --- the ledger branch: neither force-pushed nor deleted -----------------------------------------

def test_an_unprotected_ledger_branch_is_refused_naming_the_ruleset_to_add(repo):
    message = refusal(lambda: check_ledger_branch_protected(client(repo), REPO, LEDGER))
    assert "force-pushed and deleted" in message and "Settings > Rules > Rulesets" in message
    assert "'Restrict deletions'" in message and "'Block force pushes'" in message
    assert LEDGER in message and "nothing was opened" in message


@pytest.mark.parametrize("rules, missing", [
    ([{"type": "deletion"}], "force-pushed"),
    ([{"type": "non_fast_forward"}], "deleted"),
    ([{"type": "update"}, {"type": "required_signatures"}], "force-pushed and deleted"),
])
def test_a_ruleset_that_blocks_only_one_of_the_two_is_refused(repo, rules, missing):
    repo.repos[REPO].rules[LEDGER] = rules
    message = refusal(lambda: check_ledger_branch_protected(client(repo), REPO, LEDGER))
    assert f"can be {missing}:" in message


def test_a_ruleset_with_both_rules_passes_also_before_the_branch_exists(repo):
    # GET rules/branches answers for a branch name whether it exists or not: the owner can set
    # the ruleset before the first registration creates the branch
    assert f"heads/{LEDGER}" not in repo.repos[REPO].refs
    repo.repos[REPO].rules[LEDGER] = [
        {"type": "deletion", "ruleset_source_type": "Repository", "ruleset_source": REPO,
         "ruleset_id": 42},
        {"type": "non_fast_forward", "ruleset_source_type": "Organization",
         "ruleset_source": "acme", "ruleset_id": 7}]
    check_ledger_branch_protected(client(repo), REPO, LEDGER)
    assert repo.calls("GET", r"/protection$") == []  # the rules sufficed


def test_classic_protection_counts_only_where_the_token_may_read_its_settings(repo):
    repo.commit_file(REPO, "main", "x", b"x")
    repo.repos[REPO].refs[f"heads/{LEDGER}"] = repo.repos[REPO].refs["heads/main"]
    repo.protect(REPO, LEDGER)
    # the workflow's GITHUB_TOKEN cannot read classic protection (Administration): refused,
    # and the message says why a ruleset is needed
    message = refusal(lambda: check_ledger_branch_protected(client(repo), REPO, LEDGER))
    assert "Administration: read" in message and "GITHUB_TOKEN" in message
    # a token that can read it: force pushes and deletions off passes
    check_ledger_branch_protected(client(repo, "pat-admin"), REPO, LEDGER)
    # ... and "Allow force pushes" ticked is refused, naming the box
    repo.protect(REPO, LEDGER, allow_force_pushes=True)
    message = refusal(lambda: check_ledger_branch_protected(client(repo, "pat-admin"), REPO, LEDGER))
    assert "allows force pushes" in message and "'Allow force pushes'" in message
    repo.protect(REPO, LEDGER, allow_deletions=True)
    message = refusal(lambda: check_ledger_branch_protected(client(repo, "pat-admin"), REPO, LEDGER))
    assert "allows deletions" in message


def test_a_rules_endpoint_that_fails_refuses_rather_than_passes(repo):
    repo.repos[REPO].rules[LEDGER] = [{"type": "deletion"}, {"type": "non_fast_forward"}]
    repo.fail_next("GET", r"/rules/branches/", 500, times=10)
    message = refusal(lambda: check_ledger_branch_protected(client(repo), REPO, LEDGER))
    assert "could not read the rules" in message and "HTTP 500" in message


# --- the run: the default branch's own workflow definition ---------------------------------------

WF_MAIN = f"{REPO}/.github/workflows/easeml-gate-fork-safe.yml@refs/heads/main"


@pytest.mark.parametrize("event", ["pull_request", "pull_request_target"])
def test_a_pull_request_event_with_the_key_is_refused_pointing_at_the_split(event):
    message = refusal(lambda: check_run_context(
        event_name=event, ref="refs/pull/7/merge", workflow_ref=WF_MAIN, repository=REPO,
        default="main"))
    assert event in message and "workflow_run split" in message
    assert "Migrating from easeml-gate.yml" in message


@pytest.mark.parametrize("event, ref, wf_ref, needle", [
    ("issue_comment", "refs/heads/main", WF_MAIN, "issue_comment event"),
    ("merge_group", "refs/heads/gh-readonly-queue/main/pr-7", WF_MAIN, "merge_group event"),
    ("push", "refs/heads/feature", WF_MAIN, "refs/heads/feature (GITHUB_REF)"),
    ("workflow_dispatch", "refs/heads/feature", WF_MAIN, "not on the default branch"),
    ("push", "refs/tags/main", WF_MAIN, "refs/tags/main"),
    ("push", "refs/heads/main", f"{REPO}/.github/workflows/g.yml@refs/heads/feature",
     "@refs/heads/feature (GITHUB_WORKFLOW_REF)"),
    ("workflow_run", "refs/heads/main", "evil/fork/.github/workflows/g.yml@refs/heads/main",
     "evil/fork/"),
    ("schedule", "refs/heads/main", None, "GITHUB_WORKFLOW_REF is not set"),
])
def test_a_run_that_is_not_the_default_branchs_own_workflow_is_refused(event, ref, wf_ref, needle):
    message = refusal(lambda: check_run_context(event_name=event, ref=ref, workflow_ref=wf_ref,
                                                repository=REPO, default="main"))
    assert needle in message and "Nothing was opened" in message


@pytest.mark.parametrize("event", ["workflow_run", "push", "schedule", "workflow_dispatch"])
def test_the_default_branchs_own_workflows_pass(event):
    check_run_context(event_name=event, ref="refs/heads/main", workflow_ref=WF_MAIN,
                      repository=REPO, default="main")


# --- the environment that holds the key ----------------------------------------------------------

def test_an_environment_restricted_to_the_default_branch_passes(repo):
    repo.add_environment(REPO, "easeml-gate", branches=["main"])
    check_environment(client(repo), REPO, "easeml-gate", "main")


@pytest.mark.parametrize("setup, needle", [
    (dict(), "admits every branch"),
    (dict(protected_branches=True), "'Protected branches only'"),
    (dict(branches=["main", "release/*"]), "branch 'release/*'"),
    (dict(branches=["*"]), "branch '*'"),
    (dict(branches=[{"name": "main", "type": "tag"}]), "tag 'main'"),
    (dict(branches=["develop"]), "branch 'develop'"),
    (dict(branches=[]), "no rule at all"),
])
def test_an_environment_that_admits_more_than_the_default_branch_is_refused(repo, setup, needle):
    repo.add_environment(REPO, "easeml-gate", **setup)
    message = refusal(lambda: check_environment(client(repo), REPO, "easeml-gate", "main"))
    assert needle in message
    assert "Settings > Environments > easeml-gate > Deployment branches and tags" in message


def test_a_missing_environment_and_an_unreadable_one_are_refused(repo):
    message = refusal(lambda: check_environment(client(repo), REPO, "easeml-gate", "main"))
    assert "does not exist" in message and "EASEML_TESTSET_KEY" in message
    repo.add_environment(REPO, "easeml-gate", branches=["main"])
    repo.fail_next("GET", r"/environments/easeml-gate$", 403,
                   message="Resource not accessible by integration")
    message = refusal(lambda: check_environment(client(repo), REPO, "easeml-gate", "main"))
    assert "actions: read" in message


def test_the_policies_are_read_across_pages(repo):
    repo.add_environment(REPO, "easeml-gate", branches=["main"] * 100 + ["feature"])
    message = refusal(lambda: check_environment(client(repo), REPO, "easeml-gate", "main"))
    assert "branch 'feature'" in message  # on the second page


# --- the default branch takes only reviewed pull requests -----------------------------------------

@pytest.mark.parametrize("rules, ok", [
    ([], False),
    ([{"type": "non_fast_forward"}], False),
    ([{**REVIEWED, "parameters": {**REVIEWED["parameters"], "required_approving_review_count": 0}}], False),
    ([{**REVIEWED, "parameters": {**REVIEWED["parameters"], "dismiss_stale_reviews_on_push": False}}], False),
    ([REVIEWED], True),
    ([{**REVIEWED, "parameters": {**REVIEWED["parameters"], "dismiss_stale_reviews_on_push": False,
                                  "require_last_push_approval": True}}], True),
])
def test_the_default_branch_must_take_only_reviewed_pull_requests(repo, rules, ok):
    repo.repos[REPO].rules["main"] = rules
    if ok:
        check_default_branch_reviewed(client(repo), REPO, "main")
    else:
        message = refusal(lambda: check_default_branch_reviewed(client(repo), REPO, "main"))
        assert "'Require a pull request before merging'" in message
        assert "Dismiss stale pull request approvals" in message


def test_check_keyed_run_reads_the_default_branch_from_the_api(repo):
    repo.repos[REPO].default_branch = "trunk"
    repo.add_environment(REPO, "easeml-gate", branches=["trunk"])
    repo.repos[REPO].rules["trunk"] = [REVIEWED]
    repo.repos[REPO].rules[LEDGER] = [{"type": "deletion"}, {"type": "non_fast_forward"}]
    ok = dict(repository=REPO, event_name="workflow_run", ref="refs/heads/trunk",
              workflow_ref=f"{REPO}/.github/workflows/g.yml@refs/heads/trunk",
              environment="easeml-gate", ledger_branch=LEDGER)
    check_keyed_run(client(repo), **ok)
    message = refusal(lambda: check_keyed_run(client(repo), **{**ok, "ref": "refs/heads/main"}))
    assert "default branch refs/heads/trunk" in message
    message = refusal(lambda: check_keyed_run(None, **ok))
    assert "needs github-token" in message
