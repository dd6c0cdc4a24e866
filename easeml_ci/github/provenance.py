"""Which pull request a verdict is about, and the commit status that carries it.

In the fork-safe split (``examples/workflows/easeml-gate-fork-safe.yml``) the trusted
``workflow_run`` job gates a model that an untrusted ``pull_request`` run uploaded. Everything in
that upload is the fork's to choose, the pull request number included: a fork that writes another
PR's number into its artifact would have the verdict (comment, status) land on that PR. What the
fork cannot choose is ``github.event.workflow_run.head_sha``: GitHub sets it to the commit the
untrusted run was triggered by. So the pull request is found *from that commit*, through the API,
and a number from the artifact is at most a hint that must agree (:func:`pull_request_for_head`).

A ``workflow_run`` job's own result is not a check on the pull request, so branch protection
cannot require it. :func:`post_commit_status` puts the verdict on the head commit as a commit
status (``easeml-ci/<gate>``), which branch protection can require. Its description is one of the
fixed sentences of :func:`commit_status_for`: the verdict bit and nothing else (docs/design.md,
"everything the team can observe is part of the transcript").
"""
from __future__ import annotations

import re
from typing import Iterable

from ..errors import UsageError
from .api import GitHubClient, GitHubError, GitHubForbidden, GitHubNotFound, repo_path

STATES = ("pending", "success", "failure", "error")
DESCRIPTION_LIMIT = 140  # GitHub refuses longer commit-status descriptions
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256 object names

# verdict -> (state, description). Fixed text: no estimate, margin, count or timing.
_VERDICT_STATUS = {
    "pass": ("success", "the model meets the gate's condition"),
    "fail": ("failure", "the model does not meet the gate's condition"),
    # adaptivity none: the verdict goes to the private sink only; the job passes, so does this
    "withheld": ("success", "verdict withheld (adaptivity none): sent to the private sink"),
    "exhausted": ("failure", "the test set is spent: a new test set is needed"),
    "error": ("error", "the gate could not run: see the workflow run"),
    # rounds: the description names the round's end (a function of time only)
    "pending": ("pending", "verdict at the end of the round"),
    "not released": ("failure", "no verdict: the test set retired before the round closed"),
}


def check_sha(value: str, what: str = "head-sha") -> str:
    """A full commit SHA in lower case, or a UsageError naming the input and the bad value."""
    sha = str(value or "").strip().lower()
    if not _SHA.match(sha):
        raise UsageError(f"input {what}: expected a full commit SHA (40 hex digits), "
                         f"got {str(value)[:80]!r}")
    return sha


def _open_prs_with_head(prs: Iterable, repository: str, head_sha: str) -> dict[int, dict]:
    found: dict[int, dict] = {}
    for pr in prs:
        if not isinstance(pr, dict) or pr.get("state") != "open":
            continue
        if str((pr.get("head") or {}).get("sha", "")).lower() != head_sha:
            continue
        base_repo = ((pr.get("base") or {}).get("repo") or {}).get("full_name")
        if base_repo and base_repo.lower() != repository.lower():
            continue
        try:
            found[int(pr["number"])] = pr
        except (KeyError, TypeError, ValueError):
            continue
    return found


def pull_request_for_head(client: GitHubClient, repository: str, head_sha: str,
                          claimed_number: int | None = None) -> int:
    """The open pull request of ``repository`` whose head commit is ``head_sha``.

    Asks ``GET /repos/{o}/{r}/commits/{sha}/pulls`` first and, when that names no open pull
    request with this head (GitHub has not always listed fork pull requests there), the open
    pull requests themselves (``GET /repos/{o}/{r}/pulls?state=open``, matched on ``head.sha``).
    ``claimed_number`` (from the untrusted artifact) must be among those found; it only picks one
    when the same head commit is open in several pull requests.

    Raises :class:`~easeml_ci.errors.UsageError` (exit 2) when no open pull request has that head,
    when the claim disagrees, when the choice is ambiguous, or when the token may not list pull
    requests. Nothing about the test set is known at this point, so nothing can leak.
    """
    sha = check_sha(head_sha)
    if claimed_number is not None and (not isinstance(claimed_number, int) or claimed_number < 1):
        raise UsageError(f"input pr-number: expected a pull request number, got {claimed_number!r}")
    try:
        try:
            found = _open_prs_with_head(
                client.paginate(repo_path(repository, "commits", sha, "pulls")), repository, sha)
        except GitHubNotFound:  # a commit the base repository does not know: ask the PRs
            found = {}
        if not found:
            found = _open_prs_with_head(
                client.paginate(repo_path(repository, "pulls"), state="open"), repository, sha)
    except GitHubForbidden as exc:
        raise UsageError(f"cannot find the pull request of commit {sha[:12]} in {repository} "
                         f"(HTTP {exc.status}: {exc.api_message}): the token needs "
                         "'permissions: pull-requests: read'") from None
    except GitHubError as exc:
        raise UsageError(f"cannot find the pull request of commit {sha[:12]} in {repository}: "
                         f"GitHub answered {exc.status} ({exc.api_message})") from None
    if not found:
        raise UsageError(f"no open pull request of {repository} has head commit {sha[:12]}: "
                         "refusing to report a verdict for it (the pull request was closed or "
                         "has moved on to a newer commit, or the commit is not a pull request's)")
    numbers = sorted(found)
    if claimed_number is not None:
        if claimed_number not in found:
            raise UsageError(
                f"pull request #{claimed_number} (named by the workflow's artifact) does not have "
                f"head commit {sha[:12]}; that commit is the head of "
                + ", ".join(f"#{n}" for n in numbers)
                + ". The number in an artifact is the fork's to choose: refusing to report")
        return claimed_number
    if len(numbers) > 1:
        raise UsageError(f"commit {sha[:12]} is the head of several open pull requests "
                         f"({', '.join(f'#{n}' for n in numbers)}): set pr-number to choose one")
    return numbers[0]


def commit_status_for(verdict: str) -> tuple[str, str]:
    """``(state, description)`` of the commit status for a gate verdict (fixed sentences)."""
    try:
        return _VERDICT_STATUS[verdict]
    except KeyError:
        raise ValueError(f"verdict must be one of {sorted(_VERDICT_STATUS)}, got {verdict!r}") from None


def status_context(gate: str) -> str:
    """``easeml-ci/<gate>``: the name branch protection requires."""
    name = " ".join(str(gate or "").split()) or "easeml-ci"
    return f"easeml-ci/{name}"[:100]


def post_commit_status(client: GitHubClient, repository: str, sha: str, state: str,
                       description: str, context: str, target_url: str | None = None) -> dict:
    """``POST /repos/{o}/{r}/statuses/{sha}``; returns GitHub's answer (the status object).

    ``state`` is one of pending, success, failure, error; a description over 140 characters is
    cut (GitHub would refuse it). API errors propagate as :class:`GitHubError`: the caller
    decides whether a missing ``statuses: write`` is a warning or a failure.
    """
    sha = check_sha(sha, "commit sha")
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    if not context or not str(context).strip():
        raise ValueError("context must name the status, e.g. 'easeml-ci/quality'")
    text = " ".join(str(description or "").split())
    if len(text) > DESCRIPTION_LIMIT:
        text = text[:DESCRIPTION_LIMIT - 1].rstrip() + "…"
    body = {"state": state, "description": text, "context": str(context)}
    if target_url:
        body["target_url"] = target_url
    return client.post(repo_path(repository, "statuses", sha), body)
