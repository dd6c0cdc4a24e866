#!/usr/bin/env python
"""What does a gate check cost on top of running the two models?

Builds (once, cached under bench/out/check_overhead/; 1-2 minutes) a 1,000,000-row test set,
encrypts it, and trains two scikit-learn models exported to ONNX. Then, interleaved, it runs

* the full ``easeml-ci check --json`` as a subprocess against a fresh copy of a ledger in which
  the test set is registered, as it is for every pull request's check (interpreter start,
  imports, ledger, decrypt in memory, both models, decision, commit, exit), timed from outside;
* the **bare process** (the baseline since 2026-12-07): what a user without the gate would run,
  also timed from outside: a fresh interpreter that imports numpy and onnxruntime, loads the
  plaintext ``.npz``, makes a default session per model and runs it on the whole array, or in the
  check's batch size; the faster of the two is the baseline;
* the **bare inference** (the baseline before 2026-12-07, kept for comparison): the same sessions
  and runs timed *inside* a process whose arrays are already in memory, so it leaves out the
  interpreter start, the imports and the reading of the test set, which any run pays: the check
  was charged for them and the baseline was not. Ratios against both are printed;

and prints a Markdown table: CPU and wall times and their ratios (target <= 1.05x wall; CPU time
is the figure a busy shared machine disturbs least; wall time is given as medians and best runs),
and the check's peak resident memory (GNU time) against 3 x (decrypted test set + model files).
A second table splits the check into phases (the same calls, in-process) to show where any
overhead goes.

Before timing, the project's modules are compiled to bytecode (``compileall``), as ``pip
install`` does: where ``PYTHONDONTWRITEBYTECODE`` is set (this machine sets it) the check would
otherwise compile its ~60 modules from source on every run (~0.1 s), which an installed gate never
does, while numpy's and onnxruntime's bytecode is already there.

The order of the sides is rotated by one each rep, so that with ``--reps`` a multiple of the
number of sides (3, 4 with ``--compare-tree``, once the whole-array ways are out; up to 6) every
side runs in every position equally often.
Before the timed reps, each whole-array way (bare process, bare inference) runs twice beside its
batched way; one whose best run is 1.2x slower than the batched median stays out of the reps:
it cannot be the baseline, and its 1.2 GB free is the largest disturbance of the runs after it
(for the default pair it is ~1.5x slower). Each tree's check also runs once, untimed, first.
A fixed order was not fair on a VM with free-page reporting (virtio-balloon, as here): the
whole-array bare process frees 1.2 GB, the host takes those pages back a second or two later,
and whichever run then touches fresh memory pays the host's faults. In the fixed order the
batched bare process always ran straight after that free (pages still warm) and the check
always ran next (pages gone): measured 2026-12-07, the same code, check / bare process 1.00x
wall with no whole-array run in the loop and 1.13x with one before them.

Model pairs (--models): ``gbdt-mlp`` (default; a 100-tree gradient-boosted ensemble as the old
model and a (128, 128) MLP as the new one — the kind of models a 1M-row test set is kept for)
and ``small`` (logistic regression vs a (64, 64) MLP: inference is cheap, so this shows the
check's fixed cost at its worst).

Usage: .venv/bin/python bench/check_overhead.py [--rows 1000000] [--reps 5] [--models gbdt-mlp]
       [--json]
"""
from __future__ import annotations

import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "check_overhead"
CONDITION = "n - o > 0.01 +/- 0.01"
RELIABILITY = 0.999
ADAPTIVITY, STEPS = "full", 8
KEY_ENV = "EASEML_BENCH_TESTSET_KEY"


# --- building the inputs (cached) ---------------------------------------------------------------

