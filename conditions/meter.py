"""ease.ml/meter: how far a validation accuracy overstates the true accuracy, with a guarantee.

A team measures its model on its own validation set as often as it likes; after a while the
validation accuracy ``v`` flatters the model. The meter reports the *degree of overfitting*
``O = v - a`` (``a`` the model's true accuracy) as one of m configured ranges. ``v`` is known
exactly (it is the accuracy on the team's own set, and the meter's statement is about that very
number); ``a`` is estimated by the accuracy ``a_hat = X / N`` on the meter's secret test set
(X correct predictions of N).

Ranges and the tolerance
------------------------
Edges ``0 < e_1 < ... < e_{m-2}`` give m ranges over the boundaries ``b = (0, e_1, ..., e_{m-2})``:
``none`` = ``(-inf, 0)`` (validation accuracy below the true one), ``below e_1`` = ``[0, e_1)``,
``e_1-e_2`` = ``[e_1, e_2)``, ..., ``e_{m-2} or more``. The meter reports the range holding
``O_hat = v - a_hat``. Each boundary carries the tolerance eps: a range ``[lo, hi)`` is an
*acceptable* answer when ``lo - eps <= O <= hi + eps``, so near a boundary either neighbour is
acceptable (like a clause's indifference zone, docs/design.md §2). ``eps`` may be at most half of
the narrowest finite range, so that an answer is never acceptable for two disjoint reasons.

When is an answer wrong? Write ``t_b = v - b`` for the accuracy at boundary b. The meter puts O at
or above b iff ``a_hat <= t_b``. It is wrong at b in one of two ways:

* ``O > b + eps`` (``a < t_b - eps``) but ``a_hat > t_b``: then ``a_hat - a > eps``;
* ``O < b - eps`` (``a > t_b + eps``) but ``a_hat <= t_b``: then ``a_hat - a < -eps``.

So **the answer is correct up to the tolerance whenever the test-set estimate is within eps of the
true accuracy** at the boundaries that matter, and for a fixed model the wrong events are nested:
on the upper side only the lowest boundary with ``t_b > a + eps`` matters, on the lower side only
the highest with ``t_b < a - eps``. One answer therefore errs with probability at most

    P(a_hat - a > eps) + P(a_hat - a < -eps) <= 2 delta_side,

where ``delta_side`` bounds each one-sided deviation. Both can be near their bound at once (two
boundaries exactly 2 eps apart around a), so the factor 2 is needed.

Every p at once
---------------
v is unknown when the test set is sized, so the test set must serve every threshold, i.e. every
true accuracy p. With ``X ~ Binomial(N, p)``, ``X > N (p + eps)`` iff ``X >= j`` where
``j = floor(N (p + eps)) + 1``; on the p-interval that gives the same j the tail ``P(X >= j | p)``
increases in p, so its supremum is at the interval's right end, ``p = j/N - eps``:

    U(N, eps) = max_{j = 1..N, j/N > eps} sf(j - 1; N, j/N - eps)

and the lower tail ``P(X < N (p - eps))`` has the mirror-image supremum
``L(N, eps) = max_j cdf(j; N, j/N + eps)`` (equal to U by the symmetry X -> N - X, p -> 1 - p).
:func:`deviation_tail` computes U with the planner's exact binomial tails
(:func:`conditions.bounds.binomial_sf`); :func:`estimate_size` returns the smallest N (found by
bisection between the floor below and Hoeffding's size, which is always feasible) with
``U(N, eps) <= delta_side``; feasibility is checked over every j, exactly wherever a cheap
rigorous bound does not already settle it. This is the exact binomial test with the boundary variance: the
supremum sits where the variance p(1 - p) is largest, near p = 1/2, and the size lands a few
percent above :func:`conditions.bounds.binomial_design`'s floor for the single threshold 1/2
(which no test, at any cutoff, can beat).

Adaptivity: how many answers the union bound covers
---------------------------------------------------
``reliability`` r gives delta = 1 - r for the test set's whole life (H answers).

* ``none``: the models and validation accuracies are fixed in advance (the answers go to a private
  sink the team does not read): H answers, ``delta' = delta / H``.
* ``full``: the next model (and its validation accuracy) may depend on every answer so far. An
  answer is one of m symbols, so the possible transcripts form an m-ary tree; the k-th answer is
  asked at one of ``m^k`` nodes, each with its own fixed model and v. The union bound runs over
  every node: ``Q = sum_{k<H} m^k = (m^H - 1) / (m - 1)``, ``delta' = delta / Q``. (The gate's
  pass/fail bit is the case m = 2: ``2^H - 1``.)

Each answer gets ``delta'``, each side ``delta_side = delta' / 2``. Conditional on the path the
team took, the model and v at every node are fixed before the test set is touched, so each node's
answer errs with probability at most delta', and all the answers on the realised path are
acceptable with probability at least ``1 - Q delta' = r``.

Deciding on a given test set
----------------------------
A test set of M >= N examples: at the actual thresholds the meter checks the exact one-sided
errors ``sf(floor(M t); M, t - eps)`` and ``cdf(floor(M t); M, t + eps)`` (both <= delta_side)
and then decides on all M examples; otherwise (the binomial lattice can make a particular size
slightly worse) it decides on the first N, which serve every threshold by construction.

How large must a validation set be?
-----------------------------------
The same deviation bound answers the question teams ask most: after ``looks`` evaluations on a
validation set of n examples, does every one of them stay within eps of the model's true
accuracy? For one look (a model fixed before the look) ``P(|v - a| > eps) <= 2 U(n, eps)``.
Non-adaptive looks (models fixed in advance) take a union bound over ``looks``. Adaptive looks
(each next model chosen from what the earlier looks said) take it over the transcript tree; if a
look tells the team one bit (keep this model or not) that is ``2^looks - 1`` nodes. A team that
reads the accuracy itself learns more than a bit per look, and no count this small covers it:
the figure is then a lower bound on what it needs. :func:`validation_size` gives the exact
binomial size and :func:`hoeffding_size` the closed form ``ln(2 Q / delta) / (2 eps^2)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .bounds import EXACT_LIMIT, binomial_cdf, binomial_design, binomial_sf
from .errors import PlanError

ADAPTIVITIES = ("none", "full")
MAX_STEPS = 10_000
NONE_LABEL = "none"


class MeterError(PlanError):
    """Ranges, tolerance or budget the meter cannot serve; ``key`` names the offending setting."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _percent(x: float) -> str:
    return f"{100 * x:.6g}%"


