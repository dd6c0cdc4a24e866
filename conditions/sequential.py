"""Anytime-valid sequential decisions: label rows one at a time and stop once a clause is decided.

A fixed-size test must be ready for the hardest case (a truth in the middle of the indifference
zone) and so labels as many rows as that case needs, whatever the truth. A sequential test reads
the rows in a fixed random order and stops as soon as the rows seen settle the question, so a
clear answer costs a few dozen labels and a truth at an edge of the zone a fraction of the fixed
size. This module is that test; the planner's fixed-size test (:mod:`conditions.planner`) is its
cap. See ``docs/statistics.md`` §6 for the same derivation with the figures.

The question
------------
A clause compiles (:mod:`conditions.compiler`) to a per-row statistic ``Z_i`` in ``[low, high]``
with mean mu, and its mode gives the zone edges ``(a, b)``, ``b = a + 2 eps``
(:meth:`CompiledClause.edges`). The contract for one query with error budget delta'::

    P(pass | mu <= a) <= delta'        P(fail | mu >= b) <= delta'

fp-free and fn-free, ``>`` and ``<``, differ only in ``(a, b)`` and in the sign folded into Z.

The rows
--------
The test set's rows are i.i.d. draws; they are read in an order fixed at registration (a seed:
:func:`row_order`), which is independent of the labels and of the models, so the rows in that order
are still i.i.d. Where a clause's statistic vanishes wherever the two models agree (``n - o``, and
every linear form ``w (n - o) + w_d d``), a row with ``d_i = 0`` has the known value ``Z_i = 0``
and needs no label; only the disagreeing rows are labelled. For one-variable clauses on ``n`` or
``o`` (Bernoulli statistics) and any other clause every row read needs a label; a clause on ``d``
alone needs none and is decided by its fixed-size test.

Two e-processes, one per edge (betting, Waudby-Smith & Ramdas 2023)
-------------------------------------------------------------------
*Pass side* (refute ``mu <= a``): with ``Y_i = Z_i - a``, wealth
``K_t = prod_{i<=t} (1 + lam_i Y_i)`` where the stake ``lam_i`` is a function of ``Z_1..Z_{i-1}``
only and lies in ``[0, c / (a - low)]``, ``c < 1``. Each factor is at least ``1 - c > 0``, and
``E[1 + lam_i Y_i | Z_1..Z_{i-1}] = 1 + lam_i (mu - a) <= 1`` whenever ``mu <= a`` (Z_i is
independent of the past). So K is a nonnegative supermartingale with ``K_0 = 1`` under every
mu <= a, and Ville's inequality gives ``P(exists t: K_t >= 1/alpha) <= alpha``.

*Fail side* (refute ``mu >= b``): the mirror image, ``Y_i = b - Z_i``, stakes in
``[0, c / (high - b)]``.

The stake must not depend on the current row's ``d_i``: given ``d_i = 1`` the row's mean is
``mu / d``, not mu, and betting only on disagreeing rows would void the supermartingale. Whether
the current row needs a label may depend on ``d_i``; the stake may not (here it depends on past
rows only).

Stakes (any predictable choice keeps the guarantee; this one keeps the labels low). Z takes
finitely many values (the clause's values over the feasible outcomes). From the past rows'
empirical law of Y, with ``PRIOR_ROWS`` pseudo-rows at Y's extremes whose mean is 0 (the null's
edge, with the largest variance there, so early stakes stay modest), take the exponential tilt of
that law whose mean is ``max(its mean, 2 eps)`` and stake the growth-optimal constant amount
against it (GRAPA: ``argmax_lam E_q log(1 + lam Y)``, a few Newton steps from aGRAPA's
``E_q[Y] / E_q[Y^2]``), clipped to ``[0, c / (a - low)]``. Without the tilt this is GRAPA's
plug-in; the tilt makes the hardest case (a truth at the far edge of the zone) bet as if it knew
the truth, instead of paying for learning a stake from a mean that is barely above the null. A
clear truth is bet on harder because its empirical mean already exceeds ``2 eps``. The stakes are
recomputed at every row for the first 64 rows and then every ~1/64 of the rows seen, and held in
between (still predictable).

The decision and its error
--------------------------
With ``alpha = share * delta'`` and a cap of N rows, the fixed-size plan of the same clause at
``delta_c = (1 - share) * delta'`` (the planner's own test, on the first N rows in the order)::

    read rows t = 1, 2, ...:
        pass-side wealth >= 1/alpha  -> pass;  fail-side wealth >= 1/alpha -> fail
    no decision after N rows          -> the fixed-size test on those N rows decides

A pass under ``mu <= a`` needs the pass-side wealth to cross (probability <= alpha by Ville,
whatever the stopping rule did) or the fixed-size test on the first N rows to pass (<= delta_c by
the planner's guarantee: that event does not depend on the sequential part). So
``P(pass | mu <= a) <= alpha + delta_c = delta'``; the fail side is the mirror image. Both edges of
the zone hold, and delta' itself comes from the planner exactly as for fixed-size tests:
``delta' = (1 - reliability) / (clauses * queries)``, queries from adaptivity and steps. The
sequential decision is a drop-in for the fixed-size one, clause by clause, query by query.

The cap costs rows, not labels in the typical case: the fixed-size test at ``delta'/2`` needs
about ``log(2/delta') / log(1/delta')`` times the rows of the one at delta' (5 % at 0.9999,
32 steps), and the sequential part pays ``log 2`` nats of evidence more than a test at delta'
(4 % at the same setting). A truth in the middle of the zone usually runs to the cap.

A clause ``d < t`` certifies ``d <= p`` for ``n - o``'s fixed-size cap (Bennett with a variance
bound) exactly as in the planner: the argument is at the level of the formula and unchanged. The
sequential part does not use it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ast import Formula
from .compiler import FEASIBLE_OUTCOMES
from .parser import parse
from .planner import ClausePlan, Outcomes, Plan, plan

SHARE = 0.5  # of delta' for the sequential part; the rest goes to the fixed-size cap
STAKE_CAP = 0.8  # c: a stake never risks more than this fraction of the wealth
PRIOR_ROWS = 20  # pseudo-rows shrinking the stake's estimates while few rows are in
_CHUNK = 2_000_000  # cells per block when simulating many test sets at once
_NEWTON_STEPS = 3


def row_order(rows: int, seed: int) -> np.ndarray:
    """The order in which a test set's rows are read: a permutation fixed by the seed.

    Fixed at registration, so it depends neither on labels nor on models.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    return np.random.Generator(np.random.PCG64(seed)).permutation(rows)