def _models(kind: str, seed: int):
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if kind == "gbdt-mlp":
        return {"old": GradientBoostingClassifier(n_estimators=100, max_depth=4, random_state=seed),
                "new": MLPClassifier((128, 128), max_iter=40, early_stopping=True, random_state=seed)}
    if kind == "small":
        return {"old": LogisticRegression(max_iter=1000),
                "new": MLPClassifier((64, 64), max_iter=100, early_stopping=True, random_state=seed)}
    raise click.BadParameter(f"unknown model pair {kind!r}; allowed: gbdt-mlp, small")


def build(rows: int, features: int, kind: str, seed: int = 7) -> Path:
    """Write testset.npz/.enc, old.onnx, new.onnx and key.txt into a cache folder; reuse it."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification

    from easeml_ci.testsets import crypto
    from easeml_ci.testsets import encrypt_testset, load_testset

    folder = OUT / f"{kind}-{rows}x{features}"
    done = folder / "done.json"
    if done.exists():
        enc = folder / "testset.enc"
        if crypto.read_header(enc).chunk_bytes != crypto.DEFAULT_CHUNK_BYTES:  # format changed
            key = base64.urlsafe_b64decode((folder / "key.txt").read_text().strip())
            encrypt_testset(load_testset(folder / "testset.npz"), enc, key)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    n_train = 10_000
    X, y = make_classification(n_samples=n_train + rows, n_features=features, n_informative=8,
                               n_redundant=4, n_clusters_per_class=3, class_sep=1.2,
                               flip_y=0.02, random_state=seed)
    X = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model in _models(kind, seed).items():
            click.echo(f"training {name}: {type(model).__name__}", err=True)
            model.fit(X[:n_train], y[:n_train])
            onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
            (folder / f"{name}.onnx").write_bytes(onx.SerializeToString())
    np.savez(folder / "testset.npz", X=X[n_train:], y=y[n_train:])
    del X, y
    key = crypto.generate_key()
    (folder / "key.txt").write_text(key + "\n")
    ts = load_testset(folder / "testset.npz")
    encrypt_testset(ts, folder / "testset.enc", base64.urlsafe_b64decode(key))
    done.write_text(json.dumps({"build_s": round(time.perf_counter() - started, 1)}))
    return folder


# --- one measured run of each side ------------------------------------------------------------------

TIME = Path("/usr/bin/time")


def spawn(cmd: list[str], **kwargs) -> dict:
    """Run ``cmd``; return its output, wall time, CPU time and peak RSS.

    The peak comes from /usr/bin/time (GNU time's %M): Linux carries a process's ru_maxrss
    over fork+exec, so wait4() on a child of this (large) benchmark process would report our
    own footprint instead of the child's. GNU time is a tiny parent, so its figure is the
    child's own. Without it, the figure is an upper bound and is marked so.
    """
    with tempfile.NamedTemporaryFile(prefix="rusage-", suffix=".txt") as stats:
        wrapped = ([str(TIME), "-f", "%M %U %S", "-o", stats.name] + cmd) if TIME.exists() else cmd
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = children.ru_utime + children.ru_stime
        started = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
        out, err = proc.communicate()
        wall = time.perf_counter() - started
        if TIME.exists():
            fields = Path(stats.name).read_text().split()[-3:]
            peak, cpu = int(fields[0]) * 1024, float(fields[1]) + float(fields[2])
        else:  # machines without GNU time: CPU from our children's totals, peak an upper bound
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            peak = usage.ru_maxrss * 1024
            cpu = usage.ru_utime + usage.ru_stime - before
            click.echo("note: /usr/bin/time not found; peak memory is an upper bound", err=True)
    return {"code": proc.returncode, "out": out, "err": err, "wall_s": wall, "cpu_s": cpu,
            "peak_rss_bytes": peak}


#: Every child runs this tree's code (not whatever an editable install points at).
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
#: The console script (cli.run; cli.main in a --compare-tree checkout from before 2026-12-07).
CHECK = [sys.executable, "-c", "import easeml_ci.cli as cli; getattr(cli, 'run', cli.main)()"]


def _check_env(folder: Path, tree: Path) -> dict:
    return dict(CHILD_ENV, PYTHONPATH=str(tree), **{KEY_ENV: (folder / "key.txt").read_text().strip()})


def _write_config(work: Path) -> Path:
    config = work / ".easeml.yml"
    config.write_text(f'condition: "{CONDITION}"\nreliability: {RELIABILITY}\n'
                      f"mode: fp-free\nadaptivity: {ADAPTIVITY}\nsteps: {STEPS}\n")
    return config


_REGISTERED: dict[Path, Path] = {}


def registered_ledger(folder: Path, tree: Path) -> Path:
    """A ``.easeml`` folder whose ledger has the test set registered by ``tree``'s own
    ``testset register`` (made once per tree, untimed; every check gets a fresh copy)."""
    if tree not in _REGISTERED:
        import atexit
        import shutil

        work = Path(tempfile.mkdtemp(prefix="check-overhead-ledger-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        config = _write_config(work)
        done = subprocess.run([*CHECK, "testset", "register", str(folder / "testset.enc"),
                               "--config", str(config), "--key-env", KEY_ENV],
                              cwd=work, env=_check_env(folder, tree), capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"testset register exited {done.returncode}: "
                             f"{done.stderr.decode(errors='replace').strip()}")
        _REGISTERED[tree] = work / ".easeml"
    return _REGISTERED[tree]


def run_check(folder: Path, tree: Path = ROOT) -> dict:
    """The full command line, in a fresh working directory (a fresh copy of the ledger with the
    test set registered), timed from outside; ``tree``: whose code (``--compare-tree``: another
    checkout, for a before/after figure)."""
    import shutil

    env = _check_env(folder, tree)
    ledger = registered_ledger(folder, tree)
    with tempfile.TemporaryDirectory(prefix="check-overhead-") as work:
        config = _write_config(Path(work))
        shutil.copytree(ledger, Path(work) / ".easeml")
        cmd = [*CHECK, "check", "--config", str(config), "--new", str(folder / "new.onnx"),
               "--old", str(folder / "old.onnx"), "--testset", str(folder / "testset.enc"),
               "--key-env", KEY_ENV, "--json"]
        run = spawn(cmd, cwd=work, env=env)
    if run["code"] not in (0, 1):
        raise SystemExit(f"easeml-ci check exited {run['code']}: "
                         f"{run['err'].decode(errors='replace').strip()}")
    try:
        run["verdict"] = json.loads(run["out"])["verdict"]
    except (ValueError, KeyError):
        run["verdict"] = None
    if run["verdict"] is None:
        raise SystemExit(f"easeml-ci check gave no verdict (exit {run['code']}): "
                         f"{run['out'].decode(errors='replace').strip()} "
                         f"{run['err'].decode(errors='replace').strip()}")
    return run


#: The bare process: what a user without the gate writes (argv: folder, batch rows or 0).
BARE_PROCESS = """
import sys
import numpy as np
import onnxruntime as ort
folder, batch = sys.argv[1], int(sys.argv[2])
with np.load(folder + "/testset.npz") as data:
    X = np.ascontiguousarray(data["X"], dtype=np.float32)
for name in ("new", "old"):
    session = ort.InferenceSession(f"{folder}/{name}.onnx", providers=["CPUExecutionProvider"])
    feed, label = session.get_inputs()[0].name, session.get_outputs()[0].name
    step = batch or len(X)
    for start in range(0, len(X), step):
        session.run([label], {feed: X[start:start + step]})
"""


def run_bare_process(folder: Path, batch_rows: int) -> dict:
    """The whole bare process, timed from outside like the check."""
    run = spawn([sys.executable, "-c", BARE_PROCESS, str(folder), str(batch_rows)], env=CHILD_ENV)
    if run["code"] != 0:
        raise SystemExit(f"bare process failed: {run['err'].decode(errors='replace').strip()}")
    return run


def compile_project(tree: Path = ROOT) -> None:
    """Bytecode for the project's modules, as an install has (see the module docstring)."""
    import compileall

    for package in ("conditions", "easeml_ci"):
        compileall.compile_dir(str(tree / package), quiet=1)


def run_bare(folder: Path, batch_rows: int) -> dict:
    run = spawn([sys.executable, __file__, "--bare-child", str(folder),
                 "--bare-batch", str(batch_rows)], env=CHILD_ENV)
    if run["code"] != 0:
        raise SystemExit(f"bare inference failed: {run['err'].decode(errors='replace').strip()}")
    inner = json.loads(run["out"])  # timed inside: inference only, not loading the arrays
    return {"wall_s": inner["wall_s"], "cpu_s": inner["cpu_s"], "peak_rss_bytes": run["peak_rss_bytes"]}


def bare_child(folder: Path, batch_rows: int) -> None:
    """Child process: load the plaintext arrays (untimed), then time the two models alone:
    a default session per model, and ``run`` on the whole array (``batch_rows`` 0) or on
    slices of ``batch_rows`` rows (the check's batch size, which is faster for wide models)."""
    import onnxruntime as ort

    with np.load(folder / "testset.npz") as data:
        X = np.ascontiguousarray(data["X"], dtype=np.float32)
    wall = cpu = 0.0
    for name in ("new", "old"):
        c0, t0 = _cpu_self(), time.perf_counter()
        session = ort.InferenceSession(str(folder / f"{name}.onnx"),
                                       providers=["CPUExecutionProvider"])
        feed, label = session.get_inputs()[0].name, session.get_outputs()[0].name
        step = batch_rows or len(X)
        for start in range(0, len(X), step):
            session.run([label], {feed: X[start:start + step]})
        wall += time.perf_counter() - t0
        cpu += _cpu_self() - c0
    print(json.dumps({"wall_s": wall, "cpu_s": cpu}))


#: Runs of each whole-array way before the timed reps (_whole_array_trials).
WHOLE_ARRAY_TRIALS = 2


def _whole_array_trials(folder: Path, batch_rows: int) -> tuple[list, list, set]:
    """Each whole-array way (bare process, bare inference) run WHOLE_ARRAY_TRIALS times beside
    its batched way, before the timed reps: their runs, and the sides that stay in the loop
    (a whole-array way that could still be the faster, see _whole_array_is_out)."""
    proc_whole, whole, proc_batched, batched = [], [], [], []
    for _ in range(WHOLE_ARRAY_TRIALS):
        proc_whole.append(run_bare_process(folder, 0))
        proc_batched.append(run_bare_process(folder, batch_rows))
        whole.append(run_bare(folder, 0))
        batched.append(run_bare(folder, batch_rows))
    kept = {side for side, (w, b) in {"bare process, whole array": (proc_whole, proc_batched),
                                      "bare inference, whole array": (whole, batched)}.items()
            if not _whole_array_is_out(w, b)}
    for side in sorted({"bare process, whole array", "bare inference, whole array"} - kept):
        click.echo(f"{side}: 1.2x slower than batched even at its best in "
                   f"{WHOLE_ARRAY_TRIALS} trials; left out of the timed reps", err=True)
    # in the loop, a kept way's runs are the loop's (aligned with the reps, for the paired ratio)
    return ([] if "bare process, whole array" in kept else proc_whole,
            [] if "bare inference, whole array" in kept else whole, kept)


def _whole_array_is_out(whole: list, batched: list) -> bool:
    """Whether the whole-array way has lost to the batched one by a margin no run-to-run noise
    here closes: even its best run 1.2x slower than the batched median. It is then left out of
    the timed reps: it could not be the faster, i.e. the baseline, and each of its runs frees
    1.2 GB of activations, whose return to the host makes the next run's fresh memory slow (the
    module docstring). Its figures stay in the report, from its trials."""
    return bool(whole and batched) and min(r["wall_s"] for r in whole) > 1.2 * statistics.median(
        r["wall_s"] for r in batched)


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phases_child(folder: Path) -> None:
    """Child process: the check's own steps, timed one by one (where does the time go?)."""
    def peak() -> int:  # this process's own high-water mark (per address space, reset by exec)
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024

    marks = []
    t0, c0 = time.perf_counter(), _cpu_self()

    def mark(name: str) -> None:
        nonlocal t0, c0
        t, c = time.perf_counter(), _cpu_self()
        marks.append((name, t - t0, c - c0, peak()))
        t0, c0 = t, c

    import conditions  # (what the check imports)
    import onnxruntime  # noqa: F401
    from cryptography.hazmat.primitives.ciphers import aead  # noqa: F401

    from easeml_ci import cli  # noqa: F401
    from easeml_ci.gate import check  # noqa: F401
    from easeml_ci.models import load_predictions
    from easeml_ci.testsets import load_encrypted
    mark("imports (interpreter already up)")
    os.environ[KEY_ENV] = (folder / "key.txt").read_text().strip()
    load_encrypted(folder / "testset.enc", KEY_ENV)
    mark("read + decrypt + fingerprint the test set (registering it)")
    ts = load_encrypted(folder / "testset.enc", KEY_ENV, rehash=False)
    mark("read + decrypt the test set (a registered one's check: the header's fingerprint)")
    new = load_predictions(str(folder / "new.onnx"), ts)
    mark("new model: session + batched inference")
    old = load_predictions(str(folder / "old.onnx"), ts)
    mark("old model: session + batched inference")
    from easeml_ci.models import evaluate_on_testset, preflight
    models = {role: preflight(str(folder / f"{role}.onnx")) for role in ("new", "old")}
    mark("both models: preflight (sessions + synthetic rows), as the check does")
    evaluate_on_testset(models, ts)
    mark("both models again, in the child process as the check runs them")
    plan = conditions.plan(conditions.parse(CONDITION), reliability=RELIABILITY, mode="fp-free",
                           adaptivity=ADAPTIVITY, steps=STEPS, passes=None, method="tight")
    plan.decide(conditions.Outcomes.from_predictions(ts.y, new, old))
    mark("plan + decide")
    print(json.dumps(marks))


# --- the report ---------------------------------------------------------------------------------------

def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def import_baseline() -> int:
    """Peak RSS of a process that only imports what a check imports (interpreter + libraries)."""
    code = ("import conditions, onnxruntime, easeml_ci.cli, easeml_ci.gate.check, easeml_ci.models, "
            "easeml_ci.testsets; from cryptography.hazmat.primitives.ciphers import aead")
    return spawn([sys.executable, "-c", code], env=CHILD_ENV)["peak_rss_bytes"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rows", default=1_000_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--features", default=20, show_default=True, type=click.IntRange(min=8))
@click.option("--models", "kind", default="gbdt-mlp", show_default=True,
              type=click.Choice(["gbdt-mlp", "small"]))
@click.option("--condition", default=CONDITION, show_default=True,
              help="The gate's condition (its plan must fit --rows).")
@click.option("--reps", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--compare-tree", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also time the check of another checkout (e.g. main before a change), interleaved.")
@click.option("--bare-child", "bare_dir", default=None, hidden=True, type=click.Path(path_type=Path))
@click.option("--bare-batch", default=0, hidden=True, type=int)
@click.option("--phases-child", "phases_dir", default=None, hidden=True, type=click.Path(path_type=Path))
def main(rows, features, kind, condition, reps, as_json, compare_tree, bare_dir, bare_batch,
         phases_dir):
    """Time `easeml-ci check` against bare onnxruntime inference on a 1M-row test set."""
    global CONDITION
    CONDITION = condition
    if bare_dir:
        return bare_child(bare_dir, bare_batch)
    if phases_dir:
        return phases_child(phases_dir)
    from easeml_ci.models import DEFAULT_BATCH_ROWS

    folder = build(rows, features, kind)
    compile_project()
    if compare_tree:
        compile_project(compare_tree)
    load_start = os.getloadavg()[0]
    # Before anything is timed: the whole-array ways tried beside the batched ones (the batched
    # runs there are warm-ups, not counted), and a check of each tree, untimed (the page cache
    # of the test set and the models).
    proc_whole, whole, whole_in_loop = _whole_array_trials(folder, DEFAULT_BATCH_ROWS)
    run_check(folder)
    if compare_tree:
        run_check(folder, compare_tree)
    sides = {"bare process, whole array": lambda: run_bare_process(folder, 0),
             "bare process, batched": lambda: run_bare_process(folder, DEFAULT_BATCH_ROWS),
             "check": lambda: run_check(folder),
             "check of the compared tree": lambda: run_check(folder, compare_tree),
             "bare inference, whole array": lambda: run_bare(folder, 0),
             "bare inference, batched": lambda: run_bare(folder, DEFAULT_BATCH_ROWS)}
    runs = {side: [] for side in sides}
    runs["bare process, whole array"], runs["bare inference, whole array"] = proc_whole, whole
    order = [side for side in sides if (compare_tree or side != "check of the compared tree")
             and ("whole array" not in side or side in whole_in_loop)]
    for rep in range(reps):
        # Interleaved, so a busy machine slows every side alike, and in an order rotated by one
        # each rep, so every side runs in every position equally often (with --reps a multiple
        # of the number of sides). A fixed order is not fair on a VM: what ran just before
        # changes how fast fresh memory is (the module docstring).
        shift = rep % len(order)
        for side in order[shift:] + order[:shift]:
            runs[side].append(sides[side]())

        def last(side: str) -> str:  # this rep's run of a side, "-" if it has none
            return f"{runs[side][-1]['wall_s']:.2f} s" if side in order else "-"

        click.echo(f"rep {rep + 1}/{reps}: check {last('check')}; bare process "
                   f"{last('bare process, whole array')} whole-array, "
                   f"{last('bare process, batched')} batched; bare inference "
                   f"{last('bare inference, whole array')} / {last('bare inference, batched')}"
                   + (f"; check of {compare_tree} {last('check of the compared tree')}"
                      if compare_tree else "")
                   + f" (load {os.getloadavg()[0]:.1f})", err=True)
    checks, others = runs["check"], runs["check of the compared tree"]
    proc_whole, proc_batched = runs["bare process, whole array"], runs["bare process, batched"]
    whole, batched = runs["bare inference, whole array"], runs["bare inference, batched"]
    phases = json.loads(subprocess.run([sys.executable, __file__, "--phases-child", str(folder),
                                        "--condition", condition], env=CHILD_ENV,
                                       check=True, capture_output=True).stdout)
    baseline = import_baseline()

    with np.load(folder / "testset.npz") as data:
        data_bytes = data["X"].astype(np.float32).nbytes + data["y"].astype(np.int64).nbytes
    model_bytes = sum((folder / f"{m}.onnx").stat().st_size for m in ("old", "new"))

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    def best(runs, key):
        return min(r[key] for r in runs)

    def faster(a, b, key, how=med):  # the faster of the two ways of running the models
        return min(how(a, key), how(b, key))

    def paired(runs, key):  # the median over reps of a side's run / the baseline's in that rep
        way = proc_batched
        if "bare process, whole array" in whole_in_loop and med(proc_whole, "wall_s") < med(
                proc_batched, "wall_s"):
            way = proc_whole
        return statistics.median(r[key] / b[key] for r, b in zip(runs, way))

    check_wall, check_cpu = med(checks, "wall_s"), med(checks, "cpu_s")
    proc_wall, proc_cpu = faster(proc_whole, proc_batched, "wall_s"), faster(proc_whole, proc_batched, "cpu_s")
    bare_wall, bare_cpu = faster(whole, batched, "wall_s"), faster(whole, batched, "cpu_s")
    peak = max(c["peak_rss_bytes"] for c in checks)
    bound = 3 * (data_bytes + model_bytes)
    figures = {
        "rows": rows, "features": features, "models": kind, "reps": reps, "cpus": os.cpu_count(),
        "load_at_start": round(load_start, 2), "load_at_end": round(os.getloadavg()[0], 2),
        "check": {"wall_s": round(check_wall, 3), "cpu_s": round(check_cpu, 3),
                  "best_wall_s": round(best(checks, "wall_s"), 3), "peak_rss_bytes": peak,
                  "verdicts": sorted(set(c["verdict"] for c in checks))},
        "bare_process": {"wall_s": round(proc_wall, 3), "cpu_s": round(proc_cpu, 3),
                         "best_wall_s": round(faster(proc_whole, proc_batched, "wall_s", best), 3),
                         "whole_array_wall_s": round(med(proc_whole, "wall_s"), 3),
                         "batched_wall_s": round(med(proc_batched, "wall_s"), 3)},
        "bare_inference": {"wall_s": round(bare_wall, 3), "cpu_s": round(bare_cpu, 3),
                           "best_wall_s": round(faster(whole, batched, "wall_s", best), 3)},
        "ratio_wall": round(check_wall / proc_wall, 3),
        "ratio_cpu": round(check_cpu / proc_cpu, 3),
        "ratio_wall_best": round(best(checks, "wall_s") / faster(proc_whole, proc_batched, "wall_s", best), 3),
        "ratio_wall_paired": round(paired(checks, "wall_s"), 3),
        "ratio_cpu_paired": round(paired(checks, "cpu_s"), 3),
        "ratio_wall_vs_bare_inference": round(check_wall / bare_wall, 3),
        "ratio_cpu_vs_bare_inference": round(check_cpu / bare_cpu, 3),
        "overhead_wall_s": round(check_wall - proc_wall, 3),
        "overhead_cpu_s": round(check_cpu - proc_cpu, 3),
        "memory": {"testset_bytes": data_bytes, "model_bytes": model_bytes, "bound_bytes": bound,
                   "import_baseline_bytes": baseline, "peak_over_bound": round(peak / bound, 3),
                   "peak_above_imports_over_bound": round((peak - baseline) / bound, 3)},
        "phases": [{"phase": n, "wall_s": round(w, 3), "cpu_s": round(c, 3), "peak_rss_bytes": r}
                   for n, w, c, r in phases],
    }
    if compare_tree:
        figures["compare_tree"] = {
            "tree": str(compare_tree), "wall_s": round(med(others, "wall_s"), 3),
            "cpu_s": round(med(others, "cpu_s"), 3), "best_wall_s": round(best(others, "wall_s"), 3),
            "best_cpu_s": round(best(others, "cpu_s"), 3),
            "ratio_wall": round(med(others, "wall_s") / proc_wall, 3),
            "ratio_cpu": round(med(others, "cpu_s") / proc_cpu, 3),
            "ratio_wall_paired": round(paired(others, "wall_s"), 3)}
        figures["check"]["best_cpu_s"] = round(best(checks, "cpu_s"), 3)
    figures["target_met"] = figures["ratio_wall"] <= 1.05  # the ratio of medians, as specified
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    names = {"gbdt-mlp": "old: gradient boosting, 100 trees of depth 4; new: MLP (128, 128)",
             "small": "old: logistic regression; new: MLP (64, 64)"}[kind]
    lines = [
        f"{rows:,} rows x {features} features; {names}; `{CONDITION}` at reliability "
        f"{RELIABILITY}, adaptivity {ADAPTIVITY}, {STEPS} steps; medians of {reps} interleaved "
        f"runs (CPU time is the robust figure on a shared machine); {os.cpu_count()} CPUs, load "
        f"average {load_start:.1f} at the start, {figures['load_at_end']:.1f} at the end.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| decrypted test set (X float32 + y int64) / model files | {_mb(data_bytes)} / "
        f"{_mb(model_bytes)} |",
        f"| `easeml-ci check --json`, whole process (wall / CPU) | "
        f"{check_wall:.2f} s / {check_cpu:.2f} s |",
        f"| bare process (interpreter, numpy + onnxruntime, np.load, both models), whole array / "
        f"{DEFAULT_BATCH_ROWS:,}-row batches (wall; runs) | {med(proc_whole, 'wall_s'):.2f} s / "
        f"{med(proc_batched, 'wall_s'):.2f} s ({len(proc_whole)}"
        f"{'' if 'bare process, whole array' in whole_in_loop else ' trials'} / "
        f"{len(proc_batched)}) |",
        f"| bare process, the faster (wall / CPU) | {proc_wall:.2f} s / {proc_cpu:.2f} s |",
        f"| **ratio check / bare process, wall** (target <= 1.05): medians / best runs | "
        f"**{figures['ratio_wall']:.2f}x** / {figures['ratio_wall_best']:.2f}x |",
        f"| ratio check / bare process, CPU | {figures['ratio_cpu']:.2f}x |",
        f"| ratio paired: the median over reps of check / bare process in the same rep (what the "
        f"drift of a shared machine moves least), wall / CPU | **{figures['ratio_wall_paired']:.3f}x**"
        f" / {figures['ratio_cpu_paired']:.3f}x |",
        f"| the check's own overhead (medians, wall / CPU) | {figures['overhead_wall_s']:+.2f} s / "
        f"{figures['overhead_cpu_s']:+.2f} s |",
        f"| bare inference only (the old baseline: sessions + runs, arrays already in memory; "
        f"wall / CPU) | {bare_wall:.2f} s / {bare_cpu:.2f} s |",
        f"| ratio check / bare inference only (old figure), wall / CPU | "
        f"{figures['ratio_wall_vs_bare_inference']:.2f}x / {figures['ratio_cpu_vs_bare_inference']:.2f}x |",
        f"| check peak resident memory (whole process) | {_mb(peak)} |",
        f"| of which interpreter + imported libraries (a process that only imports them) | "
        f"{_mb(baseline)} |",
        f"| bare process peak resident memory, whole array / batched | "
        f"{_mb(max(r['peak_rss_bytes'] for r in proc_whole))} / "
        f"{_mb(max(r['peak_rss_bytes'] for r in proc_batched))} |",
        f"| **bound: 3 x (test set + models)** | {_mb(bound)}: whole-process peak is "
        f"**{peak / bound:.2f}x** the bound, peak above the import baseline "
        f"**{(peak - baseline) / bound:.2f}x** |",
        f"| verdicts | {', '.join(figures['check']['verdicts'])} |",
        *([f"| check of {compare_tree} (interleaved; wall / CPU medians, best wall / best CPU; "
           f"ratio to the bare process, wall / CPU; wall paired) | {figures['compare_tree']['wall_s']:.2f} s / "
           f"{figures['compare_tree']['cpu_s']:.2f} s, {figures['compare_tree']['best_wall_s']:.2f} s"
           f" / {figures['compare_tree']['best_cpu_s']:.2f} s; {figures['compare_tree']['ratio_wall']:.2f}x"
           f" / {figures['compare_tree']['ratio_cpu']:.2f}x; {figures['compare_tree']['ratio_wall_paired']:.3f}x |",
           f"| this tree's check, best wall / best CPU | {best(checks, 'wall_s'):.2f} s / "
           f"{best(checks, 'cpu_s'):.2f} s |"] if compare_tree else []),
        "",
        "Where the check's time and memory go (the same steps in-process, one run):",
        "",
        "| phase | wall | CPU | peak RSS after |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {wall:.2f} s | {cpu:.2f} s | {_mb(rss)} |"
              for name, wall, cpu, rss in phases]
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