@dataclass(frozen=True)
class Ranges:
    """m ranges of the degree of overfitting: ``none`` below 0, then the edges, then open above."""

    edges: tuple[float, ...]
    tolerance: float

    @property
    def boundaries(self) -> tuple[float, ...]:
        return (0.0, *self.edges)

    @property
    def m(self) -> int:
        return len(self.edges) + 2

    @property
    def labels(self) -> tuple[str, ...]:
        out = [NONE_LABEL, f"below {_percent(self.edges[0])}"]
        for lo, hi in zip(self.edges, self.edges[1:]):
            out.append(f"{_percent(lo)[:-1]}-{_percent(hi)}")
        out.append(f"{_percent(self.edges[-1])} or more")
        return tuple(out)

    def index(self, overfitting) -> np.ndarray:
        """The range holding each value (0 = none): how many boundaries lie at or below it."""
        return np.searchsorted(np.asarray(self.boundaries), np.asarray(overfitting), side="right")

    def interval(self, index: int) -> tuple[float, float]:
        b = (-math.inf, *self.boundaries, math.inf)
        return b[index], b[index + 1]

    def acceptable(self, index, overfitting) -> np.ndarray:
        """Whether range ``index`` is an acceptable answer for true overfitting (edge tolerance)."""
        b = np.array((-math.inf, *self.boundaries, math.inf))
        index = np.asarray(index)
        overfitting = np.asarray(overfitting)
        return (b[index] - self.tolerance <= overfitting) & (overfitting <= b[index + 1] + self.tolerance)


