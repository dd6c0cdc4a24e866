"""A GPU worker end to end: submit, work on ``cuda:N``, promote, gate the promoted model.

The path a team running the queue takes, through the command lines: ``easeml-automl submit`` two
tenants (8x8 digit images, sklearn's 1,797 digits resampled with a one-pixel shift and pixel noise
to ``--rows`` rows each, so the networks have something to train on), ``easeml-automl work
--device DEVICE --exit-when-idle`` until their candidates are trained, ``easeml-automl status
--json`` for where the trials ran, then ``easeml-automl testset`` on held-out rows encoded by the
promoted model's card and ``easeml-ci check`` gating the promoted model against another trial's.

Run once per device on one machine and compare trials per minute (from the store's own
timestamps, first claim to last result; process start-up excluded)::

    python bench/gpu_worker.py --devices cuda:0 cpu          # the GPU, then the CPU, same queue
    python bench/gpu_worker.py --devices cpu --rows 3000     # no GPU here: the CPU alone

While a ``cuda`` worker runs, ``nvidia-smi`` is sampled every 0.5 s for the worker's process and
the GPU's utilisation, so "the trials ran on the GPU" rests on two independent witnesses: the
store's ``ran_on`` (the device of the network's weights while training) and the driver's own
list of processes holding GPU memory. ``--json`` prints one object instead of the table.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

DEFAULT_CANDIDATES = ("torch-mlp-128-64", "torch-cnn-16-32", "xgboost-200")
AUTOML = [sys.executable, "-m", "automl_runner.cli"]
GATE = [sys.executable, "-c", "import sys; from easeml_ci.cli import main; sys.exit(main())"]
CONFIG = ('condition: "n > 0.85 +/- 0.05 and d < 0.5 +/- 0.05"\nreliability: 0.99\n'
          'adaptivity: full\nsteps: 8\n')


def digit_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 8x8 digit images: sklearn's digits resampled, shifted by up to a pixel, with noise."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(y), n)
    images = X[pick].reshape(n, 8, 8)
    shifted = np.empty_like(images)
    for i, (dy, dx) in enumerate(rng.integers(-1, 2, (n, 2))):
        shifted[i] = np.roll(np.roll(images[i], dy, axis=0), dx, axis=1)
    noisy = np.clip(shifted + rng.normal(0, 1.0, shifted.shape), 0, 16).round(1)
    return noisy.reshape(n, 64), y[pick]


def write_csv(path: str, X: np.ndarray, y: np.ndarray) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"px{i}" for i in range(X.shape[1])] + ["digit"])
        for row, label in zip(X, y):
            w.writerow([f"{v:g}" for v in row] + [int(label)])


def sh(cmd: list[str], env: dict, cwd: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


class GpuWitness(threading.Thread):
    """Samples nvidia-smi: the GPU's utilisation and the compute processes holding its memory."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            util = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True).stdout.strip()
            apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True).stdout.strip()
            try:
                u, mem = (float(v) for v in util.splitlines()[0].split(","))
            except (ValueError, IndexError):
                u, mem = float("nan"), float("nan")
            pids = [int(line.split(",")[0]) for line in apps.splitlines() if line.strip()]
            self.samples.append({"util": u, "mem_mib": mem, "pids": pids})
            self.stop.wait(0.5)

    def summary(self, worker_pid: int) -> dict:
        held = [s for s in self.samples if worker_pid in s["pids"]]
        utils = [s["util"] for s in self.samples if s["util"] == s["util"]]
        return {"samples": len(self.samples), "worker_held_gpu_memory_in": len(held),
                "util_max": max(utils, default=float("nan")),
                "util_mean": float(np.mean(utils)) if utils else float("nan"),
                "mem_mib_max": max((s["mem_mib"] for s in self.samples), default=float("nan"))}


def run_device(tmp: str, device: str, args, env: dict) -> dict:
    from automl_runner.store import open_store

    work_dir = os.path.join(tmp, device.replace(":", ""))
    os.makedirs(work_dir)
    url = f"sqlite:///{os.path.join(work_dir, 'q.db')}"
    for t in range(args.tenants):
        only = [a for c in args.candidates for a in ("--only", c)]
        sh(AUTOML + ["submit", os.path.join(tmp, f"digits{t}.csv"), "--store", url, "--name", f"digits{t}",
                     "--target", "digit", "--output", os.path.join(work_dir, f"out{t}"), "--root", work_dir,
                     "--margin", "0"] + only, env)
    cmd = AUTOML + ["work", "--store", url, "--device", device, "--threads", str(args.threads), "--exit-when-idle",
                    "--poll", "0.2", "--json", "--prior", "none", "--worker-id", f"bench-{device}"]
    witness = GpuWitness() if device.startswith("cuda") and shutil.which("nvidia-smi") else None
    if witness:
        witness.start()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate()
    if witness:
        witness.stop.set()
        witness.join()
    if proc.returncode != 0:
        raise SystemExit(f"worker on {device} failed ({proc.returncode}): {err[-3000:]}")
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    status = json.loads(sh(AUTOML + ["status", "--store", url, "--json"], env).stdout)
    with open_store(url) as s:
        first, last, done, busy = s._read("SELECT MIN(started_at), MAX(finished_at), COUNT(*), SUM(cost) "
                                          "FROM trials WHERE status = 'done'")[0]
        ran_on = dict(s._read("SELECT ran_on, COUNT(*) FROM trials WHERE status = 'done' GROUP BY ran_on"))
        per_candidate = s._read("SELECT candidate, AVG(cost), COUNT(*) FROM trials WHERE status = 'done' "
                                "GROUP BY candidate ORDER BY candidate")
        failed = s._read("SELECT COUNT(*) FROM trials WHERE status <> 'done'")[0][0]
    minutes = (last - first) / 60.0 if done else float("nan")
    report = {"device": device, "threads": args.threads, "done": done, "failed": failed, "minutes": minutes,
              "trials_per_min": done / minutes if done else 0.0, "train_s": busy, "ran_on": ran_on,
              "seconds_per_trial": {c: round(cost, 3) for c, cost, _ in per_candidate},
              "status_ran_on": {t["name"]: t.get("ran_on") for t in status.get("tenants", [])},
              "scores": {f"{r.get('tenant')}/{r.get('candidate')}": r.get("score") for r in results}}
    if witness:
        report["nvidia_smi"] = witness.summary(proc.pid)
    report["gate"] = gate_promoted(tmp, work_dir, env)
    return report