@dataclass(frozen=True)
class Bettor:
    """The two e-processes for ``E[Z] <= a`` against ``E[Z] >= b``; Z takes the values ``support``
    (the clause's values over the feasible outcomes), all in ``[low, high]``."""

    low: float
    high: float
    a: float
    b: float
    support: tuple[float, ...]
    stake_cap: float = STAKE_CAP
    prior_rows: int = PRIOR_ROWS

    def _stakes(self, y: np.ndarray, values: np.ndarray, room: float) -> np.ndarray:
        """Predictable stakes for betting on ``E[Y] > 0`` (see the module docstring).

        Recomputed at :func:`_update_times` only (every row early on, then every ~1/64 of the
        rows seen) and held in between: still a function of the past rows alone, at a fraction
        of the cost.
        """
        runs, rows = y.shape
        at = _update_times(rows)
        lo, hi = float(values.min()), float(values.max())
        prior = np.zeros(len(values))
        if hi > lo:  # pseudo-rows at the extremes with mean 0: the null's edge, largest variance
            prior[np.argmin(values)] += self.prior_rows * hi / (hi - lo)
            prior[np.argmax(values)] += self.prior_rows * -lo / (hi - lo)
        else:
            prior[0] = self.prior_rows
        # Laid out value-first, (values, runs, update times): sums over the few values are then
        # elementwise adds of large arrays, not reductions over a short last axis.
        weights = np.empty((len(values), runs, len(at)))
        before = np.maximum(at - 1, 0)
        for k, v in enumerate(values):
            seen = np.cumsum(np.abs(y - v) < 1e-9, axis=1)
            weights[k] = np.where(at > 0, seen[:, before], 0) + prior[k]
        weights /= weights.sum(axis=0)
        v = values[:, None, None]
        target = np.maximum((weights * v).sum(axis=0), self.b - self.a)
        # Tilt the empirical law (exponentially, theta >= 0) until its mean reaches the target:
        # the law closest to the data with a mean at least at the far edge of the zone.
        theta = np.zeros(target.shape)
        for _ in range(_NEWTON_STEPS):
            q = _tilted(weights, v, theta)
            mean = (q * v).sum(axis=0)
            var = (q * v * v).sum(axis=0) - mean * mean
            theta = np.clip(theta + (target - mean) / np.maximum(var, 1e-12), 0.0, 1e3)
        q = _tilted(weights, v, theta)
        # The growth-optimal constant stake against that law (GRAPA), from aGRAPA's start.
        cap = self.stake_cap / max(room, 1e-12)
        stake = np.clip((q * v).sum(axis=0) / np.maximum((q * v * v).sum(axis=0), 1e-12), 0.0, cap)
        for _ in range(_NEWTON_STEPS):
            grow = 1.0 + stake * v
            slope = (q * v / grow).sum(axis=0)
            curve = (q * v * v / grow**2).sum(axis=0)
            stake = np.clip(stake + slope / np.maximum(curve, 1e-12), 0.0, cap)
        return np.repeat(stake, np.diff(np.append(at, rows)), axis=1)

    def _log_wealth(self, y: np.ndarray, values: np.ndarray, room: float) -> np.ndarray:
        """Cumulative log-wealth of betting on ``E[Y] > 0`` with Y >= -room (rows along axis 1)."""
        if y.shape[1] == 0:
            return np.zeros(y.shape)
        return np.cumsum(np.log1p(self._stakes(y, values, room) * y), axis=1)

    def log_wealth(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(pass side, fail side)`` cumulative log-wealth for rows of Z (1-D or runs x rows)."""
        z = np.asarray(z, dtype=np.float64)
        flat = z.ndim == 1
        z2 = z[None, :] if flat else z
        support = np.asarray(self.support, dtype=np.float64)
        up = self._log_wealth(z2 - self.a, support - self.a, self.a - self.low)
        down = self._log_wealth(self.b - z2, self.b - support, self.high - self.b)
        return (up[0], down[0]) if flat else (up, down)


def _tilted(weights: np.ndarray, values: np.ndarray, theta: np.ndarray) -> np.ndarray:
    logit = theta * values
    q = weights * np.exp(logit - logit.max(axis=0))
    return q / q.sum(axis=0)


def _update_times(rows: int, dense: int = 32) -> np.ndarray:
    """Rows at which stakes are recomputed: each of the first ``dense``, then every ~1/dense."""
    out, t = [], 0
    while t < rows:
        out.append(t)
        t += 1 if t < dense else max(1, t // dense)
    return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class SequentialDecision:
    """What a sequential clause says about the rows read so far.

    ``status`` is "pass", "fail" or "awaiting labels"; ``rows`` and ``labels`` count the rows read
    and the labels among them; ``by`` is "sequential", "cap" or "fixed" (a d-only clause) for a
    decision, None while awaiting labels; ``next_row`` is, while awaiting, the position (in the
    reading order) of the first row whose label is needed.
    """

    status: str
    rows: int
    labels: int
    by: str | None
    next_row: int | None = None

    @property
    def decided(self) -> bool:
        return self.status in ("pass", "fail")


@dataclass(frozen=True)
class SequentialClause:
    """One clause decided sequentially, with the fixed-size plan at ``(1 - share) delta'`` as cap."""

    fixed: ClausePlan  # the planner's clause at delta' (for reference: what a fixed test needs)
    cap: ClausePlan  # the same clause planned at (1 - share) * delta'
    alpha: float  # share * delta': the sequential part's budget

    @property
    def text(self) -> str:
        return self.fixed.text

    @property
    def delta(self) -> float:
        return self.fixed.delta

    @property
    def cap_rows(self) -> int:
        return self.cap.test_examples

    @property
    def edges(self) -> tuple[float, float]:
        return self.fixed.compiled.edges(self.fixed.mode)

    @property
    def needs_no_labels(self) -> bool:
        return self.fixed.clause.variables <= {"d"}

    @property
    def labels_only_where_models_differ(self) -> bool:
        return self.fixed.compiled.vanishes_without_disagreement and not self.needs_no_labels

    @property
    def bettor(self) -> Bettor:
        c = self.fixed.compiled
        a, b = self.edges
        support = sorted({float(c.value(*o)) for o in FEASIBLE_OUTCOMES})
        return Bettor(c.low, c.high, a, b, tuple(support))

    def needs_label(self, d: np.ndarray) -> np.ndarray:
        """Which rows (given the models' disagreements d) need a label for this clause."""
        d = np.asarray(d)
        if self.needs_no_labels:
            return np.zeros(d.shape, dtype=bool)
        if self.labels_only_where_models_differ:
            return d != 0
        return np.ones(d.shape, dtype=bool)

    def _cap_statistic(self, z: np.ndarray) -> np.ndarray:
        return _test_scale(self.cap, z)

    def decide(self, z, labelled=None) -> SequentialDecision:
        """Decide from the clause's per-row statistic Z in reading order.

        ``z`` holds NaN where the value is not known yet (a row needing a label that has none);
        ``labelled`` (optional, bool) marks the rows that needed a label, for the count.
        Reads rows until a decision, the cap, or the first NaN ("awaiting labels").
        """
        z = np.asarray(z, dtype=np.float64)
        if self.needs_no_labels:
            return self._decide_fixed(z)
        cap = self.cap_rows
        unknown = np.flatnonzero(np.isnan(z[:cap]))
        known = int(unknown[0]) if len(unknown) else min(len(z), cap)
        need = (np.ones(len(z), dtype=bool) if labelled is None
                else np.asarray(labelled, dtype=bool))
        a, b = self.edges
        if a < self.fixed.compiled.low:
            return SequentialDecision("pass", 0, 0, "sequential")
        if b > self.fixed.compiled.high:
            return SequentialDecision("fail", 0, 0, "sequential")
        up, down = self.bettor.log_wealth(z[:known])
        level = math.log(1.0 / self.alpha)
        t_up = _first(up >= level)
        t_down = _first(down >= level)
        if t_up is not None or t_down is not None:
            # Both crossing at once is possible only on a tiny sample; the error bound holds for
            # either choice (each side's crossing is bounded on its own), so prefer failing.
            status, t = (("fail", t_down) if t_down is not None and (t_up is None or t_down <= t_up)
                         else ("pass", t_up))
            rows = t + 1
            return SequentialDecision(status, rows, int(need[:rows].sum()), "sequential")
        if known >= cap:
            passed = self.cap.answer(self._cap_statistic(z[:cap])).passed
            return SequentialDecision("pass" if passed else "fail", cap, int(need[:cap].sum()), "cap")
        if known == len(z):
            raise ValueError(f"the test set has {len(z)} rows; this clause may read up to {cap}")
        return SequentialDecision("awaiting labels", known, int(need[:known].sum()), None, known)

    def _decide_fixed(self, z: np.ndarray) -> SequentialDecision:
        m = self.fixed.test_examples
        if len(z) < m:
            raise ValueError(f"the test set has {len(z)} rows; this clause needs {m}")
        passed = self.fixed.answer(_test_scale(self.fixed, z[:m])).passed
        return SequentialDecision("pass" if passed else "fail", m, 0, "fixed")

    def decide_many(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised decisions for many simulated test sets (Monte Carlo; rows along axis 1).

        Returns ``(passed, rows read, decided by the cap)``, one entry per run. Every row is known
        (a simulation labels whatever it reads); ``z`` needs at least :attr:`cap_rows` columns.
        """
        z = np.asarray(z, dtype=np.float64)
        cap = self.cap_rows
        if z.shape[1] < cap:
            raise ValueError(f"simulate at least {cap} rows, got {z.shape[1]}")
        z = z[:, :cap]
        runs = z.shape[0]
        passed = np.zeros(runs, dtype=bool)
        rows = np.full(runs, cap)
        by_cap = np.zeros(runs, dtype=bool)
        level = math.log(1.0 / self.alpha)
        block = max(1, _CHUNK // max(cap, 1))
        for start in range(0, runs, block):
            part = slice(start, start + block)
            up, down = self.bettor.log_wealth(z[part])
            t_up = _first_many(up >= level)
            t_down = _first_many(down >= level)
            fail_first = t_down <= t_up
            done = np.minimum(t_up, t_down) < cap
            passed[part] = done & ~fail_first
            rows[part] = np.where(done, np.minimum(t_up, t_down) + 1, cap)
            if (~done).any():
                undecided = np.flatnonzero(~done)
                sums = self._cap_statistic(z[part][undecided]).sum(axis=1)
                passed[part][undecided] = self.cap.decide_many(sums, cap)
                by_cap[part][undecided] = True
        return passed, rows, by_cap


def label_request(needs_label: np.ndarray, labelled: np.ndarray, start: int, labels_so_far: int,
                  first_batch: int = 64, growth: float = 0.5) -> np.ndarray:
    """Positions (in reading order) of the next rows to label, in order of priority.

    A sequential clause awaiting labels at position ``start`` asks for the next rows that need a
    label and have none, in growing batches: ``max(first_batch, growth * labels_so_far)`` rows,
    so the number of round trips to the labeller grows only logarithmically with the labels a
    decision needs, and at most a fraction ``growth`` of them are labelled beyond the stop.
    The request depends on the labels only through ``labels_so_far`` and ``start``: it must go to
    the owner's private channel (see docs/statistics.md §6 on what an "awaiting" state leaks).
    """
    if first_batch < 1 or growth < 0:
        raise ValueError(f"first_batch must be >= 1 and growth >= 0, got {first_batch}, {growth}")
    wanted = max(first_batch, math.ceil(growth * labels_so_far))
    todo = np.flatnonzero(np.asarray(needs_label, bool)[start:] & ~np.asarray(labelled, bool)[start:])
    return todo[:wanted] + start


@dataclass(frozen=True)
class FormulaDecision:
    """A formula decided in reading order on the labels known so far.

    ``status`` is "pass" (every clause passed), "fail" (a clause failed) or "awaiting labels";
    ``clauses`` holds each clause's :class:`SequentialDecision`; ``request`` the rows to label
    next (indices into the test set, in priority order) while awaiting. SECRET: it depends on
    the labels, so it is for the test-set owner's private channel only."""

    status: str
    clauses: tuple[SequentialDecision, ...]
    request: tuple[int, ...] = ()

    @property
    def decided(self) -> bool:
        return self.status in ("pass", "fail")


def decide_in_order(plan: "SequentialPlan", order: np.ndarray, labels: np.ndarray,
                    known: np.ndarray, new_pred: np.ndarray, old_pred: np.ndarray | None
                    ) -> FormulaDecision:
    """Decide every clause of ``plan`` over the rows read in ``order``, with the labels
    ``known``. A failed clause fails the formula, all passed pass it; otherwise the request is
    the union of the awaiting clauses' next batches (:func:`label_request`)."""
    known = np.asarray(known, dtype=bool)[order]
    new_pred = np.asarray(new_pred)[order]
    labels = np.asarray(labels)[order]
    n = np.where(known, new_pred == labels, np.nan)
    o = d = None
    if old_pred is not None:
        old_pred = np.asarray(old_pred)[order]
        o = np.where(known, old_pred == labels, np.nan)
        d = (new_pred != old_pred).astype(np.float64)
    decisions = plan.decide(Outcomes(n, o, d))
    if any(s.status == "fail" for s in decisions):
        return FormulaDecision("fail", decisions)
    if all(s.status == "pass" for s in decisions):
        return FormulaDecision("pass", decisions)
    wanted: set[int] = set()
    for clause, s in zip(plan.clauses, decisions):
        if not s.decided:
            need = clause.needs_label(d if d is not None else np.ones(len(order)))
            wanted.update(label_request(need, known, s.next_row, s.labels).tolist())
    return FormulaDecision("awaiting labels", decisions,
                           tuple(int(order[p]) for p in sorted(wanted)))


def transcript_queries(adaptivity: str, steps: int, passes: int | None = None,
                       outcomes: int = 2) -> int:
    """Queries to split delta over when each released check has ``outcomes`` visible outcomes.

    With 2 (pass, fail) it is the planner's count. With 3 (pass, fail, and "no verdict yet:
    labels late" visible to the team) the transcript tree is ternary: a node at depth k with
    j < B passes has ``C(k, j) * (outcomes - 1)^(k - j)`` transcripts reaching it, so::

        full:        sum_{k<H} outcomes^k                 = (3^H - 1) / 2 for 3 outcomes
        passes B:    sum_{k<H} sum_{j<B} C(k, j) (outcomes - 1)^(k - j)
        firstChange: passes B = 1:  sum_{k<H} (outcomes - 1)^k  = 2^H - 1 for 3 outcomes
        none:        H (the team sees nothing, whatever the outcome)
    """
    if outcomes < 2:
        raise ValueError(f"outcomes must be >= 2, got {outcomes}")
    if adaptivity == "none":
        return steps
    if adaptivity == "firstChange":
        passes = 1
    bound = steps if passes is None else min(passes, steps)
    return sum(math.comb(k, j) * (outcomes - 1) ** (k - j) for k in range(steps) for j in range(min(bound, k + 1)))


def _test_scale(clause: ClausePlan, z: np.ndarray) -> np.ndarray:
    """Z on the scale of a fixed-size test (the Bernoulli u for exact-binomial tests)."""
    if clause.method != "exact-binomial":
        return z
    c = clause.compiled
    w = c.weights["nod".index(c.bernoulli_variable)]
    v = z / w
    return v if w > 0 else 1 - v


def _first(hit: np.ndarray) -> int | None:
    idx = np.flatnonzero(hit)
    return int(idx[0]) if len(idx) else None


def _first_many(hit: np.ndarray) -> np.ndarray:
    """Per run, the first index where ``hit`` holds, or the row count when it never does."""
    any_hit = hit.any(axis=1)
    return np.where(any_hit, hit.argmax(axis=1), hit.shape[1])


@dataclass(frozen=True)
class SequentialPlan:
    """A formula decided clause by clause sequentially, each with its fixed-size cap."""

    fixed: Plan  # the planner's plan at the given reliability
    cap: Plan  # the same formula planned at reliability 1 - (1 - share) * delta
    share: float
    clauses: tuple[SequentialClause, ...]

    @property
    def rows(self) -> int:
        """Rows (features) the test set must hold: the largest cap."""
        return max((c.cap_rows if not c.needs_no_labels else c.fixed.test_examples)
                   for c in self.clauses)

    def decide(self, outcomes: Outcomes) -> tuple[SequentialDecision, ...]:
        """Decide every clause on outcomes given in reading order (NaN in n/o = not labelled)."""
        out = []
        for c in self.clauses:
            n = None if outcomes.n is None else np.asarray(outcomes.n, dtype=np.float64)
            o = None if outcomes.o is None else np.asarray(outcomes.o, dtype=np.float64)
            d = None if outcomes.d is None else np.asarray(outcomes.d, dtype=np.float64)
            z = np.asarray(c.fixed.compiled.value(n, o, d), dtype=np.float64)
            if c.labels_only_where_models_differ:
                z = np.where(d == 0, 0.0, z)  # an agreeing row's value is known without a label
            need = c.needs_label(d) if d is not None else None
            out.append(c.decide(z, need))
        return tuple(out)


def sequential_plan(formula: Formula | str, reliability: float = 0.9999, mode: str = "fp-free",
                    adaptivity: str = "full", steps: int = 32, passes: int | None = None,
                    share: float = SHARE) -> SequentialPlan:
    """Plan sequential decisions: delta' as the planner splits it, ``share`` of it sequential.

    The cap is the planner's own plan at reliability ``1 - (1 - share) * (1 - reliability)``,
    which gives every clause ``(1 - share) * delta'`` (the planner's split is linear in delta).
    """
    if isinstance(formula, str):
        formula = parse(formula)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share!r}")
    fixed = plan(formula, reliability, mode, adaptivity, steps, passes)
    cap = plan(formula, 1.0 - (1.0 - share) * (1.0 - reliability), mode, adaptivity, steps, passes)
    clauses = tuple(SequentialClause(f, c, share * f.delta) for f, c in zip(fixed.clauses, cap.clauses))
    return SequentialPlan(fixed, cap, float(share), clauses)
