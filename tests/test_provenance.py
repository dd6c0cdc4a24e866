"""easeml_ci.github.provenance against the fake GitHub API: which PR a workflow_run verdict is
about (found from the head commit, never taken from the fork's artifact), and the commit status
that lets branch protection require the verdict."""
from __future__ import annotations

import pytest

from easeml_ci.errors import UsageError
from easeml_ci.github.api import GitHubClient, GitHubForbidden, RetryPolicy
from easeml_ci.github.provenance import (
    commit_status_for, post_commit_status, pull_request_for_head, status_context,
)
from github_fake import FakeGitHub, fake_github  # noqa: F401  (fixture)

REPO = "acme/models"
HEAD = "a" * 40
OTHER = "b" * 40


def client_for(fake: FakeGitHub, permission: str = "write") -> GitHubClient:
    token = fake.add_token(f"tok-{permission}", permission=permission)
    return GitHubClient(token, fake.url, retry=RetryPolicy(attempts=2, base_delay=0),
                        sleep=lambda s: None)


@pytest.fixture
def repo(fake_github):
    fake_github.add_repo(REPO)
    fake_github.set_pull_request_head(REPO, 7, HEAD, head_repo="contributor/models")
    fake_github.set_pull_request_head(REPO, 8, OTHER)
    return fake_github


# --- which pull request ---------------------------------------------------------------------------

def test_the_pull_request_is_found_from_the_head_commit(repo):
    assert pull_request_for_head(client_for(repo), REPO, HEAD) == 7
    assert pull_request_for_head(client_for(repo), REPO, OTHER) == 8
    assert repo.calls("GET", rf"/commits/{HEAD}/pulls$")


def test_a_matching_claim_is_accepted(repo):
    assert pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=7) == 7


@pytest.mark.parametrize("claim", [8, 9, 1])
def test_a_claim_that_names_another_pull_request_is_refused(repo, claim):
    with pytest.raises(UsageError) as err:
        pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=claim)
    assert err.value.exit_code == 2
    assert f"#{claim}" in err.value.message and "#7" in err.value.message
    assert "refusing" in err.value.message


def test_an_unknown_head_commit_is_refused(repo):
    with pytest.raises(UsageError, match="no open pull request .* has head commit cccccccccccc"):
        pull_request_for_head(client_for(repo), REPO, "c" * 40)


def test_a_closed_pull_request_is_refused(repo):
    repo.repos[REPO].issues[7]["state"] = "closed"
    with pytest.raises(UsageError, match="no open pull request"):
        pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=7)


def test_a_pull_request_that_moved_on_is_refused(repo):
    """The fork pushed again: the old run's verdict is not reported on the PR any more."""
    repo.set_pull_request_head(REPO, 7, "d" * 40, head_repo="contributor/models")
    with pytest.raises(UsageError, match="no open pull request"):
        pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=7)


def test_fork_pull_requests_missing_from_the_commit_endpoint_are_found_in_the_pulls_list(repo):
    repo.commit_pulls_omit_forks = True
    for n in range(20, 140):  # more than one page of open pull requests
        repo.set_pull_request_head(REPO, n, f"{n:040x}")
    assert pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=7) == 7
    listed = repo.calls("GET", r"/repos/acme/models/pulls$")
    assert listed and listed[0].query.get("state") == "open"
    with pytest.raises(UsageError, match="does not have head commit"):
        pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=8)


def test_the_same_head_in_two_pull_requests_needs_a_claim(repo):
    repo.set_pull_request_head(REPO, 9, HEAD, head_repo="contributor/models", base_ref="release")
    with pytest.raises(UsageError, match="several open pull requests .*#7, #9"):
        pull_request_for_head(client_for(repo), REPO, HEAD)
    assert pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=9) == 9


@pytest.mark.parametrize("sha", ["", "abc123", "g" * 40, HEAD + "0", "$(id)", None])
def test_a_malformed_head_sha_is_refused_before_any_call(repo, sha):
    with pytest.raises(UsageError, match="input head-sha: expected a full commit SHA"):
        pull_request_for_head(client_for(repo), REPO, sha)
    assert not repo.calls("GET", r"/pulls")


def test_a_token_that_may_not_list_pull_requests_is_a_configuration_error(repo):
    repo.fail_next("GET", r"/commits/.*/pulls$", status=403,
                   message="Resource not accessible by integration")
    with pytest.raises(UsageError, match="pull-requests: read"):
        pull_request_for_head(client_for(repo), REPO, HEAD)


def test_the_head_sha_is_compared_case_insensitively(repo):
    assert pull_request_for_head(client_for(repo), REPO, HEAD.upper(), claimed_number=7) == 7


# --- the commit status ----------------------------------------------------------------------------

def test_post_commit_status_posts_on_the_head_commit(repo):
    got = post_commit_status(client_for(repo), REPO, HEAD, "success", "the model meets it",
                             "easeml-ci/quality", target_url="https://github.com/acme/run/1")
    assert got["state"] == "success"
    [status] = repo.statuses_on(REPO, HEAD)
    assert status == {**status, "state": "success", "context": "easeml-ci/quality",
                      "description": "the model meets it",
                      "target_url": "https://github.com/acme/run/1"}
    [call] = repo.calls("POST", rf"/statuses/{HEAD}$")
    assert "target_url" in call.body


def test_a_long_description_is_cut_to_what_github_accepts(repo):
    post_commit_status(client_for(repo), REPO, HEAD, "failure", "x" * 300, "easeml-ci/q")
    [status] = repo.statuses_on(REPO, HEAD)
    assert len(status["description"]) == 140 and status["description"].endswith("…")


@pytest.mark.parametrize("state", ["passed", "", "SUCCESS", None])
def test_an_unknown_state_is_refused_before_any_call(repo, state):
    with pytest.raises(ValueError, match="state must be one of pending, success, failure, error"):
        post_commit_status(client_for(repo), REPO, HEAD, state, "d", "easeml-ci/q")
    assert not repo.calls("POST")


def test_a_read_only_token_cannot_post_a_status(repo):
    with pytest.raises(GitHubForbidden):
        post_commit_status(client_for(repo, "read"), REPO, HEAD, "success", "d", "easeml-ci/q")
    assert repo.statuses_on(REPO, HEAD) == []


def test_every_verdict_has_a_fixed_status_without_numbers():
    states = {v: commit_status_for(v) for v in ("pass", "fail", "withheld", "exhausted", "error")}
    assert {v: s for v, (s, _) in states.items()} == {
        "pass": "success", "fail": "failure", "withheld": "success", "exhausted": "failure",
        "error": "error"}
    for _, text in states.values():
        assert len(text) <= 140 and not any(c.isdigit() for c in text)
    with pytest.raises(ValueError):
        commit_status_for("maybe")


def test_status_context_names_the_gate():
    assert status_context("quality") == "easeml-ci/quality"
    assert status_context("  two\nwords ") == "easeml-ci/two words"
    assert status_context("") == "easeml-ci/easeml-ci"
