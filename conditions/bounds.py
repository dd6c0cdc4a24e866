"""Fixed-size tests of ``E[Z] <= a`` against ``E[Z] >= b`` (b > a), and their sample sizes.

Every clause, once compiled (:mod:`conditions.compiler`), asks one question of one test set:
pass only if the mean of Z is large. The contract (docs/design.md §2) needs, for one query with error
budget delta::

    P(pass | E[Z] <= a) <= delta      and      P(fail | E[Z] >= b) <= delta

where (a, b) is the indifference zone of width 2 eps. Each design below returns the smallest
sample size N it can justify and the cutoff: pass iff the statistic is at least the cutoff.

Exact binomial (one-variable clauses)
-------------------------------------
If Z is a single Bernoulli variable (after rescaling and complementing), the count X of ones in
N examples is Binomial(N, p). The test "pass iff X >= k" has false-pass probability
``P(X >= k | p)``, increasing in p, so its supremum over p <= a is ``sf(k - 1; N, a)``; likewise
the false-fail probability ``P(X < k | p)`` is largest at p = b. We take the smallest k with
``sf(k - 1; N, a) <= delta`` and check ``cdf(k - 1; N, b) <= delta``; the smallest N for which this
holds is the exact fixed-size floor for this problem: by the Karlin-Rubin theorem (the binomial has
a monotone likelihood ratio) no non-randomised test on N examples does better. Whether such a k
exists is not monotone in N; :func:`binomial_design` explains how the first feasible N is found
without scanning from 1, and how sizes past :data:`EXACT_LIMIT` are planned in closed form.

Bennett with a variance bound (several variables)
-------------------------------------------------
For i.i.d. Z_i in [m, M] with mean mu and variance at most s2, Bennett's inequality gives, for
any deviation t > 0, ``P(mean - mu >= t) <= exp(-N g)`` with
``g(s2, b, t) = s2 / b^2 * h(b t / s2)``, ``h(u) = (1 + u) log(1 + u) - u`` and ``b >= Z_i - mu``
(= M - mu); the lower tail is the mirror image with ``b = mu - m``. The exponent g is decreasing in
s2 and b and increasing in t, so a bound that holds on every cell of a partition of the null
region ``[m, a]`` (take the largest variance on the cell, the largest b, the smallest deviation)
holds on the whole region; we use a fine partition, denser near a, where the worst case lives.
The variance bound is the smaller of Bhatia-Davis ``(M - mu)(mu - m)`` and, when the formula bounds
the disagreement rate d <= p and Z vanishes where the models agree, ``max Z^2 * p - mu^2``.
Hoeffding's exponent ``2 t^2 / (M - m)^2`` also holds, so each cell uses the larger of the two.
The cutoff c in (a, b) is chosen where the two tails' exponents meet, which minimises N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def _special():
    """scipy.special, imported on first use: Bennett-only formulas (``n - o``) never need it,
    and a check pays its import (~0.3 s) before any model runs. It, not scipy.stats/optimize,
    because stats.binom wraps these very functions at three times the import cost."""
    from scipy import special

    return special

_CELLS = 400


@dataclass(frozen=True)
class Design:
    """A fixed-size test: ``sample_size`` examples, pass iff statistic >= ``cutoff``."""

    sample_size: int
    cutoff: float  # a count (binomial) or a mean (Bennett/Hoeffding)


# --- exact binomial ---------------------------------------------------------------------------

# Above this many examples the binomial tails are replaced by a rigorous closed-form upper bound
# (see :func:`_upper_tail_bound`): cephes' incomplete beta loses accuracy past ~1e8 trials (NaN
# past ~1e10) and boost's costs ~0.5 ms an evaluation there. The bound is within a few percent of
# the tail, so a plan that large is at most ~0.1% above the floor; no test set is that large.
EXACT_LIMIT = 10**7


def _upper_tail_bound(k, n, p):
    """A rigorous upper bound on P(X >= k), X ~ Binomial(n, p), for integers 0 <= k <= n.

    The terms' ratio ``P(X = j + 1) / P(X = j) = (n - j) p / ((j + 1) q)`` decreases in j, so the
    tail is at most the geometric series ``P(X = k) / (1 - r_k)`` when ``r_k < 1`` (else we use 1).
    ``P(X = k)`` is bounded with Robbins' Stirling bounds ``1/(12m+1) < log m! - stirling(m) <
    1/(12m)``: ``log P(X = k) <= -n kl(k/n, p) + 0.5 log(n / (2 pi k (n - k))) + 1/(12n)
    - 1/(12k+1) - 1/(12(n-k)+1)``, with kl computed through log1p, plus 1e-6 for rounding.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    k, n = np.broadcast_arrays(k, n)
    q = 1.0 - p
    out = np.ones(k.shape)
    out[k > n] = 0.0
    if p <= 0.0:
        out[(k >= 1)] = 0.0
        return out
    if q <= 0.0:
        return np.where(k > n, 0.0, 1.0)
    inner = (k >= 1) & (k <= n - 1)
    kk, nn = k[inner], n[inner]
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = (kk - nn * p) / nn  # x - p
        x = kk / nn
        kl = x * np.log1p(dev / p) + (1 - x) * np.log1p(-dev / q)
        log_point = (-nn * kl + 0.5 * np.log(nn / (2 * np.pi * kk * (nn - kk))) + 1 / (12 * nn)
                     - 1 / (12 * kk + 1) - 1 / (12 * (nn - kk) + 1) + 1e-6)
        r = (nn - kk) * p / ((kk + 1) * q)
        bound = np.where(r < 1, np.exp(log_point) / (1 - r), 1.0)
    out[inner] = np.minimum(bound, 1.0)
    top = k == n
    out[top & (k >= 1)] = np.exp(n[top & (k >= 1)] * math.log(p))
    return out


