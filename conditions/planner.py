"""Plan how many test examples (and labels) a formula needs, and decide it on a test set.

Error budget (docs/design.md §2)
---------------------------
``reliability`` r gives delta = 1 - r for the whole life of one test set. Adaptivity fixes how
many distinct queries (model x clause) could ever be answered on it; a union bound over them gives
each one ``delta' = delta / (clauses * queries)``:

* ``none`` and ``firstChange``: H models, fixed in advance or stopped at the first pass: H.
* ``full``: the next model may depend on every released bit, so the queries are the nodes of the
  pass/fail transcript tree of depth H: ``2^H - 1``.
* ``full`` with ``passes: B``: the transcripts with fewer than B passes before each node:
  ``sum_{k<H} sum_{j<B} C(k, j)`` (B = 1 gives H, B = H gives 2^H - 1).

The formula passes when every clause does. A false pass of the formula needs some clause that is
false to pass, so it costs at most delta'; a false fail needs some true clause to fail, at most
``clauses * delta'``; the split over clauses covers both.

Clauses that vanish where the models agree (``n - o``) may use the bound d <= p that a clause
``d < t +/- eps`` of the same formula certifies (p = t under fp-free, t + 2 eps under fn-free). This
is sound at the level of the formula: if d > p, the d clause itself fails except with
probability delta', so the formula cannot pass falsely through the n - o clause's weaker test;
if every clause is true, d <= p holds and the variance bound is valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .ast import Clause, Formula, format_number
from .bounds import MeanTest, binomial_cutoff, binomial_design
from .compiler import CompiledClause, compile_clause, disagreement_bound
from .errors import PlanError, SampleTooSmall
from .parser import parse
from .zones import ImpossibleCondition, check_clause, check_formula, owed_pass_text

MODES = ("fp-free", "fn-free")
ADAPTIVITIES = ("none", "full", "firstChange")
METHODS = ("tight", "easeml")


# Below this per-query error budget no test set is realistic and floating point gives out.
SMALLEST_QUERY_DELTA = 1e-300
MAX_STEPS = 100_000


def query_count(adaptivity: str, steps: int, passes: int | None = None, *, easeml: bool = False,
                limit: int | None = None) -> int:
    """How many queries a test set may answer under an adaptivity mode (see module docstring).

    With ``limit``, counting stops as soon as the count exceeds it (the caller only needs to
    know that it is too many), so absurd step counts cannot hang the planner.
    """
    if adaptivity in ("none", "firstChange"):
        return steps
    if passes is None or passes >= steps:
        # ease.ml/ci's code divides by 2^H; the transcript tree has 2^H - 1 nodes.
        if limit is not None and steps > limit.bit_length() + 1:
            return limit + 1
        return 2**steps if easeml else 2**steps - 1
    # Row k of the tree holds sum_{j<B} C(k, j) nodes; Pascal's rule gives the next row as
    # 2 * row - C(k, B - 1), so the count takes O(H) big-integer steps.
    total, row = 0, 1
    for k in range(steps):
        total += row
        if limit is not None and total > limit:
            return limit + 1
        row = 2 * row - math.comb(k, passes - 1)
    return total


def _log(count: int) -> float:
    return math.log(count)  # exact for Python's big integers too


@dataclass(frozen=True)
class ClausePlan:
    """How one clause is tested: method, sample size, labels and cutoffs."""

    clause: Clause
    compiled: CompiledClause
    mode: str
    method: str
    delta: float  # error budget of one query of this clause
    test_examples: int
    second_moment_cap: float | None
    easeml_test_examples: int

    @property
    def text(self) -> str:
        return str(self.clause)

    @property
    def tolerance(self) -> float:
        return self.clause.tolerance

    @property
    def statistic(self) -> str:
        """The clause's expression with its range over feasible outcomes, as the user wrote it."""
        c = self.compiled
        low, high = (c.low, c.high) if c.sign > 0 else (-c.high, -c.low)
        return f"{self.clause.expression_text()} in [{format_number(low)}, {format_number(high)}]"

    @property
    def labels(self) -> int:
        """Labelled rows this clause's fixed-size test needs: every one of its test examples.

        A test set labelled in advance carries a label for every row, and the decision reads
        them all; a ``d``-only clause reads none, but its rows still come labelled. Labelling in
        advance only the rows where two models disagree is *not* enough: the next model pair
        disagrees elsewhere. A test set labelled on demand (``adaptivity: none``, docs/design.md
        §7) is decided by :mod:`conditions.sequential`, capped by a fixed-size plan of its own,
        and needs only the labels a decision reads.
        """
        return self.test_examples

    # --- the test itself, on sufficient statistics (vectorised for Monte Carlo) ---

    def _zone_cutoff(self, mode: str, m: int):
        """``(examples used, cutoff)`` of the test for ``mode``'s zone on m examples.

        The cutoff is on the scale of :meth:`statistic_of`: a count for exact tests, a mean
        otherwise. Only the plan's own mode carries the guarantee; the other zone's test serves
        the three-valued answer on the same examples.
        """
        a, b = self.compiled.edges(mode)
        if self.method == "exact-binomial":
            a_u, b_u = self._bernoulli_scale(a, b)
            k = binomial_cutoff(m, a_u, b_u, self.delta)
            if k is not None:
                return m, k
            if mode == self.mode:
                # The binomial lattice can make a size just above the planned one infeasible;
                # the planned size is feasible by construction, so decide on its prefix.
                return self.test_examples, binomial_cutoff(self.test_examples, a_u, b_u, self.delta)
            return m, math.ceil(m * (a_u + b_u) / 2)  # ease.ml/ci's rule: the zone's middle
        if self.method == "easeml":
            return m, (a + b) / 2
        test = MeanTest(self.compiled.low, self.compiled.high, self.second_moment_cap)
        return m, test.design(a, b, self.delta).cutoff

    def _bernoulli_scale(self, a: float, b: float) -> tuple[float, float]:
        """Map Z-scale edges to the Bernoulli variable u (= v or 1 - v) whose count is tested."""
        var = self.compiled.bernoulli_variable
        w = self.compiled.weights["nod".index(var)]
        if w > 0:
            return a / w, b / w
        return 1 - a / w, 1 - b / w

    def statistic_of(self, n, o, d) -> np.ndarray | float:
        """Per-example statistic: the Bernoulli u for exact tests, Z otherwise."""
        if self.method == "exact-binomial":
            var = self.compiled.bernoulli_variable
            v = {"n": n, "o": o, "d": d}[var]
            w = self.compiled.weights["nod".index(var)]
            return v if w > 0 else 1 - v
        return self.compiled.value(n, o, d)

    def statistic_sum(self, outcomes: "Outcomes", k: int) -> float:
        """The sum of :meth:`statistic_of` over the first ``k`` examples, from counts.

        The statistic is linear in n, o and d, each 0 or 1 per example, so the sum is the
        weighted sum of their counts (for an exact test, the count of u = v or 1 - v). It is
        the same number the per-example array's sum gives (exactly, for weights that are
        multiples of a power of two, as every weight of ``n - o`` or ``n > t`` is), without
        building that array: at 1M rows, three float64 temporaries and ~10 ms."""
        def count(v) -> int:
            return int(np.count_nonzero(np.asarray(v)[:k]))

        size = min(k, len(outcomes))
        if self.method == "exact-binomial":
            var = self.compiled.bernoulli_variable
            c = count(getattr(outcomes, var))
            return float(c if self.compiled.weights["nod".index(var)] > 0 else size - c)
        total = 0.0
        for w, v in zip(self.compiled.weights, (outcomes.n, outcomes.o, outcomes.d)):
            if w != 0:
                total = total + w * count(v)
        return float(total)

    def answer(self, values: np.ndarray) -> "ClauseVerdict":
        """Decide this clause from its per-example statistic (see :meth:`statistic_of`)."""
        values = np.asarray(values, dtype=np.float64)
        return self._answer(lambda k: float(np.sum(values[:k])), len(values))

    def answer_outcomes(self, outcomes: "Outcomes") -> "ClauseVerdict":
        """:meth:`answer` of the statistic of ``outcomes``, decided from their counts
        (:meth:`statistic_sum`): what a fixed-size check decides with."""
        return self._answer(lambda k: self.statistic_sum(outcomes, k), len(outcomes))

    def _answer(self, prefix_sum, m: int) -> "ClauseVerdict":
        """The verdict from ``prefix_sum(k)``, the statistic's sum over the first k of m
        examples: the count for exact tests, the mean otherwise, against each mode's cutoff."""
        passes = {}
        for mode in MODES:
            size, cutoff = self._zone_cutoff(mode, m)
            used = min(size, m)
            total = prefix_sum(size)
            stat = total if self.method == "exact-binomial" else (total / used if used else math.nan)
            passes[mode] = stat >= cutoff
        answer = "true" if passes["fp-free"] else ("false" if not passes["fn-free"] else "unknown")
        passed = passes[self.mode]
        return ClauseVerdict(self.text, answer, passed, self._estimate(prefix_sum(m), m))

    def _estimate(self, total: float, m: int) -> float:
        """The clause's expression estimated on the test set (secret; shown only on opt-in),
        from the statistic's sum over its m examples."""
        mean = total / m if m else math.nan
        if self.method == "exact-binomial":
            var = self.compiled.bernoulli_variable
            w = self.compiled.weights["nod".index(var)]
            p = mean if w > 0 else 1 - mean
            z = w * p
        else:
            z = mean
        return z * self.compiled.sign

    def decide_many(self, statistic_sums: np.ndarray, m: int) -> np.ndarray:
        """Vectorised mode verdicts for many simulated test sets of m examples (Monte Carlo)."""
        size, cutoff = self._zone_cutoff(self.mode, m)
        if size != m:
            raise ValueError("simulate with a size whose exact test exists (the planned one does)")
        stat = statistic_sums if self.method == "exact-binomial" else statistic_sums / m
        return stat >= cutoff

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "statistic": self.statistic,
            "method": self.method,
            "tolerance": self.tolerance,
            "delta_per_query": self.delta,
            "test_examples": self.test_examples,
            "labels": self.labels,
            "easeml_test_examples": self.easeml_test_examples,
            "disagreement_bound": (None if self.second_moment_cap is None else
                                   self.second_moment_cap / self.compiled.max_square_when_differ),
        }


