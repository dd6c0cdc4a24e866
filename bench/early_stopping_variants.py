"""Variants of multitenant-hb's rung rule that were tried against the 4-device shortfall, and kept out.

Each variant is a subclass of ``MultiTenantHBScheduler`` that changes one thing, with the
reason it could have helped; the script replays them on the same splits and seeds as
``bench/automl.py`` and prints, per cell, multitenant's median time to T = 0.01 over each
variant's (and the same over seeds 0-9 and 10-19 alone, and the geometric mean of the
per-run ratios).

* ``stop-x0.7`` / ``stop-x1.5``: stop when going on buys less than 0.7 (1.5) times the
  alternative's rate (sensitivity of the threshold).
* ``kth-alternative``: with M trials running, the next M - 1 free devices take the best
  pending pairs anyway; the work a continuing trial displaces is the M-th best tenant's
  (the docs' guess that the alternative is what goes wrong with several devices).
* ``siblings-believed``: the continuation's EI over the tenant's best with the tenant's
  *other* running trials believed at their posterior mean (as the choice does).
* ``option-to-stop``: at 1/9 the remaining cost is the step to 1/3 plus the rest weighted
  by P(q_1 > best), the trial's option to stop at 1/3 (as the choice costs a fresh trial).
* ``full-cost-alternative``: the alternative's rate with its full cost, not the cost under
  stopping (a fresh iterative alternative delivers its EI only if it is not stopped).
* ``calibrated-sd``: the curve model's sd proportional to the room left, k (1 - q_f + 0.02),
  k fitted per candidate and rung (weighted least squares): better calibrated held out
  (``bench/curve_model_check.py`` shows the constant sd too wide on easy tenants and too
  narrow on hard ones).
* ``wider-sd-on-hard``: the larger of the two sds (only ever less confident).

    python bench/early_stopping_variants.py [--seeds 20] [--first-seed 0] [--cells 32x4 8x4]
        [--variants ...]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import automl_runner.scheduling.simulate as simulate_mod  # noqa: E402
from automl_runner.scheduling.matrices import load_any, split_curves  # noqa: E402
from automl_runner.scheduling.registry import make_scheduler  # noqa: E402
from automl_runner.scheduling.scheduler import expected_improvement  # noqa: E402
from automl_runner.scheduling.successive_halving import MIN_SD, CurveModel, MultiTenantHBScheduler, fidelity_key  # noqa: E402

T = 0.01


def _posterior(sched, tenant, candidate, y, s):
    mean, var = sched._gp(tenant).posterior()
    i = sched._index(candidate)
    m, v = float(mean[i]), float(var[i])
    w = 1.0 / (1.0 / v + 1.0 / s**2)
    return w * (m / v + y / s**2), math.sqrt(w)


def _ei(sched, mu, sd, best):
    return float(expected_improvement(np.array([mu]), np.array([sd]), np.array([best]), sched.ceiling)[0])


class StopLess(MultiTenantHBScheduler):
    STOP_FACTOR = 0.7


class StopMore(MultiTenantHBScheduler):
    STOP_FACTOR = 1.5


class KthAlternative(MultiTenantHBScheduler):
    def alternative_rate(self, pending):
        try:
            _tenants, rates = self._believed_rates(self._available(pending))
        except Exception:
            return 0.0
        if not len(rates):
            return 0.0
        k = max(1, min(sum(len(v) for v in self.running.values()), len(rates)))
        return float(np.sort(rates)[::-1][k - 1])


class SiblingsBelieved(MultiTenantHBScheduler):
    def continuation(self, tenant, candidate, fidelity, quality, spent):
        y, s = self.curve_model.predict(candidate, fidelity, quality)
        mu, sd = _posterior(self, tenant, candidate, y, s)
        best = self.best(tenant)
        others = [c for c in self.running.get(tenant, ()) if c != candidate]
        if others:
            mean, _ = self._gp(tenant).posterior()
            best = max(best, min(max(float(mean[self.prior.index[c]]) for c in others), self.ceiling))
        remaining = max(spent, 1e-6) * (self.curve_model.cost_ratio(candidate, fidelity) - 1.0)
        return _ei(self, mu, sd, best), max(remaining, 1e-9)


class OptionToStop(MultiTenantHBScheduler):
    def continuation(self, tenant, candidate, fidelity, quality, spent):
        ei, remaining = super().continuation(tenant, candidate, fidelity, quality, spent)
        later = [f for f in self.rung_fidelities if fidelity_key(fidelity) < fidelity_key(f) < fidelity_key(1.0)]
        if not later:
            return ei, remaining
        y, s = self.curve_model.predict(candidate, fidelity, quality)
        mu, sd = _posterior(self, tenant, candidate, y, s)
        full = max(spent, 1e-6) * self.curve_model.cost_ratio(candidate, fidelity)
        now = 1.0 / self.curve_model.cost_ratio(candidate, fidelity)
        nxt = 1.0 / self.curve_model.cost_ratio(candidate, later[0])
        p = float(norm.sf((self.best(tenant) - mu) / sd))
        return ei, max(full * (max(nxt - now, 0.0) + (1.0 - nxt) * p), 1e-9)


class FullCostAlternative(MultiTenantHBScheduler):
    def alternative_rate(self, pending):
        self.EXPECTED_STOPPING_COST = False
        try:
            _segments, ei, cost = self.scores(pending, believe_running=True)
        except Exception:
            return 0.0
        finally:
            del self.EXPECTED_STOPPING_COST
        return float(np.max(ei / cost)) if ei.size else 0.0


class RoomCurveModel(CurveModel):
    """CurveModel with sd = k (1 - q_f + EPS): k per candidate and rung, weighted least squares."""

    EPS = 0.02
    WIDER_ONLY = False

    def __init__(self, curves=None, wider_only=False):
        self.WIDER_ONLY = wider_only
        self._plain = CurveModel(curves)
        super().__init__(curves)

    @classmethod
    def _fit(cls, items):
        arr = np.asarray(items, dtype=float)
        x, y, lr = arr[:, 0], arr[:, 1], arr[:, 2]
        g = np.clip(1 - x, 0, None) + cls.EPS
        w = 1 / g**2
        if len(x) >= 3 and np.var(x) > 1e-12:
            xm, ym = np.average(x, weights=w), np.average(y, weights=w)
            b = float(np.clip(np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2), 0.0, 1.5))
        else:
            b = 1.0
        a = float(np.average(y - b * x, weights=w))
        r = (y - a - b * x) / g
        return a, b, math.sqrt(float(r @ r) / max(len(x) - 2, 1)), float(np.mean(lr))

    def predict(self, cand, f, quality):
        if fidelity_key(f) >= fidelity_key(1.0):
            return float(quality), 0.0
        if (cand, fidelity_key(f)) not in self.fits:
            return self._plain.predict(cand, f, quality)
        a, b, k, _ = self._params(cand, f)
        sd = max(k * (max(1 - float(quality), 0.0) + self.EPS), MIN_SD)
        if self.WIDER_ONLY:
            y, s = self._plain.predict(cand, f, quality)
            return y, max(s, sd)
        return a + b * float(quality), sd


class CalibratedSd(MultiTenantHBScheduler):
    def __init__(self, prior=None, seed=0, curves=None, **kw):
        super().__init__(prior=prior, seed=seed, curves=curves, **kw)
        self.curve_model = RoomCurveModel(curves)


class WiderSdOnHard(MultiTenantHBScheduler):
    def __init__(self, prior=None, seed=0, curves=None, **kw):
        super().__init__(prior=prior, seed=seed, curves=curves, **kw)
        self.curve_model = RoomCurveModel(curves, wider_only=True)


VARIANTS = {
    "multitenant-hb": MultiTenantHBScheduler,
    "stop-x0.7": StopLess,
    "stop-x1.5": StopMore,
    "kth-alternative": KthAlternative,
    "siblings-believed": SiblingsBelieved,
    "option-to-stop": OptionToStop,
    "full-cost-alternative": FullCostAlternative,
    "calibrated-sd": CalibratedSd,
    "wider-sd-on-hard": WiderSdOnHard,
}


def _make(name, prior=None, seed=0, curves=None):
    if name in VARIANTS:
        return VARIANTS[name](prior=prior, seed=seed, curves=curves)
    return make_scheduler(name, prior=prior, seed=seed, curves=curves)


simulate_mod.make_scheduler = _make  # the replay builds schedulers by name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default=str(ROOT / "automl_runner" / "data" / "real_curves.csv"))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--cells", nargs="*", default=["32x4", "8x4"], help="tenants x devices, e.g. 32x4")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    curves = load_any(args.matrix)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    half = len(seeds) // 2
    t0 = time.time()
    print(f"matrix {args.matrix}; seeds {seeds[0]}-{seeds[-1]}; same splits as bench/automl.py; T = {T:g}; "
          f"multitenant's median time / the variant's (seeds {seeds[0]}-{seeds[half - 1]}, "
          f"{seeds[half]}-{seeds[-1]}; geometric mean of per-run ratios)\n")
    cells = [tuple(int(x) for x in c.split("x")) for c in args.cells]
    print("| variant | " + " | ".join(f"{n} x {m}" for n, m in cells) + " |")
    print("|---|" + "---:|" * len(cells))
    splits = {(n, s): split_curves(curves, n, np.random.default_rng([n, s])) for n, _m in cells for s in seeds}
    mt = {(n, m): np.array([simulate_mod.run_once(*splits[(n, s)], "multitenant", m, s).time_to(T) for s in seeds])
          for n, m in cells}
    for name in args.variants:
        parts = []
        for n, m in cells:
            v = np.array([simulate_mod.run_once(*splits[(n, s)], name, m, s).time_to(T) for s in seeds])
            a = mt[(n, m)]
            ok = np.isfinite(a) & np.isfinite(v) & (v > 0)
            geo = float(np.exp(np.mean(np.log(a[ok] / v[ok]))))
            parts.append(f"{np.median(a) / np.median(v):.2f}x ({np.median(a[:half]) / np.median(v[:half]):.2f}x, "
                         f"{np.median(a[half:]) / np.median(v[half:]):.2f}x; {geo:.2f}x)")
        print(f"| {name} | " + " | ".join(parts) + " |", flush=True)
    print(f"\n({time.time() - t0:.0f} s wall)")


if __name__ == "__main__":
    main()
