"""How many labels a sequential decision takes: the Wald-type oracle of the bench's model.

A test set labelled on demand holds as many rows as its largest cap (:attr:`SequentialPlan.rows`)
and gets labels only for the rows a decision reads. How many depends on the truth: at a zone
edge the e-process of the far side has to gather ``log(1/alpha)`` nats of evidence, and a
constant bet on a row gains at most ``KL_inf`` nats on average (the growth rate of the best
constant stake against the null edge), so a level-alpha sequential test reads on average about::

    labels ~ per_label * log(1/alpha) / KL_inf          (Wald; per_label: labels per row read)

``per_label`` is the disagreement rate d for a clause that vanishes where the models agree
(``n - o`` and every ``w (n - o) + w_d d``), 1 for a clause on ``n`` or ``o`` alone, 0 for a clause
on ``d`` alone. A truth in the middle of the zone usually reads to the cap (``cap_rows *
per_label`` labels).

The model (the one ``bench/labels_on_demand.py`` simulates): for a vanishing clause, the models
disagree on a fraction d of the rows, on each disagreement exactly one of them is right (no row
where both are wrong and differ: such rows only add noise), and the mean of Z is mu; for ``n`` or
``o`` alone, Z is ``w`` times a Bernoulli. These are *expected* labels, an oracle's average
(``bench/labels_on_demand.py`` compares it with the measured medians: within a few percent at the
edges), not a promise; the error bound never depends on them. Other clauses (e.g. ``n + o``)
have no model here (None).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .ast import Formula
from .compiler import compile_clause
from .parser import parse
from .planner import query_count
from .rounds import REQUEST_BATCH
from .sequential import SequentialClause, SequentialPlan, sequential_plan

ASSUMED_DISAGREEMENT = 0.1  # d for a vanishing clause when the formula bounds no d
CLEAR_TOLERANCES = 3  # "clear": this many tolerances beyond the zone's edge (or the feasible end)


def clause_law(clause: SequentialClause, mu: float, disagree: float | None
               ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(values of Z, their probabilities, labels per row read)`` at E[Z] = mu, or None where
    the model has no law (an infeasible mu, a clause outside the model)."""
    c = clause.fixed.compiled
    if clause.labels_only_where_models_differ:
        d = ASSUMED_DISAGREEMENT if disagree is None else disagree
        plus, minus = float(c.value(1, 0, 1)), float(c.value(0, 1, 1))  # w + w_d, -w + w_d
        if plus == minus or d <= 0:
            return None
        p_plus = (mu - minus * d) / (plus - minus)  # p_plus + p_minus = d
        p_minus = d - p_plus
        if p_plus < -1e-12 or p_minus < -1e-12:
            return None
        probs = np.clip(np.array([p_plus, p_minus, 1 - d]), 0, 1)
        return np.array([plus, minus, 0.0]), probs, d
    variable = c.bernoulli_variable
    if variable in ("n", "o"):
        w = c.weights["nod".index(variable)]
        p = mu / w
        if not -1e-12 <= p <= 1 + 1e-12:
            return None
        p = min(max(p, 0.0), 1.0)
        return np.array([w, 0.0]), np.array([p, 1 - p]), 1.0
    return None


def feasible_means(clause: SequentialClause, disagree: float | None) -> tuple[float, float] | None:
    """The range of E[Z] the model allows."""
    c = clause.fixed.compiled
    if clause.labels_only_where_models_differ:
        d = ASSUMED_DISAGREEMENT if disagree is None else disagree
        plus, minus = float(c.value(1, 0, 1)), float(c.value(0, 1, 1))
        return min(plus, minus) * d, max(plus, minus) * d
    if c.bernoulli_variable in ("n", "o"):
        return c.low, c.high
    return None


def growth_rate(values: np.ndarray, probs: np.ndarray, edge: float, side: str, low: float,
                high: float) -> float:
    """``max_lam E log(1 + lam Y)`` over the constant stakes a null on ``[low, high]`` allows,
    ``0 <= lam < 1 / room`` (``Y = Z - edge``, room ``edge - low``, on the pass side;
    ``Y = edge - Z``, room ``high - edge``, on the fail side): KL_inf of the law from the edge's
    null, the growth rate of the best constant bet."""
    y = values - edge if side == "pass" else edge - values
    y, probs = y[probs > 0], probs[probs > 0]
    room = edge - low if side == "pass" else high - edge
    if room <= 0:
        return math.inf

    from scipy.optimize import minimize_scalar  # scipy loads only when a cost is computed

    def minus_growth(lam):
        return -float(np.sum(probs * np.log1p(lam * y)))

    res = minimize_scalar(minus_growth, bounds=(0.0, (1 - 1e-9) / room), method="bounded")
    return max(-res.fun, 0.0)


