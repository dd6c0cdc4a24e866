#!/usr/bin/env python
"""Does a model's run time still show a secret value under the hard clock?

Two test sets of 400 rows differ in one secret value (row 7, feature 0: 2 in one, large in the
other). Two models read it and do work it sizes, on the side of right labels:

* ``loop``: an ONNX Loop of as many iterations as the value (onnxruntime's terminate flag is
  checked between its iterations);
* ``matmul``: ONE MatMul of two k x k matrices, k the value (the flag is never checked inside
  it: the old clock overran 3 s by 30 s).

Each (model, test set) is checked by the real ``easeml-ci check`` in a subprocess, timed from
start to exit, under ``evaluation_time`` = the runner default (``--evaluation-time`` to pick
another) and, for comparison, without a clock (capped by ``--cap``: a run past it is killed and
reported as "> cap"). The figure that matters: the spread between the two test sets under the
clock, per model (target < 0.5 s). The clocked runs of one model run one after the other
(``--side-by-side``: at once, noisier), so the bench takes about two clocks per model.

A second table is the child process's cost: ``evaluate_on_testset`` (fork, a fresh session in
the child, predictions back through shared memory) against ``load_predictions`` in the process,
no clock, an MLP (64 -> 256 -> 3) on ``--rows`` rows; medians of ``--reps``.

Usage: .venv/bin/python bench/hard_clock.py [--evaluation-time 300] [--cap 60] [--rows 200000]
       [--reps 5] [--json]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "easeml_ci"))

SECRETS = {"loop": (2.0, 1e9), "matmul": (2.0, 20000.0)}  # large: > 5 min of work; 3.2 GB


def _models(folder: Path) -> dict[str, Path]:
    from test_hard_clock import matmul_model
    from test_model_side_channels import _slow_model

    paths = {"loop": folder / "loop.onnx", "matmul": folder / "matmul.onnx"}
    _slow_model(paths["loop"])
    matmul_model(paths["matmul"])
    return paths


def _testset(path: Path, secret: float) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    X = np.column_stack([rng.uniform(0, 3, 400), y]).astype(np.float32)
    X[7, 0] = secret
    np.savez(path, X=X, y=y)


def _check(folder: Path, model: Path, testset: Path, clock: float | None, cap: float) -> dict:
    run = Path(tempfile.mkdtemp(dir=folder))
    (run / ".easeml.yml").write_text(
        'condition: "n > 0.8 +/- 0.1"\nreliability: 0.9\nadaptivity: full\nsteps: 4\n'
        "ledger:\n  backend: file\n  path: ledger\n"
        + (f"evaluation_time: {clock:g}s\n" if clock else ""))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GITHUB_ACTIONS", None)  # the clock is the config's, as the runner default would be
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", "from easeml_ci.cli import main; main()",
                               "check", "--config", str(run / ".easeml.yml"), "--new", str(model),
                               "--testset", str(testset), "--json"], capture_output=True,
                              text=True, env=env, timeout=cap)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "verdict": "killed by the bench", "exit": None}
    took = time.monotonic() - start
    verdict = json.loads(done.stdout).get("verdict") if done.stdout.strip() else None
    return {"seconds": round(took, 3), "verdict": verdict, "exit": done.returncode}


def _overhead(rows: int, reps: int) -> dict:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    from easeml_ci.models import evaluate_on_testset, load_predictions, preflight
    from easeml_ci.testsets import TestSet

    rng = np.random.default_rng(0)
    W1 = rng.normal(size=(64, 256)).astype(np.float32)
    W2 = rng.normal(size=(256, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "W2"], ["s"]),
         helper.make_node("ArgMax", ["s"], ["label"], axis=1, keepdims=0)],
        "mlp", [helper.make_tensor_value_info("X", T.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("label", T.INT64, [None])],
        initializer=[numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(W2, "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.onnx"
        onnx.save(model, str(path))
        opened = preflight(str(path))
        X = rng.normal(size=(rows, 64)).astype(np.float32)
        ts = TestSet(X=X, y=rng.integers(0, 3, rows), fingerprint="0" * 64, source=Path("bench"))
        here, child = [], []
        for _ in range(reps):
            t = time.perf_counter()
            a = load_predictions(opened, ts)
            here.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = evaluate_on_testset({"new": opened}, ts)["new"]
            child.append(time.perf_counter() - t)
            assert np.array_equal(a, b)
    med_here, med_child = statistics.median(here), statistics.median(child)
    return {"rows": rows, "in_process_s": round(med_here, 3), "child_s": round(med_child, 3),
            "overhead_s": round(med_child - med_here, 3)}


@click.command()
@click.option("--evaluation-time", "clock", type=float, default=None,
              help="The clock, seconds [default: the runner default, easeml_ci.models.clock].")
@click.option("--side-by-side", is_flag=True,
              help="Run the two clocked checks of a model at once (half the time, noisier).")
@click.option("--cap", type=float, default=30.0, show_default=True,
              help="Seconds after which an unclocked run is killed by the bench.")
@click.option("--rows", type=int, default=200_000, show_default=True)
@click.option("--reps", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(clock, side_by_side, cap, rows, reps, as_json):
    from easeml_ci.models.clock import RUNNER_DEFAULT

    clock = clock or RUNNER_DEFAULT
    figures = {"evaluation_time_s": clock, "models": {}}
    with tempfile.TemporaryDirectory(prefix="hard-clock-") as tmp:
        folder = Path(tmp)
        models = _models(folder)
        for name, path in models.items():
            sets = {}
            for label, secret in zip(("small", "large"), SECRETS[name]):
                sets[label] = folder / f"{name}-{label}.npz"
                _testset(sets[label], secret)
            if side_by_side:  # quicker, but the runs then slow each other down
                with ThreadPoolExecutor(2) as pool:
                    clocked = dict(zip(sets, pool.map(
                        lambda ts: _check(folder, path, ts, clock, clock + 120), sets.values())))
            else:
                clocked = {label: _check(folder, path, ts, clock, clock + 120)
                           for label, ts in sets.items()}
            free = {label: _check(folder, path, ts, None, cap) for label, ts in sets.items()}
            spread = abs(clocked["small"]["seconds"] - clocked["large"]["seconds"])
            figures["models"][name] = {"secret": dict(zip(("small", "large"), SECRETS[name])),
                                       "clock": clocked, "no_clock": free,
                                       "spread_s": round(spread, 3)}
    figures["child_overhead"] = _overhead(rows, reps)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return

    def shown(run):
        return f"> {cap:g} s (killed)" if run["seconds"] is None else \
            f"{run['seconds']:.2f} s ({run['verdict']})"

    click.echo(f"evaluation_time {clock:g} s; test sets differ in one secret value\n")
    click.echo("| model | secret small: clock | secret large: clock | spread (target < 0.5 s) "
               "| no clock: small | no clock: large |")
    click.echo("|---|---|---|---|---|---|")
    for name, f in figures["models"].items():
        click.echo(f"| {name} | {shown(f['clock']['small'])} | {shown(f['clock']['large'])} | "
                   f"**{f['spread_s']:.3f} s** | {shown(f['no_clock']['small'])} | "
                   f"{shown(f['no_clock']['large'])} |")
    o = figures["child_overhead"]
    click.echo(f"\nchild process, MLP 64-256-3 on {o['rows']:,} rows, no clock (median of {reps}): "
               f"in process {o['in_process_s']:.3f} s, in a child {o['child_s']:.3f} s, "
               f"overhead {o['overhead_s']:+.3f} s")


if __name__ == "__main__":
    main()
