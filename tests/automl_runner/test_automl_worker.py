"""Workers against SQLite and the real PostgreSQL: four processes at once, one killed mid-trial.

A test plugin (installed by entry point on a temporary path) adds a candidate that is slow to
build, so a worker can be caught in the middle of a trial and killed (SIGKILL) or told to stop
(SIGTERM). The audit trail in ``trial_events`` then shows whether any trial was held by two
workers at once, and whether any was lost.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from automl_runner.candidates.catalogue import load_catalogue
from automl_runner.datasets.schema import infer_schema
from automl_runner.store import open_store
from automl_runner.worker.worker import SchedulerFeed, Worker, WorkerOptions
from store_fixtures import PG_URL
from fake_clock import FakeClock


PLUGIN = '''
import os, time
from sklearn.linear_model import LogisticRegression
from automl_runner.candidates.catalogue import Candidate


def _slow(C=1.0):
    time.sleep(float(os.environ.get("SLOWPLUG_SLEEP", "0")))
    return LogisticRegression(C=C)


def candidates():
    return [
        Candidate("slow-logreg", "test", _slow, {"C": 0.5}),
        Candidate("gpu-logreg", "test", LogisticRegression, {"C": 2.0}, uses_gpu=True),
    ]
'''


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    d = tmp_path / "plugin"
    (d / "slowplug-0.1.dist-info").mkdir(parents=True)
    (d / "slowplug.py").write_text(PLUGIN)
    (d / "slowplug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: slowplug\nVersion: 0.1\n")
    (d / "slowplug-0.1.dist-info" / "entry_points.txt").write_text(
        "[easeml_automl.candidates]\nslow = slowplug:candidates\n")
    monkeypatch.syspath_prepend(str(d))
    return str(d)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    # Tenants without an output directory keep trial models in the user's cache: keep it here.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))




def _dataset(tmp_path, name="data.csv", n=60, seed=0):
    rng = np.random.default_rng(seed)
    path = tmp_path / name
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "label"])
        for _ in range(n):
            a, b, c = rng.normal(size=3)
            w.writerow([round(a, 4), round(b, 4), round(c, 4), int(a - b + 0.3 * rng.normal() > 0)])
    return str(path)


def _spawn(url, plugin, *args, sleep="0"):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([plugin, os.environ.get("PYTHONPATH", "")]),
               SLOWPLUG_SLEEP=sleep, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "automl_runner.cli", "work", "--store", url, "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_running(store, candidate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for t in store.trials():
            if t.candidate == candidate and t.status == "running":
                return t
        time.sleep(0.05)
    raise AssertionError(f"no worker started {candidate} within {timeout}s")




def _wait_polling(admin, app: str, timeout: float = 60.0) -> None:
    """Until the worker connected as ``app`` has polled the queue (read its trials) once."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                         "AND query LIKE %s", (app, "%FROM trials%")).fetchone()[0]:
            return
        time.sleep(0.02)
    raise AssertionError(f"the worker {app} never polled the queue within {timeout}s")


def assert_never_held_twice(events):
    """Per trial, a claim must end (done/failed/expired/released) before the next claim."""
    holder: dict[int, str | None] = {}
    for trial_id, _worker, token, event, _at in events:
        if event == "claimed":
            assert holder.get(trial_id) is None, f"trial {trial_id} claimed while held by lease {holder[trial_id]}"
            holder[trial_id] = token
        elif event in ("done", "failed", "expired", "released"):
            if event != "done" or holder.get(trial_id) is not None:
                assert holder.get(trial_id) == token, f"trial {trial_id}: {event} by a lease that did not hold it"
            holder[trial_id] = None


FAST = ["logreg-C1", "gaussian-nb", "decision-tree-d5", "lda"]


LEASE = 60.0