def binomial_sf(k_minus_1, n, p):
    """P(X >= k) for X ~ Binomial(n, p), given k - 1 (as ``scipy.stats.binom.sf(k - 1, n, p)``);
    past :data:`EXACT_LIMIT` trials, a rigorous upper bound on it."""
    k_minus_1, n = np.broadcast_arrays(np.asarray(k_minus_1), np.asarray(n))
    large = n > EXACT_LIMIT
    if large.all():
        inside = _upper_tail_bound(k_minus_1 + 1, n, p)
    else:
        inside = _special().bdtrc(np.clip(k_minus_1, 0, np.maximum(n - 1, 0)), np.minimum(n, EXACT_LIMIT), p)
        if large.any():
            inside = np.where(large, _upper_tail_bound(k_minus_1 + 1, n, p), inside)
    return np.where(k_minus_1 < 0, 1.0, np.where(k_minus_1 >= n, 0.0, inside))


def binomial_cdf(k, n, p):
    """P(X <= k) for X ~ Binomial(n, p) (as ``scipy.stats.binom.cdf(k, n, p)``); past
    :data:`EXACT_LIMIT` trials, a rigorous upper bound on it (P(n - X >= n - k), n - X ~ Bin(n, q))."""
    k, n = np.broadcast_arrays(np.asarray(k), np.asarray(n))
    large = n > EXACT_LIMIT
    if large.all():
        inside = _upper_tail_bound(n - k, n, 1.0 - p)
    else:
        inside = _special().bdtr(np.clip(k, 0, n), np.minimum(n, EXACT_LIMIT), p)
        if large.any():
            inside = np.where(large, _upper_tail_bound(n - k, n, 1.0 - p), inside)
    return np.where(k < 0, 0.0, np.where(k >= n, 1.0, inside))


