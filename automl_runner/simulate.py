"""Replay a quality-and-cost matrix through the schedulers (the ease.ml experiment).

``simulate(matrix, prior, devices, seeds, target, schedulers)`` runs an event-driven
simulation per scheduler and seed: M devices; when one frees up (a trial that started at
s with cost c frees it at s + c) the scheduler picks the next (tenant, candidate), and the
result it would have produced is read from the matrix. After each finished trial it
records the global regret

    regret(t) = sum over tenants of (best quality in the matrix - best found by time t)

with "best found" = 0 before a tenant's first result (its worst score instead, when that is
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

from .matrices import MatrixError, QualityMatrix, as_rows, load_matrix
from .scheduler import EXTRA_SCHEDULERS, SCHEDULERS, make_scheduler


@dataclass
class Trace:
    """One run: global regret after each finished trial (a right-continuous step function)."""

    scheduler: str
    seed: int
    tenants: int
    times: np.ndarray  # times[0] = 0
    regret: np.ndarray  # regret[i] holds on [times[i], times[i+1])
    trials: int = 0

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


def run_once(
    matrix: QualityMatrix,
    prior_rows,
    scheduler: str,
    devices: int,
    seed: int,
    stop_when_solved: bool = True,
) -> Trace:
    """One event-driven replay of ``matrix`` with ``devices`` devices."""
    rng = np.random.default_rng(seed)
    tenants = matrix.tenants
    order = [tenants[i] for i in rng.permutation(len(tenants))]
    # Candidates stay in matrix (catalogue) order within a tenant.
    pending = {t: list(matrix.quality[t]) for t in order}
    sched = make_scheduler(scheduler, prior=prior_rows, seed=seed)
    best = {t: matrix.best(t) for t in order}
    # Nothing found yet counts as quality 0 (accuracy's floor); a score scale that goes
    # below 0 (R^2) starts at the tenant's worst score instead, so regret is never negative.
    found = {t: min(0.0, min(matrix.quality[t].values())) for t in order}
    regret = sum(best[t] - found[t] for t in order)
    times, regrets = [0.0], [regret]
    events: list[tuple[float, int, str, str]] = []
    counter = 0
    trials = 0

    def launch(now: float) -> bool:
        nonlocal counter
        live = {t: c for t, c in pending.items() if c}
        if not live:
            return False
        tenant, cand = sched.choose(live)
        pending[tenant].remove(cand)
        sched.start(tenant, cand)
        heapq.heappush(events, (now + matrix.cost[tenant][cand], counter, tenant, cand))
        counter += 1
        return True

    for _ in range(devices):
        if not launch(0.0):
            break
    while events:
        now, _, tenant, cand = heapq.heappop(events)
        q = matrix.quality[tenant][cand]
        sched.observe(tenant, cand, q, matrix.cost[tenant][cand])
        trials += 1
        if q > found[tenant]:
            regret -= q - found[tenant]
            found[tenant] = q
        regret = max(regret, 0.0)  # rounding only
        times.append(now)
        regrets.append(regret)
        if stop_when_solved and regret <= 1e-12:
            break
        launch(now)
    return Trace(scheduler, seed, len(tenants), np.array(times), np.array(regrets), trials)


def simulate(
    matrix: QualityMatrix,
    prior: QualityMatrix | Sequence | None,
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
    prior_rows = as_rows(prior)
    out = {}
    for name in schedulers:
        res = SchedulerResult(name)
        for s in seed_list:
            res.traces.append(run_once(matrix, prior_rows, name, devices, s))
        out[name] = res
    return SimulationResult(devices=devices, target=target, tenants=len(matrix.tenants), schedulers=out)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.command("simulate")
@click.option("--matrix", "matrix_path", required=True, type=click.Path(dir_okay=False),
              help="CSV with header tenant,candidate,quality,cost (cost in seconds).")
@click.option("--prior", "prior_path", type=click.Path(dir_okay=False), default=None,
              help="Same format, other tenants: the scheduler's prior. None: a generic prior.")
@click.option("--devices", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--target", type=click.FloatRange(min=0, min_open=True), default=0.02, show_default=True,
              help="Mean regret (global regret / tenants) to reach.")
@click.option("--scheduler", "schedulers", type=click.Choice(SCHEDULERS + EXTRA_SCHEDULERS), multiple=True,
              help="Only these schedulers (repeatable). Default: multitenant, round-robin, random.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a table.")
def simulate_command(matrix_path, prior_path, devices, seeds, target, schedulers, as_json):
    """Replay a quality-and-cost matrix through the schedulers and compare time to target regret."""
    try:
        matrix = load_matrix(matrix_path)
        prior = load_matrix(prior_path) if prior_path else None
    except MatrixError as exc:
        _fail(str(exc))
    if prior is not None:
        shared = sorted(set(prior.tenants) & set(matrix.tenants))
        if shared:
            _fail(
                f"{prior_path}: tenant {shared[0]!r} is also in {matrix_path}; the prior must come "
                f"from other tenants ({len(shared)} shared)"
            )
    result = simulate(matrix, prior, devices, seeds, target, schedulers or SCHEDULERS)
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