def expected_labels(clause: SequentialClause, mu: float, disagree: float | None = None
                    ) -> float | None:
    """The oracle's labels at truth mu (E[Z] = mu): None in the zone's open interior (it reads to
    the cap, see :func:`cap_labels`) or where the model has no law."""
    if clause.needs_no_labels:
        return 0.0
    a, b = clause.edges
    if a < mu < b:
        return None
    law = clause_law(clause, mu, disagree)
    if law is None:
        return None
    values, probs, per_label = law
    side = "pass" if mu >= b else "fail"
    c = clause.fixed.compiled
    g = growth_rate(values, probs, b if side == "fail" else a, side, c.low, c.high)
    if g <= 0:
        return None
    return float(per_label * math.log(1 / clause.alpha) / g)


def cap_labels(clause: SequentialClause, disagree: float | None = None) -> float:
    """Labels a decision that reads the whole cap takes (in expectation)."""
    if clause.needs_no_labels:
        return 0.0
    if clause.labels_only_where_models_differ:
        d = ASSUMED_DISAGREEMENT if disagree is None else disagree
        return clause.cap_rows * d
    return float(clause.cap_rows)


@dataclass(frozen=True)
class ClauseCost:
    """One clause's labels per decision at the zone's edges, when clear, and at the cap."""

    text: str
    cap_rows: int
    disagreement: float | None  # the d assumed (vanishing clauses), None otherwise
    at_fail_edge: float | None  # truth at a: must fail (fp-free) / may pass (fn-free)
    at_pass_edge: float | None  # truth at b
    clear_fail: float | None  # CLEAR_TOLERANCES tolerances below a (or the feasible end)
    clear_pass: float | None
    whole_cap: float  # a truth mid-zone reads about this many

    def to_dict(self) -> dict:
        def r(x):
            return None if x is None else round(float(x), 1)
        return {"text": self.text, "cap_rows": self.cap_rows, "disagreement": self.disagreement,
                "labels_at_fail_edge": r(self.at_fail_edge),
                "labels_at_pass_edge": r(self.at_pass_edge),
                "labels_clear_fail": r(self.clear_fail), "labels_clear_pass": r(self.clear_pass),
                "labels_whole_cap": r(self.whole_cap)}


def certified_disagreement(formula: Formula | str) -> float | None:
    """The largest d a passing formula allows (a clause ``d < t``: t), else None."""
    if isinstance(formula, str):
        formula = parse(formula)
    for clause in formula.clauses:
        cl = compile_clause(clause)
        if cl.weights[0] == cl.weights[1] == 0 and cl.weights[2] < 0:  # -w d > -w t: d < t
            return cl.threshold / cl.weights[2]
    return None


def clause_costs(sp: SequentialPlan, disagree: float | None = None) -> tuple[ClauseCost, ...]:
    """Every clause's expected labels per decision; ``disagree`` defaults to the formula's own
    bound on d (:func:`certified_disagreement`), else :data:`ASSUMED_DISAGREEMENT`."""
    if disagree is None:
        disagree = certified_disagreement(sp.fixed.formula)
    if disagree is None:
        disagree = ASSUMED_DISAGREEMENT
    out = []
    for c in sp.clauses:
        a, b = c.edges
        eps = (b - a) / 2
        span = feasible_means(c, disagree)
        lo, hi = span if span is not None else (c.fixed.compiled.low, c.fixed.compiled.high)
        out.append(ClauseCost(
            c.text, c.cap_rows if not c.needs_no_labels else c.fixed.test_examples,
            disagree if c.labels_only_where_models_differ else None,
            expected_labels(c, a, disagree), expected_labels(c, b, disagree),
            expected_labels(c, max(a - CLEAR_TOLERANCES * eps, lo), disagree) if lo <= a else None,
            expected_labels(c, min(b + CLEAR_TOLERANCES * eps, hi), disagree) if hi >= b else None,
            cap_labels(c, disagree)))
    return tuple(out)


#: The adaptivities a test set labelled on demand is planned under (passes: the configured B or 2)
ON_DEMAND_MODES = (("none", None), ("firstChange", None), ("full", "passes"), ("full", None))


@dataclass(frozen=True)
class OnDemandRow:
    """One adaptivity's plan for a test set labelled on demand."""

    adaptivity: str
    passes: int | None
    queries: int
    delta_per_clause: float
    rows: int  # rows (features and ids) the test set must hold: the largest cap
    clauses: tuple[ClauseCost, ...]

    @property
    def label(self) -> str:
        return self.adaptivity + (f", passes {self.passes}" if self.passes else "")

    def to_dict(self) -> dict:
        return {"adaptivity": self.adaptivity, "passes": self.passes, "queries": self.queries,
                "delta_per_clause": self.delta_per_clause, "test_set_rows": self.rows,
                "clauses": [c.to_dict() for c in self.clauses]}


