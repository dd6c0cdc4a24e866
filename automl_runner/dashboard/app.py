"""The dashboard's web app: Flask routes over :mod:`.queries`, pages and the JSON API they use.

Flask (with Jinja2 autoescaping every template variable) and waitress (a maintained, pure-Python
WSGI server with a thread pool) serve it. Read-only: only GET routes, and the queries only SELECT.
"""
from __future__ import annotations

import hmac
import ipaddress
import time
from datetime import datetime, timezone

from flask import Flask, jsonify, redirect, render_template, request
from markupsafe import Markup

from . import charts
from .queries import BadQuery, Ledgers, NotFound, Queue

TOKEN_COOKIE = "easeml_dashboard"
#: How often a page polls its JSON route (milliseconds).
REFRESH_MS = 5000

_HEADERS = {
    # Scripts and styles only from this server; no inline script can run even if text slipped out.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _when(t) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(float(t), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _score(x) -> str:
    return "-" if x is None else f"{float(x):.4f}"


def _seconds(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    return f"{x:.0f} s" if abs(x) < 120 else f"{x / 60:.1f} min"


def _exp(x) -> str:
    """``x`` as JavaScript's toExponential(2) writes it (the page's poller formats it the same)."""
    import re

    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{float(x):.2e}")


def next_choice_text(nc) -> str:
    """The scheduler's next choice for a tenant, as the overview and the tenant page show it."""
    if nc is None:
        return "not scheduled yet"
    if nc.get("candidate") is None:
        return "nothing left to try"
    rate = nc.get("ei_per_second")
    return f"{nc['candidate']}: {'-' if rate is None else _exp(rate)} EI/s"


def create_app(store_url: str, *, config_path: str | None = None, token: str | None = None,
               sink_key_env: str | None = None) -> Flask:
    """The app over the store at ``store_url`` (and the ledgers of ``config_path``, if given).

    ``sink_key_env``: the environment variable holding the test-set key; with it (and a config
    whose ``private_sink`` is a file) a test set's page shows its pending label requests (the
    owner's view, :meth:`Ledgers.pending_label_requests`). Without it nothing of the sink is read.

    With ``token``, every request must carry it: ``Authorization: Bearer TOKEN``, or once
    ``?token=TOKEN``, which sets an HttpOnly cookie and redirects to the same page without it
    (so the token never stays in the address bar, a link or a page)."""
    app = Flask(__name__)
    app.jinja_env.autoescape = True  # every template, whatever its name
    app.json.sort_keys = True
    queue = Queue(store_url)
    if sink_key_env and not config_path:
        from easeml_ci.errors import UsageError

        raise UsageError("--private-sink-key-env needs --config: the private sink is the config's private_sink")
    ledgers = Ledgers(config_path, sink_key_env=sink_key_env) if config_path else None
    app.jinja_env.filters.update(when=_when, score=_score, seconds=_seconds, next_choice=next_choice_text)
    app.jinja_env.globals.update(refresh_ms=REFRESH_MS, has_testsets=ledgers is not None)

    @app.before_request
    def _gate():
        request.started = time.perf_counter()
        if token is None:
            return None
        given = request.headers.get("Authorization", "")
        given = given[7:] if given.startswith("Bearer ") else request.cookies.get(TOKEN_COOKIE, "")
        query = request.args.get("token")
        if query is not None and hmac.compare_digest(query.encode(), token.encode()):
            args = {k: v for k, v in request.args.items() if k != "token"}
            from urllib.parse import urlencode

            resp = redirect(request.path + (f"?{urlencode(args)}" if args else ""))
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            return resp
        if not hmac.compare_digest(given.encode(), token.encode()):
            return jsonify(error="this dashboard needs its token: Authorization: Bearer TOKEN, or ?token=TOKEN once"), 401
        return None

    @app.after_request
    def _headers(resp):
        for k, v in _HEADERS.items():
            resp.headers.setdefault(k, v)
        started = getattr(request, "started", None)
        if started is not None:
            resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return resp

    @app.errorhandler(NotFound)
    def _not_found(exc):
        return _error(404, str(exc))

    @app.errorhandler(BadQuery)
    def _bad(exc):
        return _error(400, str(exc))

    def _error(code: int, message: str):
        if request.path.startswith("/api/"):
            return jsonify(error=message), code
        return render_template("error.html", code=code, message=message), code

    def _args():
        a = request.args
        return dict(page=a.get("page"), per_page=a.get("per_page"), sort=a.get("sort"), order=a.get("order"))

    # -- the overview ---------------------------------------------------------------------------
    def overview_data():
        return {"now": queue.now(), "totals": queue.totals(), **queue.tenants(**_args())}

    @app.get("/api/tenants")
    def api_tenants():
        return jsonify(overview_data())

    @app.get("/")
    def overview():
        return render_template("overview.html", d=overview_data(), api=_api_url())

    # -- a tenant -------------------------------------------------------------------------------
    @app.get("/api/tenants/<name>")
    def api_tenant(name):
        return jsonify(queue.tenant(name, **_args()))

    @app.get("/tenants/<name>")
    def tenant(name):
        d = queue.tenant(name, **_args())
        best, regret = charts.best_so_far(d["progress"])
        stopped = charts.learning_curves(d["curves"], d["stopped"], d["progress"])
        return render_template("tenant.html", d=d, best_chart=best, regret_chart=regret, stopped_chart=stopped,
                               api=_api_url())

    # -- a trial --------------------------------------------------------------------------------
    @app.get("/api/trials/<int:trial_id>")
    def api_trial(trial_id):
        return jsonify(queue.trial(trial_id))

    @app.get("/trials/<int:trial_id>")
    def trial(trial_id):
        return render_template("trial.html", d=queue.trial(trial_id), api=_api_url())

    # -- workers --------------------------------------------------------------------------------
    @app.get("/api/workers")
    def api_workers():
        return jsonify(queue.workers())

    @app.get("/workers")
    def workers():
        return render_template("workers.html", d=queue.workers(), api=_api_url())

    # -- test sets ------------------------------------------------------------------------------
    def _ledgers() -> Ledgers:
        if ledgers is None:
            raise NotFound("no test sets: start the dashboard with --config .easeml.yml to show their ledgers")
        return ledgers

    @app.get("/api/testsets")
    def api_testsets():
        return jsonify(_ledgers().testsets())

    @app.get("/testsets")
    def testsets():
        return render_template("testsets.html", d=_ledgers().testsets(), api=_api_url())

    def testset_data(fingerprint):
        led = _ledgers()
        d = led.testset(fingerprint)
        pending = led.pending_label_requests(d["fingerprint"])
        if pending is not None:  # the owner's view: only with the key (absent, not empty, without it)
            d = {**d, "pending_label_requests": pending}
        return d

    @app.get("/api/testsets/<fingerprint>")
    def api_testset(fingerprint):
        return jsonify(testset_data(fingerprint))

    @app.get("/testsets/<fingerprint>")
    def testset(fingerprint):
        return render_template("testset.html", d=testset_data(fingerprint), request_=_ledgers().label_request(),
                               api=_api_url())

    def _api_url() -> Markup | str:
        q = request.query_string.decode("latin-1")
        return "/api" + (request.path if request.path != "/" else "/tenants") + (f"?{q}" if q else "")

    return app
