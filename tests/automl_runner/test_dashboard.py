"""The dashboard's pages and JSON API on SQLite and PostgreSQL stores with real trials: what each
route says, that it agrees with `easeml-automl status --json`, that hostile text stays text, that
no secret reaches a page, that it never writes, and that another host needs a token."""
from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import numpy as np

import pytest
from click.testing import CliRunner

from automl_runner.cli import main
from automl_runner.dashboard import create_app
from test_dashboard_data import (HOSTILE_CARD, HOSTILE_CATEGORY, HOSTILE_COLUMN, NEXT_CHOICE, RUNGS, SINK_SECRET,
                                 build_ledger, build_owner, build_queue, status_json)

TOKEN = "t0ken-" + "x" * 20


@pytest.fixture
def queue(store_url, tmp_path):
    facts = build_queue(store_url, tmp_path)
    facts.update(build_ledger(tmp_path))
    facts["url"] = store_url
    app = create_app(store_url, config_path=facts["config"])
    facts["client"] = app.test_client()
    return facts


def test_overview_shows_each_tenants_best_counts_promotion_and_devices(queue):
    c = queue["client"]
    api = c.get("/api/tenants").get_json()
    alpha = {t["name"]: t for t in api["tenants"]}["alpha"]
    assert (alpha["best_candidate"], alpha["best_score"]) == ("gaussian-nb", 0.875)
    assert (alpha["done"], alpha["running"], alpha["queued"], alpha["stopped_early"]) == (3, 1, 1, 1)
    assert alpha["running_trials"] == [{"candidate": "knn-15", "device": "cuda:0", "worker": "w-gpu"}]
    assert alpha["pull_request"] == "https://github.com/acme/models/pull/7"
    assert api["totals"] == {"tenants": 2, "done": 3, "running": 1, "queued": 3, "failed": 0, "stopped_early": 1}
    page = c.get("/").get_data(as_text=True)
    assert "0.8750" in page and "knn-15 on cuda:0" in page and 'href="/tenants/alpha"' in page


def test_api_agrees_with_status_json(queue):
    cli = {t["name"]: t for t in status_json(queue["url"])["tenants"]}
    api = {t["name"]: t for t in queue["client"].get("/api/tenants").get_json()["tenants"]}
    assert set(cli) == set(api) == {"alpha", "beta"}
    for name in cli:
        for key in ("task", "metric", "best_candidate", "best_score", "done", "running", "queued", "failed",
                    "promoted_candidate", "promoted_score", "pull_request", "promotion_status", "paused"):
            assert api[name][key] == cli[name][key], (name, key)
        assert [r["candidate"] for r in api[name]["running_trials"]] == cli[name]["running_candidates"]
        assert api[name]["stopped_early"] == len(cli[name]["stopped_early"])


def test_tenant_page_pages_and_sorts_trials_and_draws_charts(queue):
    c = queue["client"]
    d = c.get("/api/tenants/alpha?sort=score&order=desc&per_page=2").get_json()
    assert [r["score"] for r in d["trials"]["rows"]] == [0.875, 0.81]
    assert d["trials"]["pages"] == 3 and d["trials"]["total"] == 5
    last = c.get("/api/tenants/alpha?sort=score&order=desc&per_page=2&page=3").get_json()["trials"]["rows"]
    assert last[0]["score"] is None  # unscored trials sort last either way
    asc = c.get("/api/tenants/alpha?sort=score&order=asc").get_json()["trials"]["rows"]
    assert [r["score"] for r in asc][:3] == [0.7, 0.81, 0.875]
    assert [s["candidate"] for s in d["stopped"]] == ["decision-tree-d5"] and d["stopped"][0]["fidelity"] == 0.25
    assert d["fingerprint"] == hashlib.sha256(Path(d["dataset"]).read_bytes()).hexdigest()
    page = c.get("/tenants/alpha").get_data(as_text=True)
    for chart in ("best", "regret", "stopped"):
        assert f'data-chart="{chart}"' in page
    # best-so-far steps up to the final best; regret ends at 0
    assert page.count('class="dot"') == 2 * 3


@pytest.mark.parametrize("query, fragment", [
    ("sort=lease_token", "sort must be one of"), ("order=sideways", "order must be asc or desc"),
    ("page=0", "page must be >= 1"), ("per_page=100000", "per_page in 1..500"), ("page=x", "whole numbers"),
])
def test_bad_query_is_a_400_naming_the_value(queue, query, fragment):
    r = queue["client"].get(f"/api/tenants/alpha?{query}")
    assert r.status_code == 400 and fragment in r.get_json()["error"]