def on_demand_rows(formula, reliability: float, mode: str, steps: int, passes: int | None = None,
                   disagree: float | None = None) -> tuple[OnDemandRow, ...]:
    """The plan of a test set labelled on demand under each of :data:`ON_DEMAND_MODES` (``full``
    with ``passes``: the given B, else 2; left out where B would not be below ``steps``)."""
    out = []
    for adaptivity, bound in ON_DEMAND_MODES:
        b = (passes or 2) if bound == "passes" else None
        if b is not None and b >= steps:
            continue
        # firstChange has none's query count (H), so the same plan; the planner is the cost here
        sp = _sequential_plan(str(formula), reliability, mode,
                              "none" if adaptivity == "firstChange" else adaptivity, steps, b)
        out.append(OnDemandRow(adaptivity, b, query_count(adaptivity, steps, b),
                               sp.clauses[0].delta, sp.rows, clause_costs(sp, disagree)))
    return tuple(out)


#: The requests of a check under ``none`` (:func:`conditions.sequential.label_request`'s
#: defaults: ``max(64, 0.5 * labels so far)`` rows per round trip)
NONE_FIRST_BATCH, NONE_GROWTH = 64, 0.5


def request_totals(limit: int, batch: int, growth: float = 0.0) -> np.ndarray:
    """The labels an owner has given after each request, 1, 2, ... (``batch`` rows, or
    ``growth`` times the labels so far if more), up to the first total >= ``limit``."""
    totals, total = [], 0
    while not totals or total < limit:
        total += max(batch, math.ceil(growth * total))
        totals.append(total)
    return np.array(totals, dtype=np.int64)


def owner_labels(labels_read, labels_in_cap, *, batch: int = REQUEST_BATCH, growth: float = 0.0,
                 first_always: bool = True) -> np.ndarray:
    """The labels an owner gives who labels every request until the pair is decided, for a
    decision that reads ``labels_read`` labels (with every label known) among the
    ``labels_in_cap`` rows of its cap that need one (one clause; arrays allowed).

    The k-th request asks for the next rows the clause needs after the labelled prefix, so after
    k requests the prefix holds the first ``T_k`` (:func:`request_totals`) of them, and the
    decision on it is made iff ``labels_read <= T_k`` (the crossing lies inside the prefix, or the
    cap is labelled). The owner stops at the first such k, and never labels past the cap:
    ``min(T_k, labels_in_cap)``. ``first_always``: the first request goes out before anything is
    decided (a check in rounds), so even a decision that reads no label costs one batch; under
    ``none`` a check decided with no label asks for none. Rounds: ``batch`` =
    :data:`conditions.rounds.REQUEST_BATCH`, no growth; ``none``: :data:`NONE_FIRST_BATCH`,
    :data:`NONE_GROWTH`."""
    read = np.asarray(labels_read, dtype=np.int64)
    in_cap = np.asarray(labels_in_cap, dtype=np.int64)
    totals = request_totals(int(max(in_cap.max(initial=0), read.max(initial=0), 1)), batch, growth)
    given = totals[np.searchsorted(totals, np.maximum(read, 1))]
    if not first_always:
        given = np.where(read == 0, 0, given)
    return np.minimum(given, in_cap)


def owner_labels_under(adaptivity: str, labels_read, labels_in_cap) -> np.ndarray:
    """:func:`owner_labels` with the requests the gate sends under ``adaptivity``: under none
    the check's growing requests (:data:`NONE_FIRST_BATCH`, then :data:`NONE_GROWTH` times the
    labels so far), in rounds batches of :data:`conditions.rounds.REQUEST_BATCH` (the check's
    first, then ``round requests``)."""
    if adaptivity == "none":
        return owner_labels(labels_read, labels_in_cap, batch=NONE_FIRST_BATCH,
                            growth=NONE_GROWTH, first_always=False)
    return owner_labels(labels_read, labels_in_cap, batch=REQUEST_BATCH)


@lru_cache(maxsize=32)
def _sequential_plan(formula: str, reliability: float, mode: str, adaptivity: str, steps: int,
                     passes: int | None) -> SequentialPlan:
    return sequential_plan(formula, reliability, mode, adaptivity, steps, passes)


__all__ = ["NONE_FIRST_BATCH", "NONE_GROWTH", "owner_labels", "owner_labels_under", "request_totals", "ASSUMED_DISAGREEMENT", "ON_DEMAND_MODES", "OnDemandRow", "on_demand_rows", "CLEAR_TOLERANCES", "ClauseCost", "cap_labels",
           "certified_disagreement", "clause_costs", "clause_law", "expected_labels",
           "feasible_means", "growth_rate"]
