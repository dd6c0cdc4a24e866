"""``multitenant-hb``: the multi-tenant choice with early stopping at increasing budgets.

Trials of iterative candidates (boosting rounds, forest trees, MLP epochs: those whose
curves ``resume``) report their validation score at rungs of increasing fidelity, 1/9, 1/3
and 1 of the full budget (successive halving with eta = 3, ``search_space.rung_fidelities``).
At each rung the scheduler decides whether the trial goes on, with the same currency the
multi-tenant choice uses for everything else: expected improvement of the tenant's best per
expected second.

* What the trial will reach at fidelity 1 is predicted from its score at the rung by a
  regression learned from the prior tenants' curves of the same candidate and rung,
  q_1 = a + b q_f + e, e ~ N(0, s^2) (``CurveModel``; pooled over the candidate's family,
  then over all candidates, when a candidate has too few prior curves). That prediction
  and the tenant's GP posterior for the candidate are two independent Gaussian views of
  q_1; their product is the trial's posterior.
* Going on is worth EI(posterior over the tenant's best) / expected remaining seconds, the
  remaining seconds from the spent ones and the prior's ratio of full to partial cost.
* The device's alternative is the best pending (tenant, candidate) pair of *any* tenant by
  the multitenant rule (EI / expected cost, running trials believed). The trial stops when
  going on is worth less than that alternative (``should_stop``). So the rung decision is
  the cross-tenant cost-aware choice itself, with continuing as one more option; a trial
  whose partial score already beats its tenant's best rarely stops, one far below it on a
  tenant that is nearly solved stops at 1/9.
* A stopped trial is over: its device goes back to the queue at once, its extrapolated
  score updates the tenant's GP as an observation with the regression's noise s^2 at that
  fidelity (``observe_partial``), and its cost, scaled up by the same cost ratio, updates
  the tenant's cost level. It does not count as a result of the tenant (regret counts only
  models trained to the full budget).

Candidates that do not resume (trained on a fraction of the rows; going on retrains) run
to the full budget in one go: on the real curves they are the cheap ones, and rungs would
cost them up to 1/9 + 1/3 more. The choice of which (tenant, candidate) to start is
``multitenant``'s (EI per expected second, running trials believed) with one change: a
resumable trial's expected cost is what it will cost *given that it may be stopped*
(``trial_cost``), so expensive iterative candidates are tried at their first rung where
``multitenant`` would not pay for them in full.

A trial stopped early is not lost for good: ``simulate`` (and, see
``early_stopping``, the queue) gives it back to its tenant's pending trials once the tenant
has nothing else pending; chosen again, it trains from scratch to the full budget without
rungs (``rungs``). So every tenant still reaches its best model eventually.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import norm

from .matrices import FIDELITY_TOL, LearningCurves
from .scheduler import MultiTenantScheduler, PriorRows, expected_improvement
from ..candidates.search_space import rung_fidelities

#: Successive-halving rungs: 1/9, 1/3, 1 (eta = 3).
RUNGS = rung_fidelities(eta=3, rungs=3)
#: Fewer prior curves than this for a candidate at a rung: pool over its family, then all.
MIN_CURVES = 6
#: The regression's residual sd is floored here (validation scores are this noisy anyway).
MIN_SD = 0.01


def fidelity_key(f: float) -> int:
    return int(round(f / FIDELITY_TOL))


def _family(candidate: str) -> str:
    return candidate.split("/", 1)[0]


class CurveModel:
    """Predict a trial's full-budget score from its score at a lower fidelity.

    Learned from prior tenants' curves: per candidate and fidelity f < 1, the least-squares
    line q_1 = a + b q_f (slope clipped to [0, 1.5]), its residual sd s (floored at MIN_SD),
    and the mean log ratio of full to partial cost. Without curves: q_1 ~ N(q_f, (0.1 (1 - f))^2 + MIN_SD^2)
    and cost proportional to fidelity.
    """

    def __init__(self, curves: LearningCurves | Iterable | None = None) -> None:
        self.fits: dict[tuple[str, int], tuple[float, float, float, float]] = {}
        self.resumes: dict[str, bool] = {}
        if curves is None:
            return
        if not isinstance(curves, LearningCurves):
            curves = LearningCurves(list(curves))
        self.resumes = dict(curves.resumes)
        pairs: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for per in curves.points.values():
            for cand, pts in per.items():
                q1, c1 = next(((q, c) for f, q, c in pts if fidelity_key(f) == fidelity_key(1.0)), (None, None))
                if q1 is None:
                    continue
                for f, q, c in pts:
                    if fidelity_key(f) < fidelity_key(1.0):
                        ratio = math.log(max(c1, 1e-6) / max(c, 1e-6))
                        pairs.setdefault((cand, fidelity_key(f)), []).append((q, q1, ratio))
        by_family: dict[tuple[str, int], list] = {}
        by_rung: dict[int, list] = {}
        for (cand, k), items in pairs.items():
            by_family.setdefault((_family(cand), k), []).extend(items)
            by_rung.setdefault(k, []).extend(items)
        for (cand, k), items in pairs.items():
            if len(items) < MIN_CURVES:
                items = by_family[(_family(cand), k)]
            if len(items) < MIN_CURVES:
                items = by_rung[k]
            self.fits[(cand, k)] = self._fit(items)
        self._family_fits = {key: self._fit(v) for key, v in by_family.items()}
        self._rung_fits = {k: self._fit(v) for k, v in by_rung.items()}

    @staticmethod
    def _fit(items) -> tuple[float, float, float, float]:
        arr = np.asarray(items, dtype=float)
        x, y, lr = arr[:, 0], arr[:, 1], arr[:, 2]
        if len(x) >= 3 and np.var(x) > 1e-12:
            b = float(np.clip(np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1), 0.0, 1.5))
        else:
            b = 1.0
        a = float(np.mean(y - b * x))
        resid = y - a - b * x
        dof = max(len(x) - 2, 1)
        sd = max(math.sqrt(float(resid @ resid) / dof), MIN_SD)
        return a, b, sd, float(np.mean(lr))

    def _params(self, cand: str, f: float) -> tuple[float, float, float, float]:
        k = fidelity_key(f)
        got = self.fits.get((cand, k))
        if got is None and hasattr(self, "_family_fits"):
            got = self._family_fits.get((_family(cand), k)) or self._rung_fits.get(k)
        if got is None:
            return 0.0, 1.0, math.hypot(0.1 * (1 - f), MIN_SD), -math.log(f)
        return got

    def predict(self, cand: str, f: float, quality: float) -> tuple[float, float]:
        """(mean, sd) of the full-budget score given ``quality`` at fidelity ``f``."""
        if fidelity_key(f) >= fidelity_key(1.0):
            return float(quality), 0.0
        a, b, sd, _ = self._params(cand, f)
        return a + b * float(quality), sd

    def cost_ratio(self, cand: str, f: float) -> float:
        """Expected (cost at fidelity 1) / (cost at fidelity f), at least 1."""
        if fidelity_key(f) >= fidelity_key(1.0):
            return 1.0
        return max(math.exp(self._params(cand, f)[3]), 1.0)


class MultiTenantHBScheduler(MultiTenantScheduler):
    """``multitenant`` plus rung decisions for resumable trials (module docstring)."""

    name = "multitenant-hb"
    early_stopping = True
    #: stop when going on buys less than this times the best alternative's EI per second
    STOP_FACTOR = 1.0

    def __init__(self, prior: PriorRows | None = None, seed: int = 0,
                 curves: LearningCurves | Iterable | None = None, rungs: Sequence[float] = RUNGS) -> None:
        super().__init__(prior=prior, seed=seed)
        self.curve_model = CurveModel(curves)
        self.rung_fidelities = tuple(sorted(float(f) for f in rungs))
        if not self.rung_fidelities or abs(self.rung_fidelities[-1] - 1.0) > FIDELITY_TOL:
            raise ValueError(f"rungs must end at fidelity 1, got {self.rung_fidelities}")
        self.decisions: list[tuple[str, str, float, bool]] = []  # (tenant, cand, fidelity, stopped)
        self._share: dict[str, float] = {}

    def rungs(self, tenant, candidate, available=(1.0,)):
        """Rung fidelities the trial reports at: the rungs its curve has, when it resumes; else [1]."""
        if not self.curve_model.resumes.get(candidate, False) or candidate in self.stopped.get(tenant, {}):
            return [1.0]  # no rungs: it does not resume, or it was stopped once and is chosen again
        have = {fidelity_key(f) for f in available}
        out = [f for f in self.rung_fidelities if fidelity_key(f) in have]
        return out if out and fidelity_key(out[-1]) == fidelity_key(1.0) else [1.0]

    #: Expected cost of a fresh trial: see ``trial_cost``. Off: multitenant's full cost.
    EXPECTED_STOPPING_COST = True

    def _first_rung_share(self, cand: str) -> float:
        """c(first rung) / c(1) for a candidate that goes through rungs, 1 for one that does not."""
        share = self._share.get(cand)
        if share is None:
            if len(self.rung_fidelities) < 2 or not self.curve_model.resumes.get(cand, False):
                share = 1.0
            else:
                share = 1.0 / self.curve_model.cost_ratio(cand, self.rung_fidelities[0])
            self._share[cand] = share
        return share

    def trial_cost(self, cands, full_cost, mean, sd, incumbent):
        """Seconds a fresh trial is expected to take when it may be stopped at its first rung.

        A resumable trial costs its first rung, c(f0) = c(1) x share, for sure, and the rest only
        if it goes on; it goes on about when it can still improve the tenant's best, so the
        rest is weighted by P(q_1 > best) under the tenant's posterior:
        E[cost] = c(1) (share + (1 - share) P(q_1 > best)). Measured: 1.1x-1.3x sooner to
        T = 0.01 than charging the full cost (docs/scheduler.md).
        """
        if not self.EXPECTED_STOPPING_COST:
            return full_cost
        share = np.fromiter((self._first_rung_share(c) for c in cands), dtype=float, count=len(cands))
        if np.all(share >= 1.0):
            return full_cost
        p_improve = norm.sf((incumbent - np.asarray(mean)) / np.asarray(sd))
        return full_cost * (share + (1.0 - share) * p_improve)

    def continuation(self, tenant: str, candidate: str, fidelity: float, quality: float, spent: float):
        """(EI of going on to fidelity 1, expected remaining seconds) for a trial at a rung."""
        y, s = self.curve_model.predict(candidate, fidelity, quality)
        mean, var = self._gp(tenant).posterior()
        i = self._index(candidate)
        m, v = float(mean[i]), float(var[i])
        w = 1.0 / (1.0 / v + 1.0 / s**2)
        mu = w * (m / v + y / s**2)
        ei = float(expected_improvement(np.array([mu]), np.array([math.sqrt(w)]),
                                        np.array([self.best(tenant)]), self.ceiling)[0])
        remaining = max(spent, 1e-6) * (self.curve_model.cost_ratio(candidate, fidelity) - 1.0)
        return ei, max(remaining, 1e-9)

    def alternative_rate(self, pending: Mapping[str, Sequence[str]]) -> float:
        """The best EI per expected second among pending pairs of all tenants (0: none)."""
        try:
            if self.cache_scores:  # the same maximum, from the per-tenant score cache
                _tenants, rates = self._believed_rates(self._available(pending))
                return float(np.max(rates))
            _segments, ei, cost = self.scores(pending, believe_running=True)
        except Exception:  # nothing pending
            return 0.0
        return float(np.max(ei / cost)) if ei.size else 0.0

    def should_stop(self, tenant, candidate, fidelity, quality, spent, pending):
        if fidelity_key(fidelity) >= fidelity_key(1.0):
            return False
        ei, remaining = self.continuation(tenant, candidate, fidelity, quality, spent)
        alt = self.alternative_rate({t: c for t, c in pending.items() if c})
        stop = alt > 0 and ei / remaining < self.STOP_FACTOR * alt
        self.decisions.append((tenant, candidate, float(fidelity), bool(stop)))
        return stop

    def observe_partial(self, tenant, candidate, fidelity, quality, cost):
        super().observe_partial(tenant, candidate, fidelity, quality, cost)
        if candidate in self.done.get(tenant, {}):
            return
        y, s = self.curve_model.predict(candidate, fidelity, quality)
        noise = self.prior.noise + s**2
        self._gp(tenant).observe(self._index(candidate), float(y), noise=noise)
        self.costs.observe(tenant, candidate, float(cost) * self.curve_model.cost_ratio(candidate, fidelity))
        if not self.costs.fixed:
            self._effect_size = -1
        self._sd.pop(tenant, None)
