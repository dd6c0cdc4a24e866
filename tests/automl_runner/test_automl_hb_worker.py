"""Early stopping in the real queue: `work --scheduler multitenant-hb` through the store.

A trial stopped at a rung is recorded as done with its fidelity (< 1), its lease ends at once and
the worker takes the next trial; once its tenant has nothing else queued or running it goes back
to the queue (``Store.requeue_stopped``) and trains to the full budget without rungs, as
``simulate`` replays it (docs/automl.md, docs/scheduler.md). On SQLite and PostgreSQL.
"""
from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from automl_runner.worker import worker as worker_mod
from automl_runner.candidates.catalogue import load_catalogue
from automl_runner.cli import main
from automl_runner.scheduling.early_stopping import decider
from automl_runner.scheduling.matrices import DATA_DIR
from automl_runner.datasets.schema import infer_schema
from automl_runner.scheduling.registry import make_scheduler
from automl_runner.scheduling.scheduler import Scheduler
from automl_runner.store import open_store
from automl_runner.worker.worker import SchedulerFeed

CURVES = str(DATA_DIR / "real_curves.csv")

#: Iterative candidates of the search space whose learning curves are in real_curves.csv.
ITERATIVE = [
    "boosting/learning_rate=0.036/max_depth=4/subsample=0.721",
    "boosting/learning_rate=0.404/max_depth=5/subsample=0.693",
    "forest/max_features=0.202/min_samples_leaf=6",
]
CHEAP = ["gaussian-nb", "lda"]

PLUGIN = f'''
from automl_runner.scheduling.early_stopping import candidates_from_space
from automl_runner.candidates.search_space import classification_spaces, parse_name


def candidates():
    spaces = classification_spaces()
    out = []
    for name in {ITERATIVE!r}:
        space, config = parse_name(name, spaces)
        out += candidates_from_space(space, [config])
    return out
'''


@pytest.fixture
def iterative_plugin(tmp_path, monkeypatch):
    """The iterative candidates, registered the way a team adds its own: by entry point."""
    d = tmp_path / "plugin"
    (d / "hbplug-0.1.dist-info").mkdir(parents=True)
    (d / "hbplug.py").write_text(PLUGIN)
    (d / "hbplug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: hbplug\nVersion: 0.1\n")
    (d / "hbplug-0.1.dist-info" / "entry_points.txt").write_text(
        "[easeml_automl.candidates]\nhb = hbplug:candidates\n")
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return str(d)


def _dataset(tmp_path, name, noise, seed, n=300):
    rng = np.random.default_rng(seed)
    path = tmp_path / f"{name}.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "d", "label"])
        for _ in range(n):
            x = rng.normal(size=4)
            w.writerow([*np.round(x, 4), int(x[0] - x[1] + 0.5 * x[2] * x[3] + noise * rng.normal() > 0)])
    return str(path)


# --------------------------------------------------------------------------------------------
# the store: requeue_stopped


def _small_tenant(tmp_path, store, name="t", only=("lda", "gaussian-nb", "knn-5")):
    data = _dataset(tmp_path, name, 0.3, 0, n=80)
    store.add_tenant(name, data, infer_schema(data, "label"), load_catalogue(), only=list(only))


def test_a_stopped_trial_is_queued_again_once_its_tenant_has_nothing_else(tmp_path, store_url):  # noqa: F811
    with open_store(store_url) as s:
        _small_tenant(tmp_path, s, "t")
        _small_tenant(tmp_path, s, "u", only=("lda",))
        stop = s.try_claim("t", "lda", "w1", "cpu")
        assert not stop.retry
        assert s.complete(stop, "w1", 0.5, 0.2, None, None, fidelity=1 / 9)
        assert s.requeue_stopped("t") == []  # two more of t are queued
        a, b = s.try_claim("t", "gaussian-nb", "w1", "cpu"), s.try_claim("t", "knn-5", "w2", "cpu")
        assert s.complete(a, "w1", 0.8, 0.1, None, None)
        assert s.requeue_stopped("t") == [] and s.requeue_stopped() == []  # knn-5 still runs
        s.pause_tenant("t", "dataset edited")
        assert s.complete(b, "w2", 0.7, 0.1, None, None)
        assert s.requeue_stopped() == []  # a paused tenant is left alone
        with s._tx() as cur:  # resumed (as `submit --replace` would, without resetting its trials)
            s._exec(cur, "UPDATE tenants SET paused = NULL WHERE name = 't'")
        assert s.requeue_stopped("u") == []  # another tenant: nothing of t moves
        assert s.requeue_stopped("t", worker="w2") == [("t", "lda")]
        assert s.requeue_stopped("t") == [] and s.requeue_stopped() == []  # once
        row = next(t for t in s.trials("t") if t.candidate == "lda")
        # queued again, still showing the result it was stopped with until the retry records its own
        assert (row.status, row.attempts, row.fidelity, row.stopped_at, row.score) == ("queued", 0, 1 / 9, 1 / 9, 0.5)
        retry = s.try_claim("t", "lda", "w1", "cpu")
        assert retry.retry and retry.trial_id == stop.trial_id
        assert s.requeue_stopped("t") == []  # running: nothing to requeue
        assert s.complete(retry, "w1", 0.9, 1.5, None, None)
        assert s.requeue_stopped() == []  # trained to the full budget: done for good
        row = next(t for t in s.trials("t") if t.candidate == "lda")
        assert (row.status, row.fidelity, row.stopped_at, row.score) == ("done", None, 1 / 9, 0.9)
        assert [e[3] for e in s.events(stop.trial_id)] == ["claimed", "done", "requeued", "claimed", "done"]
        assert [e[1] for e in s.events(stop.trial_id) if e[3] == "requeued"] == ["w2"]
        st = {r.name: r for r in s.status()}
        assert (st["t"].stopped_early, st["t"].retried, st["t"].done) == ({"lda": 1 / 9}, ["lda"], 3)
        assert (st["u"].stopped_early, st["u"].retried) == ({}, [])


