"""The one HTTP policy (easeml_ci/http.py) and the one redaction helper (easeml_ci/redact.py).

The policy is driven against a scripted server on 127.0.0.1; every wait goes through an
injected sleep and clock, so nothing here really waits. The GitHub-specific cases against the
fake API are in test_github_api.py; the webhook end to end in test_alerts.py.
"""
from __future__ import annotations

import ast
import email.utils
import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from easeml_ci.github.api import GitHubClient
from easeml_ci.github.workflow import mask_secrets
from easeml_ci.http import (
    DEFAULT_MAX_WAIT,
    FinalAnswer,
    GitHubRetry,
    HttpRetry,
    describe_failure,
    post_json,
    rate_limit_kind,
    session,
)
from easeml_ci.redact import redact, redact_url, secret_parts

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3tW3bh00kT0ken"
HOOK_PATH = f"/services/T0A1B2C3D/B0A1B2C3D/{SECRET}"


class Scripted:
    """Answers each request with the next (status, headers, body) of a script, then 200."""

    def __init__(self, script=()):
        self.script = list(script)
        self.seen: list[str] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                me.seen.append(self.command)
                status, headers, body = me.script.pop(0) if me.script else (200, {}, {"ok": 1})
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(script=()):
        servers.append(Scripted(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def http(policy_cls=HttpRetry, **kw):
    slept: list[float] = []
    kw.setdefault("clock", lambda: 1000.0)
    return session(policy_cls(sleep=slept.append, **kw)), slept


# --- which requests are retried ----------------------------------------------------------------
@pytest.mark.parametrize("method, retried", [("GET", True), ("PUT", True), ("POST", False),
                                             ("PATCH", False)])
def test_5xx_is_retried_for_idempotent_methods_only(scripted, method, retried):
    srv = scripted([(502, {}, {"message": "bad gateway"})])
    s, slept = http()
    got = s.request(method, srv.url + "/x", json={}, timeout=5)
    assert got.status_code == (200 if retried else 502)
    assert srv.seen == [method] * (2 if retried else 1)


def test_429_is_retried_for_a_post_too_and_retry_after_is_honoured(scripted):
    srv = scripted([(429, {"Retry-After": "7"}, {}), (429, {"Retry-After": "11"}, {})])
    s, slept = http()
    assert s.post(srv.url + "/x", json={}, timeout=5).status_code == 200
    assert slept == [7.0, 11.0] and srv.seen == ["POST"] * 3


def test_retry_after_as_an_http_date_is_read_against_the_injected_clock(scripted):
    when = email.utils.formatdate(1000 + 42, usegmt=True)
    srv = scripted([(503, {"Retry-After": when}, {})])
    s, slept = http()
    assert s.get(srv.url + "/x", timeout=5).status_code == 200
    assert slept == [42.0]


def test_all_waits_of_one_request_stay_within_the_bound(scripted):
    srv = scripted([(429, {"Retry-After": "200"}, {}), (429, {"Retry-After": "200"}, {})])
    s, slept = http()
    got = s.post(srv.url + "/x", json={}, timeout=5)
    assert got.status_code == 429 and slept == [200.0]  # 400 s would pass the 300 s bound
    assert sum(slept) <= DEFAULT_MAX_WAIT


def test_backoff_is_urllib3s_and_the_attempts_are_bounded(scripted):
    srv = scripted([(503, {}, {})] * 10)
    s, slept = http(total=3, backoff_factor=0.5)
    assert s.get(srv.url + "/x", timeout=5).status_code == 503
    assert slept == [1.0, 2.0] and len(srv.seen) == 4  # no wait before the first retry


# --- GitHub's rate limits --------------------------------------------------------------------
@pytest.mark.parametrize("status, headers, message, kind", [
    (403, {}, "You have exceeded a secondary rate limit.", "secondary"),
    (429, {}, "You have exceeded a secondary rate limit.", "secondary"),
    (403, {"retry-after": "30"}, "whatever", "secondary"),
    (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9"}, "API rate limit exceeded", "primary"),
    (403, {"X-RateLimit-Remaining": "0"}, "", "primary"),
    (429, {}, "", "secondary"),
    (403, {}, "Resource not accessible by integration", None),
    (403, {"x-ratelimit-remaining": "4999"}, "Must have admin rights to Repository.", None),
    (404, {"retry-after": "1"}, "rate limit", None),
])
def test_rate_limit_kind(status, headers, message, kind):
    assert rate_limit_kind(status, headers, message) == kind


def test_a_secondary_limit_without_retry_after_waits_at_least_a_minute_doubling(scripted):
    body = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}
    srv = scripted([(403, {}, body), (403, {}, body)])
    s, slept = http(GitHubRetry)
    assert s.post(srv.url + "/x", json={}, timeout=5).status_code == 200
    assert slept == [60.0, 120.0]


def test_a_primary_limit_waits_until_the_reset_and_gives_up_beyond_the_bound(scripted):
    srv = scripted([(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1100"}, {}),
                    (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "99999"}, {})])
    s, slept = http(GitHubRetry)
    with pytest.raises(FinalAnswer) as info:
        s.get(srv.url + "/x", timeout=5)
    assert slept == [101.0] and info.value.rate_limit == "primary"
    assert info.value.retry_in == 99999 - 1000 + 1


def test_a_plain_403_is_final_and_keeps_its_message(scripted):
    srv = scripted([(403, {}, {"message": "Resource not accessible by integration"})])
    s, slept = http(GitHubRetry)
    with pytest.raises(FinalAnswer) as info:
        s.post(srv.url + "/x", json={}, timeout=5)
    assert info.value.rate_limit is None and info.value.status == 403
    assert info.value.message == "Resource not accessible by integration" and slept == []


def test_every_http_call_in_the_product_goes_through_the_policy():
    """Only easeml_ci/http.py makes requests sessions; nobody else sleeps between HTTP tries."""
    offenders = []
    for path in [*ROOT.glob("easeml_ci/**/*.py"), *ROOT.glob("automl_runner/**/*.py")]:
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                    and func.value.id == "requests":
                offenders.append(f"{rel}: requests.{func.attr}(...)")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                module = getattr(node, "module", None) or ""
                if "urllib.request" in names or module == "urllib.request" or "httpx" in names:
                    offenders.append(f"{rel}: imports another HTTP client")
    offenders = [o for o in offenders if not o.startswith("easeml_ci/http.py")]
    assert offenders == []
    client = GitHubClient("t", "https://api.example")
    assert isinstance(client.session.get_adapter("https://api.example").max_retries, GitHubRetry)


# --- redaction -----------------------------------------------------------------------------
REQUESTS_ERROR = (f"HTTPSConnectionPool(host='hooks.slack.com', port=443): Max retries exceeded "
                  f"with url: {HOOK_PATH} (Caused by NewConnectionError('<urllib3.connection."
                  f"HTTPSConnection object at 0x7f>: Failed to establish a new connection'))")


@pytest.mark.parametrize("text, secrets, gone, kept", [
    (REQUESTS_ERROR, [], [SECRET, "T0A1B2C3D"], ["hooks.slack.com", "Max retries exceeded"]),
    (f"POST https://hooks.slack.com{HOOK_PATH} failed", [], [SECRET, "/services"],
     ["https://hooks.slack.com/…"]),
    ("fetch https://user:pa55word@git.example/x?token=abc", [], ["pa55word", "token=abc", "user"],
     ["https://git.example/…"]),
    ("token ghs_16C7e42F292c6912E7710c838347Ae178B4a in a message", [], ["ghs_16C7e42F"], ["in a message"]),
    ("Authorization: Bearer abcdefghijklmnop0123", [], ["abcdefghijklmnop0123"], ["Authorization"]),
    (f"the hook said no: {SECRET.upper()} {SECRET}", [f"https://h.example{HOOK_PATH}"], [SECRET],
     [SECRET.upper()]),
    ("key=aGVsbG8gd29ybGQ= rejected", ["aGVsbG8gd29ybGQ="], ["aGVsbG8gd29ybGQ="], ["rejected"]),
    ("HTTP 500 from 127.0.0.1:8080", [f"http://127.0.0.1:8080{HOOK_PATH}"], [],
     ["HTTP 500 from 127.0.0.1:8080"]),
])
def test_redact(text, secrets, gone, kept):
    out = redact(text, secrets)
    for g in gone:
        assert g not in out
    for k in kept:
        assert k in out


def test_secret_parts_of_a_webhook_url_and_the_masks_agree():
    url = f"https://hooks.slack.com{HOOK_PATH}?x=1"
    parts = secret_parts(url)
    assert {url, HOOK_PATH, SECRET, "T0A1B2C3D", "B0A1B2C3D"} <= set(parts)
    assert "services" not in parts  # masking a word would blank it in every log line
    assert redact_url(url) == "https://hooks.slack.com/…"
    out = io.StringIO()
    mask_secrets(out, key="k1\nk2", token="ghs_tok", webhooks=[url, None])
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["::add-mask::k1", "::add-mask::k2", "::add-mask::ghs_tok"]
    assert {f"::add-mask::{p}" for p in parts} == set(lines[3:])


def test_failures_are_described_by_host_and_urllib3s_log_is_redacted(caplog, scripted):
    srv = scripted()
    port = srv.url.rsplit(":", 1)[1]
    srv.close()
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{port}{HOOK_PATH}"
    delivered, detail = post_json(url, {"text": "x"}, policy=HttpRetry(2, sleep=lambda s: None))
    assert not delivered and detail == f"ConnectionError: no connection to 127.0.0.1:{port}"
    assert "Retrying" in caplog.text and SECRET not in caplog.text and "T0A1B2C3D" not in caplog.text
    timeout = requests.ReadTimeout("HTTPConnectionPool(...): Read timed out. (read timeout=10)")
    assert describe_failure(timeout, url, 10) == \
        f"ReadTimeout: no answer from 127.0.0.1:{port} within 10 s (it may have arrived)"


def test_a_webhook_post_is_not_resent_after_a_read_timeout():
    arrived = []

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            arrived.append(1)
            time.sleep(1.0)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}{HOOK_PATH}"
        delivered, detail = post_json(url, {"text": "x"}, timeout=0.3,
                                      policy=HttpRetry(sleep=lambda s: None))
    finally:
        server.shutdown()
        server.server_close()
    assert not delivered and "ReadTimeout" in detail and "may have arrived" in detail
    assert arrived == [1] and SECRET not in detail
