"""Build the real quality-and-cost matrix: train the catalogue on many datasets, record results.

Every classification candidate of ``automl_runner.candidates.catalogue.default_catalogue()`` is trained
on each dataset below (scikit-learn's bundled datasets, variants of them, and generated
datasets of varied size, noise, class balance and structure), exactly as a worker would:
the candidate's pipeline from ``Candidate.build``, the tenant's train/validation split from
the schema. Per (dataset, candidate) it records

* ``quality``: accuracy on the validation split (the worker's ``validation_score``),
* ``cost``: CPU seconds of ``fit`` (``time.process_time``, single-threaded BLAS), so that the
  matrix measures the work and not how busy the shared build machine happened to be.

Rows are appended as they finish and an interrupted run resumes where it stopped.
Output: ``automl_runner/data/real.csv`` (header ``tenant,candidate,quality,cost``), and
``automl_runner/data/real_datasets.csv`` describing each dataset.

    OMP_NUM_THREADS=1 python bench/build_matrices.py [--out automl_runner/data/real.csv]
        [--budget-s 900] [--only NAME ...]
    python bench/build_matrices.py --split 32   # real_scheduled.csv + real_prior.csv for the CLI
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
from sklearn import datasets as skd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automl_runner.candidates.catalogue import default_catalogue, validation_score  # noqa: E402
from automl_runner.datasets.schema import Dataset, Feature, Schema  # noqa: E402

MAX_ROWS = 2500


def _subsample(X, y, n, rng):
    if len(y) <= n:
        return X, y
    idx = rng.choice(len(y), size=n, replace=False)
    return X[idx], y[idx]


def _imbalance(X, y, minority_share, rng):
    """Drop rows of classes other than the first so that they make up ``minority_share``."""
    major = y == np.unique(y)[0]
    n_major = int(major.sum())
    keep_minor = int(n_major * minority_share / (1 - minority_share))
    minor_idx = np.flatnonzero(~major)
    minor_idx = rng.choice(minor_idx, size=min(keep_minor, len(minor_idx)), replace=False)
    idx = np.sort(np.concatenate([np.flatnonzero(major), minor_idx]))
    return X[idx], y[idx]


def _add_noise_features(X, k, rng):
    return np.hstack([X, rng.normal(size=(len(X), k))])


def _flip(y, p, rng):
    y = y.copy()
    flip = rng.random(len(y)) < p
    labels = np.unique(y)
    y[flip] = rng.choice(labels, size=int(flip.sum()))
    return y


def datasets():
    """(name, description, X, y) for every dataset of the matrix; deterministic."""
    rng = np.random.default_rng(20181)
    out = []

    def add(name, desc, X, y):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y).astype(int)
        X, y = _subsample(X, y, MAX_ROWS, rng)
        out.append((name, desc, X, y))

    # scikit-learn's bundled datasets and variants of them
    bc = skd.load_breast_cancer()
    dg = skd.load_digits()
    ir = skd.load_iris()
    wi = skd.load_wine()
    add("breast-cancer", "bundled, 569 x 30, 2 classes", bc.data, bc.target)
    add("digits", "bundled, 1797 x 64, 10 classes", dg.data, dg.target)
    add("iris", "bundled, 150 x 4, 3 classes", ir.data, ir.target)
    add("wine", "bundled, 178 x 13, 3 classes", wi.data, wi.target)
    for a, b in ((3, 8), (1, 7), (4, 9)):
        m = np.isin(dg.target, (a, b))
        add(f"digits-{a}v{b}", f"digits {a} vs {b}", dg.data[m], dg.target[m])
    m = dg.target < 5
    add("digits-0to4", "digits classes 0-4", dg.data[m], dg.target[m])
    add("digits-noisy", "digits, 25% label noise", dg.data, _flip(dg.target, 0.25, rng))
    add("digits-coarse", "digits, pixels thresholded to 0/1", (dg.data > 7).astype(float), dg.target)
    add("breast-cancer-noise", "breast cancer + 40 noise features",
        _add_noise_features(bc.data, 40, rng), bc.target)
    add("breast-cancer-imb", "breast cancer, malignant 10%", *_imbalance(bc.data, 1 - bc.target, 0.1, rng))
    add("wine-noise", "wine + 20 noise features, 10% label noise",
        _add_noise_features(wi.data, 20, rng), _flip(wi.target, 0.1, rng))
    add("iris-noise", "iris + 10 noise features", _add_noise_features(ir.data, 10, rng), ir.target)

    # make_classification with varied size, dimension, classes, balance, noise, separation
    sizes = [200, 400, 800, 1500, 2500]
    for i in range(22):
        n = sizes[i % len(sizes)]
        n_feat = int(rng.choice([5, 10, 20, 40]))
        n_inf = max(2, int(n_feat * rng.uniform(0.2, 0.8)))
        n_red = int(min(n_feat - n_inf, rng.integers(0, 4)))
        n_cls = int(rng.choice([2, 2, 3, 4, 6]))
        while n_cls * 2 > 2**n_inf:
            n_cls -= 1
        sep = float(rng.choice([0.5, 0.8, 1.0, 1.5]))
        flip = float(rng.choice([0.0, 0.02, 0.05, 0.15]))
        weights = None
        if n_cls == 2 and rng.random() < 0.35:
            w = float(rng.uniform(0.05, 0.25))
            weights = [1 - w, w]
        X, y = skd.make_classification(
            n_samples=n, n_features=n_feat, n_informative=n_inf, n_redundant=n_red,
            n_classes=n_cls, n_clusters_per_class=int(rng.integers(1, 3)), weights=weights,
            flip_y=flip, class_sep=sep, random_state=int(rng.integers(1 << 30)),
        )
        add(f"mc{i:02d}", f"make_classification n={n} d={n_feat} inf={n_inf} k={n_cls} sep={sep} "
            f"flip={flip} weights={None if weights is None else round(weights[1], 2)}", X, y)

    # nonlinear two-dimensional shapes, optionally buried among noise features
    for i, (noise, n, extra) in enumerate([(0.1, 300, 0), (0.3, 1000, 0), (0.2, 2000, 8), (0.35, 600, 20)]):
        X, y = skd.make_moons(n_samples=n, noise=noise, random_state=i)
        add(f"moons{i}", f"make_moons n={n} noise={noise} +{extra} noise features",
            _add_noise_features(X, extra, rng) if extra else X, y)
    for i, (noise, factor, n) in enumerate([(0.05, 0.5, 400), (0.15, 0.6, 1500), (0.1, 0.8, 800)]):
        X, y = skd.make_circles(n_samples=n, noise=noise, factor=factor, random_state=i)
        add(f"circles{i}", f"make_circles n={n} noise={noise} factor={factor}", X, y)
    for i, (centers, std, n, d) in enumerate([(3, 1.0, 500, 2), (5, 2.5, 1500, 6), (8, 3.0, 2500, 10), (4, 4.0, 700, 3)]):
        X, y = skd.make_blobs(n_samples=n, centers=centers, cluster_std=std, n_features=d, random_state=i)
        add(f"blobs{i}", f"make_blobs n={n} centers={centers} std={std} d={d}", X, y)
    for i, (n, d, k) in enumerate([(600, 2, 2), (1500, 4, 3), (1000, 8, 2)]):
        X, y = skd.make_gaussian_quantiles(n_samples=n, n_features=d, n_classes=k, random_state=i)
        add(f"quantiles{i}", f"make_gaussian_quantiles n={n} d={d} k={k}", X, y)
    for i, n in enumerate([500, 2000]):
        X, y = skd.make_hastie_10_2(n_samples=n, random_state=i)
        add(f"hastie{i}", f"make_hastie_10_2 n={n}", X, (y > 0).astype(int))
    for i, (n, noise) in enumerate([(800, 0.5), (2000, 2.0)]):
        X, yr = skd.make_friedman1(n_samples=n, noise=noise, random_state=i)
        add(f"friedman{i}", f"make_friedman1 n={n} noise={noise}, above median", X, (yr > np.median(yr)).astype(int))

    # structures of our own
    for i, (n, d, noise) in enumerate([(1000, 2, 0.0), (2000, 6, 0.05)]):
        X = rng.uniform(-1, 1, (n, d))
        y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)
        add(f"xor{i}", f"XOR of two signs n={n} d={d} flip={noise}", X, _flip(y, noise, rng))
    for i, (n, cells) in enumerate([(1500, 4), (2500, 6)]):
        X = rng.uniform(0, 1, (n, 2))
        y = ((np.floor(X[:, 0] * cells) + np.floor(X[:, 1] * cells)) % 2).astype(int)
        add(f"checker{i}", f"checkerboard {cells}x{cells} n={n}", X, y)
    for i, (n, turns, noise) in enumerate([(800, 1.5, 0.3), (1600, 2.5, 0.5)]):
        t = rng.uniform(0.3, 1, n) * turns * 2 * np.pi
        lab = rng.integers(0, 2, n)
        r = t / (turns * 2 * np.pi)
        X = np.c_[r * np.cos(t + np.pi * lab), r * np.sin(t + np.pi * lab)] + rng.normal(0, noise * 0.1, (n, 2))
        add(f"spiral{i}", f"two spirals n={n} turns={turns}", X, lab)
    for i, (n, d, k_rel) in enumerate([(400, 100, 10), (1200, 60, 5), (2500, 30, 3)]):
        X = rng.normal(size=(n, d))
        w = np.zeros(d)
        w[:k_rel] = rng.normal(size=k_rel)
        y = (X @ w + rng.normal(0, 0.5 * np.linalg.norm(w), n) > 0).astype(int)
        add(f"sparse-linear{i}", f"linear, {k_rel} of {d} features relevant, n={n}", X, y)
    for i, (n, d) in enumerate([(1000, 20), (2500, 40)]):
        # counts, as in bag-of-words: Poisson with class-dependent rates
        lab = rng.integers(0, 3, n)
        rates = rng.gamma(1.0, 1.0, (3, d))
        X = rng.poisson(rates[lab] * 2.0)
        add(f"counts{i}", f"Poisson counts (text-like) n={n} d={d} k=3", X, lab)
    for i, (n, d) in enumerate([(1200, 8), (2500, 12)]):
        # an axis-aligned rule with interactions: trees' home ground
        X = rng.uniform(0, 1, (n, d))
        y = (((X[:, 0] > 0.5) & (X[:, 1] < 0.3)) | ((X[:, 2] > 0.7) & (X[:, 3] > 0.4))).astype(int)
        add(f"rules{i}", f"axis-aligned rules with interactions n={n} d={d}", X, _flip(y, 0.03, rng))
    for i, (n, d) in enumerate([(900, 10), (2000, 16)]):
        # heavy-tailed, unscaled features: scaling and robustness matter
        X = rng.standard_t(2, size=(n, d)) * rng.uniform(0.1, 100, d)
        y = (np.tanh(X[:, 0] / 50) + np.sign(X[:, 1]) * 0.5 + rng.normal(0, 0.4, n) > 0).astype(int)
        add(f"heavy{i}", f"heavy-tailed unscaled features n={n} d={d}", X, y)
    for i, (n, d) in enumerate([(600, 5), (1800, 8)]):
        # a smooth radial boundary in a few dimensions
        X = rng.normal(size=(n, d))
        y = (np.linalg.norm(X[:, :3], axis=1) + rng.normal(0, 0.3, n) > 1.6).astype(int)
        add(f"radial{i}", f"radial boundary in 3 of {d} dims n={n}", X, y)
    return out


def schema_for(name: str, X: np.ndarray, y: np.ndarray) -> Schema:
    classes = tuple(str(c) for c in np.unique(y))
    return Schema(
        source=name, fingerprint=name, target="y", task="classification",
        features=tuple(Feature(f"x{j}", "numeric") for j in range(X.shape[1])),
        n_rows=len(y), classes=classes, label_kind="int", validation_fraction=0.3, seed=0,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "automl_runner" / "data" / "real.csv"))
    ap.add_argument("--budget-s", type=float, default=900.0, help="stop after this many CPU seconds in total")
    ap.add_argument("--only", nargs="*", help="only these datasets")
    ap.add_argument("--list", action="store_true", help="list the datasets and exit")
    ap.add_argument("--split", type=int, metavar="N", default=None,
                    help="only write a fixed split of --out for the CLI: N tenants to schedule "
                         "(<stem>_scheduled.csv) and the rest as their prior (<stem>_prior.csv)")
    args = ap.parse_args()

    if args.split is not None:
        from automl_runner.scheduling.matrices import load_matrix, split_tenants

        out = Path(args.out)
        sched, prior = split_tenants(load_matrix(out), args.split, np.random.default_rng(2018))
        sched.to_csv(out.with_name(out.stem + "_scheduled.csv"))
        prior.to_csv(out.with_name(out.stem + "_prior.csv"))
        print(f"{len(sched.tenants)} scheduled, {len(prior.tenants)} prior tenants")
        return

    data = datasets()
    if args.list:
        for name, desc, X, y in data:
            print(f"{name:<22} {X.shape[0]:>5} x {X.shape[1]:<4} k={len(np.unique(y))}  {desc}")
        print(f"{len(data)} datasets")
        return
    cands = [c for c in default_catalogue() if "classification" in c.tasks and not c.uses_gpu]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done: set[tuple[str, str]] = set()
    if out.exists():
        with open(out, newline="") as f:
            for row in csv.DictReader(f):
                done.add((row["tenant"], row["candidate"]))
    new_file = not out.exists()
    with open(out.with_name(out.stem + "_datasets.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tenant", "rows", "features", "classes", "description"])
        for name, desc, X, y in data:
            w.writerow([name, X.shape[0], X.shape[1], len(np.unique(y)), desc])

    spent = time.process_time()
    with open(out, "a", newline="") as f:
        w = csv.writer(f)
        if new_file:
            w.writerow(["tenant", "candidate", "quality", "cost"])
        for name, _desc, X, y in data:
            if args.only and name not in args.only:
                continue
            schema = schema_for(name, X, y)
            Xtr, Xva, ytr, yva = Dataset(schema, X, y).split()
            for cand in cands:
                if (name, cand.name) in done or not cand.accepts(schema):
                    continue
                if time.process_time() - spent > args.budget_s:
                    print(f"CPU budget of {args.budget_s:g} s spent; rerun to resume", file=sys.stderr)
                    return
                model = cand.build(schema, "cpu")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.process_time()
                    try:
                        model.fit(Xtr, ytr)
                    except Exception as exc:  # a candidate that fails on a dataset is not a row
                        print(f"{name} {cand.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                        continue
                    cost = time.process_time() - t0
                    quality = validation_score(schema, yva, model.predict(Xva))
                w.writerow([name, cand.name, f"{quality:.6g}", f"{max(cost, 1e-4):.6g}"])
                f.flush()
            print(f"{name}: done ({time.process_time() - spent:.0f} CPU s so far)", flush=True)


if __name__ == "__main__":
    main()
