"""One sticky pull-request comment per gate, edited in place.

The comment is found by two things together:

* a hidden marker ``<!-- easeml-ci:gate scope=HASH -->`` whose hash covers the repository, the
  config path and the gate name, so two gates (or two configs) on one PR keep two comments;
* its author: the token's own login when GitHub tells it (``GET /user``), otherwise — the
  workflow's ``GITHUB_TOKEN`` may not call that endpoint — any *bot* account, which a person
  pasting the marker into a comment cannot be. A human's comment is never edited.

When the new body equals the old one nothing is sent (no notification, no edit history).

Never two comments: the comment is searched for before it is created, and when the create (a
POST, which GitHub may have carried out before answering 502 or timing out) fails ambiguously,
it is searched for again before anything is posted a second time (:func:`write_once`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .api import GitHubClient, GitHubForbidden, repo_path, write_once

MARKER_PREFIX = "<!-- easeml-ci:gate scope="
ACTIONS_BOT = "github-actions[bot]"


def scope_key(repository: str, config_path: str, gate: str) -> str:
    raw = "\n".join([repository.lower(), config_path.replace("\\", "/").lstrip("./"), gate])
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def marker(repository: str, config_path: str, gate: str) -> str:
    return f"{MARKER_PREFIX}{scope_key(repository, config_path, gate)} -->"


@dataclass
class CommentOutcome:
    action: str  # created | updated | unchanged
    comment_id: int
    url: str | None = None


def _ours(comment: dict, author: str | None) -> bool:
    user = comment.get("user") or {}
    if author:
        return user.get("login") == author
    return user.get("type") == "Bot"


def find_comment(client: GitHubClient, repository: str, number: int, mark: str,
                 author: str | None, exclude: tuple = ()) -> dict | None:
    candidates = [c for c in client.paginate(repo_path(repository, "issues", number, "comments"))
                  if mark in (c.get("body") or "") and _ours(c, author)
                  and c.get("id") not in exclude]
    if not candidates:
        return None
    # the oldest one is the sticky one; with an unknown author prefer the workflow token's bot
    preferred = [c for c in candidates if (c.get("user") or {}).get("login") == ACTIONS_BOT]
    return (preferred or candidates)[0]


def upsert_comment(client: GitHubClient, repository: str, number: int, body: str, mark: str,
                   author: str | None = None) -> CommentOutcome:
    """Create the gate's comment, or edit it in place; leave it alone when the body is the same.

    Raises :class:`~easeml_ci.github.api.GitHubForbidden` when the token may not comment.
    """
    if mark not in body:
        body = f"{mark}\n{body}"

    def find(exclude: tuple = ()) -> dict | None:
        return find_comment(client, repository, number, mark, author, exclude)

    def ours_with_body() -> dict | None:
        found = find()
        return found if found is not None and (found.get("body") or "") == body else None

    existing = find()
    if existing is not None:
        if (existing.get("body") or "") == body:
            return CommentOutcome("unchanged", existing["id"], existing.get("html_url"))
        path = repo_path(repository, "issues", "comments", existing["id"])
        try:
            got = write_once(client, lambda: client.patch(path, {"body": body}), ours_with_body)
            return CommentOutcome("updated", got.get("id", existing["id"]), got.get("html_url"))
        except GitHubForbidden:
            if author is not None:
                raise
            # a bot comment of another app: not ours after all; fall through and post our own
    not_ours = (existing["id"],) if existing is not None else ()  # another app's, left alone
    got = write_once(client, lambda: client.post(repo_path(repository, "issues", number, "comments"),
                                                 {"body": body}), lambda: find(not_ours))
    return CommentOutcome("created", got["id"], got.get("html_url"))
