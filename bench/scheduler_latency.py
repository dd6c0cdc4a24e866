"""Decision time of the multitenant scheduler at production size.

100 tenants x 50 candidates, prior from 40 other tenants, 2,000 finished trials (20 per
tenant) and one trial running per device (8 devices); then times ``choose`` followed by the
bookkeeping of one finished trial (``observe`` + ``start``), i.e. a whole decision cycle.

    python bench/scheduler_latency.py [--decisions 500] [--tenants 1000 --finished 10000] [--no-prior] [--no-cache]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from automl_runner.scheduling.matrices import synthetic
from automl_runner.scheduling.registry import make_scheduler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--finished", type=int, default=2000)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--decisions", type=int, default=500)
    ap.add_argument("--no-prior", action="store_true", help="time the no-prior mode (online candidate effects)")
    ap.add_argument("--no-cache", action="store_true",
                    help="score every pending pair on every decision (the scheduler before its score cache)")
    args = ap.parse_args()

    m = synthetic(tenants=args.tenants + 40, candidates=args.candidates, seed=7)
    names = m.tenants
    prior = m.without(names[: args.tenants]).rows
    live = m.subset(names[: args.tenants])
    sched = make_scheduler("multitenant", prior=None if args.no_prior else prior, seed=0)
    sched.cache_scores = not args.no_cache
    rng = np.random.default_rng(0)
    pending = {t: list(live.quality[t]) for t in live.tenants}
    per_tenant = args.finished // args.tenants
    for t in live.tenants:
        for c in rng.choice(pending[t], size=per_tenant, replace=False):
            pending[t].remove(c)
            sched.observe(t, c, live.quality[t][c], live.cost[t][c])
    running = []
    for _ in range(args.devices):
        t, c = sched.choose(pending)
        pending[t].remove(c)
        sched.start(t, c)
        running.append((t, c))

    choose_ms, cycle_ms = [], []
    for _ in range(args.decisions):
        t0 = time.perf_counter()
        done_t, done_c = running.pop(0)
        sched.observe(done_t, done_c, live.quality[done_t][done_c], live.cost[done_t][done_c])
        t1 = time.perf_counter()
        t, c = sched.choose(pending)
        t2 = time.perf_counter()
        pending[t].remove(c)
        sched.start(t, c)
        t3 = time.perf_counter()
        running.append((t, c))
        choose_ms.append((t2 - t1) * 1e3)
        cycle_ms.append((t3 - t0) * 1e3)
        if choose_ms[-1] > 20:
            print(f"slow decision #{len(choose_ms)}: {choose_ms[-1]:.1f} ms")
        if not any(pending.values()):
            break
    finished = sum(len(d) for d in sched.done.values())
    print(f"{args.tenants} tenants x {args.candidates} candidates, {finished} finished trials at the end, "
          f"{args.devices} running, {len(choose_ms)} decisions, {'no prior' if args.no_prior else 'prior of 40 tenants'}, "
          f"{'no score cache' if args.no_cache else 'score cache'}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print("| step | median ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for label, xs in (("choose", choose_ms), ("observe + choose + start", cycle_ms)):
        a = np.array(xs)
        print(f"| {label} | {np.median(a):.2f} | {np.percentile(a, 95):.2f} | {a.max():.2f} |")


if __name__ == "__main__":
    main()
