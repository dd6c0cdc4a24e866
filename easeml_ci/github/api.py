"""A small GitHub REST client on :mod:`requests`.

Why not a full SDK: the action needs a dozen endpoints, must honour ``GITHUB_API_URL`` (GitHub
Enterprise Server), must retry what GitHub asks to be retried, and must tell a read-only token
(pull requests from forks) apart from a real failure so that the gate degrades instead of
crashing. All of that fits here.

Retries follow the product's one HTTP policy, :class:`easeml_ci.http.GitHubRetry` (see
:mod:`easeml_ci.http`): connection errors always, 5xx and timeouts for idempotent methods only,
rate limits (primary and secondary, with or without ``retry-after``) after the wait GitHub asks
for, within a bound. What is left reaches the caller as one of the errors below:

* :class:`GitHubRateLimited` — a rate limit outlasted the bound; never a permission problem;
* :class:`GitHubForbidden` — a 401/403 that is not a rate limit: the token lacks a permission;
* :class:`GitHubAmbiguous` — a POST or PATCH got a 5xx or no answer after it was sent: it may
  have taken effect. Creations that must not be duplicated go through :func:`write_once`, which
  looks for the resource before writing again.

The ``sleep`` and ``clock`` callables are injectable so tests run every wait without waiting.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import quote

import requests

from ..http import (
    IDEMPOTENT_METHODS,
    FinalAnswer,
    GitHubRetry,
    answer_message,
    rate_limit_kind,
    sent_before_failing,
)
from ..http import session as policy_session

DEFAULT_API_URL = "https://api.github.com"
USER_AGENT = "easeml-ci-action"
T = TypeVar("T")


class GitHubError(Exception):
    """A GitHub API call failed. ``status`` is the HTTP status (0 for no answer at all)."""

    def __init__(self, method: str, url: str, status: int, message: str):
        self.method = method
        self.url = url
        self.status = status
        self.api_message = message
        super().__init__(f"GitHub API {method} {url} answered {status}: {message}")


class GitHubForbidden(GitHubError):
    """403/401 without a rate-limit signal: the token lacks the permission (e.g. a fork's token)."""


class GitHubRateLimited(GitHubError):
    """GitHub's primary or secondary rate limit held longer than the policy waits.

    ``kind`` is "primary" or "secondary"; ``retry_in`` the seconds GitHub asked for, if known.
    """

    def __init__(self, method: str, url: str, status: int, message: str, kind: str,
                 retry_in: float | None = None):
        self.kind = kind
        self.retry_in = retry_in
        super().__init__(method, url, status, message)

    def advice(self) -> str:
        when = f" (GitHub asks to wait {self.retry_in:.0f} s)" if self.retry_in else ""
        return f"GitHub's {self.kind} rate limit{when}; run again later"


class GitHubAmbiguous(GitHubError):
    """A non-idempotent request (POST, PATCH) failed after it was sent: it may have taken effect."""


class GitHubNotFound(GitHubError):
    """404: the resource does not exist, or the token cannot see it."""


class GitHubConflict(GitHubError):
    """409 (or 422 on a stale ``sha``): somebody else changed the resource first."""


class GitHubValidation(GitHubError):
    """422: GitHub refused the request body."""


class GitHubClient:
    """Calls the GitHub REST API with one token.

    ``api_url`` defaults to ``$GITHUB_API_URL`` (set by the runner, also on GitHub Enterprise),
    then to https://api.github.com. ``policy`` defaults to :class:`GitHubRetry` with this
    client's ``sleep`` and ``clock``; ``timeout`` is the read timeout in seconds.
    """

    def __init__(
        self,
        token: str | None,
        api_url: str | None = None,
        *,
        policy: GitHubRetry | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ):
        self.token = token or None
        self.api_url = (api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.policy = policy or GitHubRetry(sleep=sleep, clock=clock)
        self.sleep = self.policy.sleep_fn
        self.clock = self.policy.clock
        self.timeout = timeout
        self.session = session or policy_session(self.policy)

    # -- plumbing -------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": USER_AGENT,
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return f"{self.api_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, params: dict | None = None,
                json: Any = None) -> requests.Response:
        """One call under the policy; an error answer or no answer raises a :class:`GitHubError`."""
        url = self.url(path)
        method = method.upper()
        try:
            resp = self.session.request(method, url, params=params, json=json,
                                        headers=self._headers(), timeout=(10.0, self.timeout))
        except FinalAnswer as answer:
            raise _error(method, url, answer.status, answer.headers, answer.message,
                         answer.retry_in) from None
        except requests.RequestException as exc:
            message = f"no answer ({type(exc).__name__})"
            if method not in IDEMPOTENT_METHODS and sent_before_failing(exc):
                raise GitHubAmbiguous(method, url, 0, message + "; it may have taken effect") from None
            raise GitHubError(method, url, 0, message) from None
        if resp.status_code < 400:
            return resp
        raise _error(method, url, resp.status_code, resp.headers, answer_message(resp.content))

    def backoff(self, attempt: int) -> None:
        """Wait between two tries of a :func:`write_once` (the policy's backoff, its sleep)."""
        self.sleep(self.policy.backoff_factor * 2 ** attempt)

    def get(self, endpoint: str, /, **params: Any) -> Any:
        return self.request("GET", endpoint, params=params or None).json()

    def post(self, path: str, body: dict) -> Any:
        return self.request("POST", path, json=body).json()

    def patch(self, path: str, body: dict) -> Any:
        return self.request("PATCH", path, json=body).json()

    def put(self, path: str, body: dict) -> Any:
        return self.request("PUT", path, json=body).json()

    def paginate(self, endpoint: str, /, **params: Any) -> Iterator[Any]:
        """Yield the items of a list endpoint, following ``Link: rel="next"``."""
        params.setdefault("per_page", 100)
        resp = self.request("GET", endpoint, params=params)
        while True:
            yield from resp.json()
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                return
            resp = self.request("GET", nxt)

    # -- endpoints the action uses ----------------------------------------------------------
    def authenticated_login(self) -> str | None:
        """The token's user, or None when the token cannot say (installation tokens get 403)."""
        try:
            return self.get("user").get("login")
        except (GitHubForbidden, GitHubNotFound):
            return None


def _error(method: str, url: str, status: int, headers, message: str,
           retry_in: float | None = None) -> GitHubError:
    kind = rate_limit_kind(status, headers, message)
    if kind is not None:
        return GitHubRateLimited(method, url, status, message, kind, retry_in)
    if status >= 500 and method not in IDEMPOTENT_METHODS:
        return GitHubAmbiguous(method, url, status, message + "; it may have taken effect")
    if status in (401, 403):
        return GitHubForbidden(method, url, status, message)
    if status == 404:
        return GitHubNotFound(method, url, status, message)
    if status == 409:
        return GitHubConflict(method, url, status, message)
    if status == 422:
        return GitHubValidation(method, url, status, message)
    return GitHubError(method, url, status, message)


def write_once(client: GitHubClient, write: Callable[[], T], landed: Callable[[], T | None],
               *, attempts: int = 3) -> T:
    """Do a non-idempotent ``write`` so that it takes effect at most once.

    After an ambiguous failure (:class:`GitHubAmbiguous`: a 5xx or no answer after the request
    went out) ``landed()`` looks for the write's effect — the resource with its hidden marker,
    the body it was to set — and returns it when it is there; only when it is not is the write
    tried again. Callers search before the first write themselves (search, then create).
    """
    for attempt in range(attempts):
        try:
            return write()
        except GitHubAmbiguous:
            if attempt + 1 >= attempts:
                raise
            client.backoff(attempt)
            found = landed()
            if found is not None:
                return found
    raise AssertionError("unreachable")


def repo_path(repository: str, *parts: str | int) -> str:
    """``repos/OWNER/NAME/part/part`` with each part URL-quoted (file paths keep their slashes)."""
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name:
        raise ValueError(f"repository must be OWNER/NAME, got {repository!r}")
    tail = "/".join(quote(str(p), safe="/") for p in parts)
    base = f"repos/{quote(owner, safe='')}/{quote(name, safe='')}"
    return f"{base}/{tail}" if tail else base


