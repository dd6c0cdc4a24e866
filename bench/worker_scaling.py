"""Trials per minute of 1 and 2 workers, with and without the per-worker thread caps.

Queues T tenants (copies of sklearn's digits, 1,797 rows x 64 features, each shuffled with its
own seed) x the candidates given, then runs `easeml-automl work --exit-when-idle` as 1 or W
worker processes on one SQLite store and reports trials per minute from the store's own
timestamps (first claim to last result, so process start-up is not counted), with the machine's
load average beside it (the machine may be shared: read the figures with the load).

    python bench/worker_scaling.py                       # 1 and 2 workers, --threads 1 and uncapped
    python bench/worker_scaling.py --workers 2 --configs capped
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from automl_runner.candidates.catalogue import load_catalogue
from automl_runner.datasets.schema import infer_schema
from automl_runner.store import open_store

DEFAULT_CANDIDATES = ("logreg-C1", "lda", "mlp-64", "svc-rbf-C1", "random-forest-100", "xgboost-200",
                      "torch-mlp-128-64")


def _tenant_csv(path: str, seed: int) -> None:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"px{i}" for i in range(X.shape[1])] + ["digit"])
        for i in order:
            w.writerow([int(v) for v in X[i]] + [int(y[i])])


def run(tmp: str, workers: int, threads: int, tenants: int, candidates: list[str]) -> dict:
    db = os.path.join(tmp, f"q-{workers}-{threads}.db")
    url = f"sqlite:///{db}"
    cat = load_catalogue()
    with open_store(url) as s:
        for t in range(tenants):
            path = os.path.join(tmp, f"digits{t}.csv")
            if not os.path.exists(path):
                _tenant_csv(path, t)
            s.add_tenant(f"digits{t}", path, infer_schema(path, "digit"), cat, only=candidates)
    env = dict(os.environ, XDG_CACHE_HOME=os.path.join(tmp, "cache"))
    load0 = os.getloadavg()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "automl_runner.cli", "work", "--store", url, "--exit-when-idle", "--poll", "0.2",
           "--no-promote", "--json", "--prior", "none", "--threads", str(threads)]
    t0 = time.time()
    procs = [subprocess.Popen(cmd + ["--worker-id", f"w{i}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env) for i in range(workers)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed ({p.returncode}): {err.decode()[-2000:]}")
    wall = time.time() - t0
    load1 = os.getloadavg()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    with open_store(url) as s:
        rows = s._read("SELECT MIN(started_at), MAX(finished_at), COUNT(*), SUM(cost) FROM trials WHERE status = 'done'")
        failed = s._read("SELECT COUNT(*) FROM trials WHERE status <> 'done'")[0][0]
    first, last, done, busy = rows[0]
    minutes = (last - first) / 60.0
    return {"workers": workers, "threads": threads, "done": done, "failed": failed, "minutes": minutes,
            "per_min": done / minutes, "train_s": busy, "wall_s": wall, "load": (load0[0], load1[0]),
            "cpu_per_trial": cpu_s / max(done, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES))
    ap.add_argument("--configs", nargs="+", choices=["capped", "uncapped"], default=["capped", "uncapped"],
                    help="capped: --threads 1 per worker; uncapped: --threads 0 (every pool at its default)")
    args = ap.parse_args()
    known = {c.name for c in load_catalogue()}
    cands = [c for c in args.candidates if c in known]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            threads = 1 if config == "capped" else 0
            for w in (1, args.workers):
                r = run(tmp, w, threads, args.tenants, cands)
                results.append(r)
                print(f"{config:>8} {w} worker(s): {r['done']} trials in {r['minutes']:.2f} min = "
                      f"{r['per_min']:.1f}/min, {r['cpu_per_trial']:.2f} CPU s/trial "
                      f"(load {r['load'][0]:.1f} -> {r['load'][1]:.1f})", flush=True)
    print(f"\n{args.tenants} tenants (digits, 1,797 x 64) x {len(cands)} candidates ({', '.join(cands)}); "
          f"{os.cpu_count()} CPUs")
    print("CPU s/trial: the workers' CPU time (start-up included) per trial; it does not depend on what else")
    print("runs on the machine, so equal figures for 1 and W workers mean the workers do not slow each other.")
    print("| threads per worker | workers | trials | trials/min | scaling vs 1 worker | CPU s/trial | load avg (start -> end) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    base = {}
    for r in results:
        key = r["threads"]
        if r["workers"] == 1:
            base[key] = r["per_min"]
        scale = r["per_min"] / base[key] if key in base else float("nan")
        label = "1 (capped)" if r["threads"] == 1 else "uncapped"
        print(f"| {label} | {r['workers']} | {r['done']} | {r['per_min']:.1f} | {scale:.2f}x | "
              f"{r['cpu_per_trial']:.2f} | {r['load'][0]:.1f} -> {r['load'][1]:.1f} |")


if __name__ == "__main__":
    main()
