"""Which (tenant, candidate) to train next when a device frees up.

The schedulers share one interface (``make_scheduler(name, prior=None, seed=0)``):

* ``multitenant`` -- cost-aware GP-EI across tenants (ease.ml, PVLDB 2018). Each tenant has
  a Gaussian-process posterior over its candidates' qualities (``gp.TenantGP``), the prior
  learned from other tenants' results. The next trial is the pending pair with the largest
  expected improvement over its tenant's best so far, per expected second of training.
  Global regret is the sum over tenants of (best achievable - best found), so a trial's
  expected reduction of global regret is exactly its EI over its own tenant's incumbent,
  and EI / expected cost is the greedy rate of regret reduction per device-second. A
  tenant with nothing trained yet has incumbent 0 (the regret convention of
  ``simulate``), so every tenant first gets a cheap, likely-good model, and afterwards the
  tenants whose best is furthest from what their posterior promises win the devices (the
  paper's "serve the worst-off tenant" rule falls out of the EI term). Trials already
  running are fantasised at their posterior mean: their tenant's variances shrink as if
  their results were in (``TenantGP.fantasy_variance``), and for the choice of tenant its
  incumbent becomes max(best, their means) (``believed_best``), so a second device does not
  chase the same hope. The candidate within the chosen tenant is picked by ``best_pair`` on
  that tenant alone, exactly as the turn baselines pick it. Without a prior it is much weaker (docs/scheduler.md): give it one.
* ``round-robin`` -- tenants in turn; each tenant takes its candidates in one fixed order:
  by decreasing prior mean quality when a prior is given (candidates the prior lacks come
  after, in catalogue order), else in catalogue order (the order of the ``pending`` lists).
  Reasonable, as users did before, but it never adapts to results or to cost.
* ``round-robin-catalogue`` -- the same, always in catalogue order (a second baseline for
  the benchmark; not one of the three the CLI compares by default).
* ``random`` -- a uniformly random tenant with pending work, then a uniformly random
  pending candidate of it; seeded.
* ``round-robin-gp`` and ``random-gp`` -- ease.ml's own baselines: the tenant in strict turn
  (or uniformly at random), then, within it, the candidate ``multitenant`` would pick among
  that tenant's candidates (same GP posterior, prior, cost model, running trials). Only the
  choice of tenant differs (``TenantTurnScheduler``).

Cost of a decision: observations update one tenant's posterior incrementally, and ``choose``
keeps each tenant's best EI per expected second between decisions (``MultiTenantScheduler``,
``cache_scores``): it recomputes, in one vectorised pass, only the tenants whose state changed
(a result, a start, a stopped trial, a new pending list) and then takes the max over the
cached bests, so a decision costs what changed, not the size of the queue; the choices are
those of scoring every pending pair (``tests/test_scheduler_cache.py``,
``bench/scheduler_latency.py``).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import norm

from ..errors import SchedulerError
from .gp import CandidatePrior, TenantGP

PriorRows = Iterable[tuple[str, str, float, float]]

class Scheduler:
    """Common bookkeeping: what each tenant has finished, what is running, best so far."""

    name = "base"

    def __init__(self) -> None:
        self.done: dict[str, dict[str, float]] = {}
        self.running: dict[str, set[str]] = {}
        self.stopped: dict[str, dict[str, tuple[float, float]]] = {}

    def observe(self, tenant: str, candidate: str, quality: float, cost: float) -> None:
        """A trial finished: ``quality`` on the tenant's validation split, ``cost`` seconds."""
        self.running.get(tenant, set()).discard(candidate)
        self.done.setdefault(tenant, {})[candidate] = float(quality)

    def start(self, tenant: str, candidate: str) -> None:
        """A trial is now running (chosen by this scheduler or by anybody else)."""
        self.running.setdefault(tenant, set()).add(candidate)

    #: Whether ``should_stop`` can ever say yes (only ``multitenant-hb``): a worker asks at
    #: rungs only then.
    early_stopping = False

    def observe_partial(self, tenant: str, candidate: str, fidelity: float, quality: float, cost: float) -> None:
        """A trial was stopped early at ``fidelity`` < 1 with ``quality``, after ``cost`` seconds.

        It is over (neither running nor pending again). Schedulers that do not stop trials
        ignore the score; ``multitenant-hb`` feeds it to the tenant's model.
        """
        self.running.get(tenant, set()).discard(candidate)
        self.stopped.setdefault(tenant, {})[candidate] = (float(fidelity), float(quality))

    def should_stop(self, tenant: str, candidate: str, fidelity: float, quality: float, spent: float,
                    pending: Mapping[str, Sequence[str]]) -> bool:
        """At a rung: stop this running trial (True) or let it go on to the next rung."""
        return False

    def rungs(self, tenant: str, candidate: str, available: Sequence[float] = (1.0,)) -> list[float]:
        """The fidelities at which a trial of ``candidate`` reports (the last is 1: the full budget)."""
        return [1.0]

    def best(self, tenant: str) -> float:
        """Best quality found so far for ``tenant``; 0 before its first result.

        A trial stopped early counts at its score at the rung: it is a done trial in the store,
        whose best score is what the queue promotes to the gate (``Store.begin_promotion``).
        """
        scores = [*self.done.get(tenant, {}).values(), *(q for _f, q in self.stopped.get(tenant, {}).values())]
        return max(scores) if scores else 0.0

    def choose(self, pending: Mapping[str, Sequence[str]]) -> tuple[str, str]:
        """Pick the next (tenant, candidate) among ``pending`` (neither done nor running)."""
        raise NotImplementedError

    def _available(self, pending: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        # Defensive: callers pass pending = not done and not running, but a store read a
        # moment ago may be stale; never hand out a pair we know is running.
        out = {}
        for tenant, cands in pending.items():
            run = self.running.get(tenant, ())
            keep = [c for c in cands if c not in run] if run else list(cands)
            if keep:
                out[tenant] = keep
        if not out:
            raise SchedulerError("nothing pending: every candidate of every tenant is done or running")
        return out


class RandomScheduler(Scheduler):
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def choose(self, pending):
        avail = self._available(pending)
        tenants = list(avail)
        tenant = tenants[int(self.rng.integers(len(tenants)))]
        cands = avail[tenant]
        return tenant, cands[int(self.rng.integers(len(cands)))]


class TenantTurns:
    """Tenants in strict turn, in order of first appearance, skipping those with nothing pending."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.last: int = -1

    def next(self, avail: Mapping[str, Sequence[str]]) -> str:
        for tenant in avail:
            if tenant not in self.order:
                self.order.append(tenant)
        n = len(self.order)
        for step in range(1, n + 1):
            k = (self.last + step) % n
            if avail.get(self.order[k]):
                self.last = k
                return self.order[k]
        raise SchedulerError("nothing pending")  # unreachable: avail is non-empty


class RoundRobinScheduler(Scheduler):
    name = "round-robin"

    def __init__(self, prior: PriorRows | None = None, use_prior: bool = True) -> None:
        super().__init__()
        if not use_prior:
            self.name = "round-robin-catalogue"
        self.rank: dict[str, float] = {}
        if prior is not None and use_prior:
            sums: dict[str, list[float]] = {}
            for _t, cand, quality, _cost in prior:
                sums.setdefault(cand, []).append(float(quality))
            self.rank = {c: -float(np.mean(v)) for c, v in sums.items()}
        self.turns = TenantTurns()

    def choose(self, pending):
        avail = self._available(pending)
        tenant = self.turns.next(avail)
        cands = avail[tenant]
        # the index breaks ties: unranked candidates keep their catalogue order
        first = min(range(len(cands)), key=lambda i: (self.rank.get(cands[i], math.inf), i))
        return tenant, cands[first]


class CostModel:
    """Expected training seconds: log cost = tenant level + candidate effect.

    Candidate effects come from the prior (each prior tenant's log costs centred on its
    mean); without a prior they are learned from results as they arrive. A tenant's level
    is a normal-normal posterior mean: its observed residuals shrunk towards the typical
    level with a weight, in pseudo-observations, of the prior's within-tenant residual
    variance over the variance of tenant levels. Dataset size varies far more than one
    trial's time is noisy, so one result mostly sets the level.
    """

    PSEUDO = 1.0  # the weight without a prior to estimate it from

    def __init__(self, prior: PriorRows | None = None) -> None:
        self.effect: dict[str, float] = {}
        #: Bumped whenever something every tenant's expected costs depend on moves (without a
        #: prior: the candidate effects and the typical level, with every result).
        self.version = 0
        self.pseudo = self.PSEUDO
        self.fixed = False
        self.level0 = 0.0
        self.tenant_sum: dict[str, float] = {}
        self.tenant_n: dict[str, int] = {}
        # Online statistics used when there is no prior.
        self._cand_sum: dict[str, float] = {}
        self._cand_n: dict[str, int] = {}
        self._all_sum = 0.0
        self._all_n = 0
        rows = list(prior) if prior is not None else []
        if rows:
            by_tenant: dict[str, list[tuple[str, float]]] = {}
            for tenant, cand, _q, cost in rows:
                by_tenant.setdefault(tenant, []).append((cand, math.log(max(float(cost), 1e-9))))
            resid: dict[str, list[float]] = {}
            levels = []
            for items in by_tenant.values():
                level = float(np.mean([lc for _, lc in items]))
                levels.append(level)
                for cand, lc in items:
                    resid.setdefault(cand, []).append(lc - level)
            self.effect = {c: float(np.mean(v)) for c, v in resid.items()}
            self.level0 = float(np.mean(levels))
            self.fixed = True
            if len(levels) >= 2:
                within = [lc - level - self.effect[c]
                          for items, level in zip(by_tenant.values(), levels) for c, lc in items]
                between = float(np.var(levels, ddof=1))
                if between > 0:
                    self.pseudo = max(float(np.var(within)) / between, 1e-3)

    def candidate_effect(self, cand: str) -> float:
        if self.fixed:
            return self.effect.get(cand, 0.0)
        n = self._cand_n.get(cand, 0)
        if n == 0 or self._all_n == 0:
            return 0.0
        return self._cand_sum[cand] / n - self._all_sum / self._all_n

    def observe(self, tenant: str, cand: str, cost: float) -> None:
        if not cost or not math.isfinite(cost) or cost <= 0:
            return  # unknown cost (e.g. a store row without timing): it says nothing
        lc = math.log(float(cost))
        if not self.fixed:
            self._cand_sum[cand] = self._cand_sum.get(cand, 0.0) + lc
            self._cand_n[cand] = self._cand_n.get(cand, 0) + 1
            self._all_sum += lc
            self._all_n += 1
            self.level0 = self._all_sum / self._all_n
            self.version += 1
        self.tenant_sum[tenant] = self.tenant_sum.get(tenant, 0.0) + lc - self.candidate_effect(cand)
        self.tenant_n[tenant] = self.tenant_n.get(tenant, 0) + 1

    def level(self, tenant: str) -> float:
        n = self.tenant_n.get(tenant, 0)
        return (self.tenant_sum.get(tenant, 0.0) + self.pseudo * self.level0) / (n + self.pseudo)

    def expected(self, tenant: str, cands: Sequence[str]) -> np.ndarray:
        level = self.level(tenant)
        return np.exp(level + np.array([self.candidate_effect(c) for c in cands]))


def expected_improvement(
    mean: np.ndarray, sd: np.ndarray, best: np.ndarray, ceiling: float | None = None
) -> np.ndarray:
    """E[max(min(f, ceiling) - best, 0)] for f ~ N(mean, sd^2), elementwise.

    Validation scores (accuracy, balanced accuracy, R^2) never exceed 1, yet a Gaussian puts
    mass above it; without the ceiling a tenant already at 1.0 would still look improvable.
    For best <= ceiling, max(min(f, u) - b, 0) = max(f - b, 0) - max(f - u, 0), so the capped
    EI is the difference of two plain ones.
    """

    def plain(b):
        gap = mean - b
        z = gap / sd
        return gap * norm.cdf(z) + sd * norm.pdf(z)

    ei = plain(best)
    if ceiling is not None and math.isfinite(ceiling):
        ei = ei - plain(ceiling)  # (best > ceiling: negative, clipped to 0 below)
    # Far below the incumbent the terms cancel to rounding error; EI is never < 0.
    return np.maximum(ei, 0.0)


class CandidateEffects:
    """Without a prior: how much better or worse than a tenant's average each candidate does.

    Learned online from the tenants being scheduled: a tenant with at least two results
    contributes, per candidate it ran, the candidate's quality minus the mean of the
    tenant's results. A tenant's prior mean for candidate c is then the fallback mean plus
    the average contribution of the *other* tenants (its own results are already in its
    GP), shrunk towards 0 with the weight of one pseudo-tenant.
    """

    SHRINK = 1.0

    def __init__(self) -> None:
        self.sum = np.zeros(0)
        self.n = np.zeros(0)
        self.contrib: dict[str, dict[int, float]] = {}
        self.version = 0

    def _grow(self, size: int) -> None:
        if self.sum.size < size:
            pad = size - self.sum.size
            self.sum = np.append(self.sum, np.zeros(pad))
            self.n = np.append(self.n, np.zeros(pad))

    def update(self, tenant: str, results: Mapping[int, float]) -> None:
        """``results``: all of the tenant's results so far, by candidate index."""
        self._grow(max(results, default=-1) + 1)
        for c, r in self.contrib.get(tenant, {}).items():
            self.sum[c] -= r
            self.n[c] -= 1
        new: dict[int, float] = {}
        if len(results) >= 2:  # one result says nothing about candidates relative to each other
            level = float(np.mean(list(results.values())))
            new = {c: y - level for c, y in results.items()}
            for c, r in new.items():
                self.sum[c] += r
                self.n[c] += 1
        self.contrib[tenant] = new
        self.version += 1

    def shift_for(self, tenant: str, size: int) -> np.ndarray:
        self._grow(size)
        total, count = self.sum[:size].copy(), self.n[:size].copy()
        for c, r in self.contrib.get(tenant, {}).items():
            total[c] -= r
            count[c] -= 1
        return total / (count + self.SHRINK)


class MultiTenantScheduler(Scheduler):
    name = "multitenant"

    #: Scores are at most 1 (accuracy, R^2); a result above it switches the cap off.
    CEILING = 1.0

    def __init__(self, prior: PriorRows | None = None, seed: int = 0) -> None:
        # ``seed`` is accepted for a uniform interface; the scheduler is deterministic.
        super().__init__()
        rows = list(prior) if prior is not None else []
        self.ceiling = self.CEILING
        if any(float(r[2]) > self.ceiling for r in rows):
            self.ceiling = math.inf
        self.prior = CandidatePrior.from_rows(rows) if rows else CandidatePrior.fallback()
        self.costs = CostModel(rows or None)
        # With no learned prior, candidate effects are learned from the tenants themselves.
        self.effects = None if self.prior.learned else CandidateEffects()
        self._effects_seen: dict[str, int] = {}
        self.gps: dict[str, TenantGP] = {}
        self._spaces = None  # search spaces, loaded when a configuration new to the prior appears
        self._effect_size = -1
        self._effect_arr = np.zeros(0)
        self._sd: dict[str, np.ndarray] = {}  # cached sd including running-trial fantasies
        self._sd_size: dict[str, int] = {}
        # The score cache (``_believed_rates``): per tenant, a version bumped by every change of
        # its own state (results, starts, stopped trials, a shifted prior mean) and
        # tenant -> [version, pending list, running set, prior indices, EI, cost model version,
        # best believed EI per second]; the whole cache is dropped when what couples the EI of
        # all tenants moves (``_shared_key``), and only the costs are redone when the cost model's
        # shared part moved (without a prior: every result).
        self._version: dict[str, int] = {}
        self._rates: dict[str, list] = {}
        self._rates_key: tuple | None = None

    def _gp(self, tenant: str) -> TenantGP:
        gp = self.gps.get(tenant)
        if gp is None:
            gp = self.gps[tenant] = TenantGP(self.prior)
        return gp

    def _index(self, cand: str) -> int:
        i = self.prior.index.get(cand)
        if i is not None:
            return i
        if "/" in cand:  # a configuration of a family's search space: model it after its neighbours
            from ..candidates.search_space import as_unit_vectors, classification_spaces

            if self._spaces is None:
                self._spaces = classification_spaces()
            mine = as_unit_vectors([cand], self._spaces)
            if mine:
                family, point = mine[cand]
                return self.prior.add_like(cand, family, point, as_unit_vectors(self.prior.names, self._spaces))
        return self.prior.add(cand)

    #: Keep each tenant's best EI per expected second between decisions and recompute only the
    #: tenants whose state changed (``_believed_rates``). The choices are the same as scoring
    #: every pending pair on every decision (False), which ``tests/test_scheduler_cache.py``
    #: checks decision by decision.
    cache_scores = True

    def _touch(self, tenant: str) -> None:
        """Something ``tenant``'s scores depend on changed: its cached best is stale."""
        self._version[tenant] = self._version.get(tenant, 0) + 1

    def _shared_key(self) -> tuple:
        """What every tenant's EI depends on: the ceiling and the prior's size (a new candidate
        makes every tenant's fantasy variances be recomputed). The cost model's shared part
        (without a prior) is ``costs.version``."""
        return (self.ceiling, len(self.prior))

    def observe(self, tenant, candidate, quality, cost):
        self._touch(tenant)
        if candidate in self.done.get(tenant, {}):
            super().observe(tenant, candidate, quality, cost)  # a re-run: keep the first result
            self._sd.pop(tenant, None)  # no longer running
            return
        super().observe(tenant, candidate, quality, cost)
        if quality > self.ceiling:
            self.ceiling = math.inf
        self._gp(tenant).observe(self._index(candidate), float(quality))
        self.costs.observe(tenant, candidate, cost)
        if not self.costs.fixed:
            self._effect_size = -1  # online candidate effects moved: rebuild the array
        if self.effects is not None:
            self.effects.update(tenant, {self._index(c): q for c, q in self.done[tenant].items()})
        self._sd.pop(tenant, None)

    def start(self, tenant, candidate):
        super().start(tenant, candidate)
        self._touch(tenant)
        self._index(candidate)
        self._sd.pop(tenant, None)

    def observe_partial(self, tenant, candidate, fidelity, quality, cost):
        super().observe_partial(tenant, candidate, fidelity, quality, cost)
        self._touch(tenant)
        self._sd.pop(tenant, None)  # no longer running: its fantasy goes

    def _cost_effects(self) -> np.ndarray:
        """The cost model's candidate effects as an array in prior-index order (cached)."""
        if self._effect_size != len(self.prior):
            self._effect_arr = np.array([self.costs.candidate_effect(c) for c in self.prior.names])
            self._effect_size = len(self.prior)
        return self._effect_arr

    def _tenant_sd(self, tenant: str) -> np.ndarray:
        sd = self._sd.get(tenant)
        if sd is not None and self._sd_size[tenant] == len(self.prior):
            return sd
        gp = self._gp(tenant)
        running = [self.prior.index[c] for c in self.running.get(tenant, ())]
        sd = np.sqrt(gp.fantasy_variance(running))
        self._sd[tenant], self._sd_size[tenant] = sd, len(self.prior)
        return sd

    #: Without a prior, at most this many tenants get their candidate effects refreshed per
    #: decision (the stalest first): each refresh is a triangular solve, and with 100
    #: tenants refreshing all of them after every result cost 11 ms a decision.
    MAX_EFFECT_REFRESH = 16

    def _refresh_effects(self, tenants) -> None:
        version = self.effects.version
        stale = [t for t in tenants if self._effects_seen.get(t) != version]
        if len(stale) > self.MAX_EFFECT_REFRESH:
            stale.sort(key=lambda t: self._effects_seen.get(t, -1))
            stale = stale[: self.MAX_EFFECT_REFRESH]
        for tenant in stale:
            self._gp(tenant).shift_prior_mean(self.effects.shift_for(tenant, len(self.prior)))
            self._effects_seen[tenant] = version
            self._touch(tenant)

    def believed_best(self, tenant: str) -> float:
        """The tenant's incumbent with its running trials fantasised at their posterior mean.

        Kriging believer, applied to the incumbent as well as to the variances: a running
        trial is expected to return its posterior mean, so the tenant's best is expected to
        become max(best so far, that mean). Without it a tenant with no result yet keeps
        incumbent 0 while its first trial runs, and every free device looks just as valuable
        on it as the first one did (a second, third, fourth trial on the same tenant).
        """
        best = self.best(tenant)
        running = self.running.get(tenant)
        if running:
            mean, _ = self._gp(tenant).posterior()
            index = self.prior.index
            believed = max(float(mean[index[c]]) for c in running)
            best = max(best, min(believed, self.ceiling))
        return best

    def _indices(self, cands: Sequence[str]) -> np.ndarray:
        """Prior indices of ``cands``, adding candidates new to the scheduler."""
        try:
            return np.fromiter(map(self.prior.index.__getitem__, cands), dtype=np.intp, count=len(cands))
        except KeyError:  # a candidate new to the scheduler
            return np.fromiter(map(self._index, cands), dtype=np.intp, count=len(cands))

    def _segment(self, tenant: str, cands: Sequence[str], idx: np.ndarray, believe_running: bool):
        """(posterior mean, sd, incumbent, expected cost) of ``tenant``'s pending ``cands``."""
        mean, _ = self._gp(tenant).posterior()
        mean = mean[idx]
        sd = self._tenant_sd(tenant)[idx]
        inc = self.believed_best(tenant) if believe_running else self.best(tenant)
        full_cost = np.exp(self.costs.level(tenant) + self._cost_effects()[idx])
        return mean, sd, np.full(len(cands), inc), self.trial_cost(cands, full_cost, mean, sd, inc)

    def scores(self, pending: Mapping[str, Sequence[str]], believe_running: bool = False):
        """(segments, ei, expected cost) for every available pending pair, in one pass.

        ``segments`` lists (tenant, candidates) in the order of the flat score arrays; no
        per-pair objects are built (thousands of small tuples per decision would invite
        garbage-collector pauses longer than the whole computation). ``believe_running``:
        EI over ``believed_best`` instead of the best so far (the choice of tenant).
        Candidates new to the scheduler join the prior before any tenant is scored, so every
        tenant is scored against the same prior.
        """
        avail = self._available(pending)
        segments = list(avail.items())
        if self.effects is not None:
            self._refresh_effects(avail)
        idxs = [self._indices(cands) for _tenant, cands in segments]
        means, sds, bests, costs = [], [], [], []
        for (tenant, cands), idx in zip(segments, idxs):
            mean, sd, inc, cost = self._segment(tenant, cands, idx, believe_running)
            means.append(mean)
            sds.append(sd)
            bests.append(inc)
            costs.append(cost)
        ei = expected_improvement(
            np.concatenate(means), np.concatenate(sds), np.concatenate(bests), self.ceiling
        )
        return segments, ei, np.concatenate(costs)

    def _believed_rates(self, avail: Mapping[str, list[str]]) -> tuple[list[str], np.ndarray]:
        """(tenants of ``avail``, each one's largest EI per expected second, running trials believed).

        The same numbers as ``scores(avail, believe_running=True)`` reduced by tenant, but a
        tenant is scored again only when its version, its pending list or its running set
        differ from the cached ones, or when ``_shared_key`` moved; the stale tenants are scored
        in one vectorised pass, exactly as ``scores`` would score them. When only the cost
        model's shared part moved (no prior: every result), the cached EI of every other tenant
        is divided by its new expected costs in one more vectorised pass.
        """
        if self.effects is not None:
            self._refresh_effects(avail)  # bumps the versions of the tenants it shifts
        tenants = list(avail)
        rates = np.empty(len(tenants))
        cache, version, running = self._rates, self._version, self.running
        if self._rates_key != self._shared_key():
            cache.clear()
            self._rates_key = self._shared_key()
        cost_version = self.costs.version
        # Costs alone can be redone only where a trial's expected cost is the full one.
        plain_cost = type(self).trial_cost is MultiTenantScheduler.trial_cost
        stale, recost = [], []
        for k, tenant in enumerate(tenants):
            got = cache.get(tenant)
            if got is not None and got[0] == version.get(tenant, 0) and got[1] == avail[tenant]:
                run = running.get(tenant)
                if got[2] == (frozenset(run) if run else None):
                    if got[5] == cost_version:
                        rates[k] = got[6]
                    elif plain_cost:
                        recost.append(k)
                    else:
                        stale.append(k)
                    continue
            stale.append(k)
        if stale:
            size = len(self.prior)
            idxs = [self._indices(avail[tenants[k]]) for k in stale]
            if len(self.prior) != size:  # candidates new to the prior: rescore every tenant against it
                cache.clear()
                self._rates_key = self._shared_key()
                stale, recost = list(range(len(tenants))), []
                idxs = [self._indices(avail[t]) for t in tenants]
            parts = [self._segment(tenants[k], avail[tenants[k]], idx, True) for k, idx in zip(stale, idxs)]
            means, sds, bests, costs = zip(*parts)
            ei = expected_improvement(np.concatenate(means), np.concatenate(sds), np.concatenate(bests),
                                      self.ceiling)
            lengths = [len(m) for m in means]
            per_tenant = self._segment_max(ei / np.concatenate(costs), lengths)
            offset = 0
            for k, idx, n, best in zip(stale, idxs, lengths, per_tenant):
                tenant = tenants[k]
                run = running.get(tenant)
                rates[k] = best
                cache[tenant] = [version.get(tenant, 0), list(avail[tenant]), frozenset(run) if run else None,
                                 idx, ei[offset:offset + n], cost_version, float(best)]
                offset += n
        if recost:
            # What _segment computes for the cost, exp(level + effect), for all of them at once.
            entries = [cache[tenants[k]] for k in recost]
            lengths = [len(e[3]) for e in entries]
            levels = np.repeat(np.array([self.costs.level(tenants[k]) for k in recost]), lengths)
            idx = np.concatenate([e[3] for e in entries])
            cost = np.exp(levels + self._cost_effects()[idx])
            per_tenant = self._segment_max(np.concatenate([e[4] for e in entries]) / cost, lengths)
            for k, e, best in zip(recost, entries, per_tenant):
                rates[k] = best
                e[5], e[6] = cost_version, float(best)
        return tenants, rates

    @staticmethod
    def _segment_max(rate: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
        """The max of each consecutive segment of ``rate`` (NaN wins, as in the flat argmax)."""
        starts = np.cumsum([0] + list(lengths[:-1]))
        return np.maximum.reduceat(rate, starts)

    def trial_cost(self, cands, full_cost, mean, sd, incumbent) -> np.ndarray:
        """Expected seconds a trial of each of ``cands`` will take: here, training to the end."""
        return full_cost

    def choose(self, pending):
        """The tenant whose best pending pair promises the largest EI per expected second, with
        running trials believed (``believed_best``); then, in that tenant, ``best_pair``.

        So ``multitenant`` and the turn baselines differ exactly in the choice of tenant. With
        nothing running this is the argmax over all pending pairs.
        """
        avail = self._available(pending)
        if self.cache_scores:
            # The flat argmax below is the first pair with the largest rate: it lies in the
            # first tenant whose own largest rate is the global one.
            tenants, rates = self._believed_rates(avail)
            tenant = tenants[int(np.argmax(rates))]
            return self.best_pair({tenant: avail[tenant]})
        segments, ei, cost = self.scores(avail, believe_running=True)
        pick = int(np.argmax(ei / cost))
        for tenant, cands in segments:
            if pick < len(cands):
                return self.best_pair({tenant: avail[tenant]})
            pick -= len(cands)
        raise SchedulerError("internal: score index out of range")  # unreachable

    def next_choice(self, tenant: str, candidates: Sequence[str]) -> tuple[str, float, float] | None:
        """(candidate, EI, expected seconds) of ``best_pair`` among ``tenant``'s ``candidates``, or
        None when none is available: what the worker records for the dashboard when it schedules."""
        run = self.running.get(tenant, ())
        if not [c for c in candidates if c not in run]:
            return None
        avail = self._available({tenant: list(candidates)})
        segments, ei, cost = self.scores(avail)
        pick = int(np.argmax(ei / cost))
        return segments[0][1][pick], float(ei[pick]), float(cost[pick])

    def best_pair(self, pending: Mapping[str, Sequence[str]]) -> tuple[str, str]:
        """The pending pair with the largest EI per expected second (the multitenant rule).

        ``TenantTurnScheduler`` calls it with one tenant's candidates only: the same
        per-tenant model selection, with the tenant chosen by turn or at random.
        """
        segments, ei, cost = self.scores(pending)
        score = ei / cost
        # Ties (only without a prior, before anything is known) go to the first pending pair:
        # tenants in order of arrival, candidates in catalogue order.
        pick = int(np.argmax(score))
        for tenant, cands in segments:
            if pick < len(cands):
                return tenant, cands[pick]
            pick -= len(cands)
        raise SchedulerError("internal: score index out of range")  # unreachable


class TenantTurnScheduler(MultiTenantScheduler):
    """ease.ml's own baselines: the tenant by turn (or at random), then the multitenant rule in it.

    In the paper, round-robin and random differ from the multi-tenant scheduler only in which
    tenant is served next; within that tenant the candidate is chosen by the same model
    selection. Here: the same GP posterior, prior, cost model and running-trial fantasies as
    ``multitenant`` (this is a subclass that changes nothing but ``choose``), and the tenant's
    pending candidate with the largest EI per expected second (``best_pair`` restricted to the
    tenant). A tenant whose candidates all have zero EI (its best is already 1.0) still gets
    its turn; the tie goes to its first pending candidate, as in ``multitenant``.

    * ``round-robin-gp``: tenants in strict turn (order of first appearance), skipping tenants
      with nothing pending.
    * ``random-gp``: a uniformly random tenant with pending work; seeded.
    """

    def __init__(self, prior: PriorRows | None = None, seed: int = 0, turn: str = "round-robin") -> None:
        super().__init__(prior=prior, seed=seed)
        if turn not in ("round-robin", "random"):
            raise SchedulerError(f"unknown tenant turn {turn!r}")
        self.name = f"{turn}-gp"
        self.turns = TenantTurns() if turn == "round-robin" else None
        self.rng = np.random.default_rng(seed)

    def choose(self, pending):
        avail = self._available(pending)
        if self.turns is not None:
            tenant = self.turns.next(avail)
        else:
            tenants = list(avail)
            tenant = tenants[int(self.rng.integers(len(tenants)))]
        return self.best_pair({tenant: avail[tenant]})
