"""Replay a quality-and-cost matrix through the schedulers (the ease.ml experiment).

``simulate(matrix, prior, devices, seeds, target, schedulers)`` runs an event-driven
simulation per scheduler and seed: M devices; when one frees up (a trial that started at
s with cost c frees it at s + c) the scheduler picks the next (tenant, candidate), and the
result it would have produced is read from the matrix. After each finished trial it
records the global regret

    regret(t) = sum over tenants of (best quality in the matrix - best found by time t)

with "best found" the best validation score of the tenant's models so far (a model stopped
early at a rung counts at its score there, as the queue's promotion counts it; see
``run_once``), = 0 before a tenant's first result (its worst score instead, when that is
negative, as R^2 can be). The time to target T is the first
simulated time at which the *mean* regret (global regret / number of tenants) is <= T.

Seeds vary the order in which tenants are registered (which tenant round-robin serves
first; the order ties among equal choices are broken in) and the random scheduler's draws.
With a fixed matrix, round-robin and multitenant differ across seeds only through that
order; ``bench/automl.py`` also draws a different set of tenants per seed.
"""

from __future__ import annotations

import heapq
import json
import sys
from dataclasses import dataclass, field
from typing import Sequence

import click
import numpy as np

from ..errors import MatrixError
from .matrices import LearningCurves, QualityMatrix, curves_from_matrix, load_any
from .registry import EARLY_STOPPING_SCHEDULERS, EXTRA_SCHEDULERS, SCHEDULERS, make_scheduler


@dataclass
class Trace:
    """One run: global regret after each finished trial (a right-continuous step function)."""

    scheduler: str
    seed: int
    tenants: int
    times: np.ndarray  # times[0] = 0
    regret: np.ndarray  # regret[i] holds on [times[i], times[i+1])
    trials: int = 0
    #: every trial that ended: (tenant, candidate, fidelity reached, seconds spent, stopped early)
    log: list = field(default_factory=list)

    def time_to(self, target: float) -> float:
        """First time the mean regret is <= target (inf if never)."""
        hit = np.flatnonzero(self.regret / self.tenants <= target + 1e-12)
        return float(self.times[hit[0]]) if hit.size else float("inf")

    def regret_at(self, grid: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.times, grid, side="right") - 1
        return self.regret[np.clip(i, 0, None)]


@dataclass
class SchedulerResult:
    name: str
    traces: list[Trace] = field(default_factory=list)

    def time_to_target(self, target: float) -> float:
        """Median over seeds of the time to bring the mean regret to <= target."""
        return float(np.median([t.time_to(target) for t in self.traces]))

    def times_to_target(self, target: float) -> list[float]:
        return [t.time_to(target) for t in self.traces]

    def mean_regret_curve(self, grid: np.ndarray) -> np.ndarray:
        """Median over seeds of the mean regret at each time of ``grid``."""
        return np.median([t.regret_at(grid) / t.tenants for t in self.traces], axis=0)


@dataclass
class SimulationResult:
    devices: int
    target: float
    tenants: int
    schedulers: dict[str, SchedulerResult]

    def grid(self, points: int = 200) -> np.ndarray:
        end = max(float(t.times[-1]) for r in self.schedulers.values() for t in r.traces)
        return np.linspace(0.0, end, points)

    def to_json(self, curve_points: int = 50) -> dict:
        grid = self.grid(curve_points)
        return {
            "tenants": self.tenants,
            "devices": self.devices,
            "seeds": len(next(iter(self.schedulers.values())).traces),
            "target": self.target,
            "schedulers": {
                name: {
                    "time_to_target": _finite(r.time_to_target(self.target)),
                    "time_to_target_per_seed": [_finite(x) for x in r.times_to_target(self.target)],
                    "curve": {
                        "time": [round(float(x), 6) for x in grid],
                        "mean_regret": [round(float(x), 6) for x in r.mean_regret_curve(grid)],
                    },
                }
                for name, r in self.schedulers.items()
            },
        }


def _finite(x: float):
    return x if np.isfinite(x) else None


def _prior_parts(prior):
    """(fidelity-1 rows, learning curves or None) from whatever the caller gave as prior."""
    if prior is None:
        return None, None
    if isinstance(prior, LearningCurves):
        return prior.full().rows, prior
    if isinstance(prior, QualityMatrix):
        return prior.rows, None
    rows = list(prior)
    if rows and len(rows[0]) >= 5:
        curves = LearningCurves(rows)
        return curves.full().rows, curves
    return rows, None


