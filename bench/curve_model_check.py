"""How well does a partial score predict the full-budget one? multitenant-hb's curve model, held out.

``multitenant-hb`` stops a trial at a rung from the prediction of its full-budget score
(``successive_halving.CurveModel``: per candidate and rung, q_1 = a + b q_f + e). This script
fits that model on 7/8 of the tenants of the learning-curve file and scores it on the other
1/8 (8 folds, every tenant held out once), for the iterative candidates at rungs 1/9 and 1/3:

* the error of the predicted mean and how often the truth lies within 2 predicted sd, by the
  partial score's error rate e_f = 1 - q_f (hard tenants have more room to rise late);
* whether the curve's local slope (the score one rung below, 1/27 for 1/9, 1/9 for 1/3) adds
  anything: least squares with and without the slope, per candidate (pooled below 8 curves).

    python bench/curve_model_check.py [--matrix automl_runner/data/real_curves.csv]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automl_runner.scheduling.matrices import LearningCurves, load_any  # noqa: E402
from automl_runner.scheduling.successive_halving import CurveModel, fidelity_key  # noqa: E402

BUCKETS = ((0.0, 0.05), (0.05, 0.15), (0.15, 0.3), (0.3, 1.01))


def held_out(curves: LearningCurves, folds: int = 8, seed: int = 0):
    """(fidelity, q_f, q_previous or nan, q_1, predicted mean, predicted sd, tenant, candidate) per trial."""
    rng = np.random.default_rng(seed)
    out = []
    for fold in np.array_split(rng.permutation(curves.tenants), folds):
        held = set(fold)
        model = CurveModel(LearningCurves([r for r in curves.rows if r[0] not in held]))
        for tenant in fold:
            for cand, pts in curves.points[tenant].items():
                if not curves.resumes.get(cand):
                    continue
                q = {fidelity_key(f): qq for f, qq, _c in pts}
                for f, prev in ((1 / 9, 1 / 27), (1 / 3, 1 / 9)):
                    if fidelity_key(f) in q and fidelity_key(1.0) in q:
                        mean, sd = model.predict(cand, f, q[fidelity_key(f)])
                        out.append((f, q[fidelity_key(f)], q.get(fidelity_key(prev), np.nan), q[fidelity_key(1.0)], mean, sd, tenant, cand))
    return out


def slope_gain(rows, folds: int = 8, seed: int = 0, min_curves: int = 8):
    """Held-out RMSE of q_1 from (q_f) and from (q_f, q_f - q_previous), per candidate least squares."""
    rng = np.random.default_rng(seed)
    tenants = sorted({r[6] for r in rows})
    err = {0: [], 1: []}
    for fold in np.array_split(rng.permutation(tenants), folds):
        held = set(fold)
        train = [r for r in rows if r[6] not in held]
        by_cand: dict[str, list] = {}
        for r in train:
            by_cand.setdefault(r[7], []).append(r)

        def design(rs, slope):
            return np.array([[1.0, r[1]] + ([r[1] - r[2]] if slope else []) for r in rs])

        pooled = {s: np.linalg.lstsq(design(train, s), np.array([r[3] for r in train]), rcond=None)[0] for s in (0, 1)}
        for r in rows:
            if r[6] not in held:
                continue
            mine = by_cand.get(r[7], [])
            for s in (0, 1):
                w = (np.linalg.lstsq(design(mine, s), np.array([x[3] for x in mine]), rcond=None)[0]
                     if len(mine) >= min_curves else pooled[s])
                err[s].append(r[3] - design([r], s)[0] @ w)
    return tuple(float(np.sqrt(np.mean(np.square(err[s])))) for s in (0, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default=str(ROOT / "automl_runner" / "data" / "real_curves.csv"))
    args = ap.parse_args()
    curves = load_any(args.matrix)
    rows = held_out(curves)
    print(f"matrix {args.matrix}; 8 folds of tenants, each held out once; iterative candidates\n")
    print("| rung | e_f = 1 - q_f | trials | mean error (q_1 - predicted) | RMSE | mean predicted sd "
          "| truth within 2 sd | truth above mean + 2 sd |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for f in (1 / 9, 1 / 3):
        arr = np.array([r[:6] for r in rows if abs(r[0] - f) < 1e-9], dtype=float)
        _f, qf, _prev, q1, mean, sd = arr.T
        z = (q1 - mean) / sd
        for lo, hi in BUCKETS + ((0.0, 1.01),):
            k = ((1 - qf) >= lo) & ((1 - qf) < hi)
            label = "all" if (lo, hi) == (0.0, 1.01) else f"[{lo:g}, {min(hi, 1):g})"
            print(f"| 1/{round(1 / f)} | {label} | {int(k.sum())} | {np.mean(q1[k] - mean[k]):+.4f} | "
                  f"{np.sqrt(np.mean((q1[k] - mean[k]) ** 2)):.4f} | {np.mean(sd[k]):.4f} | "
                  f"{100 * np.mean(np.abs(z[k]) < 2):.0f}% | {100 * np.mean(z[k] > 2):.1f}% |")
    print()
    for f in (1 / 9, 1 / 3):
        sub = [r for r in rows if abs(r[0] - f) < 1e-9 and np.isfinite(r[2])]
        level, with_slope = slope_gain(sub)
        print(f"rung 1/{round(1 / f)}: held-out RMSE from the score at the rung {level:.4f}, "
              f"with the slope from the rung below {with_slope:.4f} ({len(sub)} trials)")


if __name__ == "__main__":
    main()
