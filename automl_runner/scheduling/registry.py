"""Schedulers by name: the names the CLI, the worker and the simulator accept, and
:func:`make_scheduler`, which builds one (the plain schedulers of :mod:`.scheduler` and the
early-stopping one of :mod:`.successive_halving`, which builds on them)."""
from __future__ import annotations

from .scheduler import (MultiTenantScheduler, PriorRows, RandomScheduler, RoundRobinScheduler, Scheduler,
                        SchedulerError, TenantTurnScheduler)
from .successive_halving import MultiTenantHBScheduler

SCHEDULERS = ("multitenant", "round-robin", "random")
# Also available by name, for benchmarks: round-robin that ignores the prior and takes each
# tenant's candidates in catalogue order (cheap linear models come first in ours), and the
# paper's own baselines: the tenant by turn or at random, the candidate by multitenant's rule.
EXTRA_SCHEDULERS = ("round-robin-catalogue", "round-robin-gp", "random-gp", "multitenant-hb")
#: Schedulers that stop trials early at rungs (``successive_halving``); they use learning curves.
EARLY_STOPPING_SCHEDULERS = ("multitenant-hb",)


def make_scheduler(name: str, prior: PriorRows | None = None, seed: int = 0, curves=None) -> Scheduler:
    """A scheduler by name: ``multitenant``, ``round-robin`` or ``random`` (or one of
    ``EXTRA_SCHEDULERS``: ``round-robin-catalogue``, ``round-robin-gp``, ``random-gp``,
    ``multitenant-hb``).

    ``prior``: (tenant, candidate, quality, cost) rows from *other* tenants, or None.
    ``curves``: their learning curves (``matrices.LearningCurves`` or (tenant, candidate,
    fidelity, quality, cost, resumes) rows), used by ``multitenant-hb`` only.
    """
    if name == "multitenant-hb":
        return MultiTenantHBScheduler(prior=prior, seed=seed, curves=curves)
    if name == "multitenant":
        return MultiTenantScheduler(prior=prior, seed=seed)
    if name == "round-robin":
        return RoundRobinScheduler(prior=prior)
    if name == "random":
        return RandomScheduler(seed=seed)
    if name == "round-robin-catalogue":
        return RoundRobinScheduler(prior=prior, use_prior=False)
    if name == "round-robin-gp":
        return TenantTurnScheduler(prior=prior, seed=seed, turn="round-robin")
    if name == "random-gp":
        return TenantTurnScheduler(prior=prior, seed=seed, turn="random")
    raise SchedulerError(
        f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS + EXTRA_SCHEDULERS)}"
    )
