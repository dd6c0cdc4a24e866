"""A worker: takes trials from the store, trains them, records the results, promotes winners.

One worker runs on one device. It loops:

1. put trials whose lease expired back in the queue (their worker died);
2. read the queue and feed the scheduler what finished and what is running since last time;
3. ask the scheduler for (tenant, candidate) among the pending trials it can run here, and take
   that trial atomically under a lease; if another worker was faster, decide again;
4. train the candidate on the tenant's training rows while a heartbeat thread extends the lease,
   score it on the validation rows, export it to ONNX and check the export, record the result;
5. promote the model if it is the tenant's new best by at least the tenant's margin.

A worker killed at any point loses nothing: the lease expires and another worker runs the trial
again. On SIGTERM or SIGINT the worker aborts the training in progress, *releases* the trial back
to the queue at once (so another worker need not wait for the lease to expire) and exits 0; a
signal that arrives while it is writing to the store only takes effect once the write is done.
"""
from __future__ import annotations

import hashlib
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

from .catalogue import Candidate, by_name, export_onnx, load_catalogue, validation_score
from .errors import AutomlError, StoreError
from .scheduler import SchedulerError
from .schema import Dataset, load_dataset
from .store import (DEFAULT_LEASE_SECONDS, DEFAULT_MAX_ATTEMPTS, Claim, Store, Tenant, driver_errors,
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

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class SchedulerFeed:
    """Keeps a scheduler in step with the store without re-reading all history per decision.

    Finished trials are fed once each. The store is read from a watermark a few seconds behind
    the newest finish seen: a result's finish time is taken inside the short transaction that
    commits it, so a result that commits a moment after a later-stamped one is not missed. Running trials are
    fed as ``start``; if one of them is later back in the queue (its worker died), the scheduler
    would still think it runs, so the scheduler is rebuilt from the store, which is rare.
    """

    SLACK = 5.0

    def __init__(self, store: Store, factory: Callable[[], Chooser]):
        self.store = store
        self.factory = factory
        self._reset()

    def _reset(self) -> None:
        self.scheduler = self.factory()
        self.seen_done: set[int] = set()
        self.started: dict[int, tuple[str, str]] = {}
        self.watermark: float | None = None
        self.rebuilds = getattr(self, "rebuilds", -1) + 1

    def refresh(self):
        snap = self.store.snapshot(since=None if self.watermark is None else self.watermark - self.SLACK,
                                   seen=self.seen_done)
        queued_pairs = {(t, c) for t, cs in snap.pending.items() for c in cs}
        if any(pair in queued_pairs for pair in self.started.values()):
            self._reset()
            snap = self.store.snapshot(since=None)
        for tr in snap.finished:
            if tr.id in self.seen_done:
                continue
            self.seen_done.add(tr.id)
            self.started.pop(tr.id, None)
            self.scheduler.observe(tr.tenant, tr.candidate, float(tr.score), float(tr.cost or 0.0))
            if tr.finished_at is not None:
                self.watermark = max(self.watermark or tr.finished_at, tr.finished_at)
        for tid, tenant, cand, _attempts in snap.running:
            if tid not in self.started and tid not in self.seen_done:
                self.started[tid] = (tenant, cand)
                self.scheduler.start(tenant, cand)
        # A started trial that is neither running nor observed done has failed (or is between a
        # requeue and our next read); it stays in `started` so that, if it is ever queued again,
        # the check above rebuilds the scheduler.
        return snap

    def claimed(self, claim: Claim) -> None:
        self.started[claim.trial_id] = (claim.tenant, claim.candidate)
        self.scheduler.start(claim.tenant, claim.candidate)


def default_scheduler_factory(name: str = "multitenant", seed: int = 0,
                              prior: list[tuple[str, str, float, float]] | None = None) -> Callable[[], Chooser]:
    from .scheduler import make_scheduler

    return lambda: make_scheduler(name, prior=prior, seed=seed)


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


class Worker:
    def __init__(self, store_url: str, options: WorkerOptions, *, progress: Progress | None = None,
                 catalogue: list[Candidate] | None = None, chooser_factory: Callable[[], Chooser] | None = None,
                 on_result: Callable[[TrialResult], None] | None = None):
        if not DEVICE.match(options.device):
            raise AutomlError(f"--device must be cpu or cuda:N, got {options.device!r}")
        if not options.lease_seconds > 0:
            raise AutomlError(f"--lease must be > 0 seconds, got {options.lease_seconds}")
        self.options = options
        self.store_url = store_url
        self.store = open_store(store_url)
        self.catalogue = by_name(catalogue if catalogue is not None else load_catalogue())
        self.runnable = {n for n, c in self.catalogue.items() if c.runs_on(options.device)}
        self.id = options.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.progress = progress or Progress(False)
        self.feed = SchedulerFeed(self.store, chooser_factory or default_scheduler_factory(options.scheduler, options.seed, options.prior))
        self.on_result = on_result
        self.stop_requested = False
        self._in_training = False
        self._datasets: dict[tuple[str, str], Dataset] = {}
        #: Tenants whose dataset path does not exist on this machine: their trials are left to
        #: workers that can read it (released, never failed).
        self.unavailable: set[str] = set()
        self.results: list[TrialResult] = []

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
            self.store = open_store(self.store_url, create=False)
        except StoreError:
            return  # still down: the next loop fails fast and backs off again
        self.feed.store = self.store
        self.feed._reset()

    def _anything_running(self) -> bool:
        return bool(self.store.snapshot(since=float("inf")).running)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def take(self) -> Claim | None:
        """Decide and claim one trial; None when nothing this worker can run is queued."""
        self.store.requeue_expired(self.options.max_attempts)
        lost: set[tuple[str, str]] = set()
        rebuilt = False
        for _ in range(50):
            snap = self.feed.refresh()
            pending = {}
            for tenant, cands in snap.pending.items():
                if tenant in self.unavailable:
                    continue
                keep = [c for c in cands if c in self.runnable and (tenant, c) not in lost]
                if keep:
                    pending[tenant] = keep
            if not pending:
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
            claim = self.store.try_claim(tenant, cand, self.id, self.options.device, self.options.lease_seconds)
            if claim is not None:
                self.feed.claimed(claim)
                return claim
            lost.add((tenant, cand))  # another worker took it between our read and our claim
        return None

    def _dataset(self, tenant: Tenant) -> Dataset:
        key = (tenant.name, tenant.schema.fingerprint)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(tenant.dataset, tenant.schema)
        return self._datasets[key]

    def _artifact_path(self, tenant: Tenant, claim: Claim) -> str:
        if self.options.artifacts:
            base = os.path.join(self.options.artifacts, tenant.name)
        elif tenant.output:
            base = os.path.join(tenant.output, "trials")
        else:  # no output configured: keep trial models out of the working directory
            cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            base = os.path.join(cache, "easeml-automl", "artifacts", tenant.name)
        os.makedirs(base, exist_ok=True)
        return os.path.join(base, f"{claim.candidate}.onnx")

    def run_trial(self, claim: Claim) -> TrialResult:
        label = f"{claim.tenant}/{claim.candidate}"
        beat = _Heartbeat(self.store_url, self.store, claim, self.options, self.progress, label, self.id)
        beat.start()
        try:
            try:
                tenant = self.store.tenant(claim.tenant)
                cand = self.catalogue[claim.candidate]
                self.progress.line(f"[{self.id}] training {label} on {self.options.device} (attempt {claim.attempt})")
                self._in_training = True
                try:
                    if self.stop_requested:  # the signal came between the claim and now
                        raise Interrupted()
                    if not os.path.exists(tenant.dataset):
                        raise _Unavailable()
                    ds = self._dataset(tenant)
                    X_tr, X_val, y_tr, y_val = ds.split()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # convergence chatter; the score says enough
                        t0 = time.perf_counter()
                        est = cand.build(tenant.schema, self.options.device).fit(X_tr, y_tr)
                        cost = time.perf_counter() - t0
                        score = validation_score(tenant.schema, y_val, est.predict(X_val))
                        blob = export_onnx(est, tenant.schema, X_val)
                finally:
                    self._in_training = False
            except (Interrupted, _Unavailable):
                raise
            except driver_errors("OperationalError"):
                raise  # the store, not the candidate, failed: the run loop reconnects
            except Exception as exc:  # the candidate failed on this data: record it, keep working
                beat.stop()
                msg = f"{type(exc).__name__}: {exc}".strip()
                ok = self.store.fail(claim, self.id, msg)
                self.progress.line(f"[{self.id}] failed   {label}: {msg.splitlines()[0][:200]}")
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
        path = self._artifact_path(tenant, claim)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
        sha = hashlib.sha256(blob).hexdigest()
        ok = self.store.complete(claim, self.id, score, cost, os.path.abspath(path), sha)
        metric = "accuracy" if tenant.schema.task == "classification" else "r2"
        result = TrialResult(claim.tenant, claim.candidate, claim.trial_id, "done" if ok else "lost",
                             score=score, cost=cost, onnx_path=os.path.abspath(path))
        if not ok:
            self.progress.line(f"[{self.id}] lost     {label}: its lease expired and another worker took it")
            return result
        self.progress.line(f"[{self.id}] done     {label}: {metric} {score:.4f}, trained in {cost:.2f}s")
        if self.options.promote:
            from .promote import maybe_promote

            promo = maybe_promote(self.store, tenant, claim.trial_id, cand, blob, score, progress=self.progress,
                                  who=f"[{self.id}] ")
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
                        store = open_store(self.url, create=False)
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