def _worker_main(url, out_path, sleep, now):
    # A forked child: the parent already imported scikit-learn and skl2onnx, so four workers
    # start in milliseconds instead of seconds; each opens its own database connections.
    os.environ["SLOWPLUG_SLEEP"] = sleep
    # The store's time is `now`, shared by the four workers and moved only by the test: no lease
    # runs out while the machine stalls, and the killed worker's runs out when the test says.
    w = Worker(url, WorkerOptions(lease_seconds=LEASE, heartbeat_seconds=0.5, poll_seconds=0.2,
                                  exit_when_idle=True), clock=lambda: now.value)
    w.install_signal_handlers()
    results = w.run()
    with open(out_path, "w") as fh:
        json.dump([r.to_dict() for r in results], fh)


def _wait_heartbeats_since(store, since, but, timeout=60.0):
    """Until every trial running on a worker other than ``but`` has heartbeated at ``since`` or later."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        behind = store._read("SELECT id FROM trials WHERE status = 'running' AND worker <> ? AND heartbeat < ?",
                             (but, since))
        if not behind:
            return
        time.sleep(0.02)
    raise AssertionError(f"trials {behind} did not heartbeat within {timeout}s")


def test_four_workers_one_killed_mid_trial_lose_nothing(store_url, plugin_path, tmp_path):
    import multiprocessing

    import skl2onnx  # noqa: F401 - imported once here, inherited by the forked workers

    data = _dataset(tmp_path)
    cat = load_catalogue()
    assert "slow-logreg" in {c.name for c in cat}
    with open_store(store_url) as s:
        for name in ("t1", "t2"):
            s.add_tenant(name, data, infer_schema(data, "label"), cat, only=FAST + ["slow-logreg"],
                         output=str(tmp_path / "out" / name))
        n_trials = len(s.trials())
        assert n_trials == 10
    ctx = multiprocessing.get_context("fork")
    start = time.time()
    now = ctx.Value("d", start)
    procs = [ctx.Process(target=_worker_main, args=(store_url, str(tmp_path / f"w{i}.json"), "2", now))
             for i in range(4)]
    for p in procs:
        p.start()
    try:
        with open_store(store_url) as s:
            victim_trial = _wait_running(s, "slow-logreg")
        victim_pid = int(victim_trial.worker.rsplit(":", 1)[1])
        victim = next(p for p in procs if p.pid == victim_pid)
        os.kill(victim_pid, signal.SIGKILL)
        # Every lease so far runs out at start + LEASE. Half a lease later the survivors' heartbeats
        # carry theirs past start + 1.5 x LEASE; the victim's cannot. Then the lease it took at
        # `start` runs out, and only that one.
        now.value = start + LEASE / 2
        with open_store(store_url) as s:
            _wait_heartbeats_since(s, now.value, but=victim_trial.worker)
        now.value = start + LEASE + 1
        for p in procs:
            p.join(timeout=120)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert victim.exitcode == -signal.SIGKILL
    assert [p.exitcode for p in procs if p is not victim] == [0, 0, 0]
    with open_store(store_url) as s:
        trials = s.trials()
        assert [t.status for t in trials] == ["done"] * n_trials, [(t.candidate, t.status, t.error) for t in trials]
        events = s.events()
        assert_never_held_twice(events)
        claims = {}
        for trial_id, worker, _tok, ev, _at in events:
            if ev == "claimed":
                claims.setdefault(trial_id, []).append(worker)
        killed = claims[victim_trial.id]
        assert len(killed) == 2 and killed[0] == victim_trial.worker and killed[1] != victim_trial.worker
        assert all(len(v) == 1 for k, v in claims.items() if k != victim_trial.id)
        assert "expired" in [e[3] for e in events if e[0] == victim_trial.id]
        # every result the survivors report is a trial they really finished, each exactly once
        # (the victim may have finished trials of its own before it was killed: those are in
        # the store, recorded under its worker id, but it never got to write its report)
        reported = [r for i, p in enumerate(procs) if p is not victim
                    for r in json.load(open(tmp_path / f"w{i}.json"))]
        finished_by_survivors = [trial_id for trial_id, worker, _tok, ev, _at in events
                                 if ev == "done" and worker != victim_trial.worker]
        assert sorted(r["trial_id"] for r in reported if r["status"] == "done") == sorted(finished_by_survivors)
        finished_by_anyone = {trial_id for trial_id, _w, _tok, ev, _at in events if ev == "done"}
        assert finished_by_anyone == {t.id for t in trials}
        # and each tenant's best was promoted into its output directory
        for name in ("t1", "t2"):
            best = s.best_trial(name)
            promo = s.last_promotion(name)
            assert promo.trial_id == best.id
            with open(tmp_path / "out" / name / "model.onnx", "rb") as fh, open(best.onnx_path, "rb") as fb:
                assert fh.read() == fb.read()


def test_sigterm_releases_the_trial_and_exits_zero(plugin_path, tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    data = _dataset(tmp_path)
    with open_store(url) as s:
        s.add_tenant("t1", data, infer_schema(data, "label"), load_catalogue(), only=["slow-logreg"])
    p = _spawn(url, plugin_path, "--lease", "30", "--once", sleep="60")
    try:
        with open_store(url) as s:
            _wait_running(s, "slow-logreg")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)  # a worker that waited for the 60 s build times out
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["status"] == "released"
    with open_store(url) as s:
        (t,) = s.trials()
        assert (t.status, t.attempts) == ("queued", 0)
        assert [e[3] for e in s.events()] == ["claimed", "released"]


def test_cpu_worker_never_takes_a_gpu_candidate(plugin_path, tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    data = _dataset(tmp_path)
    with open_store(url) as s:
        s.add_tenant("t1", data, infer_schema(data, "label"), load_catalogue(), only=["gpu-logreg", "gaussian-nb"])
    results = Worker(url, WorkerOptions(device="cpu", exit_when_idle=True, poll_seconds=0.05, promote=False)).run()
    assert [(r.candidate, r.status) for r in results] == [("gaussian-nb", "done")]
    with open_store(url) as s:
        assert {t.candidate: t.status for t in s.trials()} == {"gpu-logreg": "queued", "gaussian-nb": "done"}
    # a GPU worker can run it (these estimators ignore the device; the point is the routing)
    results = Worker(url, WorkerOptions(device="cuda:0", once=True, promote=False)).run()
    assert [(r.candidate, r.status) for r in results] == [("gpu-logreg", "done")]


def test_failing_candidate_is_recorded_and_work_goes_on(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    data = _dataset(tmp_path)
    with open_store(url) as s:
        s.add_tenant("t1", data, infer_schema(data, "label"), load_catalogue(), only=["logreg-C1", "gaussian-nb"])
    with open(data, "a") as fh:  # the dataset changes after submit: trials must refuse it
        fh.write("1,2,3,1\n")
    results = Worker(url, WorkerOptions(exit_when_idle=True, poll_seconds=0.05)).run()
    # the first failure pauses the tenant (tests/test_automl_robustness.py): its other trial waits
    assert [r.status for r in results] == ["failed"]
    with open_store(url) as s:
        assert sorted(t.status for t in s.trials()) == ["failed", "queued"]
        assert all("changed since it was submitted" in t.error for t in s.trials() if t.status == "failed")


class _Recorder:
    def __init__(self):
        self.calls = []

    def observe(self, tenant, candidate, quality, cost):
        self.calls.append(("observe", tenant, candidate))

    def start(self, tenant, candidate):
        self.calls.append(("start", tenant, candidate))

    def choose(self, pending):
        t = sorted(pending)[0]
        return t, pending[t][0]


def test_scheduler_feed_is_incremental_and_rebuilds_after_a_requeue(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    data = _dataset(tmp_path)
    made = []

    def factory():
        made.append(_Recorder())
        return made[-1]

    clock = FakeClock()
    with open_store(url, clock=clock) as s:
        s.add_tenant("t1", data, infer_schema(data, "label"), load_catalogue(), only=FAST)
        feed = SchedulerFeed(s, factory)
        feed.refresh()
        c1 = s.try_claim("t1", "logreg-C1", "other", "cpu", lease_seconds=0.2)
        s.complete(c1, "other", 0.8, 0.1, None, None)
        c2 = s.try_claim("t1", "lda", "other", "cpu", lease_seconds=0.2)
        feed.refresh()
        feed.refresh()  # nothing new: nothing fed twice
        assert made[0].calls == [("observe", "t1", "logreg-C1"), ("start", "t1", "lda")]
        clock.advance(0.3)
        assert s.requeue_expired() == 1  # lda's worker died: the scheduler must forget it is running
        feed.refresh()
        assert len(made) == 2 and feed.rebuilds == 1
        assert made[1].calls == [("observe", "t1", "logreg-C1")]
        assert c2.trial_id not in feed.started


def test_real_scheduler_drives_a_worker_over_two_tenants(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    d1, d2 = _dataset(tmp_path, "a.csv", seed=1), _dataset(tmp_path, "b.csv", seed=2)
    with open_store(url) as s:
        s.add_tenant("a", d1, infer_schema(d1, "label"), load_catalogue(), only=FAST)
        s.add_tenant("b", d2, infer_schema(d2, "label"), load_catalogue(), only=FAST)
    w = Worker(url, WorkerOptions(max_trials=5, promote=False, scheduler="multitenant"))
    results = w.run()
    assert len(results) == 5 and all(r.status == "done" for r in results)
    assert {r.tenant for r in results} == {"a", "b"}  # both tenants get trials early
    with open_store(url) as s:
        assert sum(t.status == "done" for t in s.trials()) == 5
        assert sum(t.status == "queued" for t in s.trials()) == 3


def test_worker_survives_its_postgres_connection_being_cut(tmp_path):
    import threading

    import psycopg

    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_URL} is required for the worker tests: {exc}")
    app = f"easeml-w-{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}schema=automl_r_{uuid.uuid4().hex[:12]}&application_name={app}"
    data = _dataset(tmp_path)
    try:
        w = Worker(url, WorkerOptions(poll_seconds=0.1, max_trials=2, promote=False))
        first = w.store
        th = threading.Thread(target=w.run, daemon=True)
        th.start()
        _wait_polling(admin, app)  # idle in its loop: nothing queued yet
        killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = %s", (app,)).fetchone()[0]
        assert killed >= 1
        with open_store(url) as s:
            s.add_tenant("t1", data, infer_schema(data, "label"), load_catalogue(), only=["gaussian-nb", "lda"])
        th.join(timeout=60)
        assert not th.is_alive()
        assert sorted((r.candidate, r.status) for r in w.results) == [("gaussian-nb", "done"), ("lda", "done")]
        assert w.store is not first  # it did reconnect
    finally:
        s = open_store(url, create=False)
        s.drop_all()
        s.close()
        admin.close()


def test_dataset_missing_on_this_machine_is_left_to_other_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    here, away = _dataset(tmp_path, "here.csv", seed=1), _dataset(tmp_path, "away.csv", seed=2)
    with open_store(url) as s:
        s.add_tenant("here", here, infer_schema(here, "label"), load_catalogue(), only=["gaussian-nb"])
        s.add_tenant("away", away, infer_schema(away, "label"), load_catalogue(), only=["gaussian-nb", "lda"])
    os.rename(away, away + ".elsewhere")  # another machine has it; this one does not
    w = Worker(url, WorkerOptions(exit_when_idle=True, poll_seconds=0.05, promote=False))
    results = w.run()
    assert [(r.tenant, r.status) for r in results if r.status == "done"] == [("here", "done")]
    assert all(r.status == "released" for r in results if r.tenant == "away")
    assert w.unavailable == {"away"}
    with open_store(url) as s:
        away_trials = [t for t in s.trials() if t.tenant == "away"]
        assert [(t.status, t.attempts) for t in away_trials] == [("queued", 0), ("queued", 0)]
    os.rename(away + ".elsewhere", away)  # a worker that has the file takes them
    results = Worker(url, WorkerOptions(exit_when_idle=True, poll_seconds=0.05, promote=False)).run()
    assert sorted(r.candidate for r in results if r.status == "done") == ["gaussian-nb", "lda"]
