"""Robustness and scale of the queue: paused tenants, indexes, migration of older stores, the
worker's incremental read of the queue, and the `automl` extra kept out of the gate's install."""
from __future__ import annotations

import csv
import os
import random
import sqlite3
import subprocess
import sys
import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from automl_runner.candidates.catalogue import Candidate, load_catalogue
from automl_runner.cli import main
from automl_runner.errors import StoreError
from automl_runner.datasets.schema import infer_schema
from automl_runner.store import open_store
from automl_runner.worker.worker import SchedulerFeed, Worker, WorkerOptions
from store_fixtures import PG_URL



@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))




def _dataset(tmp_path, name="data.csv", n=60, seed=0):
    rng = np.random.default_rng(seed)
    path = tmp_path / name
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "label"])
        for _ in range(n):
            a, b, c = rng.normal(size=3)
            w.writerow([round(a, 4), round(b, 4), round(c, 4), int(a - b > 0)])
    return str(path)


# --------------------------------------------------------------------------------------------
# a tenant whose dataset changed is paused


def test_a_changed_dataset_pauses_its_tenant_after_the_first_failure(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    bad, good = _dataset(tmp_path, "bad.csv"), _dataset(tmp_path, "good.csv", seed=1)
    only = ["logreg-C1", "gaussian-nb", "lda"]
    with open_store(url) as s:
        s.add_tenant("edited", bad, infer_schema(bad, "label"), load_catalogue(), only=only)
        s.add_tenant("fine", good, infer_schema(good, "label"), load_catalogue(), only=only)
    with open(bad, "a") as fh:
        fh.write("1,2,3,1\n")
    results = Worker(url, WorkerOptions(exit_when_idle=True, poll_seconds=0.05, promote=False)).run()
    edited = [r for r in results if r.tenant == "edited"]
    assert [r.status for r in edited] == ["failed"]  # one failure, not one per decision
    assert sorted(r.candidate for r in results if r.tenant == "fine" and r.status == "done") == sorted(only)
    with open_store(url) as s:
        st = {r.name: r for r in s.status()}
        assert "changed since it was submitted" in st["edited"].paused and st["fine"].paused is None
        assert (st["edited"].failed, st["edited"].queued) == (1, 2)
    # a fresh worker (another process, another machine) does not choose it either
    assert Worker(url, WorkerOptions(exit_when_idle=True, poll_seconds=0.05)).run() == []
    r = CliRunner().invoke(main, ["status", "--store", url])
    assert "PAUSED" in r.output and "submit it again with --replace to resume" in r.output
    # re-submitting resumes it, on the dataset as it is now
    r = CliRunner().invoke(main, ["submit", bad, "--store", url, "--name", "edited", "--target", "label",
                                  "--replace", *sum((["--only", c] for c in only), [])])
    assert r.exit_code == 0, r.output
    results = Worker(url, WorkerOptions(exit_when_idle=True, poll_seconds=0.05, promote=False)).run()
    assert sorted((r.candidate, r.status) for r in results) == sorted((c, "done") for c in only)
    with open_store(url) as s:
        assert {r.name: r.paused for r in s.status()} == {"edited": None, "fine": None}


def test_a_pause_for_an_old_submission_does_not_hit_the_new_one(store_url, tmp_path):
    data = _dataset(tmp_path)
    schema = infer_schema(data, "label")
    with open_store(store_url) as s:
        s.add_tenant("t", data, schema, load_catalogue(), only=["gaussian-nb"])
        assert not s.pause_tenant("t", "old dataset changed", fingerprint="0" * 64)
        assert s.paused_tenants() == {}
        assert s.pause_tenant("t", "dataset changed", fingerprint=schema.fingerprint)
        assert not s.pause_tenant("t", "again", fingerprint=schema.fingerprint)  # already paused
        assert s.paused_tenants() == {"t": "dataset changed"}


# --------------------------------------------------------------------------------------------
# indexes and the migration of stores made before these columns existed


def _indexes(store) -> set[str]:
    if store.kind == "sqlite":
        return {r[0] for r in store._read("SELECT name FROM sqlite_master WHERE type = 'index'")}
    return {r[0] for r in store._read("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}


def test_hot_queries_have_indexes(store_url):
    with open_store(store_url) as s:
        assert {"trials_tenant_status", "trials_changed", "tenants_changed", "trial_events_trial",
                "promotions_tenant"} <= _indexes(s)
        if s.kind == "sqlite":
            plan = " ".join(str(r) for r in s._read(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM trials WHERE tenant = ? AND status = ?", ("t", "done")))
            assert "trials_tenant_status" in plan
            plan = " ".join(str(r) for r in s._read(
                "EXPLAIN QUERY PLAN SELECT id FROM trials WHERE changed_at >= ?", (0.0,)))
            assert "trials_changed" in plan


OLD_TRIALS = """CREATE TABLE trials (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, candidate TEXT NOT NULL,
 status TEXT NOT NULL, worker TEXT, device TEXT, lease_token TEXT, lease_expires DOUBLE PRECISION,
 heartbeat DOUBLE PRECISION, queued_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION,
 finished_at DOUBLE PRECISION, score DOUBLE PRECISION, cost DOUBLE PRECISION, onnx_path TEXT, onnx_sha256 TEXT,
 attempts INTEGER NOT NULL DEFAULT 0, error TEXT, UNIQUE (tenant, candidate))"""
OLD_TENANTS = """CREATE TABLE tenants (name TEXT PRIMARY KEY, dataset TEXT NOT NULL, fingerprint TEXT NOT NULL,
 schema_json TEXT NOT NULL, output TEXT, repository TEXT, model_path TEXT, excluded TEXT NOT NULL,
 only_candidates TEXT, margin DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL)"""


def test_an_older_store_gains_the_new_columns_once(tmp_path):
    path = tmp_path / "old.db"
    data = _dataset(tmp_path)
    schema = infer_schema(data, "label")
    con = sqlite3.connect(path)
    con.execute(OLD_TENANTS)
    con.execute(OLD_TRIALS)
    con.execute("INSERT INTO tenants VALUES ('t', ?, ?, ?, NULL, NULL, NULL, '[]', '[\"gaussian-nb\", \"lda\"]', 0.01, 100.0)",
                (data, schema.fingerprint, schema.to_json()))
    con.execute("INSERT INTO trials (tenant, candidate, status, queued_at, finished_at, score, cost, attempts) "
                "VALUES ('t', 'gaussian-nb', 'done', 100.0, 150.0, 0.8, 1.0, 1)")
    con.execute("INSERT INTO trials (tenant, candidate, status, queued_at, attempts) VALUES ('t', 'lda', 'queued', 100.0, 0)")
    con.commit()
    con.close()
    for _ in range(2):  # the second open finds everything in place and changes nothing
        with open_store(f"sqlite:///{path}") as s:
            cols = {r[1] for r in s._read("PRAGMA table_info(trials)")}
            assert {"ran_on", "fidelity", "changed_at"} <= cols
            rows = {c.candidate: c.changed_at for c in s.trial_changes()}
            assert rows == {"gaussian-nb": 150.0, "lda": 100.0}
            assert [(t.candidate, t.ran_on, t.fidelity) for t in s.trials()] == [("gaussian-nb", None, None), ("lda", None, None)]
    # and it works as a queue: the old queued trial runs and is recorded with its device
    results = Worker(f"sqlite:///{path}", WorkerOptions(exit_when_idle=True, poll_seconds=0.05, promote=False)).run()
    assert [(r.candidate, r.status, r.ran_on) for r in results] == [("lda", "done", "cpu")]


def test_an_older_postgres_store_gains_the_new_columns_once(tmp_path):
    import psycopg

    schema_name = f"automl_old_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{schema_name}"')
        con.execute(f'SET search_path TO "{schema_name}"')
        con.execute(OLD_TENANTS)
        con.execute(OLD_TRIALS.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"))
        con.execute("INSERT INTO tenants VALUES ('t', 'd.csv', 'f', '{}', NULL, NULL, NULL, '[]', NULL, 0.01, 100.0)")
        con.execute("INSERT INTO trials (tenant, candidate, status, queued_at, finished_at, score, attempts) "
                    "VALUES ('t', 'c', 'done', 100.0, 150.0, 0.8, 1)")
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema_name}"
    try:
        for _ in range(2):
            with open_store(url) as s:
                assert [(c.candidate, c.changed_at) for c in s.trial_changes()] == [("c", 150.0)]
                assert "trials_tenant_status" in _indexes(s)
    finally:
        with open_store(url, create=False) as s:
            s.drop_all()


# --------------------------------------------------------------------------------------------
# the worker's incremental read


class _Recorder:
    def __init__(self):
        self.calls = []

    def observe(self, tenant, candidate, quality, cost):
        self.calls.append(("observe", tenant, candidate))

    def start(self, tenant, candidate):
        self.calls.append(("start", tenant, candidate))

    def choose(self, pending):
        t = next(iter(pending))
        return t, pending[t][0]


def _fake_catalogue(n):
    return [Candidate(f"c{i:02d}", "fake", dict) for i in range(n)]


def _full_pending(store, runnable, paused=()):
    return {t: [c for c in cs if c in runnable] for t, cs in store.snapshot().pending.items()
            if t not in paused and any(c in runnable for c in cs)}


def test_the_incremental_feed_matches_a_full_read_under_random_changes(store_url, tmp_path):
    """Claims, results, failures, releases, expiries, retries, new and re-submitted tenants, made
    by other connections in a random order: after each step, the feed's view of the queue equals
    a full read, and every done trial was fed to the scheduler exactly once."""
    data = _dataset(tmp_path)
    schema = infer_schema(data, "label")
    cat = _fake_catalogue(6)
    runnable = {c.name for c in cat[:5]}  # c05 is for other workers
    rng = random.Random(7)
    other = open_store(store_url)
    mine = open_store(store_url)
    for t in ("t1", "t2", "t3"):
        other.add_tenant(t, data, schema, cat)
    rec = _Recorder()
    feed = SchedulerFeed(mine, lambda: rec, runnable=runnable)
    feed.SLACK = 0.5
    claims = []
    tenants = ["t1", "t2", "t3"]
    for step in range(60):
        op = rng.choice(["claim", "claim", "complete", "fail", "release", "expire", "retry", "tenant", "pause"])
        if op == "claim":
            snap = other.snapshot().pending
            if snap:
                t = rng.choice(sorted(snap))
                c = other.try_claim(t, rng.choice(snap[t]), "w2", "cpu", lease_seconds=60)
                if c:
                    claims.append(c)
        elif op in ("complete", "fail", "release", "expire") and claims:
            c = claims.pop(rng.randrange(len(claims)))
            if op == "complete":
                other.complete(c, "w2", rng.random(), 1.0, None, None, ran_on="cpu")
            elif op == "fail":
                other.fail(c, "w2", "boom")
            elif op == "release":
                other.release(c, "w2")
            else:
                with other._tx() as cur:
                    other._exec(cur, "UPDATE trials SET lease_expires = 0 WHERE id = ?", (c.trial_id,))
                other.requeue_expired(max_attempts=10)
        elif op == "retry":
            other.retry_failed()
        elif op == "tenant":
            name = rng.choice(tenants + [f"t{len(tenants) + 1}"])
            if name not in tenants:
                tenants.append(name)
            other.add_tenant(name, data, schema, cat, replace=True)
            claims = [c for c in claims if c.tenant != name]
        elif op == "pause":
            other.pause_tenant(rng.choice(tenants), "dataset changed")
        view = feed.refresh()
        paused = set(other.paused_tenants())
        assert feed.view() == _full_pending(other, runnable, paused), f"step {step} ({op})"
        assert set(feed.paused) == paused
        assert sorted(r[0] for r in view.running) == sorted(t.id for t in other.trials() if t.status == "running")
    done = sorted((t.tenant, t.candidate) for t in other.trials() if t.status == "done")
    # after the last rebuild, each done trial was observed exactly once
    observed = sorted((t, c) for kind, t, c in rec.calls[-len(done) - 200:] if kind == "observe")
    assert set(done) <= set(observed)
    other.close()
    mine.close()


def test_a_decision_reads_what_changed_not_the_whole_queue(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    data = _dataset(tmp_path)
    schema = infer_schema(data, "label")
    cat = _fake_catalogue(20)
    with open_store(url) as s:
        for i in range(30):
            s.add_tenant(f"t{i:02d}", data, schema, cat)
    w = Worker(url, WorkerOptions(promote=False, worker_id="me"), catalogue=cat, chooser_factory=_Recorder)
    read = []
    orig = w.store.trial_changes

    def spy(since=None):
        rows = orig(since)
        read.append(len(rows))
        return rows

    w.store.trial_changes = spy
    w.feed.SLACK = 0.0  # no re-read window: the rows returned are exactly the changed ones
    first = w.take()
    assert read == [600] and first is not None
    w.store.complete(first, w.id, 0.5, 1.0, None, None)
    w.take()
    for _ in range(10):
        read.clear()
        claim = w.take()
        w.store.complete(claim, w.id, 0.5, 1.0, None, None)
        assert sum(read) <= 3, read  # the last change seen, our claim, our result: not 600 rows


def test_status_costs_a_fixed_number_of_queries(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    data = _dataset(tmp_path)
    schema = infer_schema(data, "label")
    cat = _fake_catalogue(3)
    counts = {}
    with open_store(url) as s:
        for n in (3, 30):
            while len(s.tenants()) < n:
                t = f"t{len(s.tenants()):02d}"
                s.add_tenant(t, data, schema, cat)
                c = s.try_claim(t, "c00", "w", "cpu")
                s.complete(c, "w", 0.5, 1.0, None, None)
            calls = []
            orig = s._read
            s._read = lambda q, p=(), _o=orig: calls.append(q) or _o(q, p)
            rows = s.status()
            s._read = orig
            assert len(rows) == n and all(r.best_candidate == "c00" and r.done == 1 for r in rows)
            counts[n] = len(calls)
    assert counts[30] == counts[3]


# --------------------------------------------------------------------------------------------
# the automl extra


def test_the_gate_depends_on_none_of_the_automl_stack():
    import tomllib

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    core = " ".join(project["dependencies"]).lower()
    for heavy in ("psycopg", "skl2onnx", "scikit-learn", "torch", "xgboost", "onnxmltools"):
        assert heavy not in core
    extras = project["optional-dependencies"]
    assert any(d.startswith("psycopg") for d in extras["automl"])
    assert any(d.startswith("skl2onnx") for d in extras["automl"])
    assert {d.split(">")[0] for d in extras["gpu"]} == {"torch", "xgboost", "onnxmltools"}


BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'psycopg', 'skl2onnx', 'sklearn', 'torch', 'xgboost', 'onnxmltools'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_the_gate_runs_without_the_automl_stack(tmp_path):
    """The gate's command line and its model and test-set code import none of the AutoML stack."""
    code = BLOCK + (
        "import easeml_ci.cli, easeml_ci.gate.check, easeml_ci.models, easeml_ci.testsets\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(easeml_ci.cli.main, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_the_automl_cli_names_its_extra_when_it_is_missing(tmp_path):
    data = _dataset(tmp_path)
    code = BLOCK + (
        "from click.testing import CliRunner\n"
        "from automl_runner.cli import main\n"
        f"r = CliRunner().invoke(main, ['submit', {data!r}, '--store', {str(tmp_path / 'q.db')!r}, '--name', 't', "
        "'--target', 'label'])\n"
        "print(r.exit_code); print(r.output)\n"
        f"r = CliRunner().invoke(main, ['status', '--store', 'postgresql://127.0.0.1:5432/test'])\n"
        "print(r.exit_code); print(r.output)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert lines[0] == "2" and "pip install 'easeml-ci[automl]'" in lines[1], out.stdout + out.stderr[-2000:]
    assert "scikit-learn" in lines[1] and "Traceback" not in out.stdout
    i = lines.index("2", 1)
    assert "PostgreSQL store needs the psycopg driver" in lines[i + 1]


def test_driver_errors_without_psycopg(monkeypatch):
    from automl_runner import store

    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert store.driver_errors("OperationalError") == (sqlite3.OperationalError,)
    with pytest.raises(StoreError, match=r"easeml-ci\[automl\]"):
        open_store("postgresql://127.0.0.1:5432/test")
