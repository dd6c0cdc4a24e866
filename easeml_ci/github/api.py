"""A small GitHub REST client on :mod:`requests`.

Why not a full SDK: the action needs a dozen endpoints, must honour ``GITHUB_API_URL`` (GitHub
Enterprise Server), must retry what GitHub asks to be retried, and must tell a read-only token
(pull requests from forks) apart from a real failure so that the gate degrades instead of
crashing. All of that fits here.

Retry policy (GitHub's documented behaviour):

* 5xx answers and connection errors: retried with exponential backoff.
* Secondary rate limits: 403 or 429 carrying ``retry-after`` (seconds to wait) or
  ``x-ratelimit-remaining: 0`` (wait until ``x-ratelimit-reset``). A plain 403 is a permission
  problem and is raised at once as :class:`GitHubForbidden`.

The ``sleep`` callable is injectable so tests run the retry paths without waiting.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import quote

import requests

DEFAULT_API_URL = "https://api.github.com"
USER_AGENT = "easeml-ci-action"


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


class GitHubNotFound(GitHubError):
    """404: the resource does not exist, or the token cannot see it."""


class GitHubConflict(GitHubError):
    """409 (or 422 on a stale ``sha``): somebody else changed the resource first."""


class GitHubValidation(GitHubError):
    """422: GitHub refused the request body."""


@dataclass
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * (2 ** attempt))


def _env_backoff() -> float:
    """``EASEML_GITHUB_BACKOFF``: the first retry's delay in seconds (default 1; tests use less)."""
    raw = os.environ.get("EASEML_GITHUB_BACKOFF", "")
    try:
        value = float(raw) if raw else 1.0
    except ValueError:
        value = 1.0
    return value if 0 <= value <= 60 else 1.0


def _error_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body)[:200]
    return str(body)[:200]


class GitHubClient:
    """Calls the GitHub REST API with one token.

    ``api_url`` defaults to ``$GITHUB_API_URL`` (set by the runner, also on GitHub Enterprise),
    then to https://api.github.com.
    """

    def __init__(
        self,
        token: str | None,
        api_url: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ):
        self.token = token or None
        self.api_url = (api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.retry = retry or RetryPolicy(base_delay=_env_backoff())
        self.sleep = sleep
        self.clock = clock
        self.timeout = timeout
        self.session = session or requests.Session()
        self.retries_done = 0

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

    def _rate_limit_wait(self, resp: requests.Response) -> float | None:
        """Seconds to wait when ``resp`` is a (secondary) rate-limit answer, else None."""
        if resp.status_code not in (403, 429):
            return None
        retry_after = resp.headers.get("retry-after")
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                return self.retry.base_delay
        if resp.headers.get("x-ratelimit-remaining") == "0":
            reset = resp.headers.get("x-ratelimit-reset")
            try:
                return max(0.0, float(reset) - self.clock()) + 1.0
            except (TypeError, ValueError):
                return self.retry.base_delay
        if resp.status_code == 429:
            return self.retry.base_delay
        return None

    def request(self, method: str, path: str, *, params: dict | None = None,
                json: Any = None) -> requests.Response:
        url = self.url(path)
        last_error: GitHubError | None = None
        for attempt in range(self.retry.attempts):
            try:
                resp = self.session.request(method, url, params=params, json=json,
                                            headers=self._headers(), timeout=self.timeout)
            except requests.RequestException as exc:
                last_error = GitHubError(method, url, 0, f"no answer ({type(exc).__name__})")
                wait = self.retry.backoff(attempt)
            else:
                if resp.status_code < 400:
                    return resp
                wait = self._rate_limit_wait(resp)
                if wait is None and resp.status_code >= 500:
                    wait = self.retry.backoff(attempt)
                if wait is None:
                    raise self._error(method, url, resp)
                last_error = self._error(method, url, resp)
            if attempt + 1 < self.retry.attempts:
                self.retries_done += 1
                self.sleep(min(wait, self.retry.max_delay))
        assert last_error is not None
        raise last_error

    @staticmethod
    def _error(method: str, url: str, resp: requests.Response) -> GitHubError:
        msg = _error_message(resp)
        status = resp.status_code
        if status in (401, 403):
            return GitHubForbidden(method, url, status, msg)
        if status == 404:
            return GitHubNotFound(method, url, status, msg)
        if status == 409:
            return GitHubConflict(method, url, status, msg)
        if status == 422:
            return GitHubValidation(method, url, status, msg)
        return GitHubError(method, url, status, msg)

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


def repo_path(repository: str, *parts: str | int) -> str:
    """``repos/OWNER/NAME/part/part`` with each part URL-quoted (file paths keep their slashes)."""
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name:
        raise ValueError(f"repository must be OWNER/NAME, got {repository!r}")
    tail = "/".join(quote(str(p), safe="/") for p in parts)
    base = f"repos/{quote(owner, safe='')}/{quote(name, safe='')}"
    return f"{base}/{tail}" if tail else base
