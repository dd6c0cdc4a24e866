"""Labels to pick the best of k models: certified picks (conditions.pick) against ModelPicker,
Model Selector and uniform sampling on disagreement rows.

Collections (real data scikit-learn ships, models trained here): a model family sweep and the
AutoML catalogue's classifiers (automl_runner.catalogue), each trained on part of the data set;
the rest is the *pool*, and the data's distribution is the pool's empirical law (true accuracy =
pool accuracy). Every run draws a fresh test set of ``--rows`` rows i.i.d. from the pool. Models
that tie the best exactly, or predict exactly as another model does, are dropped: with a tie at
the top the exact best is undefined and no method can certify it.

Methods (all written here from the papers' descriptions):

* ``certified`` (ours): :func:`conditions.pick`, rows in the run's order, every label on hand,
  at reliability 0.95, tolerance 0 and 0.01. Mean and p90 labels to a certified pick; wrong-pick
  rate (a pick worse than best - tolerance); runs left without a pick after all rows.
* ``model-picker`` (Karimi et al., AISTATS 2021): exponential weights over models; on each row
  of the stream a posterior-weighted disagreement ``z = max_c lbar_c (1 - lbar_c)`` (lbar_c the
  weight of the models that would be wrong if the label were c); the row is queried with
  probability ``max(z, eta_t)`` when z > 0 (never where all agree), and a queried row updates
  the weights with importance-weighted 0/1 losses, ``w_i *= exp(-eta_t * loss_i / q)``,
  ``eta_t = sqrt(log(k) / (2 t))`` (t = rows seen). Its answer: the heaviest model.
* ``model-selector`` (Okanovic et al., AISTATS 2025): a posterior over which model is best; the
  likelihood of a label y under "model i is best" is ``1 - e`` if model i predicts y, else
  ``e / (C - 1)``, one noise parameter e; it labels the pool row (of the run's test set) that
  maximises the expected reduction of the posterior's entropy. e is tuned in hindsight: the best
  of ``E_GRID`` per collection. Its answer: the posterior's mode.
* ``model-selector-pool``: the same on the pool itself, each row once (its own, pool-based
  setting). Here the pool *is* the distribution, so it answers a finite-population question: it
  can label the pool's few rows where the leaders differ and know the answer, which no method
  that must generalise from a sample can do. On a run's i.i.d. test set the pool's rows recur,
  and Model Selector, which scores a row by its predictions alone, labels the copies of one
  informative pattern over and over (their label never changes): it needs about as many labels
  as the pattern has copies.
* ``uniform``: rows where some models disagree, in random order, every one labelled; the answer is
  the model right most often.

For the baselines, "labels for 95%" is the smallest label count from which the answer is the
best model in at least 95% of runs (at every later count up to the budget); ``>B`` if never.

    python bench/pick.py [--runs 200] [--baseline-runs 60] [--only NAME,...] [--json]

One collection per call stays within ~10 minutes on 2 shared cores (digits: 11 min; wine: 0.5-2).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import numpy as np

from conditions import pick
from conditions.sequential import row_order

RELIABILITY = 0.95
TOLERANCES = (0.0, 0.01)
E_GRID = (0.03, 0.1, 0.3)
SEED = 20261207


# --- collections --------------------------------------------------------------------------------

def _family_models(seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    m = {}
    for c in (0.001, 0.01, 0.1, 1, 10):
        m[f"logreg-C{c}"] = LogisticRegression(C=c, max_iter=2000)
    for c in (0.3, 1, 10):
        m[f"svc-C{c}"] = SVC(C=c)
    for k in (1, 3, 7, 15, 31):
        m[f"knn-{k}"] = KNeighborsClassifier(k)
    for d in (3, 5, 8, None):
        m[f"tree-d{d}"] = DecisionTreeClassifier(max_depth=d, random_state=seed)
    for n in (10, 30, 100):
        m[f"rf-{n}"] = RandomForestClassifier(n, random_state=seed)
    m["gnb"] = GaussianNB()
    for h in (8, 32, 128):
        m[f"mlp-{h}"] = MLPClassifier((h,), max_iter=500, random_state=seed)
    return {name: make_pipeline(StandardScaler(), est) for name, est in m.items()}


def _catalogue_models(n_features: int, classes):
    from automl_runner.candidates.catalogue import default_catalogue
    from automl_runner.datasets.schema import Feature, Schema

    schema = Schema("bench", "-", "y", "classification",
                    tuple(Feature(f"x{i}", "numeric") for i in range(n_features)), 10_000,
                    tuple(str(c) for c in classes), "int")
    return {c.name: c.build(schema) for c in default_catalogue() if c.accepts(schema)}


def _collection(name: str, data: str, models: str, train: float, limit: int | None = None):
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    x, y = getattr(datasets, f"load_{data}")(return_X_y=True)
    xt, xp, yt, yp = train_test_split(x, y, train_size=train, random_state=0, stratify=y)
    built = _family_models(0) if models == "families" else _catalogue_models(x.shape[1], np.unique(y))
    preds, names = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model_name, model in built.items():
            preds.append(model.fit(xt, yt).predict(xp))
            names.append(model_name)
    preds = np.array(preds)
    acc = (preds == yp).mean(axis=1)
    best = int(np.argmax(acc))
    keep, seen = [], set()
    for i in np.argsort(-acc, kind="stable"):
        key = preds[i].tobytes()
        if key in seen or (i != best and acc[i] == acc[best]):
            continue
        seen.add(key)
        keep.append(int(i))
    keep = keep[:limit] if limit else keep
    return {"name": name, "predictions": preds[keep], "labels": yp, "accuracy": acc[keep],
            "models": [names[i] for i in keep]}


COLLECTIONS = (
    ("digits-families", "digits", "families", 0.3, None),
    ("digits-catalogue", "digits", "catalogue", 0.5, None),
    ("breast-cancer-families", "breast_cancer", "families", 0.3, None),
    ("wine-catalogue", "wine", "catalogue", 0.4, None),
    ("wine-top5", "wine", "families", 0.4, 5),
)


# --- the baselines ------------------------------------------------------------------------------

def _model_picker(p, y, budget, rng):
    """Answers after each label (ModelPicker, stream order); -1 before the first."""
    k, n = p.shape
    log_w = np.zeros(k)
    answers = []
    classes = np.unique(p)
    for t in range(n):
        col = p[:, t]
        if (col == col[0]).all():
            continue
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        wrong_if = np.array([(w * (col != c)).sum() for c in classes])
        z = float((wrong_if * (1 - wrong_if)).max())
        eta = math.sqrt(math.log(k) / (2 * (t + 1)))
        q = max(z, eta)
        if rng.random() >= q:
            continue
        log_w -= eta * (col != y[t]) / q
        answers.append(int(np.argmax(log_w)))
        if len(answers) >= budget:
            break
    return np.array(answers, dtype=np.int64)


def _uniform(p, y, budget, rng):
    disagree = np.flatnonzero((p != p[:1]).any(axis=0))
    rows = rng.permutation(disagree)[:budget]
    right = np.cumsum((p[:, rows] == y[rows]).T, axis=0)
    return np.argmax(right, axis=1)


def _model_selector(p, y, budget, e, rng):
    """Answers after each label (Model Selector on the run's rows as its pool)."""
    k, n = p.shape
    # Rows with the same predictions look the same to it: one pool entry with a multiplicity,
    # whose labels (those of its rows, in random order) come out one per query.
    disagree = np.flatnonzero((p != p[:1]).any(axis=0))
    up, inv, counts = np.unique(p[:, disagree].T, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    queue = [list(rng.permutation(y[disagree][inv == g])) for g in range(len(up))]
    classes = np.unique(np.concatenate([p.ravel(), y]))
    c_count = max(len(classes), 2)
    hit = up[:, None, :] == classes[None, :, None]  # rows x classes x models
    like = np.where(hit, 1 - e, e / (c_count - 1))
    log_post = np.zeros(k)
    remaining = counts.astype(np.int64)
    answers = []
    tiebreak = rng.random(len(up)) * 1e-9
    for _ in range(min(budget, int(counts.sum()))):
        post = np.exp(log_post - log_post.max())
        post /= post.sum()
        joint = like * post  # rows x classes x models
        marg = joint.sum(axis=2)
        cond = joint / marg[:, :, None]
        h_after = -(marg * (cond * np.log(np.maximum(cond, 1e-300))).sum(axis=2)).sum(axis=1)
        score = np.where(remaining > 0, -h_after + tiebreak, -np.inf)
        r = int(np.argmax(score))
        remaining[r] -= 1
        label = queue[r].pop()
        log_post += np.log(np.where(up[r] == label, 1 - e, e / (c_count - 1)))
        answers.append(int(np.argmax(log_post)))
    return np.array(answers, dtype=np.int64)


def _labels_for(answers_per_run, best: int, budget: int, share: float = 0.95):
    """Smallest label count from which >= share of runs answer the best (every later count too)."""
    right = np.zeros((len(answers_per_run), budget), dtype=bool)
    for r, a in enumerate(answers_per_run):
        if len(a):
            full = np.concatenate([a, np.full(budget - len(a), a[-1])])[:budget]
            right[r] = full == best
    rate = right.mean(axis=0)
    bad = np.flatnonzero(rate < share)
    if not len(bad):
        return 1
    return None if bad[-1] + 1 >= budget else int(bad[-1] + 2)


# --- the runs -----------------------------------------------------------------------------------

def _draw(col, rows, rng):
    idx = rng.integers(0, len(col["labels"]), rows)
    return col["predictions"][:, idx], col["labels"][idx]


def run_collection(col, runs, baseline_runs, rows, budget, progress):
    acc = col["accuracy"]
    best = int(np.argmax(acc))
    out = {"collection": col["name"], "k": int(len(acc)), "pool": int(len(col["labels"])),
           "best_accuracy": float(acc[best]),
           "gap": float(acc[best] - np.sort(acc)[-2]) if len(acc) > 1 else None}
    rng = np.random.default_rng(SEED)
    for tol in TOLERANCES:
        labels, wrong, none = [], 0, 0
        for r in range(runs):
            p, y = _draw(col, rows, rng)
            res = pick(p, y, np.ones(rows, bool), RELIABILITY, tol, order=row_order(rows, SEED + r))
            if res.pick is None:
                none += 1
            else:
                labels.append(res.labels_used)
                wrong += acc[res.pick] < acc[best] - tol
            progress(f"{col['name']} certified tol={tol} {r + 1}/{runs}")
        key = f"certified@{tol:g}"
        out[key] = {"mean": float(np.mean(labels)) if labels else None,
                    "p90": float(np.percentile(labels, 90)) if labels else None,
                    "wrong": int(wrong), "no_pick": int(none), "runs": runs,
                    "wrong_rate": wrong / runs}
    for name in ("model-picker", "uniform", *(f"model-selector e={e:g}" for e in E_GRID),
                 *(f"model-selector-pool e={e:g}" for e in E_GRID)):
        answers = []
        for r in range(baseline_runs):
            p, y = _draw(col, rows, rng)
            if name == "model-picker":
                answers.append(_model_picker(p, y, budget, rng))
            elif name == "uniform":
                answers.append(_uniform(p, y, budget, rng))
            elif name.startswith("model-selector-pool"):
                # the pool itself, each row once: the finite-population question (its best is
                # the distribution's best by construction), MS's own setting
                answers.append(_model_selector(col["predictions"], col["labels"], budget,
                                               float(name.split("=")[1]), rng))
            else:
                answers.append(_model_selector(p, y, budget, float(name.split("=")[1]), rng))
            progress(f"{col['name']} {name} {r + 1}/{baseline_runs}")
        out[name] = _labels_for(answers, best, budget)
    ms = [out[f"model-selector e={e:g}"] for e in E_GRID]
    finite = [m for m in ms if m is not None]
    out["model-selector"] = min(finite) if finite else None
    pool = [out[f"model-selector-pool e={e:g}"] for e in E_GRID]
    pool = [m for m in pool if m is not None]
    out["model-selector-pool"] = min(pool) if pool else None
    return out


def _fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if isinstance(v, (int, float)) else str(v)


def table(results, budget) -> str:
    head = ("| collection | k | gap | MS 95% | MS pool | MP 95% | uniform 95% | ours mean | p90 | wrong | "
            "no pick | ours/MS | tol .01 mean | p90 | wrong |")
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for r in results:
        a, b = r["certified@0"], r["certified@0.01"]
        ms = r["model-selector"]
        ratio = ("-" if not a["mean"] else f"{a['mean'] / ms:.2f}x" if ms
                 else f"<{a['mean'] / budget:.2f}x")
        cap = lambda v: _fmt(v) if v is not None else f">{budget:,}"
        lines.append(f"| {r['collection']} | {r['k']} | {r['gap']:.4f} | {cap(ms)} | {cap(r['model-selector-pool'])} | "
                     f"{cap(r['model-picker'])} | {cap(r['uniform'])} | {_fmt(a['mean'])} | "
                     f"{_fmt(a['p90'])} | {a['wrong']}/{a['runs']} | {a['no_pick']} | {ratio} | "
                     f"{_fmt(b['mean'])} | {_fmt(b['p90'])} | {b['wrong']}/{b['runs']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--baseline-runs", type=int, default=60)
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--budget", type=int, default=3_000)
    ap.add_argument("--only", default=None, help="comma-separated collection names")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    start = time.monotonic()

    def progress(msg):
        if not args.json:
            print(f"\r[{time.monotonic() - start:6.0f}s] {msg:<70}", end="", file=sys.stderr, flush=True)

    results = []
    for spec in COLLECTIONS:
        if args.only and spec[0] not in args.only.split(","):
            continue
        col = _collection(*spec)
        results.append(run_collection(col, args.runs, args.baseline_runs, args.rows, args.budget, progress))
    if args.json:
        print(json.dumps({"reliability": RELIABILITY, "rows": args.rows, "budget": args.budget,
                          "results": results}, indent=2))
    else:
        print(file=sys.stderr)
        print(table(results, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