def _requeue_in_thread(url, barrier, out):
    with open_store(url, create=False) as s:
        barrier.wait()
        out.extend(s.requeue_stopped())


def test_workers_requeueing_at_once_queue_each_stopped_trial_once(tmp_path, store_url):  # noqa: F811
    with open_store(store_url) as s:
        for name in ("t1", "t2", "t3"):
            _small_tenant(tmp_path, s, name, only=("lda", "gaussian-nb"))
            for cand in ("lda", "gaussian-nb"):
                s.complete(s.try_claim(name, cand, "w", "cpu"), "w", 0.5, 0.1, None, None, fidelity=1 / 3)
    barrier, out = threading.Barrier(6), []
    threads = [threading.Thread(target=_requeue_in_thread, args=(store_url, barrier, out)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(out) == [(t, c) for t in ("t1", "t2", "t3") for c in ("gaussian-nb", "lda")]
    with open_store(store_url, create=False) as s:
        assert sum(e[3] == "requeued" for e in s.events()) == 6
        assert {t.status for t in s.trials()} == {"queued"}


# --------------------------------------------------------------------------------------------
# the worker's scheduler feed: a retry is known for what it is


class Recorder(Scheduler):
    early_stopping = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def observe(self, tenant, candidate, quality, cost):
        super().observe(tenant, candidate, quality, cost)
        self.calls.append(("observe", candidate, quality))

    def observe_partial(self, tenant, candidate, fidelity, quality, cost):
        super().observe_partial(tenant, candidate, fidelity, quality, cost)
        self.calls.append(("partial", candidate, quality))

    def start(self, tenant, candidate):
        super().start(tenant, candidate)
        self.calls.append(("start", candidate))


def test_the_feed_tells_the_scheduler_a_retry_from_a_fresh_trial(tmp_path, store_url):  # noqa: F811
    with open_store(store_url) as s:
        _small_tenant(tmp_path, s, "t", only=("lda",))
        feed = SchedulerFeed(s, Recorder)
        feed.SLACK = 0.0
        stop = s.try_claim("t", "lda", "other", "cpu")
        s.complete(stop, "other", 0.5, 0.2, None, None, fidelity=1 / 9)
        assert feed.refresh().pending == {}
        assert feed.scheduler.calls[-1] == ("partial", "lda", 0.5)
        # requeued, claimed and finished by another worker between two reads of this feed:
        s.requeue_stopped("t")
        s.complete(s.try_claim("t", "lda", "other", "cpu"), "other", 0.9, 1.0, None, None)
        feed.refresh()
        assert feed.scheduler.calls[-1] == ("observe", "lda", 0.9)
        assert feed.scheduler.done["t"] == {"lda": 0.9}
    with open_store(store_url) as s:
        _small_tenant(tmp_path, s, "u", only=("lda",))
        s.complete(s.try_claim("u", "lda", "other", "cpu"), "other", 0.4, 0.2, None, None, fidelity=1 / 3)
        s.requeue_stopped("u")
        # a fresh worker (or a rebuilt scheduler) first sees the retry queued: the stop comes first
        hb = SchedulerFeed(s, lambda: make_scheduler("multitenant-hb"))
        assert hb.refresh().pending == {"u": ["lda"]}
        assert hb.scheduler.stopped["u"] == {"lda": (1 / 3, 0.4)}
        assert decider(hb.scheduler, "u", "lda", dict) is None  # so it trains without rungs
        rec = SchedulerFeed(s, Recorder)
        rec.refresh()
        assert [c for c in rec.scheduler.calls if c[1] == "lda" and c[0] != "observe"] == [("partial", "lda", 0.4)]


# --------------------------------------------------------------------------------------------
# end to end: the CLI worker with multitenant-hb on two tenants


def test_work_with_multitenant_hb_stops_frees_retries_and_status_shows_it(
        tmp_path, store_url, iterative_plugin, monkeypatch):  # noqa: F811
    runner = CliRunner()
    for name, noise, seed in (("easy", 0.1, 0), ("hard", 1.0, 1)):
        args = ["submit", _dataset(tmp_path, name, noise, seed), "--store", store_url, "--name", name,
                "--target", "label"]
        for cand in CHEAP + ITERATIVE:
            args += ["--only", cand]
        r = runner.invoke(main, args)
        assert r.exit_code == 0, r.output

    workers, checked = [], []

    class Watched(worker_mod.Worker):
        """The CLI's worker, checked right after each trial: a stopped one holds no lease."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            workers.append(self)

        def run_trial(self, claim):
            result = super().run_trial(claim)
            if result.fidelity is not None:
                row = self.store._read("SELECT status, lease_token, lease_expires FROM trials WHERE id = ?",
                                       (claim.trial_id,))[0]
                beats = [t for t in threading.enumerate() if t.name == f"heartbeat-{claim.trial_id}" and t.is_alive()]
                checked.append((claim.candidate, tuple(row), beats))
            return result

    monkeypatch.setattr(worker_mod, "Worker", Watched)
    r = runner.invoke(main, ["work", "--store", store_url, "--scheduler", "multitenant-hb", "--curves", CURVES,
                             "--exit-when-idle", "--poll", "0.05", "--no-promote", "--json"])
    assert r.exit_code == 0, r.output
    results = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    (w,) = workers
    assert w.feed.scheduler.name == "multitenant-hb" and w.feed.scheduler.curve_model.fits  # the curves arrived

    # at least one trial stopped at a rung, recorded with its fidelity; its lease ended with it
    stopped = [x for x in results if x["fidelity"] is not None]
    assert stopped, results
    assert all(0 < x["fidelity"] < 1 and x["candidate"] in ITERATIVE and not x["retry"] for x in stopped)
    assert [c for c, _row, _b in checked] == [x["candidate"] for x in stopped]
    assert all(row[1:] == (None, None) and row[0] in ("done", "queued") and not beats for _c, row, beats in checked), checked

    # every candidate of both tenants ends with one result at the full budget
    with open_store(store_url, create=False) as s:
        trials = s.trials()
        events = s.events()
    assert len(trials) == 10 and all(t.status == "done" and t.fidelity is None for t in trials), trials
    assert {(t.tenant, t.candidate) for t in trials if t.stopped_at is not None} == \
        {(x["tenant"], x["candidate"]) for x in stopped}
    full = [x for x in results if x["fidelity"] is None]
    assert sorted((x["tenant"], x["candidate"]) for x in full) == sorted((t.tenant, t.candidate) for t in trials)

    assert w.feed.rebuilds == 0  # the stops and retries were read incrementally, never by a rebuild
    by_id = {t.id: t for t in trials}
    order = [(e[0], e[3]) for e in events]
    for x in stopped:
        tid = x["trial_id"]
        # the retry trained to the full budget in one go: the scheduler was asked at the rungs of
        # the first run only (rising fidelities, the last one the stop), never during the retry
        retry = next(y for y in full if y["trial_id"] == tid)
        assert retry["retry"]
        asked = [d for d in w.feed.scheduler.decisions if d[:2] == (x["tenant"], x["candidate"])]
        assert [d[3] for d in asked] == [False] * (len(asked) - 1) + [True], asked
        assert [d[2] for d in asked] == sorted({d[2] for d in asked}) and asked[-1][2] == pytest.approx(x["fidelity"])
        assert [ev for i, ev in order if i == tid] == ["claimed", "done", "requeued", "claimed", "done"]
        # its stop freed the worker at once: the worker's next step is its next claim (the trial
        # itself, queued again, only when nothing else is left), a moment later
        k = order.index((tid, "done"))
        nxt = next(j for j in range(k + 1, len(order)) if order[j][1] != "requeued")
        assert order[nxt][1] == "claimed" and (order[nxt][0] != tid or k + 1 < nxt)
        assert events[nxt][4] - events[k][4] < 2.0
        # it went back to the queue only once nothing else of its tenant was queued or running
        rq = order.index((tid, "requeued"))
        for other in (t for t in trials if t.tenant == x["tenant"] and t.id != tid):
            first_done = order.index((other.id, "done"))
            assert first_done < rq, (by_id[tid].candidate, other.candidate)

    # `status` shows it all
    r = runner.invoke(main, ["status", "--store", store_url, "--json"])
    rows = {t["name"]: t for t in json.loads(r.output)["tenants"]}
    for name in ("easy", "hard"):
        mine = {x["candidate"]: x["fidelity"] for x in stopped if x["tenant"] == name}
        assert rows[name]["stopped_early"] == pytest.approx(mine)
        assert sorted(rows[name]["retried"]) == sorted(mine)
        assert (rows[name]["done"], rows[name]["queued"], rows[name]["running"], rows[name]["failed"]) == (5, 0, 0, 0)
    text = runner.invoke(main, ["status", "--store", store_url]).output
    n = sum(x["tenant"] == "easy" for x in stopped)
    if n:
        assert f"stopped early: {n} at a rung, {n} since trained to the full budget" in text
    x = stopped[0]
    text = runner.invoke(main, ["status", "--store", store_url, "--tenant", x["tenant"]]).output
    assert (f"stopped: {x['candidate']} at {x['fidelity']:.0%} of its budget; trained again to the full budget"
            in text), text


def test_work_curves_bad_file_exits_2(tmp_path):
    r = CliRunner().invoke(main, ["work", "--store", str(tmp_path / "q.db"), "--scheduler", "multitenant-hb",
                                  "--curves", str(tmp_path / "nope.csv")])
    assert r.exit_code == 2 and "Invalid value for --curves" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "q.db").exists()


# --------------------------------------------------------------------------------------------
# the worker: an idle worker sweeps, a retry never goes through rungs


def _stopped_alone(tmp_path, url, cand="lda"):
    """A tenant whose only trial was stopped early by a worker that died before requeueing it."""
    with open_store(url) as s:
        _small_tenant(tmp_path, s, "t", only=(cand,))
        s.complete(s.try_claim("t", cand, "gone", "cpu"), "gone", 0.5, 0.1, None, None, fidelity=1 / 9)


@pytest.mark.parametrize("scheduler, retried", [("multitenant-hb", True), ("multitenant", False)])
def test_an_idle_worker_requeues_what_nobody_requeued(tmp_path, store_url, monkeypatch, scheduler, retried):  # noqa: F811
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _stopped_alone(tmp_path, store_url)
    results = worker_mod.Worker(store_url, worker_mod.WorkerOptions(
        scheduler=scheduler, exit_when_idle=True, poll_seconds=0.05, promote=False)).run()
    with open_store(store_url, create=False) as s:
        (row,) = s.trials()
    if retried:  # the early-stopping scheduler's rule: nothing else of the tenant left, so it runs again
        assert [(r.candidate, r.status, r.fidelity, r.retry) for r in results] == [("lda", "done", None, True)]
        assert (row.status, row.fidelity, row.stopped_at) == ("done", None, 1 / 9)
    else:  # other schedulers never stop trials and leave stopped ones as they are
        assert results == [] and (row.status, row.fidelity) == ("done", 1 / 9)


def test_a_retry_trains_without_rungs_even_if_the_scheduler_forgot_the_stop(tmp_path, store_url, monkeypatch,  # noqa: F811
                                                                           iterative_plugin):
    with open_store(store_url) as s:
        _small_tenant(tmp_path, s, "t", only=(ITERATIVE[0],))
        s.complete(s.try_claim("t", ITERATIVE[0], "gone", "cpu"), "gone", 0.5, 0.1, None, None, fidelity=1 / 9)
        s.requeue_stopped("t")
    w = worker_mod.Worker(store_url, worker_mod.WorkerOptions(scheduler="multitenant-hb", promote=False))
    asked = []
    w.feed.refresh()
    w.feed.scheduler.stopped.clear()  # as if it had never heard of the stop
    w.feed.scheduler.should_stop = lambda *a: asked.append(a) or True
    claim = w.take()
    assert claim.retry and claim.candidate == ITERATIVE[0]
    result = w.run_trial(claim)
    assert asked == [] and (result.status, result.fidelity, result.retry) == ("done", None, True)
    # and the same candidate, fresh (not a retry), does go through the rungs
    tenant = w.store.tenant("t")
    X_tr, X_val, y_tr, y_val = w._dataset(tenant).split()
    fresh = claim.__class__(claim.trial_id, "t", ITERATIVE[0], claim.token, 1, retry=False)
    _est, _score, _cost, fidelity = w._train(w.catalogue[ITERATIVE[0]], tenant, fresh, X_tr, y_tr, X_val, y_val)
    assert len(asked) == 1 and fidelity == pytest.approx(1 / 9)
    w.store.close()
