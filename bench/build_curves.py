"""Build the real learning-curve matrix: train sampled configurations of each family at increasing fidelity.

For each dataset of ``bench/build_matrices.py`` (same data, same train/validation split) and
each configuration of the pool ``search_space.pool(classification_spaces())`` (a seeded,
space-filling sample of each family's hyperparameter space), it trains the configuration
the way a worker running successive halving would and records, per fidelity,

* ``quality``: accuracy on the full validation split of the model as it stands,
* ``cost``: CPU seconds (``time.process_time``, single-threaded BLAS/OpenMP) to train to that
  fidelity from nothing.

Iterative learners are grown in place: boosting rounds and forest trees with ``warm_start``
(3, 9, 27, 81 of 81: fidelity 1/27, 1/9, 1/3, 1), MLP epochs with ``partial_fit`` (3, 9, 27,
81 epochs); their cost at a fidelity is cumulative and a continued trial resumes
(``resumes`` = 1). The others (logistic regression, RBF SVM, k-NN, LDA, naive Bayes) are
trained from scratch on a stratified 1/9, 1/3 and all of the training rows (nested
subsets; ``resumes`` = 0: a larger fraction retrains).

Output: ``automl_runner/data/real_curves.csv`` with header
``tenant,candidate,fidelity,quality,cost,resumes``. Rows are appended per finished
configuration and an interrupted run resumes where it stopped.

    OMP_NUM_THREADS=1 nice -n 10 python bench/build_curves.py [--budget-s 900] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import warnings
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from build_matrices import datasets, schema_for  # noqa: E402

from automl_runner.candidates.catalogue import validation_score  # noqa: E402
from automl_runner.datasets.schema import Dataset  # noqa: E402
from automl_runner.candidates.search_space import classification_spaces, parse_name, pool  # noqa: E402

ITERATIVE_FIDELITIES = (1 / 27, 1 / 9, 1 / 3, 1.0)
ROW_FIDELITIES = (1 / 9, 1 / 3, 1.0)


def stratified_prefix(y: np.ndarray, fraction: float, rng_seed: int = 0) -> np.ndarray:
    """Row indices: the first ceil(fraction * n_c) rows of each class c of a fixed shuffle.

    Nested: the subset at 1/9 is inside the one at 1/3. Every class keeps at least one row
    (two when it has them), so every fit sees every class.
    """
    rng = np.random.default_rng(rng_seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        k = max(min(2, len(idx)), int(np.ceil(fraction * len(idx))))
        keep.append(idx[:k])
    return np.sort(np.concatenate(keep))


def curve(space, config, Xtr, ytr, Xva, yva, schema):
    """[(fidelity, quality, cost seconds)] for one configuration on one dataset."""
    out = []
    if space.fidelity == "rows":
        for f in ROW_FIDELITIES:
            idx = stratified_prefix(ytr, f)
            model = space.build(config)
            t0 = time.process_time()
            model.fit(Xtr[idx], ytr[idx])
            cost = time.process_time() - t0
            out.append((f, validation_score(schema, yva, model.predict(Xva)), cost))
        return out
    if space.fidelity == "epochs":
        model = space.build(config)
        classes = np.unique(ytr)
        spent, epochs = 0.0, 0
        for f in ITERATIVE_FIDELITIES:
            t0 = time.process_time()
            while epochs < space.units(f):
                model.partial_fit(Xtr, ytr, classes=classes)
                epochs += 1
            spent += time.process_time() - t0
            out.append((f, validation_score(schema, yva, model.predict(Xva)), spent))
        return out
    model = space.build(config, ITERATIVE_FIDELITIES[0])
    spent = 0.0
    for f in ITERATIVE_FIDELITIES:
        model.set_params(**{space.fidelity_param: space.units(f)})
        t0 = time.process_time()
        model.fit(Xtr, ytr)  # warm_start: grows the rounds / trees already there
        spent += time.process_time() - t0
        out.append((f, validation_score(schema, yva, model.predict(Xva)), spent))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "automl_runner" / "data" / "real_curves.csv"))
    ap.add_argument("--budget-s", type=float, default=900.0, help="stop after this many CPU seconds (this run)")
    ap.add_argument("--only", nargs="*", help="only these datasets")
    args = ap.parse_args()

    spaces = classification_spaces()
    names = pool(spaces)
    out = Path(args.out)
    done: set[tuple[str, str]] = set()
    if out.exists():
        with open(out, newline="") as f:
            for row in csv.DictReader(f):
                done.add((row["tenant"], row["candidate"]))
    new_file = not out.exists()
    start = time.process_time()
    with open(out, "a", newline="") as f:
        w = csv.writer(f)
        if new_file:
            w.writerow(["tenant", "candidate", "fidelity", "quality", "cost", "resumes"])
        for dname, _desc, X, y in datasets():
            if args.only and dname not in args.only:
                continue
            if all((dname, n) in done for n in names):
                continue
            schema = schema_for(dname, X, y)
            Xtr, Xva, ytr, yva = Dataset(schema, X, y).split()
            mean, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
            sd[sd == 0] = 1.0
            for name in names:
                if (dname, name) in done:
                    continue
                if time.process_time() - start > args.budget_s:
                    print(f"CPU budget of {args.budget_s:g} s spent; rerun to resume", file=sys.stderr)
                    return
                space, config = parse_name(name, spaces)
                a, b = ((Xtr - mean) / sd, (Xva - mean) / sd) if space.scale else (Xtr, Xva)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        points = curve(space, config, a, ytr, b, yva, schema)
                    except Exception as exc:  # a configuration that fails on a dataset is not a row
                        print(f"{dname} {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                        continue
                for fid, q, c in points:
                    w.writerow([dname, name, f"{fid:.6g}", f"{q:.6g}", f"{max(c, 1e-4):.6g}", int(space.resumes)])
                f.flush()
            print(f"{dname}: done ({time.process_time() - start:.0f} CPU s so far)", flush=True)


if __name__ == "__main__":
    main()