@dataclass(frozen=True)
class ClauseVerdict:
    text: str
    answer: str  # "true" | "false" | "unknown"
    passed: bool
    estimate: float  # SECRET: derived from the test set; never shown unless the user opted in

    def to_dict(self, reveal_estimates: bool = False) -> dict:
        out = {"text": self.text, "answer": self.answer, "verdict": "pass" if self.passed else "fail"}
        if reveal_estimates:
            out["estimate"] = self.estimate
        return out


@dataclass(frozen=True)
class Verdict:
    passed: bool
    clauses: tuple[ClauseVerdict, ...]
    test_examples: int

    def to_dict(self, reveal_estimates: bool = False) -> dict:
        return {"verdict": "pass" if self.passed else "fail",
                "clauses": [c.to_dict(reveal_estimates) for c in self.clauses]}

    @classmethod
    def failed(cls, plan: "Plan") -> "Verdict":
        """The verdict when the models could not be evaluated: every clause unknown, a fail."""
        return cls(passed=False, test_examples=0, clauses=tuple(
            ClauseVerdict(text=c.text, answer="unknown", passed=False, estimate=float("nan"))
            for c in plan.clauses))


@dataclass(frozen=True)
class Outcomes:
    """Per-example outcome vectors: n_i, o_i, d_i in {0, 1} (any may be None when unused)."""

    n: np.ndarray | None = None
    o: np.ndarray | None = None
    d: np.ndarray | None = None

    @classmethod
    def from_predictions(cls, y, new_pred, old_pred=None) -> "Outcomes":
        new_pred = np.asarray(new_pred)
        n = None if y is None else (new_pred == np.asarray(y)).astype(np.int8)
        o = d = None
        if old_pred is not None:
            old_pred = np.asarray(old_pred)
            d = (new_pred != old_pred).astype(np.int8)
            o = None if y is None else (old_pred == np.asarray(y)).astype(np.int8)
        return cls(n, o, d)

    def __len__(self) -> int:
        for arr in (self.n, self.o, self.d):
            if arr is not None:
                return len(arr)
        return 0

    def require(self, variables) -> None:
        missing = [v for v in sorted(variables) if getattr(self, v) is None]
        if missing:
            raise ValueError(f"outcomes lack {', '.join(missing)} needed by the condition")


