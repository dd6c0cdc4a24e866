"""A worker: takes trials from the store, trains them, records the results, promotes winners.

One worker runs on one device. It loops:

1. put trials whose lease expired back in the queue (their worker died);
2. read the queue and feed the scheduler what finished and what is running since last time;
3. ask the scheduler for (tenant, candidate) among the pending trials it can run here, and take
   that trial atomically under a lease; if another worker was faster, decide again;
4. train the candidate on the tenant's training rows while a heartbeat thread extends the lease,
   score it on the validation rows, export it to ONNX and check the export, record the result;
5. promote the model if it is the tenant's new best by at least the tenant's margin.

With ``multitenant-hb`` an iterative candidate trains rung by rung (``early_stopping``); a trial
the scheduler stops is recorded as done with its fidelity (< 1), its lease ends with that record
and the worker takes its next trial at once. When a tenant has nothing left queued or running, its
stopped trials go back to the queue (``Store.requeue_stopped``) and run again, as a ``retry``,
to the full budget without rungs.

A worker killed at any point loses nothing: the lease expires and another worker runs the trial
again. On SIGTERM or SIGINT the worker aborts the training in progress, *releases* the trial back
to the queue at once (so another worker need not wait for the lease to expire) and exits 0; a
signal that arrives while it is writing to the store only takes effect once the write is done.
"""
from __future__ import annotations

import bisect
import hashlib
import inspect
import os
import re
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Protocol
from urllib.parse import quote

from easeml_ci.atomic import write_bytes

from ..candidates.catalogue import Candidate, by_name, export_onnx, load_catalogue, validation_score
from ..errors import AutomlError, DatasetError, SchedulerError, StoreError
from ..folders import FolderError, TenantFolder
from ..datasets.schema import Dataset, load_dataset
from ..store import (DEFAULT_LEASE_SECONDS, DEFAULT_MAX_ATTEMPTS, Claim, NextChoice, Store, Tenant, TrialChange, driver_errors,
                    open_store)

DEVICE = re.compile(r"^(cpu|cuda:\d+)$")


MAX_STORE_FAILURES = 8




def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Chooser(Protocol):
    def observe(self, tenant: str, candidate: str, quality: float, cost: float) -> None: ...
    def start(self, tenant: str, candidate: str) -> None: ...
    def choose(self, pending: dict[str, list[str]]) -> tuple[str, str]: ...


class Interrupted(BaseException):
    """Raised inside training when the worker is told to stop."""


class _Unavailable(Exception):
    """The tenant's dataset is not on this machine."""


class _DatasetChanged(Exception):
    """The tenant's dataset cannot be used as submitted (edited since, unreadable)."""


@dataclass
class TrialResult:
    tenant: str
    candidate: str
    trial_id: int
    status: str  # done | failed | lost | released
    score: float | None = None
    cost: float | None = None
    onnx_path: str | None = None
    error: str | None = None
    promoted: bool = False
    pull_request: str | None = None
    ran_on: str | None = None
    fidelity: float | None = None
    #: The trial had been stopped early and ran again to the full budget.
    retry: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FeedView:
    """What :meth:`SchedulerFeed.refresh` returns: the queue as the scheduler now knows it."""

    pending: dict[str, list[str]]  # tenant -> queued candidates this worker can run, in trial order
    running: list[tuple[int, str, str, int]]  # (trial id, tenant, candidate, attempts)
    finished: list[TrialChange]  # trials this refresh fed to the scheduler as done


