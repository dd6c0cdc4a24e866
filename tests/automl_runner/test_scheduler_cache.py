"""The per-tenant score cache changes no decision.

A cached scheduler (``cache_scores = True``, the default) and an uncached one (every pending pair
scored on every decision) are driven through the same random sequence of results, starts, stopped
trials, starts and results by other workers, results reported twice, tenants arriving, candidates new to the prior, a result above
the ceiling, and stale pending lists; they must make the same choice at every decision (and the
same rung decisions, for ``multitenant-hb``). The cached one must also score far fewer tenants.
"""

from __future__ import annotations

import numpy as np
import pytest

from automl_runner.scheduling.matrices import synthetic, synthetic_curves
from automl_runner.scheduling.registry import make_scheduler
from automl_runner.scheduling.scheduler import MultiTenantScheduler

TENANTS = 24
CANDIDATES = 10


def _pair(name: str, prior: bool, seed: int):
    curves = synthetic_curves(tenants=TENANTS + 12, candidates=CANDIDATES, seed=seed)
    live = curves.tenants[:TENANTS]
    other = curves.without(live)
    rows = other.full().rows if prior else None
    made = []
    for cached in (True, False):
        s = make_scheduler(name, prior=rows, seed=seed, curves=other if name == "multitenant-hb" else None)
        s.cache_scores = cached
        made.append(s)
    return made, curves.subset(live).full()


def _count_scored(sched):
    """Count how many tenant segments ``sched`` scores (wraps ``_segment``)."""
    sched.scored = 0
    inner = sched._segment

    def counted(*args, **kwargs):
        sched.scored += 1
        return inner(*args, **kwargs)

    sched._segment = counted