def _first_true(pred, lo: np.ndarray, hi: np.ndarray, guess: np.ndarray,
                width: np.ndarray | None = None) -> np.ndarray:
    """Per element, the smallest integer k in [lo, hi] with ``pred(k, index)`` true, where pred is
    monotone (false ... false true ... true) and ``pred(hi)`` holds. Starts from a bracket of
    +/- ``width`` (default 8) around ``guess``, doubles it where it does not bracket, then bisects: a handful of
    evaluations when the guess is good, O(log n) when it is not."""
    lo, hi = lo.astype(np.int64), hi.astype(np.int64)
    guess = np.clip(guess.astype(np.int64), lo, hi)
    idx = np.arange(len(lo))
    width = np.full(len(lo), 8, dtype=np.int64) if width is None else width.astype(np.int64)
    left = np.maximum(guess - width, lo)   # want pred(left) false (or left == lo)
    right = np.minimum(guess + width, hi)  # want pred(right) true
    while True:
        bad_r = ~pred(right, idx)
        bad_l = (left > lo) & pred(left, idx)
        if not (bad_r.any() or bad_l.any()):
            break
        width = np.where(bad_r | bad_l, width * 4, width)
        right = np.where(bad_r, np.minimum(guess + width, hi), right)
        left = np.where(bad_l, np.maximum(guess - width, lo), left)
    # invariant: pred(right) true; pred(left) false unless left == lo (then test it)
    at_lo = (left == lo) & pred(left, idx)
    right = np.where(at_lo, left, right)
    while np.any(right - left > 1):
        active = right - left > 1
        mid = (left + right) // 2
        ok = pred(mid, idx)
        right = np.where(active & ok, mid, right)
        left = np.where(active & ~ok, mid, left)
    return right


def _quantile_guess(n: np.ndarray, p: float, z: float) -> np.ndarray:
    """Cornish-Fisher guess of the binomial's upper z-quantile (only seeds the exact search)."""
    sd = np.sqrt(n * p * (1 - p))
    return np.floor(n * p + z * sd + (z * z - 1) * (1 - 2 * p) / 6 + 1)


def _guess_width(n: np.ndarray, p: float) -> np.ndarray:
    """How far the guess may be off: a few counts for exact tails; past EXACT_LIMIT the bound's
    quantile sits a few hundredths of a standard deviation further out."""
    return np.where(n > EXACT_LIMIT, 8 + 0.03 * np.sqrt(n * p * (1 - p)), 8)


def _safe_cutoff(n: np.ndarray, a: float, delta: float) -> np.ndarray:
    """Per n, the smallest k with ``P(X >= k | a) = sf(k - 1; n, a) <= delta`` (sf decreases in k
    and k = n + 1 always works)."""
    z = float(-_special().ndtri(min(delta, 0.5)))
    return _first_true(lambda k, i: binomial_sf(k - 1, n[i], a) <= delta,
                       np.zeros_like(n), n + 1, _quantile_guess(n, a, z), _guess_width(n, a))


def _largest_powerful_cutoff(n: np.ndarray, b: float, delta: float) -> np.ndarray:
    """Per n, the largest k with ``P(X < k | b) = cdf(k - 1; n, b) <= delta`` (k = 0 always works)."""
    z = float(-_special().ndtri(min(delta, 0.5)))
    first_bad = _first_true(lambda k, i: binomial_cdf(k - 1, n[i], b) > delta,
                            np.zeros_like(n), n + 2, _quantile_guess(n, b, -z), _guess_width(n, b))
    return first_bad - 1