@dataclass(frozen=True)
class Plan:
    """A formula with its reliability, mode, adaptivity and steps, planned clause by clause."""

    formula: Formula
    reliability: float
    mode: str
    adaptivity: str
    steps: int
    passes: int | None
    method: str
    queries: int
    clauses: tuple[ClausePlan, ...]
    easeml_queries: int = field(default=0)

    @property
    def delta(self) -> float:
        return 1.0 - self.reliability

    @property
    def variables(self) -> frozenset[str]:
        return self.formula.variables

    @property
    def test_examples(self) -> int:
        return max(c.test_examples for c in self.clauses)

    @property
    def labels(self) -> int:
        """Labelled rows a test set labelled in advance needs: every test example (see
        :attr:`ClausePlan.labels`)."""
        return self.test_examples

    @property
    def disagreements_worst_case(self) -> int | None:
        """Informational, for formulas with a ``d`` clause: the most disagreements a passing
        check can see on :attr:`test_examples` rows.

        The ``d`` clause's exact test passes only when the count of disagreements is at most
        ``N - k`` (k its cutoff on the count of agreements), so a run with more fails whatever
        the labels say. This is the worst case the plan allows, not ``ceil(N * p)``, which the
        realised count exceeds about half the time at d = p. It is *not* what a test set
        labelled in advance needs labelled (:attr:`labels`): a later model pair disagrees on
        other rows.
        """
        n = self.test_examples
        worst = None
        for c in self.clauses:
            if c.method != "exact-binomial" or c.clause.variables != frozenset({"d"}) \
                    or not c.clause.is_upper_bound or c.clause.coefficient("d") <= 0:
                continue
            size, k = c._zone_cutoff(self.mode, n)
            # u = 1 - d is counted; a pass needs at least k agreements among the first `size` rows
            allowed = (size - k) + (n - size)
            worst = allowed if worst is None else min(worst, allowed)
        return worst

    @property
    def easeml_test_examples(self) -> int:
        return max(c.easeml_test_examples for c in self.clauses)

    def decide(self, outcomes: Outcomes) -> Verdict:
        m = len(outcomes)
        if m < self.test_examples:
            raise SampleTooSmall(self.test_examples, m)
        outcomes.require(self.variables)
        verdicts = tuple(c.answer_outcomes(outcomes) for c in self.clauses)
        return Verdict(all(v.passed for v in verdicts), verdicts, m)

    def for_sample_size(self, m: int) -> "Plan":
        """The same plan with each tolerance widened to the smallest one m examples support.

        Raises :class:`ImpossibleCondition` (a :class:`PlanError` and a ``ConditionError``) when
        no tolerance fits: a clause whose widest zone inside its statistic's range still needs
        more than m examples, or widened clauses whose pass regions no longer meet, so that no
        model could pass (deciding then would fail every model without looking).
        """
        if m >= self.test_examples:
            return self
        if m <= 0:
            raise PlanError(f"sample size must be positive, got {m}")
        current = self
        for _ in range(5):  # widening a d clause can loosen the variance bound of n - o: iterate
            widened = tuple(self._widen(clause, current, m) for clause in current.formula.clauses)
            formula = Formula(widened, source=str(Formula(widened)))
            try:
                current = plan(formula, self.reliability, self.mode, self.adaptivity, self.steps,
                               self.passes, self.method)
            except ImpossibleCondition:
                raise ImpossibleCondition(
                    f"{m:,} test examples are too few for '{self.formula}': the tolerances they "
                    f"support make it '{formula}', which no model can pass (a pass would be owed "
                    f"only where {owed_pass_text(formula, self.mode)}, and no model has all of "
                    f"these at once); label at least {self.test_examples:,} examples") from None
            if current.test_examples <= m:
                return current
        raise PlanError(f"no tolerance fits {m} examples")  # pragma: no cover - not seen in practice

    def _widen(self, clause: Clause, context: "Plan", m: int) -> Clause:
        """The clause with the smallest tolerance (found by bisection) that m examples support,
        never wider than the zone its statistic's range allows."""
        if _clause_size(clause, context) <= m:
            return clause
        compiled = compile_clause(clause)
        thr = compiled.threshold
        widest = ((compiled.high - thr) if self.mode == "fp-free" else (thr - compiled.low)) / 2
        lo, hi = clause.tolerance, widest
        if hi <= lo or _clause_size(self._with_tolerance(clause, hi), context) > m:
            need = None if hi <= lo else _clause_size(self._with_tolerance(clause, hi), context)
            raise ImpossibleCondition(
                f"{m:,} test examples cannot decide clause '{clause}' at any tolerance: its widest "
                f"zone inside the range of {clause.expression_text()} (+/- {format_number(hi)}) "
                + (f"still needs {need:,}" if need is not None else "is no wider than the current one")
                + f"; label at least {self.test_examples:,} examples")
        for _ in range(50):
            mid = (lo + hi) / 2
            if _clause_size(self._with_tolerance(clause, mid), context) <= m:
                hi = mid
            else:
                lo = mid
        return self._with_tolerance(clause, hi)

    @staticmethod
    def _with_tolerance(clause: Clause, tol: float) -> Clause:
        return replace(clause, tolerance=tol)

    def summary(self) -> dict:
        """The plan as a report shows it (the meter's plan has the same method)."""
        return {"condition": str(self.formula), "reliability": self.reliability,
                "mode": self.mode, "adaptivity": self.adaptivity, "steps": self.steps,
                "passes": self.passes, "method": self.method,
                "test_examples": self.test_examples, "labels": self.labels}

    def to_dict(self) -> dict:
        return {
            "condition": str(self.formula),
            "reliability": self.reliability,
            "mode": self.mode,
            "adaptivity": self.adaptivity,
            "steps": self.steps,
            "passes": self.passes,
            "method": self.method,
            "queries": self.queries,
            "test_examples": self.test_examples,
            "labels": self.labels,
            "disagreements_worst_case": self.disagreements_worst_case,
            "easeml_test_examples": self.easeml_test_examples,
            "clauses": [c.to_dict() for c in self.clauses],
        }


