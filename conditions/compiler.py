"""Compile a clause into a per-example statistic with its exact range and variance bound.

Per test example the gate observes ``n_i`` (new model right), ``o_i`` (old model right) and
``d_i`` (predictions differ). Not every triple is possible for a single-label classifier: two
right predictions are equal (``d = 0``), and exactly one right prediction means they differ
(``d = 1``). The feasible outcomes are::

    (n, o, d) in {(1, 1, 0), (1, 0, 1), (0, 1, 1), (0, 0, 0), (0, 0, 1)}

A clause ``sum_v c_v v  cmp  t +/- eps`` compiles into ``Z_i = s * sum_v c_v v_i`` with the sign
``s = +1`` for ``>``/``>=`` and ``s = -1`` for ``<``/``<=``, so that every compiled clause asks for
a *large* mean: ``E[Z] > s t``. Its range is the min and max of Z over the feasible outcomes, not
the sum of the coefficients' ranges (``n - o`` lies in [-1, 1], and is 0 wherever ``d_i = 0``).

Variance facts used by the planner:

* Bhatia-Davis: any variable in [m, M] with mean mu has ``Var <= (M - mu)(mu - m)``.
* If Z vanishes wherever ``d_i = 0`` (e.g. ``n - o``), ``E[Z^2] <= max_{d=1} Z^2 * P(d = 1)``,
  so ``Var(Z) <= max Z^2 * d - mu^2``: a bound on ``d`` bounds the variance.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ast import VARIABLES, Clause

FEASIBLE_OUTCOMES: tuple[tuple[int, int, int], ...] = (
    (1, 1, 0), (1, 0, 1), (0, 1, 1), (0, 0, 0), (0, 0, 1),
)


@dataclass(frozen=True)
class CompiledClause:
    """A clause as the statistics see it: decide whether ``E[Z] > threshold``.

    ``threshold`` and ``tolerance`` are on the scale of Z (sign-normalised, see module doc).
    """

    clause: Clause
    sign: int
    weights: tuple[float, float, float]  # s * c_n, s * c_o, s * c_d
    threshold: float
    tolerance: float
    low: float  # min of Z over feasible outcomes
    high: float  # max of Z over feasible outcomes
    vanishes_without_disagreement: bool
    max_square_when_differ: float  # max Z^2 over outcomes with d = 1

    @property
    def variables(self) -> frozenset[str]:
        return self.clause.variables

    @property
    def bernoulli_variable(self) -> str | None:
        """The variable v when Z = w * v for a single Bernoulli v (exact binomial tests apply)."""
        used = [v for v, w in zip(VARIABLES, self.weights) if w != 0]
        return used[0] if len(used) == 1 else None

    def value(self, n, o, d):
        """Z for arrays (or scalars) of per-example outcomes; unused variables may be None."""
        total = 0.0
        for w, arr in zip(self.weights, (n, o, d)):
            if w != 0:
                total = total + w * arr
        return total

    def edges(self, mode: str) -> tuple[float, float]:
        """The indifference zone (a, b) on Z's scale for a mode.

        The test must not pass when E[Z] <= a and must not fail when E[Z] >= b = a + 2 eps.
        fp-free puts the zone just above the threshold, fn-free just below (docs/design.md §2).
        """
        two_eps = 2.0 * self.tolerance
        if mode == "fp-free":
            return self.threshold, self.threshold + two_eps
        return self.threshold - two_eps, self.threshold


def compile_clause(clause: Clause) -> CompiledClause:
    sign = -1 if clause.is_upper_bound else 1
    weights = tuple(sign * clause.coefficient(v) for v in VARIABLES)
    values = [sum(w * x for w, x in zip(weights, outcome)) for outcome in FEASIBLE_OUTCOMES]
    vanishes = all(val == 0 for val, (_, _, d) in zip(values, FEASIBLE_OUTCOMES) if d == 0)
    max_sq = max(val * val for val, (_, _, d) in zip(values, FEASIBLE_OUTCOMES) if d == 1)
    return CompiledClause(
        clause=clause,
        sign=sign,
        weights=weights,  # type: ignore[arg-type]
        threshold=sign * clause.threshold,
        tolerance=clause.tolerance,
        low=min(values),
        high=max(values),
        vanishes_without_disagreement=vanishes,
        max_square_when_differ=max_sq,
    )


def disagreement_bound(clause: Clause, mode: str) -> float | None:
    """The bound on d that a passing clause of the form ``d < t +/- eps`` certifies.

    Under fp-free a pass means ``d < t`` unless the clause's own test erred; under fn-free it
    means ``d < t + 2 eps``. The planner uses it as a variance bound for clauses that vanish where
    the models agree (``n - o``); the argument is made at the level of the formula, see
    :mod:`conditions.planner`.
    """
    if clause.variables != frozenset({"d"}) or not clause.is_upper_bound or clause.coefficient("d") <= 0:
        return None
    bound = clause.threshold / clause.coefficient("d")
    eps = clause.tolerance / clause.coefficient("d")
    return bound if mode == "fp-free" else bound + 2 * eps
