"""Decision latency of a worker, store round trips included, at production queue size.

Builds a queue of T tenants x C candidates (default 1,000 x 50 = 50,000 trials) in a fresh store,
marks a share of them done (so the scheduler has results to learn from), then runs a real
:class:`automl_runner.worker.worker.Worker` decision loop: ``take()`` (requeue expired leases, read what
changed, ask the multitenant scheduler, claim the trial) timed as one decision, then
``complete()`` with the quality of a synthetic matrix (no training). Prints the median, p95 and
max milliseconds per decision and per ``complete``, and the machine load beside them.

    python bench/store_latency.py                                   # SQLite in a temp dir
    python bench/store_latency.py --store postgresql://127.0.0.1:5432/test
    python bench/store_latency.py --no-cache     # the scheduler scoring every pair on every decision
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid

import numpy as np

from automl_runner.candidates.catalogue import Candidate
from automl_runner.scheduling.matrices import synthetic
from automl_runner.scheduling.registry import make_scheduler
from automl_runner.datasets.schema import infer_schema
from automl_runner.store import open_store
from automl_runner.worker.worker import Worker, WorkerOptions


def _schema(tmp: str):
    path = os.path.join(tmp, "tiny.csv")
    with open(path, "w") as fh:
        fh.write("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    return path, infer_schema(path, "y")


def build(url: str, tenants: int, candidates: int, done_share: float, tmp: str, seed: int = 7):
    m = synthetic(tenants=tenants + 40, candidates=candidates, seed=seed)
    live, other = m.tenants[:tenants], m.tenants[tenants:]
    cands = [Candidate(c, "synthetic", dict) for c in m.candidates]
    dataset, schema = _schema(tmp)
    store = open_store(url)
    store.drop_all()
    store.close()
    store = open_store(url)
    t0 = time.perf_counter()
    for t in live:
        store.add_tenant(t, dataset, schema, cands)
    rng = np.random.default_rng(0)
    finished = 0
    with store._tx() as cur:
        for t in live:
            picks = rng.choice(m.candidates, size=int(done_share * candidates), replace=False)
            for c in picks:
                store._exec(cur, "UPDATE trials SET status = 'done', score = ?, cost = ?, finished_at = {now} "
                            "WHERE tenant = ? AND candidate = ?", (m.quality[t][c], m.cost[t][c], t, c))
                finished += 1
    if store.kind == "postgresql":
        with store._tx() as cur:  # what autovacuum does within a minute of such a change
            cur.execute("ANALYZE")
    build_s = time.perf_counter() - t0
    store.close()
    return m, m.without(live).rows, cands, finished, build_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="store URL (default: a SQLite file in a temp dir)")
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--done-share", type=float, default=0.2, help="share of each tenant's trials already done")
    ap.add_argument("--decisions", type=int, default=200)
    ap.add_argument("--no-cache", action="store_true",
                    help="score every pending pair on every decision (the scheduler before its score cache)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or os.path.join(tmp, "queue.db")
        if url.startswith("postgres"):
            url += ("&" if "?" in url else "?") + f"schema=bench_{uuid.uuid4().hex[:8]}"
        m, prior, cands, finished, build_s = build(url, args.tenants, args.candidates, args.done_share, tmp)

        def factory():
            sched = make_scheduler("multitenant", prior=prior, seed=0)
            sched.cache_scores = not args.no_cache
            return sched

        w = Worker(url, WorkerOptions(device="cpu", promote=False, worker_id="bench"), catalogue=cands,
                   chooser_factory=factory)
        w.store.sync_catalogue(cands)
        # Split each decision: the store part (requeue, incremental read, claim) and the
        # scheduler's choose, timed by wrapping the two calls the worker makes.
        parts = {"choose": 0.0}
        sched = w.feed.scheduler
        orig_choose = sched.choose

        def timed_choose(pending):
            t = time.perf_counter()
            try:
                return orig_choose(pending)
            finally:
                parts["choose"] += time.perf_counter() - t

        sched.choose = timed_choose
        decide_ms, complete_ms, choose_ms = [], [], []
        load0 = os.getloadavg()[0]
        for i in range(args.decisions + 1):
            parts["choose"] = 0.0
            t0 = time.perf_counter()
            claim = w.take()
            t1 = time.perf_counter()
            if claim is None:
                break
            w.store.complete(claim, w.id, m.quality[claim.tenant][claim.candidate],
                             m.cost[claim.tenant][claim.candidate], None, None)
            t2 = time.perf_counter()
            if i == 0:  # the first decision reads the whole queue once
                first_ms = (t1 - t0) * 1e3
                # Changes younger than the feed's slack are read again by each decision: wait it
                # out, so that the 10,000 results written in one go above are not timed.
                time.sleep(w.feed.SLACK + 1.0)
                continue
            decide_ms.append((t1 - t0) * 1e3)
            choose_ms.append(parts["choose"] * 1e3)
            complete_ms.append((t2 - t1) * 1e3)
        load1 = os.getloadavg()[0]
        if w.feed.scheduler is not sched:
            print("note: the scheduler was rebuilt during the run; the choose/store split is partial")
        kind = "postgresql" if url.startswith("postgres") else "sqlite"
        if kind == "postgresql":
            w.store.drop_all()
        w.store.close()
    print(f"{kind}: {args.tenants} tenants x {args.candidates} candidates = {args.tenants * args.candidates} trials "
          f"({finished} done at the start; queue built in {build_s:.0f} s); {len(decide_ms)} decisions timed "
          f"after a first one of {first_ms:.0f} ms; {'no score cache' if args.no_cache else 'score cache'}; load average {load0:.2f} -> {load1:.2f} on {os.cpu_count()} CPUs")
    print("| step | median ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    store_ms = [d - c for d, c in zip(decide_ms, choose_ms)]
    for label, xs in (("decision (requeue + read + choose + claim)", decide_ms),
                      ("  of which the store (requeue + read + claim)", store_ms),
                      ("  of which the scheduler's choose", choose_ms), ("complete", complete_ms)):
        a = np.array(xs)
        print(f"| {label} | {np.median(a):.2f} | {np.percentile(a, 95):.2f} | {a.max():.2f} |")


if __name__ == "__main__":
    main()
