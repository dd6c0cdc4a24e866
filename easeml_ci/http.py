"""One HTTP policy for every call the product makes.

Every request (GitHub's REST API, the alert webhook, the private sink's webhook, the AutoML
promotion) goes through a :class:`requests.Session` whose adapter carries one urllib3
:class:`~urllib3.util.Retry` subclass (:func:`session`). The rules:

* A connection error (nothing reached the server) is retried for every method.
* A 5xx answer, a read timeout or a connection dropped after the request went out is retried for
  idempotent methods only (GET, HEAD, PUT, DELETE, OPTIONS). A POST or PATCH is never resent
  blindly: it may have taken effect, so the caller hears about it and looks before writing again
  (:func:`easeml_ci.github.api.write_once`; for the webhook, the next check redelivers).
* 429, and on GitHub a 403 that is a rate limit (:func:`rate_limit_kind`), is retried for every
  method: a rate-limited request was refused, not performed.
* ``Retry-After`` is honoured. On GitHub's primary limit (``x-ratelimit-remaining: 0``) the wait
  runs until ``x-ratelimit-reset``; on a secondary limit it is at least a minute, doubling.
* Every wait is bounded: all the waits of one request together stay within ``max_wait``
  (300 s). A server that asks for more is given up on at once rather than holding a CI job.
* Every wait goes through the policy's ``sleep`` and ``clock``, so tests run every path at once.

Why urllib3's ``Retry``: it already knows which errors happened before the request was sent,
which methods are idempotent, how to parse ``Retry-After`` and how to count attempts; only
GitHub's own rate-limit rules (a 403 whose body says so, the reset header) are added here.

Error texts from :mod:`requests` quote the URL, and a webhook's URL path *is* its secret: what
this module reports names the host only (:func:`describe_failure`), and
:func:`easeml_ci.redact.redact` cleans any text before it is recorded or shown.
"""
from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import time
from typing import Any, Callable, Mapping

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from .redact import host_of, redact

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
RETRY_STATUS = frozenset({500, 502, 503, 504})
DEFAULT_MAX_WAIT = 300.0   # seconds: all the waits of one request together
SECONDARY_MIN_WAIT = 60.0  # GitHub: "wait for at least one minute before retrying"


class FinalAnswer(Exception):
    """An error answer the policy had to read to judge, and will not retry.

    urllib3 hands a retry policy the response before anybody reads it; to tell a 403 that is a
    rate limit from one that is a missing permission, :class:`GitHubRetry` reads the body, after
    which the response cannot be handed back. It travels in this exception instead (as
    PyGithub's ``GithubRetry`` does), out through :mod:`requests` to the caller.
    """

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes,
                 rate_limit: str | None = None, retry_in: float | None = None):
        self.status = status
        self.headers = {k.lower(): v for k, v in dict(headers).items()}
        self.body = body
        self.message = answer_message(body)
        self.rate_limit = rate_limit
        self.retry_in = retry_in
        super().__init__(f"HTTP {status}: {self.message}")


