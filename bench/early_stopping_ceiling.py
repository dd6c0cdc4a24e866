"""How much can early stopping buy at all on these curves? A stopping oracle, with the same choices.

``multitenant-hb`` decides at each rung from a partial score. The oracle here decides with
the answer: it knows every trial's score at the full budget and stops, at the first rung, the
trials that will not improve their tenant's best, and those whose true improvement per
remaining second is below the best alternative's expected one (the same currency as
``multitenant-hb``, with the true gain in place of its expected improvement). Everything else is ``multitenant-hb``'s: which trial starts, the rungs, the costs, and the
retries of stopped trials once a tenant has nothing else pending. It is not a bound over every
policy (a different choice of trials could do better still), but it is the ceiling of the
stopping decision: no rule reading partial scores stops more of the useless trials or fewer of
the useful ones, nor stops them sooner than the first rung.

A second, partial oracle tells where the gap between ``multitenant-hb`` and the oracle lies: it
knows the answer only for trials that would raise their tenant's best by more than T (0.01), and
decides those as the oracle does; every other trial (those that would not improve, or by little)
gets ``multitenant-hb``'s own rule. If it comes close to the full oracle, the rule's loss is its
false stops of trials with a large late gain (and not, say, continuing useless ones).

It also prints the share of multitenant's device time spent on trials that did not improve
their tenant's best (what an ideal stopper could save, at most, of multitenant's own schedule),
and how much of it the iterative candidates (the only ones with rungs) account for.

    python bench/early_stopping_ceiling.py [--seeds 20] [--first-seed 0] [--tenants 8 16 32] [--devices 1 4]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import automl_runner.scheduling.simulate as simulate_mod  # noqa: E402
from automl_runner.scheduling.matrices import load_any, split_curves  # noqa: E402
from automl_runner.scheduling.registry import make_scheduler  # noqa: E402
from automl_runner.scheduling.successive_halving import MultiTenantHBScheduler  # noqa: E402

T = 0.01


class OracleStopper(MultiTenantHBScheduler):
    """multitenant-hb whose rung decision knows the trial's full-budget score."""

    name = "oracle-stop"
    full_scores: dict = {}

    def should_stop(self, tenant, candidate, fidelity, quality, spent, pending):
        if fidelity >= 1 or not any(pending.values()):
            return False
        gain = self.full_scores[tenant][candidate] - self.best(tenant)
        if gain <= 1e-12:
            return True
        _ei, remaining = self.continuation(tenant, candidate, fidelity, quality, spent)
        return gain / remaining < self.alternative_rate({t: c for t, c in pending.items() if c})


class BigGainOracle(OracleStopper):
    """multitenant-hb, but the oracle's decision for trials that would gain more than ``BIG``."""

    name = "oracle-big-gains"
    BIG = T

    def should_stop(self, tenant, candidate, fidelity, quality, spent, pending):
        if self.full_scores[tenant][candidate] - self.best(tenant) > self.BIG:
            return OracleStopper.should_stop(self, tenant, candidate, fidelity, quality, spent, pending)
        return MultiTenantHBScheduler.should_stop(self, tenant, candidate, fidelity, quality, spent, pending)


ORACLES = {"oracle-stop": OracleStopper, "oracle-big-gains": BigGainOracle}


def _make(name, prior=None, seed=0, curves=None):
    if name in ORACLES:
        return ORACLES[name](prior=prior, seed=seed, curves=curves)
    return make_scheduler(name, prior=prior, seed=seed, curves=curves)


simulate_mod.make_scheduler = _make  # the replay builds schedulers by name


def wasted_share(trace, curves):
    """Of multitenant's device time: share on trials that did not raise their tenant's best."""
    best: dict[str, float] = {}
    total = wasted = wasted_iter = 0.0
    for tenant, cand, _f, spent, _stopped in trace.log:
        q = curves.at(tenant, cand, 1.0)[0]
        total += spent
        if q <= best.get(tenant, 0.0) + 1e-12:
            wasted += spent
            if curves.resumes.get(cand):
                wasted_iter += spent
        best[tenant] = max(best.get(tenant, 0.0), q)
    return wasted / total, wasted_iter / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default=str(ROOT / "automl_runner" / "data" / "real_curves.csv"))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--tenants", type=int, nargs="*", default=[8, 16, 32])
    ap.add_argument("--devices", type=int, nargs="*", default=[1, 4])
    args = ap.parse_args()
    curves = load_any(args.matrix)
    t0 = time.time()
    print(f"matrix {args.matrix}; seeds {args.first_seed}-{args.first_seed + args.seeds - 1}; same splits as bench/automl.py; T = {T:g}\n")
    print("| tenants | devices | multitenant | multitenant-hb | oracle stopper | MT / HB | MT / oracle (ceiling) "
          "| MT / oracle for gains > T only | MT time on trials that did not improve (of it: iterative) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.tenants:
        for m in args.devices:
            mt, hb, orc, big, waste, waste_it = [], [], [], [], [], []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                sched, prior = split_curves(curves, n, np.random.default_rng([n, seed]))
                OracleStopper.full_scores = sched.full().quality
                a = simulate_mod.run_once(sched, prior, "multitenant", m, seed, stop_when_solved=False)
                mt.append(a.time_to(T))
                hb.append(simulate_mod.run_once(sched, prior, "multitenant-hb", m, seed).time_to(T))
                orc.append(simulate_mod.run_once(sched, prior, "oracle-stop", m, seed).time_to(T))
                big.append(simulate_mod.run_once(sched, prior, "oracle-big-gains", m, seed).time_to(T))
                # the waste up to the moment multitenant reaches T
                cut = a.time_to(T)
                a.log = [e for e, t in zip(a.log, a.times[1:]) if t <= cut]
                w, wi = wasted_share(a, sched)
                waste.append(w)
                waste_it.append(wi)
            mt_m, hb_m, or_m, big_m = (float(np.median(x)) for x in (mt, hb, orc, big))
            print(f"| {n} | {m} | {mt_m:.3g} | {hb_m:.3g} | {or_m:.3g} | {mt_m / hb_m:.2f}x | {mt_m / or_m:.2f}x | "
                  f"{mt_m / big_m:.2f}x | "
                  f"{100 * np.median(waste):.0f}% ({100 * np.median(waste_it):.0f}%) |", flush=True)
    print(f"\n({time.time() - t0:.0f} s wall)")


if __name__ == "__main__":
    main()