def gate_promoted(tmp: str, work_dir: str, env: dict) -> dict:
    """Tenant 0's promoted model, judged by the gate on held-out rows encoded by its card."""
    out = os.path.join(work_dir, "out0")
    card = json.load(open(os.path.join(out, "model-card.json")))
    testset = os.path.join(work_dir, "testset.npz")
    fingerprint = sh(AUTOML + ["testset", "--card", os.path.join(out, "model-card.json"),
                               os.path.join(tmp, "holdout.csv"), testset], env).stdout.strip()
    trials = sorted(p for p in os.listdir(os.path.join(out, "trials")) if p.endswith(".onnx"))
    old = next((p for p in trials if not p.startswith(card["candidate"])), trials[0])
    with open(os.path.join(work_dir, ".easeml.yml"), "w") as fh:
        fh.write(CONFIG)
    r = sh(GATE + ["check", "--config", ".easeml.yml", "--new", os.path.join(out, "model.onnx"),
                   "--old", os.path.join(out, "trials", old), "--testset", testset, "--json"], env, cwd=work_dir,
           check=False)
    if r.returncode not in (0, 1):
        raise SystemExit(f"easeml-ci check failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    verdict = json.loads(r.stdout)
    return {"promoted": card["candidate"], "promoted_score": card.get("validation_score", card.get("score")),
            "old": old, "verdict": verdict["verdict"], "exit_code": r.returncode, "step": verdict["step"],
            "testset": fingerprint[:12], "test_examples": verdict["plan"]["test_examples"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", default=["cuda:0", "cpu"])
    ap.add_argument("--tenants", type=int, default=2)
    ap.add_argument("--rows", type=int, default=20000, help="rows per tenant's dataset")
    ap.add_argument("--holdout", type=int, default=6000, help="held-out rows the gate judges on")
    ap.add_argument("--threads", type=int, default=0,
                    help="the worker's --threads (0: every pool at its default, all cores: the CPU at its best)")
    ap.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from automl_runner.candidates.catalogue import load_catalogue

    known = {c.name for c in load_catalogue()}
    missing = [c for c in args.candidates if c not in known]
    args.candidates = [c for c in args.candidates if c in known]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        env["XDG_CACHE_HOME"] = os.path.join(tmp, "cache")
        for t in range(args.tenants):
            write_csv(os.path.join(tmp, f"digits{t}.csv"), *digit_rows(args.rows, seed=t))
        write_csv(os.path.join(tmp, "holdout.csv"), *digit_rows(args.holdout, seed=1000))
        for device in args.devices:
            t0 = time.time()
            reports.append(run_device(tmp, device, args, env))
            reports[-1]["wall_s"] = round(time.time() - t0, 1)
            if not args.json:
                print(json.dumps(reports[-1]), file=sys.stderr, flush=True)
    machine = {"cpus": os.cpu_count(), "load": os.getloadavg()[0], "not_in_catalogue": missing}
    try:
        import torch

        machine["torch"] = torch.__version__
        machine["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    if args.json:
        print(json.dumps({"machine": machine, "runs": reports}, indent=1))
        return
    print(f"{args.tenants} tenants x {len(args.candidates)} candidates ({', '.join(args.candidates)}), "
          f"{args.rows} rows each; machine: {machine}")
    print("| device | trials | trials/min | s/trial by candidate | ran on (store) | GPU held by worker (nvidia-smi) "
          "| promoted | gate verdict |")
    print("|---|---:|---:|---|---|---|---|---|")
    for r in reports:
        smi = r.get("nvidia_smi")
        held = f"{smi['worker_held_gpu_memory_in']}/{smi['samples']} samples, util max {smi['util_max']:.0f}%" \
            if smi else "-"
        g = r["gate"]
        print(f"| {r['device']} | {r['done']} | {r['trials_per_min']:.1f} | {r['seconds_per_trial']} | {r['ran_on']} "
              f"| {held} | {g['promoted']} | {g['verdict']} (exit {g['exit_code']}, step {g['step']}) |")


if __name__ == "__main__":
    main()