class SchedulerFeed:
    """Keeps a scheduler in step with the store, reading only what changed since the last decision.

    The feed mirrors the queue: every trial's last known status, the queued candidates per tenant
    (only those this worker can run), the running trials, the tenants' submissions and pauses.
    Each refresh reads the trials and tenants whose ``changed_at`` (stamped by the database on
    every insert and status change) is at or after the database's clock at the start of the
    previous refresh, less a few seconds: a change's time is taken inside the short transaction
    that commits it, so a change that committed after the previous read began is not missed;
    rows read twice are recognised and skipped. A decision therefore costs what changed since the last one, not the
    size of the queue (1,000 tenants x 50 candidates: docs/automl.md).

    Finished trials are fed to the scheduler once each (``observe``, or ``observe_partial`` for a
    trial stopped early when the scheduler has it); running ones as ``start``. If a started trial
    is back in the queue (its worker died) or a tenant is submitted again, the scheduler would
    hold a stale belief, so the scheduler and the mirror are rebuilt from the store, which is rare.
    """

    SLACK = 5.0

    def __init__(self, store: Store, factory: Callable[[], Chooser], runnable: set[str] | None = None):
        self.store = store
        self.factory = factory
        self.runnable = runnable
        self._reset()

    def _reset(self) -> None:
        self.scheduler = self.factory()
        self.seen_done: set[int] = set()
        self.started: dict[int, tuple[str, str]] = {}
        self.watermark: float | None = None
        self.trials: dict[int, tuple[str, int, float | None]] = {}  # id -> (status, attempts, fidelity) last seen
        self.pending: dict[str, list[str]] = {}
        self._pending_ids: dict[str, list[int]] = {}
        self.running: dict[int, tuple[int, str, str, int]] = {}
        self.created: dict[str, float] = {}
        self.paused: dict[str, str] = {}
        self.rebuilds = getattr(self, "rebuilds", -1) + 1

    # -- the mirror -------------------------------------------------------------------------------
    def _add_pending(self, tid: int, tenant: str, cand: str) -> None:
        if self.runnable is not None and cand not in self.runnable:
            return
        ids = self._pending_ids.get(tenant)
        if ids is None:
            in_order = not self.pending or tenant > next(reversed(self.pending))
            ids = self._pending_ids[tenant] = []
            self.pending[tenant] = []
            if not in_order:  # keep tenants in name order, as a full read of the queue gives them
                self.pending = {t: self.pending[t] for t in sorted(self.pending)}
        cands = self.pending[tenant]
        k = bisect.bisect_left(ids, tid)
        ids.insert(k, tid)
        cands.insert(k, cand)

    def _drop_pending(self, tid: int, tenant: str) -> None:
        ids = self._pending_ids.get(tenant)
        if not ids:
            return
        k = bisect.bisect_left(ids, tid)
        if k < len(ids) and ids[k] == tid:
            del ids[k]
            del self.pending[tenant][k]
            if not ids:
                del self._pending_ids[tenant], self.pending[tenant]

    def _apply(self, r: TrialChange, finished: list[TrialChange]) -> bool:
        """Fold one changed trial into the mirror; False when the scheduler must be rebuilt."""
        prev = self.trials.get(r.id)
        if prev == (r.status, r.attempts, r.fidelity):
            return True  # read again inside the slack window: nothing new
        if prev is not None and prev[0] == "queued":
            self._drop_pending(r.id, r.tenant)
        self.running.pop(r.id, None)
        self.trials[r.id] = (r.status, r.attempts, r.fidelity)
        # A trial seen stopped early (done, fidelity < 1) and now done to the full budget: its
        # retry ran between two reads of this feed.
        retried = prev is not None and prev[0] == "done" and prev[2] is not None and prev[2] < 1.0
        if r.status == "queued":
            if r.id in self.started:
                # Stopped early and queued again (attempts reset) before this feed read it done:
                # the stop is news to the scheduler. Anything else (a lease expired) rebuilds it.
                known = getattr(self.scheduler, "stopped", None)
                if not (r.attempts == 0 and r.fidelity is not None and r.fidelity < 1.0 and known is not None
                        and r.candidate not in known.get(r.tenant, {})):
                    return False
                self.started.pop(r.id)
                self._observe_stop(r)
                finished.append(r)
            elif r.id in self.seen_done:  # stopped early and queued again for a full run (a retry):
                self.seen_done.discard(r.id)  # the scheduler already has its partial result
            else:
                self._observe_stop(r)
            self._add_pending(r.id, r.tenant, r.candidate)
        elif r.status == "running":
            self.running[r.id] = (r.id, r.tenant, r.candidate, r.attempts)
            if r.id in self.seen_done:  # a retry claimed between two reads
                self.seen_done.discard(r.id)
            elif r.id not in self.started:
                self._observe_stop(r)
            if r.id not in self.started:
                self.started[r.id] = (r.tenant, r.candidate)
                self.scheduler.start(r.tenant, r.candidate)
        elif r.status == "done" and (r.id not in self.seen_done or retried):
            self.seen_done.add(r.id)
            self.started.pop(r.id, None)
            partial = getattr(self.scheduler, "observe_partial", None)
            if r.fidelity is not None and r.fidelity < 1.0 and partial is not None:
                partial(r.tenant, r.candidate, float(r.fidelity), float(r.score), float(r.cost or 0.0))
            else:
                self.scheduler.observe(r.tenant, r.candidate, float(r.score), float(r.cost or 0.0))
            finished.append(r)
        # A started trial that failed stays in `started`: should it ever be queued again
        # (retry-failed), the check above rebuilds the scheduler.
        return True

    def _observe_stop(self, r: TrialChange) -> None:
        """A retry read for the first time (queued or running again with the fidelity it was
        stopped at): tell the scheduler about the stop first, so it knows the retry for what it is
        (``multitenant-hb`` trains it without rungs) and keeps the partial result's information."""
        if r.fidelity is not None and r.fidelity < 1.0 and r.score is not None:
            partial = getattr(self.scheduler, "observe_partial", None)
            if partial is not None:
                partial(r.tenant, r.candidate, float(r.fidelity), float(r.score), float(r.cost or 0.0))

    def refresh(self) -> FeedView:
        for _ in range(3):
            view = self._refresh()
            if view is not None:
                return view
            self._reset()
        raise StoreError("the queue kept changing under the scheduler; try again")

    def _refresh(self) -> FeedView | None:
        # Everything committed after this read started was stamped at most SLACK seconds before
        # this clock reading (transactions are short), so the next read starts SLACK before it.
        clock = self.store.db_clock()
        since = None if self.watermark is None else self.watermark - self.SLACK
        for name, created, paused, _changed in self.store.tenant_changes(since):
            if name in self.created and self.created[name] != created:
                return None  # submitted again: its old trials are gone
            self.created[name] = created
            if paused:
                self.paused[name] = paused
            else:
                self.paused.pop(name, None)
        finished: list[TrialChange] = []
        for r in self.store.trial_changes(since):
            if not self._apply(r, finished):
                return None
        self.watermark = clock
        return FeedView(self.pending, sorted(self.running.values()), finished)

    def view(self, skip_tenants: set[str] = frozenset(), skip_pairs: set[tuple[str, str]] = frozenset()
             ) -> dict[str, list[str]]:
        """The pending trials to choose from, without paused tenants and the ones given."""
        skip = set(skip_tenants) | set(self.paused)
        if not skip and not skip_pairs:
            return self.pending
        out = {t: cs for t, cs in self.pending.items() if t not in skip}
        for t, c in skip_pairs:
            if t in out:
                keep = [x for x in out[t] if x != c]
                if keep:
                    out[t] = keep
                else:
                    del out[t]
        return out

    def claimed(self, claim: Claim) -> None:
        self.started[claim.trial_id] = (claim.tenant, claim.candidate)
        self.scheduler.start(claim.tenant, claim.candidate)