def ranges(edges, tolerance) -> Ranges:
    """Validated ranges; raises :class:`MeterError` naming ``edges`` or ``tolerance``."""
    if not isinstance(edges, (list, tuple)) or not edges:
        raise MeterError("edges", f"expected a non-empty list of increasing numbers in (0, 1), "
                                  f"e.g. [0.01, 0.025, 0.05], got {edges!r}")
    for e in edges:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) \
                or not 0 < e < 1:
            raise MeterError("edges", f"every edge must be a number in (0, 1) (a difference of "
                                      f"accuracies, 0.01 = 1%), got {e!r} in {list(edges)!r}")
    for lo, hi in zip(edges, edges[1:]):
        if not hi > lo:
            raise MeterError("edges", f"edges must be strictly increasing (ranges may not overlap "
                                      f"or be empty), but {hi!r} follows {lo!r} in {list(edges)!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not math.isfinite(tolerance) or not tolerance > 0:
        raise MeterError("tolerance", f"expected a number > 0 (e.g. 0.005), got {tolerance!r}")
    widths = [edges[0]] + [hi - lo for lo, hi in zip(edges, edges[1:])]
    narrowest = min(widths)
    if tolerance > narrowest / 2 + 1e-12:
        raise MeterError("tolerance", f"tolerance {tolerance!r} is wider than half the narrowest "
                                      f"range ({narrowest:.6g} wide, from the edges "
                                      f"{[0, *edges]!r}); allowed: at most {narrowest / 2:.6g}")
    return Ranges(tuple(float(e) for e in edges), float(tolerance))


def answer_count(adaptivity: str, steps: int, m: int) -> int:
    """Answers the union bound covers: H (``none``) or ``sum_{k<H} m^k`` (``full``)."""
    if adaptivity == "none":
        return steps
    if adaptivity == "full":
        return (m ** steps - 1) // (m - 1)
    raise MeterError("adaptivity", f"adaptivity must be one of {', '.join(ADAPTIVITIES)}, "
                                   f"got {adaptivity!r}")


def _log_inv_side(delta: float, count: int) -> float:
    """``ln(1 / delta_side)`` with ``delta_side = delta / (2 count)`` (exact log of big ints)."""
    return math.log(2) + math.log(count) - math.log(delta)


def _delta_side(delta: float, count: int) -> float:
    return math.exp(-_log_inv_side(delta, count))


# --- the deviation bound ----------------------------------------------------------------------

def _tail_bound(k: np.ndarray, n: int, p: np.ndarray) -> np.ndarray:
    """A rigorous upper bound on ``P(X >= k)``, X ~ Binomial(n, p), for ``n p < k <= n``.

    The terms' ratio ``P(X = j + 1) / P(X = j) = (n - j) p / ((j + 1) q)`` decreases in j, so the
    tail is at most ``P(X = k) / (1 - r_k)`` when ``r_k < 1`` (the argument of
    :func:`conditions.bounds.binomial_sf` past its exact range); ``P(X = k)`` from log-gamma,
    with a relative margin of 1e-6 for rounding. Cheap, and within a few percent of the tail.
    """
    from scipy.special import gammaln

    q = 1.0 - p
    log_pmf = (gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
               + k * np.log(p) + (n - k) * np.log1p(-p))
    r = (n - k) * p / ((k + 1) * q)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(r < 1, np.exp(log_pmf) / (1 - r) * (1 + 1e-6), 1.0)
    return np.minimum(bound, 1.0)


def deviation_tail(n: int, eps: float, *, target: float | None = None) -> float:
    """``U(n, eps) = sup_p P(X/n - p > eps)``, X ~ Binomial(n, p) (module docstring).

    With ``target``, an upper bound on U that is exact wherever it could exceed ``target``: the
    exact tail is computed only for the j whose cheap bound (:func:`_tail_bound`) is above it,
    so ``deviation_tail(n, eps, target=t) <= t`` iff ``U(n, eps) <= t``.
    """
    if n <= 0:
        return 1.0
    j = np.arange(1, n + 1, dtype=np.int64)
    p = j / n - eps
    keep = p > 0
    j, p = j[keep], p[keep]
    if not len(j):
        return 0.0
    worst = 0.0
    if target is not None:
        cheap = _tail_bound(j.astype(np.float64), n, p)
        near = cheap > target
        worst = float(np.max(cheap[~near])) if (~near).any() else 0.0
        j, p = j[near], p[near]
        if not len(j):
            return worst
    return max(worst, float(np.max(binomial_sf(j - 1, np.full(len(j), n), p))))


def deviation_tail_lower(n: int, eps: float) -> float:
    """``L(n, eps) = sup_p P(X/n - p < -eps)``; equals :func:`deviation_tail` by symmetry."""
    j = np.arange(0, n, dtype=np.int64)
    p = j / n + eps
    keep = p < 1
    if not keep.any():
        return 0.0
    return float(np.max(binomial_cdf(j[keep], np.full(int(keep.sum()), n), p[keep])))


def hoeffding_size(eps: float, delta_side: float | None = None, *,
                   log_inv_side: float | None = None) -> int:
    """``ceil(ln(1/delta_side) / (2 eps^2))``: Hoeffding's one-sided size, feasible for every p
    (``log_inv_side`` gives ``ln(1/delta_side)`` where delta_side itself would underflow)."""
    log_inv = math.log(1.0 / delta_side) if log_inv_side is None else log_inv_side
    return max(1, math.ceil(log_inv / (2 * eps * eps)))


@lru_cache(maxsize=256)
def estimate_size(eps: float, delta_side: float) -> int:
    """The smallest N (verified) with ``U(N, eps) <= delta_side``: every accuracy is estimated
    within eps on both sides, each side failing with probability at most delta_side."""
    if not 0 < eps < 0.5:
        raise MeterError("tolerance", f"tolerance must be in (0, 0.5), got {eps!r}")
    hi = hoeffding_size(eps, delta_side)
    if hi > EXACT_LIMIT:
        raise MeterError("tolerance", f"a test set of more than {EXACT_LIMIT:,} examples would "
                                      "be needed; widen the tolerance or use fewer steps")
    floor = binomial_design(0.5 - eps, 0.5 + eps, delta_side).sample_size
    slack = max(64, floor // 5000)

    def feasible(size: int) -> bool:
        return deviation_tail(size, eps, target=delta_side) <= delta_side

    lo = max(0, floor - slack)
    if feasible(lo):
        lo = 0
    for top in (floor + slack, floor + 10 * slack, floor * 105 // 100 + 10):
        if top < hi and feasible(top):
            hi = top
            break
    while hi - lo > 1:  # invariant: hi feasible, lo infeasible (or 0)
        mid = (lo + hi) // 2
        if feasible(mid):
            hi = mid
        else:
            lo = mid
    return hi


# --- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MeterPlan:
    """How many test examples the meter needs for H answers at the given ranges."""

    ranges: Ranges
    reliability: float
    adaptivity: str
    steps: int
    answers: int          # nodes the union bound covers
    delta_side: float     # each one-sided deviation of one answer
    test_examples: int

    @property
    def delta(self) -> float:
        return 1.0 - self.reliability

    @property
    def delta_per_answer(self) -> float:
        return 2 * self.delta_side

    # what the gate's alert and pool ranking read (easeml_ci.check.raise_alert)
    variables = frozenset({"n"})

    @property
    def labels(self) -> int:
        return self.test_examples

    @property
    def description(self) -> str:
        return (f"meter: overfitting in {' | '.join(self.ranges.labels)} "
                f"+/- {_percent(self.ranges.tolerance)}")

    def summary(self) -> dict:
        return {"condition": self.description, "reliability": self.reliability,
                "mode": "meter", "adaptivity": self.adaptivity, "steps": self.steps,
                "passes": None, "method": "exact-binomial", "test_examples": self.test_examples,
                "labels": self.labels}

    @property
    def next_step(self) -> str:
        """What the new-test-set alert asks for (the gate's `testset register` would pin the
        gate's terms; a meter test set is registered by `meter register`)."""
        return (f"label a fresh test set of at least {self.test_examples:,} examples for the "
                "meter, point `meter.testset:` (or --testset) at it and register it with "
                "`easeml-ci meter register` (a first `easeml-ci meter` answer outside a pull "
                "request registers it too)")

    def to_dict(self) -> dict:
        return {"edges": list(self.ranges.edges), "tolerance": self.ranges.tolerance,
                "ranges": list(self.ranges.labels), "reliability": self.reliability,
                "adaptivity": self.adaptivity, "steps": self.steps, "answers": self.answers,
                "delta_per_answer": self.delta_per_answer, "test_examples": self.test_examples}

    # --- deciding ---

    def usable_size(self, size: int, validation_accuracy: float) -> int:
        """How many of ``size`` test examples the answer may use (module docstring)."""
        if size < self.test_examples:
            raise MeterError("testset", f"the meter needs {self.test_examples:,} test examples, "
                                        f"the test set has {size:,}")
        if size == self.test_examples:
            return size
        eps = self.ranges.tolerance
        t = validation_accuracy - np.asarray(self.ranges.boundaries)
        up = t - eps
        cut = np.floor(size * t)
        n = np.full(len(t), size)
        errs = []
        if (inside := (up > 0) & (t < 1)).any():
            errs.append(binomial_sf(cut[inside], n[inside], up[inside]))
        if (inside := (t + eps < 1) & (t >= 0)).any():
            errs.append(binomial_cdf(cut[inside], n[inside], (t + eps)[inside]))
        worst = max((float(np.max(e)) for e in errs), default=0.0)
        return size if worst <= self.delta_side else self.test_examples

    def answer(self, validation_accuracy, correct, size: int) -> np.ndarray:
        """Range index (0 = none) for ``correct`` right answers of ``size`` (vectorised)."""
        return self.ranges.index(np.asarray(validation_accuracy) - np.asarray(correct) / size)

    def label(self, index: int) -> str:
        return self.ranges.labels[int(index)]


def meter_plan(edges, tolerance: float, reliability: float, adaptivity: str = "full",
               steps: int = 32) -> MeterPlan:
    """Plan the meter: test examples needed for ``steps`` answers (see the module docstring)."""
    r = ranges(edges, tolerance)
    if isinstance(reliability, bool) or not isinstance(reliability, (int, float)) \
            or not 0 < reliability < 1:
        raise MeterError("reliability", f"reliability must be in (0, 1), got {reliability!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise MeterError("steps", f"steps must be an integer in [1, {MAX_STEPS}], got {steps!r}")
    count = answer_count(adaptivity, steps, r.m)
    side = _delta_side(1.0 - reliability, count)
    if side < 1e-300:
        raise MeterError("steps", f"{steps} answers under adaptivity {adaptivity} split delta "
                                  f"over {count:.3g} transcripts, under 1e-300 each; use fewer "
                                  "steps or adaptivity none")
    return MeterPlan(r, float(reliability), adaptivity, steps, count, side,
                     estimate_size(r.tolerance, side))


def validation_size(looks: int, tolerance: float, reliability: float, *,
                    adaptive: bool = True, method: str = "exact") -> int:
    """Examples a validation set needs so that ``looks`` evaluations all stay within
    ``tolerance`` of the true accuracies with probability ``reliability`` (module docstring).

    ``adaptive``: each look's model may depend on the earlier looks (one bit each: 2^looks - 1
    nodes); else looks fixed in advance (``looks``). ``method``: ``exact`` (binomial, every p;
    where its tails would fall below ~1e-260 or the size past 10^7, Hoeffding's closed form, which
    is within a fraction of a percent of it there) or ``hoeffding``.
    """
    if isinstance(looks, bool) or not isinstance(looks, int) or looks < 1:
        raise MeterError("looks", f"looks must be an integer >= 1, got {looks!r}")
    count = (2 ** looks - 1) if adaptive else looks
    log_inv = _log_inv_side(1.0 - reliability, count)
    hoeffding = hoeffding_size(tolerance, log_inv_side=log_inv)
    if method == "hoeffding":
        return hoeffding
    if method != "exact":
        raise MeterError("method", f"method must be exact or hoeffding, got {method!r}")
    if log_inv > 600 or hoeffding > EXACT_LIMIT:  # tails below ~1e-260: Hoeffding's closed form
        return hoeffding
    return estimate_size(float(tolerance), math.exp(-log_inv))


def naive_size(tolerance: float, reliability: float, queries: int) -> int:
    """The naive alternative: Hoeffding, two-sided, union bound over ``queries``."""
    return hoeffding_size(tolerance, log_inv_side=_log_inv_side(1.0 - reliability, queries))