def run_once(
    matrix: QualityMatrix | LearningCurves,
    prior,
    scheduler: str,
    devices: int,
    seed: int,
    stop_when_solved: bool = True,
) -> Trace:
    """One event-driven replay of ``matrix`` with ``devices`` devices.

    ``matrix``: a plain matrix or learning curves; ``prior``: None, (tenant, candidate, quality,
    cost) rows, a QualityMatrix, or LearningCurves of other tenants. A scheduler that stops
    trials early (``multitenant-hb``) runs each trial through its rungs
    (``Scheduler.rungs``): at each rung below 1 the trial's score at that fidelity is read
    from the curve and the scheduler says whether it goes on; going on costs the difference
    of the curve's costs when the candidate resumes, the whole cost at the next fidelity
    when it does not. A stopped trial frees its device at once and is over for now.

    A stopped trial's model counts as the tenant's result at its rung score, as the queue
    counts it: the worker records it as a done trial with that score, the store's best and
    the promotion to the gate take the best score of the tenant's done trials, stopped or not
    (``Store.begin_promotion``). Its score counts at most the tenant's best at fidelity 1
    (the regret's reference, which a partial model may overshoot on validation rows), so a
    tenant's regret is never below 0.
    """
    curves = matrix if isinstance(matrix, LearningCurves) else curves_from_matrix(matrix)
    full = curves.full()
    prior_rows, prior_curves = _prior_parts(prior)
    rng = np.random.default_rng(seed)
    tenants = full.tenants
    order = [tenants[i] for i in rng.permutation(len(tenants))]
    # Candidates stay in matrix (catalogue) order within a tenant.
    pending = {t: list(full.quality[t]) for t in order}
    sched = make_scheduler(scheduler, prior=prior_rows, seed=seed, curves=prior_curves)
    best = {t: full.best(t) for t in order}
    # Nothing found yet counts as quality 0 (accuracy's floor); a score scale that goes
    # below 0 (R^2) starts at the tenant's worst score instead, so regret is never negative.
    found = {t: min(0.0, min(full.quality[t].values())) for t in order}
    regret = sum(best[t] - found[t] for t in order)
    times, regrets = [0.0], [regret]
    # (time, counter, tenant, candidate, rung index, ladder, seconds spent so far)
    events: list[tuple] = []
    counter = 0
    trials = 0
    log: list[tuple[str, str, float, float, bool]] = []
    parked: dict[str, list[str]] = {}  # trials stopped early, by tenant

    def step_cost(tenant, cand, ladder, k):
        cost = curves.at(tenant, cand, ladder[k])[1]
        if k > 0 and curves.resumes.get(cand, False):
            cost = max(cost - curves.at(tenant, cand, ladder[k - 1])[1], 0.0)
        return cost

    def found_result(now: float, tenant: str, q: float) -> None:
        nonlocal regret
        q = min(q, best[tenant])  # a partial model may beat the full-budget best on validation
        if q > found[tenant]:
            regret -= q - found[tenant]
            found[tenant] = q
        regret = max(regret, 0.0)  # rounding only
        times.append(now)
        regrets.append(regret)

    def launch(now: float) -> bool:
        nonlocal counter
        for t in [t for t, c in parked.items() if c and not pending[t]]:
            pending[t] = parked.pop(t)  # nothing else left for t: its stopped trials may run again
        live = {t: c for t, c in pending.items() if c}
        if not live:
            return False
        tenant, cand = sched.choose(live)
        pending[tenant].remove(cand)
        sched.start(tenant, cand)
        ladder = list(sched.rungs(tenant, cand, curves.fidelities(tenant, cand)))
        cost = step_cost(tenant, cand, ladder, 0)
        heapq.heappush(events, (now + cost, counter, tenant, cand, 0, ladder, cost))
        counter += 1
        return True

    for _ in range(devices):
        if not launch(0.0):
            break
    while events:
        now, _, tenant, cand, k, ladder, spent = heapq.heappop(events)
        if k < len(ladder) - 1:
            q_partial = curves.at(tenant, cand, ladder[k])[0]
            live = {t: c for t, c in pending.items() if c}
            if sched.should_stop(tenant, cand, ladder[k], q_partial, spent, live):
                sched.observe_partial(tenant, cand, ladder[k], q_partial, spent)
                log.append((tenant, cand, ladder[k], spent, True))
                found_result(now, tenant, q_partial)
                parked.setdefault(tenant, []).append(cand)
                launch(now)
            else:
                cost = step_cost(tenant, cand, ladder, k + 1)
                heapq.heappush(events, (now + cost, counter, tenant, cand, k + 1, ladder, spent + cost))
                counter += 1
            continue
        q = full.quality[tenant][cand]
        sched.observe(tenant, cand, q, spent)
        log.append((tenant, cand, ladder[k], spent, False))
        trials += 1
        found_result(now, tenant, q)
        if stop_when_solved and regret <= 1e-12:
            break
        launch(now)
    return Trace(scheduler, seed, len(tenants), np.array(times), np.array(regrets), trials, log)


