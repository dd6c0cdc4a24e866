"""Which clauses a test can decide at all: indifference zones inside the statistic's range.

A clause ``E cmp t +/- eps`` is decided on the indifference zone (a, b) of width 2 eps
(:meth:`CompiledClause.edges`): the test must not pass when E[Z] <= a and must not fail when
E[Z] >= b. Z's range over the outcomes that can occur is [low, high] (:mod:`conditions.compiler`).

* If a < low, no distribution has E[Z] <= a: the clause can never be false, and "always pass"
  meets the contract on zero examples. If b > high, no distribution has E[Z] >= b: "always fail"
  does. Either way the gate would decide without looking at the test set (``n > 1.2 +/- 0.03``,
  ``n < 90 +/- 3``, ``n > 0.9 +/- 0.5``), so such a clause is a configuration error, not a plan
  of 0 examples. The zone may touch the range (a = low, b = high): then one edge is a point mass.
* A formula passes when every clause does. If no outcome distribution has E[Z_j] >= b_j for all
  clauses j at once, no model is ever owed a pass, and "always fail" again meets the contract
  blindly (``n - o > 0.1 +/- 0.05 /\\ d < 0.1 +/- 0.02``: a pass is owed only where
  n - o >= 0.2, hence d >= 0.2, and d <= 0.06). Whether the pass regions meet is a linear feasibility problem over
  the five outcome probabilities; it is decided exactly by enumerating the vertices of the
  polytope {p in simplex : sum_o p_o z_j(o) >= b_j} (at most C(5 + J, 4) small solves).
"""
from __future__ import annotations

import itertools

import numpy as np

from .ast import Formula, format_number
from .compiler import FEASIBLE_OUTCOMES, CompiledClause, compile_clause
from .errors import ConditionError, PlanError

_SLACK = 1e-12  # thresholds written in decimal (0.98 + 2 * 0.01) may overshoot the range by an ulp


class ImpossibleCondition(ConditionError, PlanError):
    """A clause or formula whose verdict would not depend on the test set (see module docstring).

    Both a :class:`ConditionError` (the text is wrong) and a :class:`PlanError` (it cannot be
    planned), so callers that map either keep working.
    """


def user_zone(compiled: CompiledClause, mode: str) -> tuple[float, float]:
    """The indifference zone on the scale the user wrote (ascending)."""
    a, b = compiled.edges(mode)
    lo, hi = sorted((compiled.sign * a, compiled.sign * b))
    return lo, hi


def user_range(compiled: CompiledClause) -> tuple[float, float]:
    return (compiled.low, compiled.high) if compiled.sign > 0 else (-compiled.high, -compiled.low)


def _allowed(compiled: CompiledClause, mode: str) -> str:
    """What thresholds (or tolerances) would give a zone inside the range."""
    low, high = user_range(compiled)
    two_eps = 2 * compiled.tolerance
    if high - low < two_eps:
        return (f"the tolerance must be at most {format_number((high - low) / 2)} "
                f"(half the range's width)")
    zone_above = (compiled.sign > 0) == (mode == "fp-free")  # zone is (t, t + 2 eps)
    t_lo, t_hi = (low, high - two_eps) if zone_above else (low + two_eps, high)
    return (f"with tolerance {format_number(compiled.tolerance)} under {mode} the threshold "
            f"must lie in [{format_number(round(t_lo, 12))}, {format_number(round(t_hi, 12))}]")


def check_clause(compiled: CompiledClause, mode: str, text: str = "", position: int | None = None) -> None:
    """Raise :class:`ImpossibleCondition` when the clause's zone leaves the statistic's range."""
    a, b = compiled.edges(mode)
    if a >= compiled.low - _SLACK and b <= compiled.high + _SLACK:
        return
    clause = compiled.clause
    low, high = user_range(compiled)
    z_lo, z_hi = user_zone(compiled, mode)
    no_false = a < compiled.low - _SLACK  # nothing has E[Z] <= a
    no_true = b > compiled.high + _SLACK  # nothing has E[Z] >= b
    if no_false and no_true:
        what = "no possible value lies on either side of it"
    elif no_false:
        what = "no possible value lies on its false side, so it would pass without looking"
    else:
        what = "no possible value lies on its true side, so it would fail without looking"
    raise ImpossibleCondition(
        f"clause '{clause}' cannot be decided from a test set: under {mode} its indifference zone "
        f"({format_number(round(z_lo, 12))}, {format_number(round(z_hi, 12))}) is not inside the range of "
        f"{clause.expression_text()}, [{format_number(low)}, {format_number(high)}] ({what}); "
        f"{_allowed(compiled, mode)}", text or None, position)


def pass_region_is_empty(compiled: list[CompiledClause], mode: str) -> bool:
    """True when no outcome distribution has E[Z_j] >= b_j for every clause j (exact)."""
    values = np.array([[c.value(*o) for o in FEASIBLE_OUTCOMES] for c in compiled], dtype=float)
    need = np.array([c.edges(mode)[1] for c in compiled], dtype=float)
    k = len(FEASIBLE_OUTCOMES)
    rows = np.vstack([values, np.eye(k)])  # rows @ p >= rhs
    rhs = np.concatenate([need, np.zeros(k)])
    for active in itertools.combinations(range(len(rows)), k - 1):
        system = np.vstack([rows[list(active)], np.ones(k)])
        if abs(np.linalg.det(system)) < 1e-12:
            continue
        p = np.linalg.solve(system, np.concatenate([rhs[list(active)], [1.0]]))
        if np.all(rows @ p >= rhs - 1e-9):
            return False
    return True


def owed_pass_text(formula: Formula, mode: str) -> str:
    """Where every clause of the formula owes a pass, in the user's words (``n - o >= 0.2 and ...``)."""
    parts = []
    for clause in formula.clauses:
        c = compile_clause(clause)
        edge = format_number(round(c.sign * c.edges(mode)[1], 6))
        parts.append(f"{clause.expression_text()} {'<=' if c.sign < 0 else '>='} {edge}")
    return " and ".join(parts)


def check_formula(formula: Formula, mode: str) -> None:
    """Every clause's zone inside its range, and some distribution owed a pass by every clause."""
    compiled = [compile_clause(c) for c in formula.clauses]
    for c in compiled:
        check_clause(c, mode, formula.source, c.clause.span[0] if formula.source else None)
    if len(compiled) > 1 and pass_region_is_empty(compiled, mode):
        raise ImpossibleCondition(
            f"condition '{formula}' cannot be passed by any model under {mode}: a pass is owed only "
            f"where {owed_pass_text(formula, mode)}, and no model has all of these at once; narrow "
            "the tolerances or loosen the thresholds")
