"""One redaction helper for everything the product records or shows.

A webhook URL's path is its secret (Slack: ``/services/T…/B…/TOKEN``), a token is a secret, a
test-set key is a secret. Error texts from HTTP libraries quote URLs, so an error recorded as it
comes would put the secret in the ledger, which the repository backend commits to a branch that
anyone with ``contents: read`` can read, and in logs, comments and issues.

:func:`redact` is the one place that cleans a text: given secrets (and the parts of them listed by
:func:`secret_parts`) become ``***``, every URL is cut down to ``scheme://host/…``, and strings
shaped like GitHub or Slack tokens or ``Authorization`` values are removed. It is applied wherever
an error text or a URL is recorded or printed. :func:`secret_parts` is also what the Action asks
the runner to mask (:func:`easeml_ci.github.workflow.mask_secrets`), so both agree.

No third-party imports: the check imports this on every start-up.
"""
from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import unquote, urlsplit

_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#'\"<>()]*)([^\s'\"<>()]*)")
_URLLIB3_PATH = re.compile(r"(with url: )\S+")  # urllib3 names the path without the host
_REQUEST_LINE = re.compile(r"\b(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) /\S*")  # urllib3's debug log
_BARE_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\")]+")
_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
                    r"|xox[abposr]-[A-Za-z0-9-]{10,})")
_AUTH = re.compile(r"(?i)\b(authorization:\s*(?:bearer\s+|token\s+)?|bearer\s+)[A-Za-z0-9._~+/=-]{12,}")
REDACTED = "***"


def host_of(url: str) -> str:
    """``host[:port]`` of ``url``: what may be said about where a request went."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: no credentials, path, query or fragment."""
    parts = urlsplit(url)
    rest = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host_of(url)}{rest}"


def secret_parts(secret: str | None) -> list[str]:
    """The pieces of ``secret`` that must never appear: itself, and for a URL its path and
    query (alone, together, URL-decoded) and each path or query segment that looks like a key
    (8 characters or more, with a digit: Slack's ``T…``/``B…``/token, Discord's id/token; not
    words such as ``services`` or ``webhooks``, which masked would blank every log line)."""
    if not secret or not str(secret).strip():
        return []
    secret = str(secret).strip()
    parts = {secret}
    if "://" in secret:
        url = urlsplit(secret)
        path, query = url.path, url.query
        for piece in (path, query, f"{path}?{query}" if query else "", url.username or "",
                      url.password or ""):
            if piece and piece != "/":
                parts.add(piece)
        parts.update(seg for seg in re.split(r"[/?&=]", f"{path}?{query}")
                     if len(seg) >= 8 and re.search(r"\d", seg))
    parts.update({unquote(p) for p in parts})
    return sorted((p for p in parts if len(p) >= 4), key=len, reverse=True)


def redact(text: object, secrets: Iterable[str | None] = (), *, bare_paths: bool = False) -> str:
    """``text`` with the given secrets, every URL's path and credentials, and token-shaped
    strings removed. Use it wherever an error text or a URL is recorded or shown.

    ``bare_paths``: also cut every ``/absolute/path`` standing alone, as HTTP libraries' logs
    name a request's path without its host (file paths in the text go too, so only for those).
    """
    out = "" if text is None else str(text)
    for secret in secrets:
        for piece in secret_parts(secret):
            out = out.replace(piece, REDACTED)
    out = _URL.sub(lambda m: redact_url(m.group(0)), out)
    out = _URLLIB3_PATH.sub(r"\1…", out)
    out = _REQUEST_LINE.sub(r"\1 /…", out)
    if bare_paths:
        out = _BARE_PATH.sub("/…", out)
    out = _TOKEN.sub(REDACTED, out)
    return _AUTH.sub(lambda m: m.group(1) + REDACTED, out)