def simulate(
    matrix: QualityMatrix | LearningCurves,
    prior: QualityMatrix | LearningCurves | Sequence | None,
    devices: int,
    seeds: int | Sequence[int],
    target: float,
    schedulers: Sequence[str] = SCHEDULERS,
) -> SimulationResult:
    """Replay ``matrix`` per scheduler and seed; see the module docstring."""
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("need at least one seed")
    out = {}
    for name in schedulers:
        res = SchedulerResult(name)
        for s in seed_list:
            res.traces.append(run_once(matrix, prior, name, devices, s))
        out[name] = res
    n = len(matrix.tenants)
    return SimulationResult(devices=devices, target=target, tenants=n, schedulers=out)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.command("simulate")
@click.option("--matrix", "matrix_path", required=True, type=click.Path(dir_okay=False),
              help="CSV with header tenant,candidate,quality,cost (cost in seconds), or learning curves: "
                   "tenant,candidate,fidelity,quality,cost[,resumes] (fidelity in (0, 1]).")
@click.option("--prior", "prior_path", type=click.Path(dir_okay=False), default=None,
              help="Either format, other tenants: the scheduler's prior. None: a generic prior.")
@click.option("--devices", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--target", type=click.FloatRange(min=0, min_open=True), default=0.02, show_default=True,
              help="Mean regret (global regret / tenants) to reach.")
@click.option("--scheduler", "schedulers", type=click.Choice(SCHEDULERS + EXTRA_SCHEDULERS), multiple=True,
              help="Only these schedulers (repeatable). Default: multitenant, round-robin, random, "
                   "and multitenant-hb when the matrix has learning curves.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a table.")
def simulate_command(matrix_path, prior_path, devices, seeds, target, schedulers, as_json):
    """Replay a quality-and-cost matrix through the schedulers and compare time to target regret."""
    try:
        matrix = load_any(matrix_path)
        prior = load_any(prior_path) if prior_path else None
    except MatrixError as exc:
        _fail(str(exc))
    if prior is not None:
        shared = sorted(set(prior.tenants) & set(matrix.tenants))
        if shared:
            _fail(
                f"{prior_path}: tenant {shared[0]!r} is also in {matrix_path}; the prior must come "
                f"from other tenants ({len(shared)} shared)"
            )
    if not schedulers:
        has_curves = any(f < 1 for _t, _c, f, *_ in matrix.rows)
        schedulers = SCHEDULERS + (EARLY_STOPPING_SCHEDULERS if has_curves else ())
    result = simulate(matrix, prior, devices, seeds, target, schedulers)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    base = result.schedulers.get("multitenant")
    base_t = base.time_to_target(target) if base else None
    click.echo(
        f"{result.tenants} tenants, {devices} device(s), {seeds} seed(s); "
        f"time until mean regret <= {target:g} (median over seeds, simulated seconds)"
    )
    width = max(len("scheduler"), *(len(n) for n in result.schedulers)) + 2
    click.echo(f"{'scheduler':<{width}}{'time_to_target':>16}{'vs multitenant':>16}")
    for name, r in result.schedulers.items():
        t = r.time_to_target(target)
        ratio = f"{t / base_t:.2f}x" if base_t and np.isfinite(t) and base_t > 0 else "-"
        click.echo(f"{name:<{width}}{t:>16.4g}{ratio:>16}")