def default_scheduler_factory(name: str = "multitenant", seed: int = 0,
                              prior: list[tuple[str, str, float, float]] | None = None,
                              curves=None) -> Callable[[], Chooser]:
    """``curves``: other tenants' learning curves (``matrices.LearningCurves`` or rows), for the
    schedulers that stop trials early (``multitenant-hb``); the others ignore them."""
    from ..scheduling.registry import make_scheduler

    if curves is None:
        return lambda: make_scheduler(name, prior=prior, seed=seed)
    return lambda: make_scheduler(name, prior=prior, seed=seed, curves=curves)


class Progress:
    """A status line on stderr: rewritten in place on a terminal, one line per phase otherwise."""

    def __init__(self, enabled: bool, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._lock = threading.Lock()
        self._live = False

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._live:
                self.stream.write("\r\033[K")
                self._live = False
            self.stream.write(text + "\n")
            self.stream.flush()

    def live(self, text: str) -> None:
        if not (self.enabled and self.tty):
            return
        with self._lock:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._live = True


@dataclass
class WorkerOptions:
    device: str = "cpu"
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    heartbeat_seconds: float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    poll_seconds: float = 5.0
    once: bool = False
    max_trials: int | None = None
    exit_when_idle: bool = False
    artifacts: str | None = None
    worker_id: str | None = None
    scheduler: str = "multitenant"
    seed: int = 0
    #: (tenant, candidate, quality, cost) rows of other tenants: the scheduler's prior.
    prior: list[tuple[str, str, float, float]] | None = None
    promote: bool = True
    #: The tenants' root (``work --root``, ``EASEML_AUTOML_ROOT``): a tenant folder outside it is
    #: never written (its trials fail, its promotions are ``write-failed``). None: no such check.
    root: str | None = None
    #: Threads this worker's training may use (BLAS, PyTorch, XGBoost, onnxruntime); None: no cap.
    threads: int | None = None
    #: Other tenants' learning curves (``matrices.LearningCurves``): the rung model of a scheduler
    #: that stops trials early (``multitenant-hb``); None: its generic model.
    curves: object | None = None


class Worker:
    def __init__(self, store_url: str, options: WorkerOptions, *, progress: Progress | None = None,
                 catalogue: list[Candidate] | None = None, chooser_factory: Callable[[], Chooser] | None = None,
                 on_result: Callable[[TrialResult], None] | None = None,
                 clock: Callable[[], float] | None = None):
        """``clock``: the store's time (leases, heartbeats), as :func:`open_store` takes it; None:
        the database's clock. Tests pass one they move by hand, so a lease runs out when they say."""
        if not DEVICE.match(options.device):
            raise AutomlError(f"--device must be cpu or cuda:N, got {options.device!r}")
        if not options.lease_seconds > 0:
            raise AutomlError(f"--lease must be > 0 seconds, got {options.lease_seconds}")
        self.options = options
        self.store_url = store_url
        self.store = open_store(store_url, clock=clock)
        self.catalogue = by_name(catalogue if catalogue is not None else load_catalogue())
        self.runnable = {n for n, c in self.catalogue.items() if c.runs_on(options.device)}
        self.id = options.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.progress = progress or Progress(False)
        if options.threads:
            from .threads import cap_threads

            cap_threads(options.threads)
        factory = chooser_factory or default_scheduler_factory(options.scheduler, options.seed, options.prior,
                                                               options.curves)
        self.feed = SchedulerFeed(self.store, factory, runnable=self.runnable)
        self.on_result = on_result
        self.stop_requested = False
        self._in_training = False
        self._datasets: dict[tuple[str, str], Dataset] = {}
        #: Tenants whose dataset path does not exist on this machine: their trials are left to
        #: workers that can read it (released, never failed).
        self.unavailable: set[str] = set()
        self.results: list[TrialResult] = []
        self._last_requeue = float("-inf")
        #: The rungs (fidelity, score, seconds) a trial in training reached, recorded with its result.
        self.rungs: dict[int, list[tuple[float, float, float]]] = {}

    # -- signals ----------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum, frame):
            self.stop_requested = True
            self.progress.line(f"[{self.id}] {signal.Signals(signum).name}: stopping")
            if self._in_training:
                self._in_training = False
                raise Interrupted()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> list[TrialResult]:
        """Work until stopped, idle (with ``exit_when_idle``), or ``max_trials``/``once`` reached.

        A database that goes away (PostgreSQL restart, network cut) is retried with backoff on a
        fresh connection; a trial whose result could not be recorded runs again once its lease
        expires. After ``MAX_STORE_FAILURES`` failures in a row the worker gives up.
        """
        self.store.sync_catalogue(self.catalogue.values())
        done = 0
        failures = 0
        limit = 1 if self.options.once else self.options.max_trials
        while not self.stop_requested and (limit is None or done < limit):
            try:
                claim = self.take()
                if claim is None:
                    if self.options.once or self.stop_requested:
                        break
                    if self.options.exit_when_idle and not self._anything_running():
                        break
                    failures = 0
                    self._sleep(self.options.poll_seconds)
                    continue
                result = self.run_trial(claim)
                failures = 0
            except driver_errors("OperationalError") as exc:
                failures += 1
                if failures >= MAX_STORE_FAILURES:
                    raise StoreError(f"store unreachable after {failures} attempts: {_first_line(exc)}") from exc
                self.progress.line(f"[{self.id}] store error ({_first_line(exc)}); reconnecting")
                self._sleep(min(30.0, 0.5 * 2 ** failures))
                self._reconnect()
                continue
            self.results.append(result)
            if self.on_result:
                self.on_result(result)
            if result.status != "released":
                done += 1
        return self.results

    def _reconnect(self) -> None:
        self.store.close()
        try:
            self.store = open_store(self.store_url, create=False, clock=self.store.clock)
        except StoreError:
            return  # still down: the next loop fails fast and backs off again
        self.feed.store = self.store
        self.feed._reset()

    def _anything_running(self) -> bool:
        return bool(self.feed.refresh().running)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def take(self) -> Claim | None:
        """Decide and claim one trial; None when nothing this worker can run is queued."""
        # A lease cannot expire sooner than lease_seconds after it was taken: looking a few times
        # per lease is enough, and spares a write transaction on most decisions.
        now = time.monotonic()
        if now - self._last_requeue >= min(1.0, self.options.lease_seconds / 4.0):
            self.store.requeue_expired(self.options.max_attempts)
            self._last_requeue = now
        lost: set[tuple[str, str]] = set()
        rebuilt = False
        swept = False
        for _ in range(50):
            self.feed.refresh()
            pending = self.feed.view(self.unavailable, lost)
            if not pending:
                if not swept and self.requeue_stopped():  # nothing else left: stopped trials run again
                    swept = True
                    continue
                return None
            try:
                tenant, cand = self.feed.scheduler.choose(pending)
            except SchedulerError as exc:  # its view of what runs went stale: rebuild it from the store once
                if rebuilt:
                    self.progress.line(f"[{self.id}] scheduler refused to choose ({exc}); waiting")
                    return None
                rebuilt = True
                self.feed._reset()
                continue
            claim = self.store.try_claim(tenant, cand, self.id, self.options.device, self.options.lease_seconds,
                                         next_choice=self.next_choice(tenant, [c for c in pending[tenant] if c != cand]))
            if claim is not None:
                self.feed.claimed(claim)
                return claim
            lost.add((tenant, cand))  # another worker took it between our read and our claim
        return None

    def next_choice(self, tenant: str, rest: list[str]) -> NextChoice | None:
        """The scheduler's choice for ``tenant`` after the trial being claimed, with its EI per
        second, for the dashboard (written with the claim); None from a scheduler without EI."""
        pick = getattr(self.feed.scheduler, "next_choice", None)
        if pick is None:
            return None
        name = getattr(self.feed.scheduler, "name", self.options.scheduler)
        try:
            got = pick(tenant, rest) if rest else None
        except SchedulerError:
            return None
        if got is None:
            return NextChoice(tenant, None, scheduler=name)
        return NextChoice(tenant, got[0], got[1], got[2], scheduler=name)

    def requeue_stopped(self, tenant: str | None = None) -> list[tuple[str, str]]:
        """Queue again the trials stopped early of ``tenant`` (of every tenant when None) once it
        has nothing queued or running (:meth:`Store.requeue_stopped`); only a worker whose
        scheduler stops trials early (``multitenant-hb``) does, as ``simulate`` replays it."""
        if not getattr(self.feed.scheduler, "early_stopping", False):
            return []
        back = self.store.requeue_stopped(tenant, worker=self.id)
        for t, c in back:
            self.progress.line(f"[{self.id}] requeued {t}/{c}: stopped early, its tenant has nothing else "
                               "queued; it trains to the full budget")
        return back

    def _dataset(self, tenant: Tenant) -> Dataset:
        key = (tenant.name, tenant.schema.fingerprint)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(tenant.dataset, tenant.schema)
        return self._datasets[key]

    def _write_artifact(self, tenant: Tenant, claim: Claim, blob: bytes) -> str:
        """Write the trial's model where it belongs; returns its path.

        In the tenant's folder (``<output>/trials/``) through :class:`TenantFolder` (never through a
        link, never outside the worker's root); ``--artifacts`` and the cache are the worker's own."""
        # A search-space candidate's name has '/' between its settings: one file, not folders.
        name = f"{quote(claim.candidate, safe='=.,_-')}.onnx"
        if not self.options.artifacts and tenant.output:
            with TenantFolder(tenant.output, root=self.options.root) as folder, folder.folder("trials") as trials:
                return trials.write(name, blob)
        if self.options.artifacts:
            base = os.path.join(self.options.artifacts, tenant.name)
        else:  # no output configured: keep trial models out of the working directory
            cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            base = os.path.join(cache, "easeml-automl", "artifacts", tenant.name)
        os.makedirs(base, exist_ok=True)
        path = os.path.join(base, name)
        write_bytes(path, blob)  # a reader (the gate, a promotion) never sees half a model
        return path

    def _train(self, cand: Candidate, tenant: Tenant, claim: Claim, X_tr, y_tr, X_val, y_val):
        """(fitted pipeline, validation score, seconds, fidelity or None when trained to the end).

        Iterative learners go through the early-stopping hook when it is installed
        (automl_runner.scheduling.early_stopping, see docs/automl.md); everything else, and a retry of a trial
        stopped early (``claim.retry``), is one fit to the full budget."""
        try:
            from ..scheduling import early_stopping
        except ImportError:
            early_stopping = None
        if early_stopping is not None and cand.fidelity is not None and not claim.retry:
            decide = early_stopping.decider(self.feed.scheduler, claim.tenant, claim.candidate,
                                            lambda: self.feed.refresh().pending)
            if decide is not None:
                extra = {"threads": self.options.threads} if "threads" in inspect.signature(early_stopping.train).parameters else {}
                tr = early_stopping.train(cand, tenant.schema, self.options.device, X_tr, y_tr, X_val, y_val,
                                          decide=decide, **extra)
                # the learning curve, kept with the result (a hook that reports no rungs: its last point)
                self.rungs[claim.trial_id] = list(getattr(tr, "rungs", None) or [(tr.fidelity, tr.score, tr.cost)])
                return tr.estimator, tr.score, tr.cost, (tr.fidelity if tr.fidelity < 1.0 else None)
        t0 = time.perf_counter()
        est = cand.build(tenant.schema, self.options.device, threads=self.options.threads).fit(X_tr, y_tr)
        cost = time.perf_counter() - t0
        score = validation_score(tenant.schema, y_val, est.predict(X_val))
        self.rungs[claim.trial_id] = [(1.0, score, cost)]
        return est, score, cost, None

    def run_trial(self, claim: Claim) -> TrialResult:
        label = f"{claim.tenant}/{claim.candidate}"
        beat = _Heartbeat(self.store_url, self.store, claim, self.options, self.progress, label, self.id)
        beat.start()
        try:
            try:
                tenant = self.store.tenant(claim.tenant)
                cand = self.catalogue[claim.candidate]
                self.progress.line(f"[{self.id}] training {label} on {cand.placement(self.options.device)} (attempt {claim.attempt})")
                self._in_training = True
                try:
                    if self.stop_requested:  # the signal came between the claim and now
                        raise Interrupted()
                    if not os.path.exists(tenant.dataset):
                        raise _Unavailable()
                    try:
                        ds = self._dataset(tenant)
                    except DatasetError as exc:
                        raise _DatasetChanged(str(exc)) from exc
                    X_tr, X_val, y_tr, y_val = ds.split()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # convergence chatter; the score says enough
                        est, score, cost, fidelity = self._train(cand, tenant, claim, X_tr, y_tr, X_val, y_val)
                        model = est.steps[-1][1] if hasattr(est, "steps") else est
                        ran_on = getattr(model, "trained_on_", None) or cand.placement(self.options.device)
                        blob = export_onnx(est, tenant.schema, X_val, exporter=cand.exporter)
                finally:
                    self._in_training = False
            except (Interrupted, _Unavailable):
                raise
            except _DatasetChanged as exc:  # not the candidate's fault: stop choosing the tenant
                beat.stop()
                msg = f"DatasetError: {exc}"
                ok = self.store.fail(claim, self.id, msg)
                paused = self.store.pause_tenant(claim.tenant, f"{exc}", tenant.schema.fingerprint)
                self.progress.line(f"[{self.id}] failed   {label}: {msg[:200]}"
                                   + ("; tenant paused until it is submitted again" if paused else ""))
                return TrialResult(claim.tenant, claim.candidate, claim.trial_id, "failed" if ok else "lost", error=msg)
            except driver_errors("OperationalError"):
                raise  # the store, not the candidate, failed: the run loop reconnects
            except Exception as exc:  # the candidate failed on this data: record it, keep working
                beat.stop()
                msg = f"{type(exc).__name__}: {exc}".strip()
                ok = self.store.fail(claim, self.id, msg)
                self.progress.line(f"[{self.id}] failed   {label}: {msg.splitlines()[0][:200]}")
                if ok:
                    self.requeue_stopped(claim.tenant)
                return TrialResult(claim.tenant, claim.candidate, claim.trial_id, "failed" if ok else "lost", error=msg)
        except Interrupted:
            beat.stop()
            self.store.release(claim, self.id)
            self.progress.line(f"[{self.id}] released {label} back to the queue")
            return TrialResult(claim.tenant, claim.candidate, claim.trial_id, "released")
        except _Unavailable:
            beat.stop()
            self.store.release(claim, self.id)
            self.unavailable.add(claim.tenant)
            self.progress.line(f"[{self.id}] dataset {tenant.dataset} of tenant {claim.tenant} is not on this "
                               "machine; leaving its trials to other workers")
            return TrialResult(claim.tenant, claim.candidate, claim.trial_id, "released",
                               error=f"dataset {tenant.dataset} not on this machine")
        finally:
            beat.stop()
        try:
            path = self._write_artifact(tenant, claim, blob)
        except (FolderError, OSError) as exc:  # the tenant's folder is refused or unwritable: the trial fails
            msg = f"cannot write the trial's model: {exc}"
            ok = self.store.fail(claim, self.id, msg)
            self.progress.line(f"[{self.id}] failed   {label}: {msg[:200]}")
            return TrialResult(claim.tenant, claim.candidate, claim.trial_id, "failed" if ok else "lost", error=msg)
        sha = hashlib.sha256(blob).hexdigest()
        ok = self.store.complete(claim, self.id, score, cost, os.path.abspath(path), sha, ran_on=ran_on,
                                 fidelity=fidelity, rungs=self.rungs.pop(claim.trial_id, None))
        metric = "accuracy" if tenant.schema.task == "classification" else "r2"
        result = TrialResult(claim.tenant, claim.candidate, claim.trial_id, "done" if ok else "lost",
                             score=score, cost=cost, onnx_path=os.path.abspath(path), ran_on=ran_on,
                             fidelity=fidelity, retry=claim.retry)
        if not ok:
            self.progress.line(f"[{self.id}] lost     {label}: its lease expired and another worker took it")
            return result
        stopped = "" if fidelity is None else f", stopped early at {fidelity:.0%} of its budget"
        if claim.retry:
            stopped = ", the full budget this time (it had been stopped early)"
        self.progress.line(f"[{self.id}] done     {label}: {metric} {score:.4f}, trained in {cost:.2f}s on {ran_on}{stopped}")
        self.requeue_stopped(claim.tenant)  # its last trial: the stopped ones run again, to the end
        if self.options.promote:
            from .promote import maybe_promote

            promo = maybe_promote(self.store, tenant, claim.trial_id, cand, blob, score, progress=self.progress,
                                  who=f"[{self.id}] ", fidelity=fidelity, root=self.options.root)
            if promo is not None:
                result.promoted = True
                result.pull_request = promo.pull_request
        return result


class _Heartbeat(threading.Thread):
    """Extends the lease every lease/3 seconds on its own connection; shows elapsed time."""

    def __init__(self, url: str, main_store: Store, claim: Claim, options: WorkerOptions, progress: Progress,
                 label: str, worker_id: str):
        super().__init__(daemon=True, name=f"heartbeat-{claim.trial_id}")
        self.url = url
        self.clock = main_store.clock
        self.claim = claim
        self.options = options
        self.progress = progress
        self.label = label
        self.worker_id = worker_id
        self.interval = options.heartbeat_seconds or max(0.05, options.lease_seconds / 3.0)
        self._halt = threading.Event()
        self.lost = False
        self.t0 = time.monotonic()

    def run(self) -> None:
        store = None
        try:
            while not self._halt.wait(min(self.interval, 0.5) if self.progress.tty else self.interval):
                elapsed = time.monotonic() - self.t0
                self.progress.live(f"[{self.worker_id}] training {self.label} ... {elapsed:.0f}s")
                if time.monotonic() - getattr(self, "_last", self.t0) < self.interval - 1e-3:
                    continue
                self._last = time.monotonic()
                try:
                    if store is None:
                        store = open_store(self.url, create=False, clock=self.clock)
                    if not store.heartbeat(self.claim, self.options.lease_seconds):
                        self.lost = True
                        return
                except Exception as exc:  # a missed beat is not fatal; the next one reconnects
                    self.progress.line(f"[{self.worker_id}] heartbeat failed ({_first_line(exc)}); retrying")
                    if store is not None:
                        store.close()
                    store = None
        finally:
            if store is not None:
                store.close()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