def answer_message(body: bytes | str | None) -> str:
    """The ``message`` of a JSON error body (GitHub's shape), else the start of the text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    if isinstance(doc, dict):
        return str(doc.get("message") or doc)[:200]
    return str(doc)[:200]


def rate_limit_kind(status: int, headers: Mapping[str, str], message: str) -> str | None:
    """"primary", "secondary" or None: is this answer one of GitHub's rate limits?

    GitHub answers both limits with 403 or 429. The primary limit sets
    ``x-ratelimit-remaining: 0``; a secondary limit says so in the message, and may carry
    ``retry-after``. A 403 with none of these is a missing permission.
    """
    if status not in (403, 429):
        return None
    headers = {k.lower(): v for k, v in dict(headers).items()}
    text = (message or "").lower()
    if "secondary rate limit" in text or "abuse" in text:
        return "secondary"
    if str(headers.get("x-ratelimit-remaining", "")).strip() == "0" or "rate limit" in text:
        return "primary"
    if headers.get("retry-after") is not None or status == 429:
        return "secondary"
    return None


def default_backoff() -> float:
    """The backoff factor in seconds: ``EASEML_HTTP_BACKOFF`` (older name
    ``EASEML_GITHUB_BACKOFF``), default 1; tests and harnesses set it small.

    It scales the waits after 5xx answers and connection errors only: the waits a server asks
    for (``Retry-After``, GitHub's rate limits) are kept whatever it says.
    """
    for name in ("EASEML_HTTP_BACKOFF", "EASEML_GITHUB_BACKOFF"):
        raw = os.environ.get(name, "")
        if raw:
            try:
                value = float(raw)
            except ValueError:
                continue
            if 0 <= value <= 60:
                return value
    return 1.0


class HttpRetry(Retry):
    """urllib3's ``Retry`` with the product's rules, bounded waits and an injectable clock.

    ``total`` retries (attempts - 1); ``backoff_factor`` as in urllib3 (0, 2f, 4f, ... between
    tries; default :func:`default_backoff`); ``max_wait`` bounds all waits of one request
    together; ``sleep`` and ``clock`` are the only way the policy waits or reads the time.
    """

    def __init__(self, total: int | bool | None = 4, *, backoff_factor: float | None = None,
                 max_wait: float = DEFAULT_MAX_WAIT, sleep: Callable[[float], Any] | None = None,
                 clock: Callable[[], float] | None = None, waited: float = 0.0,
                 next_wait: float | None = None, **kw: Any):
        kw.setdefault("allowed_methods", IDEMPOTENT_METHODS)
        kw.setdefault("status_forcelist", RETRY_STATUS)
        kw.setdefault("raise_on_status", False)  # the last answer goes to the caller as it is
        if backoff_factor is None:
            backoff_factor = default_backoff()
        super().__init__(total=total, backoff_factor=backoff_factor, **kw)
        self.max_wait = max_wait
        self.sleep_fn = sleep or time.sleep
        self.clock = clock or time.time
        self.waited = waited
        self.next_wait = next_wait

    def new(self, **kw: Any) -> "HttpRetry":
        kw.setdefault("max_wait", self.max_wait)
        kw.setdefault("sleep", self.sleep_fn)
        kw.setdefault("clock", self.clock)
        kw.setdefault("waited", self.waited)
        return super().new(**kw)

    # -- what is retried ----------------------------------------------------------------------
    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429:  # refused, not performed: safe to resend whatever the method
            return True
        return super().is_retry(method, status_code, has_retry_after)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        asked = self.asked_wait(response) if response is not None else None
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        wait = asked if asked is not None else new.get_backoff_time()
        if not new.within_bound(wait):
            raise MaxRetryError(_pool, url, ResponseError(
                f"waiting {wait:.0f} s more would pass the {self.max_wait:.0f} s bound"))
        new.next_wait = wait
        return new

    # -- how long to wait ---------------------------------------------------------------------
    def asked_wait(self, response) -> float | None:
        """Seconds the server asked for in ``Retry-After``, else None (then: backoff)."""
        value = response.headers.get("Retry-After")
        if value is None:
            return None
        try:
            return float(self.parse_retry_after(value))
        except InvalidHeader:
            return None

    def parse_retry_after(self, retry_after: str) -> float:
        if re.match(r"^\s*[0-9]+\s*$", retry_after):
            return float(int(retry_after))
        # an HTTP date: measured against the injectable clock, not the wall clock
        parsed = email.utils.parsedate_tz(retry_after)
        if parsed is None:
            raise InvalidHeader(f"Invalid Retry-After header: {retry_after}")
        return max(0.0, email.utils.mktime_tz(parsed) - self.clock())

    def within_bound(self, wait: float) -> bool:
        return self.waited + wait <= self.max_wait

    def _pause(self, wait: float) -> None:
        if wait > 0:
            self.sleep_fn(wait)
        self.waited += wait

    def sleep(self, response=None) -> None:
        self._pause(self.next_wait if self.next_wait is not None else self.get_backoff_time())

    def sleep_for_retry(self, response) -> bool:  # urllib3's redirect path
        wait = self.asked_wait(response)
        if wait:
            self._pause(wait)
            return True
        return False


class GitHubRetry(HttpRetry):
    """:class:`HttpRetry` plus GitHub's rate-limit rules (docs: "Rate limits for the REST API").

    * ``retry-after``: wait that long (at least a minute on a secondary limit);
    * ``x-ratelimit-remaining: 0``: wait until ``x-ratelimit-reset`` (plus a second);
    * a secondary limit without either: wait a minute, then two, ... (all within ``max_wait``).

    A 403 that is none of these is final (:class:`FinalAnswer`), as is a rate limit that would
    need a longer wait than the bound allows.
    """

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 403:  # maybe a rate limit: increment reads the answer to tell
            return True
        return super().is_retry(method, status_code, has_retry_after)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        if response is None or response.status not in (403, 429):
            return super().increment(method, url, response, error, _pool, _stacktrace)
        body = response.data or b""
        response.release_conn()
        kind = rate_limit_kind(response.status, response.headers, answer_message(body))
        if kind is None:
            raise FinalAnswer(response.status, response.headers, body)
        wait = self.rate_limit_wait(kind, response.headers)
        try:
            new = Retry.increment(self, method, url, response, error, _pool, _stacktrace)
        except MaxRetryError:
            raise FinalAnswer(response.status, response.headers, body, kind, wait) from None
        if not new.within_bound(wait):
            raise FinalAnswer(response.status, response.headers, body, kind, wait)
        new.next_wait = wait
        return new

    def rate_limit_wait(self, kind: str, headers: Mapping[str, str]) -> float:
        asked = None
        if headers.get("retry-after") is not None:
            try:
                asked = float(self.parse_retry_after(headers["retry-after"]))
            except InvalidHeader:
                asked = None
        if kind == "secondary":
            earlier = sum(1 for h in self.history if h.status in (403, 429))
            return max(asked or 0.0, SECONDARY_MIN_WAIT * 2 ** earlier)
        if asked is not None:
            return asked
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - self.clock()) + 1.0
        except (KeyError, TypeError, ValueError):
            return SECONDARY_MIN_WAIT


class _RedactRecords(logging.Filter):
    """urllib3 logs each retry with the URL's path ("... broken by ...: /hooks/T0/B0/SECRET")."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), bare_paths=True), ()
        return True


for _name in ("urllib3.connectionpool", "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_RedactRecords())


def session(policy: HttpRetry | None = None) -> requests.Session:
    """A :class:`requests.Session` whose every request follows ``policy``."""
    s = requests.Session()
    adapter = HTTPAdapter(max_retries=policy if policy is not None else HttpRetry())
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


def sent_before_failing(exc: BaseException) -> bool:
    """False only when the request surely never reached the server (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = exc.args[0] if getattr(exc, "args", None) else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return not isinstance(reason, ConnectTimeoutError)  # NewConnectionError is one too


def describe_failure(exc: BaseException, url: str, timeout: float | None = None) -> str:
    """A failed request in words that name the host only, never the URL's path or query."""
    host = host_of(url)
    kind = type(exc).__name__
    if isinstance(exc, requests.ReadTimeout):
        within = f" within {timeout:g} s" if timeout else ""
        return f"{kind}: no answer from {host}{within} (it may have arrived)"
    if isinstance(exc, requests.ConnectionError):
        if not sent_before_failing(exc):
            return f"{kind}: no connection to {host}"
        return f"{kind}: the connection to {host} was lost (it may have arrived)"
    return f"{kind}: the request to {host} failed"


def post_json(url: str, payload: dict, *, policy: HttpRetry | None = None,
              timeout: float = 10.0, http: requests.Session | None = None) -> tuple[bool, str]:
    """POST ``payload`` as JSON under the policy. Returns ``(delivered, detail)``, never raises.

    ``detail`` names the host and the outcome only (the path of a webhook URL is its secret).
    After a 5xx or a read timeout the POST is not resent here: it may have been delivered.
    """
    http = http or session(policy)
    try:
        response = http.post(url, json=payload, timeout=timeout)
    except requests.RequestException as exc:
        return False, describe_failure(exc, url, timeout)
    if response.status_code < 300:
        return True, f"HTTP {response.status_code}"
    tries = 1 + len(getattr(getattr(response.raw, "retries", None), "history", ()) or ())
    detail = f"HTTP {response.status_code} from {host_of(url)}"
    if tries > 1:
        detail += f" after {tries} attempts"
    if response.status_code >= 500:
        detail += " (not resent: it may have arrived)"
    return False, detail