def test_unknown_names_are_404(queue):
    c = queue["client"]
    assert c.get("/api/tenants/nope").status_code == 404
    assert c.get("/trials/99999").status_code == 404
    assert c.get("/api/testsets/" + "cd" * 32).status_code == 404


def test_trial_page_shows_candidate_device_score_log_and_card(queue):
    c = queue["client"]
    best = c.get(f"/api/trials/{queue['best_trial']}").get_json()
    assert (best["candidate"], best["ran_on"], best["score"]) == ("gaussian-nb", "cpu", 0.875)
    assert [e["event"] for e in best["log"]] == ["claimed", "done"]
    assert best["model_card"]["text"] == HOSTILE_CARD and best["promotion"]["status"] == "opened"
    assert best["hyperparameters"] is not None
    running = c.get(f"/trials/{queue['running_trial']}").get_data(as_text=True)
    assert re.search(r'id="trial-device"[^>]*>cuda:0<', running)


def test_workers_show_heartbeats_leases_and_holdings(queue):
    w = {x["worker"]: x for x in queue["client"].get("/api/workers").get_json()["workers"]}
    assert w["w-gpu"]["devices"] == ["cuda:0"] and [h["candidate"] for h in w["w-gpu"]["holds"]] == ["knn-15"]
    assert w["w-gpu"]["heartbeat"] is not None and 0 < w["w-gpu"]["holds"][0]["lease_left"] <= 60
    assert w["w-cpu"]["holds"] == [] and w["w-cpu"]["finished"] == 3


def test_testsets_show_steps_left_bits_and_label_request(queue):
    c = queue["client"]
    d = c.get("/api/testsets").get_json()
    (ts,) = d["testsets"]
    assert (ts["used"], ts["remaining"], ts["status"]) == (queue["used"], queue["remaining"], "active")
    assert [s["verdict"] for s in ts["steps"]] == queue["bits"]
    assert [s["pull_request"] for s in ts["steps"]] == [11, 12, 13]
    assert d["label_request"]["test_examples"] > 0
    page = c.get(f"/testsets/{queue['fingerprint']}").get_data(as_text=True)
    assert re.search(r'id="steps-left"[^>]*>5<', page)


def _every_response(client, facts) -> list[str]:
    routes = ["/", "/api/tenants", "/tenants/alpha", "/api/tenants/alpha", "/tenants/beta", "/api/tenants/beta",
              f"/trials/{facts['best_trial']}", f"/api/trials/{facts['best_trial']}", "/workers", "/api/workers",
              "/testsets", "/api/testsets", f"/testsets/{facts['fingerprint']}",
              f"/api/testsets/{facts['fingerprint']}"]
    out = []
    for r in routes:
        resp = client.get(r)
        assert resp.status_code == 200, r
        out.append(resp.get_data(as_text=True))
    return out


def test_hostile_column_names_categories_and_card_text_stay_text(queue):
    c = queue["client"]
    for page in (c.get("/tenants/beta").get_data(as_text=True),
                 c.get(f"/trials/{queue['best_trial']}").get_data(as_text=True)):
        assert "<script>alert" not in page and "<img src=x" not in page and "<script>document" not in page
    beta = c.get("/tenants/beta").get_data(as_text=True)
    assert "&lt;script&gt;alert(" in beta and "&lt;img src=x onerror=alert(1)&gt;" in beta
    assert HOSTILE_COLUMN in str(c.get("/api/tenants/beta").get_json()["schema"]["features"])
    assert HOSTILE_CATEGORY in str(c.get("/api/tenants/beta").get_json()["schema"]["features"])
    # the only scripts a page loads are the dashboard's own file; CSP forbids any other
    for page in (beta,):
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/dashboard.js" defer>']
    assert "script-src 'self'" in c.get("/").headers["Content-Security-Policy"]


def test_no_secret_reaches_any_page(queue, monkeypatch):
    app = create_app(queue["url"], config_path=queue["config"], token=TOKEN)
    client = app.test_client()
    client.get("/?token=" + TOKEN)  # sets the cookie
    pages = _every_response(client, queue)
    for text in pages:
        for secret in (TOKEN, "SECRET-HOOK-PATH", "hooks.example.com", "private/verdicts", "lease_token"):
            assert secret not in text
        assert not re.search(r"\b[0-9a-f]{32}\b", text), "a lease token (uuid hex) leaked"