def _clause_size(clause: Clause, base: Plan) -> int:
    """Sample size of one clause planned in the context of ``base`` (for widening tolerances)."""
    formula = Formula(tuple(clause if (c.span == clause.span) else c for c in base.formula.clauses))
    p = plan(formula, base.reliability, base.mode, base.adaptivity, base.steps, base.passes, base.method,
             _whole_formula=False)
    idx = [c.clause.span for c in p.clauses].index(clause.span)
    return p.clauses[idx].test_examples


def validate_parameters(reliability, mode, adaptivity, steps, passes, method) -> None:
    if isinstance(reliability, bool) or not isinstance(reliability, (int, float)) or not (0 < reliability < 1):
        raise PlanError(f"reliability must be in (0, 1), got {reliability!r}")
    if mode not in MODES:
        raise PlanError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if adaptivity not in ADAPTIVITIES:
        raise PlanError(f"adaptivity must be one of {', '.join(ADAPTIVITIES)}, got {adaptivity!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PlanError(f"steps must be an integer >= 1, got {steps!r}")
    if passes is not None:
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
            raise PlanError(f"passes must be an integer >= 1, got {passes!r}")
        if adaptivity != "full":
            raise PlanError(f"passes applies to adaptivity 'full' only, got adaptivity {adaptivity!r}")
    if method not in METHODS:
        raise PlanError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if steps > MAX_STEPS:
        raise PlanError(f"steps must be at most {MAX_STEPS:,}, got {steps:,}")
    limit = int((1.0 - reliability) / SMALLEST_QUERY_DELTA)
    if query_count(adaptivity, steps, passes, easeml=True, limit=limit) > limit:
        raise PlanError(
            f"adaptivity {adaptivity} with steps {steps}"
            + (f" and passes {passes}" if passes is not None else "")
            + " splits delta over more queries than any test set can serve (under 1e-300 per "
              "query); use fewer steps, passes: B, or firstChange")


def plan(formula: Formula | str, reliability: float = 0.9999, mode: str = "fp-free",
         adaptivity: str = "full", steps: int = 32, passes: int | None = None,
         method: str = "tight", *, _whole_formula: bool = True) -> Plan:
    """Plan a formula; see the module docstring for the error budget and its split.

    Raises :class:`ImpossibleCondition` for a clause whose indifference zone leaves its
    statistic's range, or a formula no model can pass (:mod:`conditions.zones`).
    """
    if isinstance(formula, str):
        formula = parse(formula)
    validate_parameters(reliability, mode, adaptivity, steps, passes, method)
    if _whole_formula:
        check_formula(formula, mode)
    else:  # widening one clause at a time: the others are not yet widened, so only zones count
        for c in formula.clauses:
            check_clause(compile_clause(c), mode)
    delta = 1.0 - reliability
    queries = query_count(adaptivity, steps, passes)
    easeml_queries = query_count(adaptivity, steps, passes, easeml=True)
    n_clauses = len(formula.clauses)
    log_inv_delta = _log(n_clauses * queries) - math.log(delta)
    clause_delta = math.exp(-log_inv_delta)
    bounds = [b for c in formula.clauses if (b := disagreement_bound(c, mode)) is not None]
    d_bound = min(bounds) if bounds else None

    planned = []
    for clause in formula.clauses:
        compiled = compile_clause(clause)
        easeml_n = _easeml_size(clause, delta, n_clauses, easeml_queries)
        cap = None
        if compiled.vanishes_without_disagreement and d_bound is not None and compiled.variables - {"d"}:
            cap = compiled.max_square_when_differ * min(1.0, d_bound)
        a, b = compiled.edges(mode)
        if method == "easeml":
            planned.append(ClausePlan(clause, compiled, mode, "easeml", clause_delta, easeml_n, None, easeml_n))
            continue
        if compiled.bernoulli_variable is not None:
            cp = ClausePlan(clause, compiled, mode, "exact-binomial", clause_delta, 0, None, easeml_n)
            a_u, b_u = cp._bernoulli_scale(a, b)
            size = binomial_design(a_u, b_u, clause_delta).sample_size
            planned.append(replace(cp, test_examples=size))
            continue
        name = "bennett-d" if cap is not None else "bennett"
        size = MeanTest(compiled.low, compiled.high, cap).design(a, b, clause_delta).sample_size
        planned.append(ClausePlan(clause, compiled, mode, name, clause_delta, size, cap, easeml_n))
    return Plan(formula, float(reliability), mode, adaptivity, steps, passes, method, queries,
                tuple(planned), easeml_queries)


def _easeml_size(clause: Clause, delta: float, n_clauses: int, queries: int) -> int:
    """ease.ml/ci's released estimator: Hoeffding per variable.

    For clause j with m_j variables and tolerance eps_j, variable i (coefficient c_i) must be
    estimated to within ``eps_j / (m_j |c_i|)``, so that the m_j errors add up to at most eps_j,
    with probability ``1 - delta''``, ``delta'' = delta / (m_j * clauses * queries)``. One-sided
    Hoeffding gives ``c_i^2 m_j^2 ln(1 / delta'') / (2 eps_j^2)`` examples per variable; the
    clause needs the largest. Reproduces their figures to the unit (641,684; 267,385; 63,381;
    6,279; 5,496), and with unequal coefficients 340,310 for ``n - 1.1 * o > 0.01 +/- 0.01 /\
    d < 0.1 +/- 0.01`` (0.9999, none, 32) and 71,547 for ``n - 0.9 * o > 0 +/- 0.02`` (0.995,
    full, 12).
    """
    n_vars = len(clause.variables)
    log_inv = _log(n_vars * n_clauses * queries) - math.log(delta)
    worst = max(c * c for _, c in clause.coefficients)
    return math.ceil(worst * n_vars * n_vars * log_inv / (2 * clause.tolerance ** 2))