def drive(a, b, live, seed: int, steps: int = 400) -> int:
    """Feed ``a`` and ``b`` the same events; assert equal choices; return the number of decisions."""
    rng = np.random.default_rng(seed)
    tenants = list(live.tenants)
    cands = list(live.candidates)
    # Tenants arrive over time: a third at the start, the rest one by one.
    arrived = tenants[: TENANTS // 3]
    waiting = tenants[TENANTS // 3:]
    pending = {t: list(cands) for t in arrived}
    running: list[tuple[str, str]] = []
    done: list[tuple[str, str]] = []
    decisions = 0
    new_candidates = 0
    ceiling_broken = False

    def both(method, *args):
        ra = getattr(a, method)(*args)
        rb = getattr(b, method)(*args)
        assert ra == rb, (method, args, ra, rb)
        return ra

    for step in range(steps):
        roll = rng.random()
        if waiting and roll < 0.05:
            t = waiting.pop(0)
            pending[t] = list(cands)
            continue
        if roll < 0.08 and new_candidates < 3:
            # A candidate the prior has never seen joins one tenant's queue (a sampled configuration).
            t = arrived[int(rng.integers(len(arrived)))] if pending else None
            if t in pending:
                pending[t].append(f"brand-new-{new_candidates}")
                new_candidates += 1
            continue
        live_pending = {t: cs for t, cs in pending.items() if cs}
        if running and (roll < 0.45 or not live_pending):
            t, c = running.pop(int(rng.integers(len(running))))
            q = live.quality[t].get(c, float(rng.uniform(0.5, 0.9)))
            cost = live.cost[t].get(c, float(rng.uniform(1, 20)))
            if not ceiling_broken and step > steps // 2 and rng.random() < 0.1:
                q, ceiling_broken = 1.02, True  # a score above 1: the ceiling goes for everybody
            if rng.random() < 0.2:
                f = float(rng.choice([1 / 9, 1 / 3]))
                both("observe_partial", t, c, f, q - 0.05, cost * f)
            else:
                both("observe", t, c, q, cost)
                done.append((t, c))
            continue
        if not live_pending:
            if not waiting:
                break
            continue
        if roll < 0.47 and done:
            # A result reported again for a pair already done (a retried trial whose first run also
            # finished): the tenant's pending list and running set stay as they were.
            t, c = done[int(rng.integers(len(done)))]
            both("observe", t, c, float(rng.uniform(0.0, 0.3)), float(rng.uniform(1, 20)))
            continue
        if roll < 0.50:
            # Started and finished by another worker between two reads: a result never started here.
            t = list(live_pending)[int(rng.integers(len(live_pending)))]
            c = pending[t].pop(int(rng.integers(len(pending[t]))))
            both("observe", t, c, live.quality[t].get(c, 0.7), live.cost[t].get(c, 5.0))
            done.append((t, c))
            continue
        if roll < 0.55:
            # Started by somebody else (another worker's choice), not by this scheduler.
            t = list(live_pending)[int(rng.integers(len(live_pending)))]
            c = pending[t].pop(int(rng.integers(len(pending[t]))))
            both("start", t, c)
            running.append((t, c))
            continue
        view = live_pending
        if running and rng.random() < 0.2:
            # A stale read: pending lists still hold a running trial (choose must skip it).
            t, c = running[0]
            view = {**live_pending, t: live_pending.get(t, []) + [c]}
        if a.early_stopping and running and rng.random() < 0.3:
            t, c = running[int(rng.integers(len(running)))]
            both("should_stop", t, c, 1 / 9, float(rng.uniform(0.4, 0.95)), float(rng.uniform(0.1, 5)), view)
        t, c = both("choose", view)
        decisions += 1
        pending[t].remove(c)
        both("start", t, c)
        running.append((t, c))
    return decisions


@pytest.mark.parametrize("prior", [True, False], ids=["prior", "no-prior"])
@pytest.mark.parametrize("name", ["multitenant", "multitenant-hb", "round-robin-gp", "random-gp"])
@pytest.mark.parametrize("seed", [0, 1])
def test_cached_and_uncached_schedulers_choose_the_same(name, prior, seed):
    (cached, plain), live = _pair(name, prior, seed)
    _count_scored(cached)
    _count_scored(plain)
    decisions = drive(cached, plain, live, seed)
    assert decisions >= 60
    if name.startswith("multitenant"):
        # The uncached one scores every tenant with pending work on every decision.
        assert plain.scored > 5 * decisions
        if prior:  # only the tenants that changed are scored again
            assert cached.scored < plain.scored / 2, (cached.scored, plain.scored)


class ForgetfulScheduler(MultiTenantScheduler):
    """A cache that is never told that a tenant's state changed (only its pending list and
    running set key it)."""

    def _touch(self, tenant):
        pass


@pytest.mark.parametrize("cls", [ForgetfulScheduler, MultiTenantScheduler])
def test_a_result_reported_again_reaches_the_cache(cls):
    """A tenant's best can change while its pending list and running set stay the same (a
    retried trial reports again): only the version tells the cache, and without it the choice
    differs from the uncached one."""
    curves = synthetic(tenants=TENANTS + 12, candidates=CANDIDATES, seed=0)
    live = curves.subset(curves.tenants[:TENANTS])
    rows = curves.without(curves.tenants[:TENANTS]).rows
    plain, cached = MultiTenantScheduler(prior=rows), cls(prior=rows)
    plain.cache_scores = False
    pending = {t: list(live.candidates[1:]) for t in live.tenants}
    first = live.candidates[0]
    for s in (plain, cached):
        for t in live.tenants:
            s.observe(t, first, live.quality[t][first], live.cost[t][first])
    assert cached.choose(pending) == plain.choose(pending)
    t = live.tenants[3]
    for s in (plain, cached):
        s.observe(t, first, 0.0, live.cost[t][first])  # its only result, reported again as 0
    assert plain.choose(pending)[0] == t  # a tenant with best 0 is the most improvable
    if cls is ForgetfulScheduler:
        assert cached.choose(pending) != plain.choose(pending)
    else:
        assert cached.choose(pending) == plain.choose(pending)


def test_a_tenant_with_a_new_result_is_the_only_one_scored_again():
    curves = synthetic(tenants=TENANTS + 12, candidates=CANDIDATES, seed=2)
    live = curves.subset(curves.tenants[:TENANTS])
    s = MultiTenantScheduler(prior=curves.without(live.tenants).rows)
    _count_scored(s)
    pending = {t: list(live.candidates) for t in live.tenants}
    s.choose(pending)
    assert s.scored == TENANTS + 1  # every tenant once, then best_pair in the chosen one
    s.scored = 0
    s.choose(pending)
    assert s.scored == 1  # nothing changed: only best_pair
    t = live.tenants[5]
    c = pending[t].pop(0)
    s.observe(t, c, live.quality[t][c], live.cost[t][c])
    s.scored = 0
    s.choose(pending)
    assert s.scored == 2  # the tenant with the result, then best_pair


def test_without_a_prior_a_result_redoes_only_the_costs_of_the_other_tenants():
    """Without a prior every result moves the shared cost model (every tenant's expected costs),
    but not the other tenants' EI: they are not scored again, only divided by their new costs;
    the tenants whose prior mean the online candidate effects shift (at most
    MAX_EFFECT_REFRESH a decision) are."""
    tenants = 40
    curves = synthetic(tenants=tenants, candidates=CANDIDATES, seed=3)
    live = curves
    cached, plain = MultiTenantScheduler(prior=None), MultiTenantScheduler(prior=None)
    plain.cache_scores = False
    _count_scored(cached)
    pending = {t: list(live.candidates) for t in live.tenants}
    for t in live.tenants[:3]:  # two results each: candidate effects to learn from
        for c in (pending[t].pop(0), pending[t].pop(0)):
            for s in (cached, plain):
                s.observe(t, c, live.quality[t][c], live.cost[t][c])
    for _ in range(4):  # let the effect refreshes settle (16 tenants a decision)
        assert cached.choose(pending) == plain.choose(pending)
    t = live.tenants[20]
    c = pending[t].pop(0)
    version = cached.costs.version
    for s in (cached, plain):
        s.observe(t, c, live.quality[t][c], live.cost[t][c])
    assert cached.costs.version > version  # every tenant's costs moved
    cached.scored = 0
    assert cached.choose(pending) == plain.choose(pending)
    assert cached.scored <= cached.MAX_EFFECT_REFRESH + 2 < tenants