def test_token_is_required_and_never_echoed(queue):
    client = create_app(queue["url"], token=TOKEN).test_client()
    assert client.get("/api/tenants").status_code == 401
    assert client.get("/api/tenants", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/tenants", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    r = client.get("/tenants/alpha?token=" + TOKEN + "&sort=score")
    assert r.status_code == 302 and TOKEN not in r.headers["Location"] and "sort=score" in r.headers["Location"]
    assert client.get("/tenants/alpha").status_code == 200  # the cookie now


def test_only_get_routes(queue):
    c = queue["client"]
    for method in ("post", "put", "delete", "patch"):
        assert getattr(c, method)("/api/tenants").status_code == 405


def test_reading_every_page_writes_nothing(queue, tmp_path):
    before = status_json(queue["url"])
    ledger_files = sorted((tmp_path / ".easeml" / "ledger").rglob("*"))
    ledger_bytes = [p.read_bytes() for p in ledger_files if p.is_file()]
    _every_response(queue["client"], queue)
    assert status_json(queue["url"]) == before
    assert [p.read_bytes() for p in ledger_files if p.is_file()] == ledger_bytes


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_another_host_without_token_is_refused(tmp_path, host):
    db = tmp_path / "q.db"
    from automl_runner.store import open_store

    open_store(str(db)).close()
    res = CliRunner().invoke(main, ["dashboard", "--store", str(db), "--host", host], env={"EASEML_DASHBOARD_TOKEN": None})
    assert res.exit_code == 2
    assert "not a loopback address" in res.stderr and "--token" in res.stderr


def test_short_token_and_missing_store_are_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["dashboard", "--store", str(tmp_path / "q.db"), "--token", "short"])
    assert res.exit_code == 2 and "at least 16 characters" in res.stderr
    res = CliRunner().invoke(main, ["dashboard", "--store", str(tmp_path / "nope.db")])
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_the_command_serves_the_api_on_loopback_and_asks_for_its_token(tmp_path):
    """`easeml-automl dashboard` as a user runs it: a real server on 127.0.0.1, token required."""
    import http.client
    import os
    import socket
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'q.db'}"
    build_queue(url, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "EASEML_DASHBOARD_TOKEN": TOKEN, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "automl_runner.cli", "dashboard", "--store", url,
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/tenants")
                first = conn.getresponse()
                first.read()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the dashboard did not start listening"
                time.sleep(0.2)
        assert first.status == 401
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/api/tenants", headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200 and '"best_score":0.875' in body.replace(" ", "")
        assert TOKEN not in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the scheduler's next choice ------------------------------------------------------------------

def test_next_choice_shows_what_the_last_claim_recorded_and_not_scheduled_yet_elsewhere(queue):
    c = queue["client"]
    api = {t["name"]: t for t in c.get("/api/tenants").get_json()["tenants"]}
    nc = api["alpha"]["next_choice"]
    assert (nc["candidate"], nc["ei"], nc["expected_seconds"], nc["scheduler"]) == (
        "random-forest-100", 0.0125, 2.5, "multitenant")
    assert nc["ei_per_second"] == pytest.approx(NEXT_CHOICE.ei / NEXT_CHOICE.expected_seconds)
    assert api["beta"]["next_choice"] is None
    page = c.get("/").get_data(as_text=True)
    assert "random-forest-100: 5.00e-3 EI/s" in page and "not scheduled yet" in page
    tenant = c.get("/tenants/alpha").get_data(as_text=True)
    assert re.search(r'id="next-choice"[^>]*>random-forest-100: 5.00e-3 EI/s<', tenant)
    assert re.search(r'id="next-choice"[^>]*>not scheduled yet<', c.get("/tenants/beta").get_data(as_text=True))


def test_a_worker_records_the_schedulers_next_choice_when_it_claims(store_url, tmp_path):
    """The record is what the scheduler itself computes for the tenant's other pending
    candidates at the moment of the claim: the argmax of EI per expected second among them."""
    from automl_runner.worker.worker import Worker, WorkerOptions

    build_queue(store_url, tmp_path)
    w = Worker(store_url, WorkerOptions(scheduler="multitenant", promote=False, worker_id="w-next"))
    try:
        # the worker's own scheduler, copied just before the claim: what it would say
        w.feed.refresh()
        twin = copy.deepcopy(w.feed.scheduler)
        pending = w.feed.view()
        tenant, cand = twin.choose(pending)
        rest = [x for x in pending[tenant] if x != cand]
        claim = w.take()
        assert (claim.tenant, claim.candidate) == (tenant, cand)
        got = w.store.next_choices()[tenant]
    finally:
        w.store.close()
    if not rest:
        assert got[0] is None
        return
    segments, ei, cost = twin.scores({tenant: rest})
    best = int(np.argmax(ei / cost))
    assert got[0] == segments[0][1][best] != cand
    assert got[1] == pytest.approx(ei[best]) and got[2] == pytest.approx(cost[best])
    assert got[3] == pytest.approx(max(ei / cost)) and got[4] == "multitenant" and got[5] == "w-next"
    api = create_app(store_url).test_client().get(f"/api/tenants/{tenant}").get_json()
    assert api["next_choice"]["candidate"] == got[0] and api["next_choice"]["ei_per_second"] == pytest.approx(got[3])


def test_a_store_from_before_the_new_tables_is_read_as_it_is(tmp_path):
    """The dashboard never migrates: a store without trial_rungs / next_choices shows 'not
    scheduled yet' and the one-point chart of stopped trials; a writer's open adds the tables."""
    import sqlite3

    from automl_runner.store import open_store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    build_queue(url, tmp_path)
    con = sqlite3.connect(tmp_path / "old.db")
    con.execute("DROP TABLE trial_rungs")
    con.execute("DROP TABLE next_choices")
    con.commit()
    con.close()
    c = create_app(url).test_client()
    assert c.get("/api/tenants").get_json()["tenants"][0]["next_choice"] is None
    d = c.get("/api/tenants/alpha").get_json()
    assert d["curves"] == [] and d["stopped"][0]["fidelity"] == 0.25
    page = c.get("/tenants/alpha").get_data(as_text=True)
    assert "not scheduled yet" in page and 'class="dot stopped"' in page
    open_store(url).close()  # a writer opens it: the tables are back, empty
    assert c.get("/api/tenants/alpha").get_json()["curves"] == []
    assert {r[0] for r in sqlite3.connect(tmp_path / "old.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")} >= {"trial_rungs", "next_choices"}


# -- learning curves ------------------------------------------------------------------------------

def test_tenant_page_draws_each_trials_rungs_stopped_beside_full_budget(queue):
    c = queue["client"]
    d = c.get("/api/tenants/alpha").get_json()
    curves = {x["candidate"]: x for x in d["curves"]}
    assert set(curves) == set(RUNGS)
    for cand, rungs in RUNGS.items():
        assert curves[cand]["rungs"] == [[f, sc] for f, sc, _sec in rungs]
    assert curves["decision-tree-d5"]["stopped_at"] == 0.25 and curves["gaussian-nb"]["stopped_at"] is None
    page = c.get("/tenants/alpha").get_data(as_text=True)
    stopped = re.findall(r'<g class="curve stopped" data-trial="(\d+)">', page)
    full = re.findall(r'<g class="curve full" data-trial="(\d+)">', page)
    assert stopped == [str(queue["stopped_trial"])] and len(full) == 2
    assert page.count('class="line stopped"') == 1 and page.count('class="line full"') == 1  # logreg: one point
    assert "learning curves: 1 stopped early, 2 to the full budget" in page


def test_a_real_multitenant_hb_worker_keeps_every_rung_of_its_stopped_trials(tmp_path, store_url, monkeypatch):
    """`work --scheduler multitenant-hb`: each trial stopped early keeps the score of every rung
    it reached (rising fidelities up to where it stopped) and then its retry's full-budget score,
    and the tenant page draws them as curves."""
    from automl_runner.store import open_store
    from test_automl_hb_worker import CHEAP, CURVES, ITERATIVE, PLUGIN, _dataset

    d = tmp_path / "plugin"
    (d / "hbplug-0.1.dist-info").mkdir(parents=True)
    (d / "hbplug.py").write_text(PLUGIN)
    (d / "hbplug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: hbplug\nVersion: 0.1\n")
    (d / "hbplug-0.1.dist-info" / "entry_points.txt").write_text("[easeml_automl.candidates]\nhb = hbplug:candidates\n")
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runner = CliRunner()
    for name, noise, seed in (("easy", 0.1, 0), ("hard", 1.0, 1)):
        args = ["submit", _dataset(tmp_path, name, noise, seed), "--store", store_url, "--name", name, "--target", "label"]
        for cand in CHEAP + ITERATIVE:
            args += ["--only", cand]
        assert runner.invoke(main, args).exit_code == 0
    r = runner.invoke(main, ["work", "--store", store_url, "--scheduler", "multitenant-hb", "--curves", CURVES,
                             "--exit-when-idle", "--poll", "0.05", "--no-promote", "--json"])
    assert r.exit_code == 0, r.output
    with open_store(store_url, create=False) as s:
        trials = s.trials()
        rungs = {t.id: s.rungs(t.id) for t in trials}
        choices = s.next_choices()
    stopped = [t for t in trials if t.stopped_at is not None]
    assert stopped, "no trial was stopped early"
    for t in trials:
        fids = [f for f, _s, _sec in rungs[t.id]]
        assert fids == sorted(fids) and fids[-1] == 1.0, (t.candidate, rungs[t.id])
        assert rungs[t.id][-1][1] == pytest.approx(t.score)  # the recorded score is the last rung's
        if t.stopped_at is not None:
            below = [f for f in fids if f < 1]
            assert below and below[-1] == pytest.approx(t.stopped_at), (t.candidate, rungs[t.id])
    # every tenant's last claim left nothing to try
    assert {k: v[0] for k, v in choices.items()} == {"easy": None, "hard": None}
    c = create_app(store_url).test_client()
    for tenant in ("easy", "hard"):
        page = c.get(f"/tenants/{tenant}").get_data(as_text=True)
        ids = {str(t.id) for t in stopped if t.tenant == tenant}
        assert set(re.findall(r'<g class="curve stopped" data-trial="(\d+)">', page)) == ids
        assert "nothing left to try" in page


# -- the owner's view of pending label requests ----------------------------------------------------

@pytest.fixture
def owner(tmp_path):
    facts = build_owner(tmp_path)
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    facts.update(build_queue(url, tmp_path), url=url)
    return facts


def _owner_pages(client, facts) -> list[str]:
    fp = facts["owner_fingerprint"]
    return [client.get(r).get_data(as_text=True) for r in
            ("/", "/api/tenants", "/testsets", "/api/testsets", f"/testsets/{fp}", f"/api/testsets/{fp}",
             "/tenants/alpha", "/workers")]


def test_without_the_key_no_label_request_of_the_private_sink_shows(owner, monkeypatch):
    monkeypatch.setenv("OWNER_KEY", owner["key"])  # the key is in the environment, but not named
    c = create_app(owner["url"], config_path=owner["owner_config"]).test_client()
    assert "pending_label_requests" not in c.get(f"/api/testsets/{owner['owner_fingerprint']}").get_json()
    for text in _owner_pages(c, owner):
        for secret in ("req-a7", "req-b9", "req-c1", "Pending label requests", SINK_SECRET, owner["sink"], "sink.jsonl", owner["key"]):
            assert secret not in text


def test_with_the_key_the_test_sets_page_shows_the_latest_request_of_each_pending_pair(owner, monkeypatch):
    monkeypatch.setenv("OWNER_KEY", owner["key"])
    c = create_app(owner["url"], config_path=owner["owner_config"], sink_key_env="OWNER_KEY").test_client()
    fp = owner["owner_fingerprint"]
    got = c.get(f"/api/testsets/{fp}").get_json()["pending_label_requests"]
    assert [{k: r[k] for k in ("pair", "row_ids", "count")} for r in got] == owner["pending"]
    page = c.get(f"/testsets/{fp}").get_data(as_text=True)
    assert re.search(r'id="pending-label-requests".*req-a7, req-a3, req-a5', page, re.S)
    for text in _owner_pages(c, owner):  # never the sink's path, its verdicts, other test sets' requests, the key
        for secret in (SINK_SECRET, owner["sink"], "sink.jsonl", owner["key"], "req-c1", "req-b9", "undecided"):
            assert secret not in text
    for route in ("/", "/testsets", "/api/tenants", "/api/testsets"):  # never on an overview
        assert "req-a7" not in c.get(route).get_data(as_text=True)


@pytest.mark.parametrize("how", ["unset", "wrong key", "webhook sink"])
def test_the_owners_view_is_refused_without_the_right_key_exit_2(owner, monkeypatch, how):
    from easeml_ci.testsets import crypto

    cfg = owner["owner_config"]
    if how == "wrong key":
        monkeypatch.setenv("OWNER_KEY", crypto.generate_key())
    elif how == "webhook sink":
        monkeypatch.setenv("OWNER_KEY", owner["key"])
        text = Path(cfg).read_text().replace(f"private_sink: {owner['sink']}", "private_sink: https://hooks.example.com/x")
        Path(cfg).write_text(text)
    else:
        monkeypatch.delenv("OWNER_KEY", raising=False)
    res = CliRunner().invoke(main, ["dashboard", "--store", owner["url"], "--config", cfg,
                                    "--private-sink-key-env", "OWNER_KEY", "--port", "0"])
    assert res.exit_code == 2, res.output
    assert "OWNER_KEY" in res.output and "Traceback" not in res.output and owner["key"] not in res.output