def _gaps(n: np.ndarray, a: float, b: float, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(k_a, k_b - k_a)`` per n: a test on n examples exists iff the gap is >= 0, and then
    "pass iff X >= k_a" is the one with the smallest cutoff."""
    n = np.asarray(n, dtype=np.int64)
    k_a = _safe_cutoff(n, a, delta)
    return k_a, _largest_powerful_cutoff(n, b, delta) - k_a


def _cutoffs(n: np.ndarray, a: float, b: float, delta: float) -> np.ndarray:
    """Vectorised :func:`binomial_cutoff` for n >= 1; -1 where no test on n examples works."""
    k, gap = _gaps(n, a, b, delta)
    return np.where(gap >= 0, k, -1)


def binomial_cutoff(n: int, a: float, b: float, delta: float) -> int | None:
    """The cutoff k of an exact test on n examples, or None when no test on n examples works."""
    if a < 0:
        return 0  # E <= a is impossible: always passing never errs on that side
    if b > 1:
        return n + 1  # E >= b is impossible: always failing never errs on that side
    if n <= 0:
        return None
    k = int(_cutoffs(np.array([n]), a, b, delta)[0])
    return None if k < 0 else k


def binomial_design(a: float, b: float, delta: float) -> Design:
    """The smallest n (and its cutoff) for which some test "pass iff X >= k" on Binomial(n, mu)
    errs with probability at most delta at mu = a and at mu = b: the exact fixed-size floor.

    Feasibility is *not* monotone in n. With k_a(n) the smallest safe cutoff and k_b(n) the
    largest powerful one, a test exists iff ``g(n) = k_b(n) - k_a(n) >= 0``. Both are
    nondecreasing step functions that rise by 0 or 1 per example, so g ripples by +/- 1 around a
    smooth, increasing G(n) (the same difference of the real-valued quantiles, roughly
    ``(b - a) n - z (sigma_a + sigma_b) sqrt(n)``), with ``G - 2 <= g <= G``. Hence:

    * g(n) <= -3 means G(n) < 0: no test on n examples, nor on any smaller n;
    * g(n) >= 0 means a test on n examples exists.

    The search: a normal approximation seeds n; it is moved up until g >= 0 and down until
    g <= -3; bisection on "g <= -3" finds the last n certified infeasible; then every n above it
    is checked, in vectorised blocks, up to the first feasible one (the ripple zone is about
    8 / (b - a) examples wide). Each g(n) costs a handful of tail evaluations: the cutoffs are
    searched from a Cornish-Fisher guess. ``tests/test_planner.py`` checks the result against a
    brute-force scan over n.

    Past :data:`EXACT_LIMIT` examples the tails are the closed-form bounds of
    :func:`_upper_tail_bound`; the result is then a verified-feasible n found by bisection
    (within half a percent of the floor in the tests), which keeps every plan well under a second.
    """
    if a < 0 or b > 1:
        return Design(0, float(binomial_cutoff(0, a, b, delta)))

    def gap(n: int) -> int:
        return int(_gaps(np.array([n]), a, b, delta)[1][0])

    z = float(-_special().ndtri(min(delta, 0.5)))
    spread = math.sqrt(a * (1 - a)) + math.sqrt(b * (1 - b))
    guess = max(1, math.ceil((z * spread / (b - a)) ** 2))
    hi = guess
    while gap(hi) < 0:
        hi = math.ceil(hi * 1.25) + 1
    lo = min(guess, hi - 1)
    while lo >= 1 and gap(lo) > -3:
        lo = math.floor(lo * 0.8) - 1
    lo = max(lo, 0)  # gap(lo) <= -3 (or lo = 0): nothing at or below lo works
    if hi > EXACT_LIMIT:
        # tails are bounds here: bisect on feasibility (to a relative 1e-7, immaterial at this
        # size) and return a verified-feasible size
        while hi - lo > max(1, hi * 1e-7):
            mid = (lo + hi) // 2
            if gap(mid) >= 0:
                hi = mid
            else:
                lo = mid
        return Design(hi, float(binomial_cutoff(hi, a, b, delta)))
    top = hi
    while hi - lo > 1:  # the last n with g(n) <= -3
        mid = (lo + hi) // 2
        if gap(mid) <= -3:
            lo = mid
        else:
            hi = mid
    block = max(64, math.ceil(8 / (b - a)))
    start = lo + 1
    while start <= top:
        sizes = np.arange(start, min(start + block, top + 1))
        feasible = sizes[_cutoffs(sizes, a, b, delta) >= 0]
        if len(feasible):
            best = int(feasible[0])
            return Design(best, float(binomial_cutoff(best, a, b, delta)))
        start += block
    raise AssertionError("unreachable: the top of the bracket is feasible")  # pragma: no cover


# --- Bennett / Hoeffding ----------------------------------------------------------------------

def _h(u: np.ndarray) -> np.ndarray:
    return (1.0 + u) * np.log1p(u) - u


def _bennett_exponent(var: np.ndarray, b: np.ndarray, dev: np.ndarray) -> np.ndarray:
    var = np.maximum(var, 1e-15)  # a larger variance only weakens the bound: still valid
    b = np.maximum(b, 1e-15)
    return var / b**2 * _h(b * dev / var)


def _concave_max(f, lo: np.ndarray, hi: np.ndarray, vertex: float) -> np.ndarray:
    inside = np.clip(vertex, lo, hi)
    return np.maximum(np.maximum(f(lo), f(hi)), f(inside))


@dataclass(frozen=True)
class MeanTest:
    """Tail bounds for the mean of i.i.d. Z_i in [low, high] with an optional second-moment cap.

    ``second_moment_cap`` (if not None) bounds E[Z^2]; it comes from d <= p for statistics that
    vanish wherever the models agree.
    """

    low: float
    high: float
    second_moment_cap: float | None = None

    def variance_bound(self, mu: np.ndarray) -> np.ndarray:
        v = (self.high - mu) * (mu - self.low)
        if self.second_moment_cap is not None:
            v = np.minimum(v, self.second_moment_cap - mu * mu)
        return np.maximum(v, 0.0)

    def _cell_variance(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        bd = _concave_max(lambda m: (self.high - m) * (m - self.low), lo, hi, (self.high + self.low) / 2)
        if self.second_moment_cap is None:
            return bd
        cap = _concave_max(lambda m: self.second_moment_cap - m * m, lo, hi, 0.0)
        return np.maximum(np.minimum(bd, cap), 0.0)

    def _grid(self, start: float, end: float) -> np.ndarray:
        """Cell edges from ``start`` to ``end``, dense near ``start`` (where the worst case is)."""
        t = np.linspace(0.0, 1.0, _CELLS + 1) ** 2
        return start + (end - start) * t

    def upper_exponent(self, a: float, c: float) -> float:
        """An exponent g with P(mean >= c) <= exp(-N g) for every mean mu <= a."""
        if a < self.low:
            return math.inf
        edges = self._grid(a, self.low)  # descending from a
        lo, hi = edges[1:], edges[:-1]
        var = self._cell_variance(lo, hi)
        b = self.high - lo
        dev = c - hi
        bennett = _bennett_exponent(var, b, dev)
        hoeffding = 2 * dev**2 / (self.high - self.low) ** 2
        return float(np.min(np.maximum(bennett, hoeffding)))

    def lower_exponent(self, b_edge: float, c: float) -> float:
        """An exponent g with P(mean < c) <= exp(-N g) for every mean mu >= b_edge."""
        if b_edge > self.high:
            return math.inf
        edges = self._grid(b_edge, self.high)  # ascending from b_edge
        lo, hi = edges[:-1], edges[1:]
        var = self._cell_variance(lo, hi)
        b = hi - self.low
        dev = lo - c
        bennett = _bennett_exponent(var, b, dev)
        hoeffding = 2 * dev**2 / (self.high - self.low) ** 2
        return float(np.min(np.maximum(bennett, hoeffding)))

    def design(self, a: float, b: float, delta: float) -> Design:
        """Smallest N and its cutoff for ``E <= a`` vs ``E >= b`` at error ``delta`` per side.

        A pure function of the test and its arguments, remembered: planning a check and deciding
        it ask for the same design (each costs ~4 ms of bisection over the bound)."""
        return _remembered_design(self, a, b, delta)

    def _bisect_design(self, a: float, b: float, delta: float) -> Design:
        if a < self.low:
            return Design(0, -math.inf)
        if b > self.high:
            return Design(0, math.inf)

        def gap(c: float) -> float:
            return self.upper_exponent(a, c) - self.lower_exponent(b, c)

        # gap is increasing in c (the upper tail's exponent grows, the lower one's shrinks), so
        # bisection finds where they meet; scipy.optimize would cost more to import than to run.
        span = b - a
        lo_c, hi_c = a + span * 1e-9, b - span * 1e-9
        if gap(lo_c) < 0 < gap(hi_c):
            while hi_c - lo_c > span * 1e-9:
                mid = (lo_c + hi_c) / 2
                lo_c, hi_c = (mid, hi_c) if gap(mid) < 0 else (lo_c, mid)
            c = (lo_c + hi_c) / 2
        else:
            c = (a + b) / 2
        g = min(self.upper_exponent(a, c), self.lower_exponent(b, c))
        return Design(max(1, math.ceil(math.log(1.0 / delta) / g)), c)

    def errs_at(self, n: int, a: float, b: float, c: float) -> float:
        """The larger of the two bounded error probabilities of "pass iff mean >= c" on n examples."""
        g = min(self.upper_exponent(a, c), self.lower_exponent(b, c))
        return math.exp(-n * g)


@lru_cache(maxsize=1024)
def _remembered_design(test: MeanTest, a: float, b: float, delta: float) -> Design:
    return test._bisect_design(a, b, delta)
