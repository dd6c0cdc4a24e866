"""Fixed-size tests of ``E[Z] <= a`` against ``E[Z] >= b`` (b > a), and their sample sizes.

Every clause, once compiled (:mod:`conditions.compiler`), asks one question of one test set:
pass only if the mean of Z is large. The contract (DESIGN.md §2) needs, for one query with error
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
a monotone likelihood ratio) no non-randomised test on N examples does better.

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

def binomial_sf(k_minus_1, n, p):
    """P(X >= k) for X ~ Binomial(n, p), given k - 1 (as ``scipy.stats.binom.sf(k - 1, n, p)``)."""
    k_minus_1 = np.asarray(k_minus_1)
    inside = _special().bdtrc(np.clip(k_minus_1, 0, np.maximum(n - 1, 0)), n, p)
    return np.where(k_minus_1 < 0, 1.0, np.where(k_minus_1 >= n, 0.0, inside))


def binomial_cdf(k, n, p):
    """P(X <= k) for X ~ Binomial(n, p) (as ``scipy.stats.binom.cdf(k, n, p)``)."""
    k = np.asarray(k)
    inside = _special().bdtr(np.clip(k, 0, n), n, p)
    return np.where(k < 0, 0.0, np.where(k >= n, 1.0, inside))


def _smallest_safe_cutoff(n: np.ndarray, a: float, delta: float) -> np.ndarray:
    """Per n, the smallest k with ``P(X >= k) = sf(k - 1; n, a) <= delta`` (bisection on k,
    vectorised over n; sf is decreasing in k and sf(n; n, a) = 0, so k = n + 1 always works)."""
    lo = np.zeros_like(n)
    hi = n + 1
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        ok = binomial_sf(mid - 1, n, a) <= delta
        hi = np.where(ok & (lo < hi), mid, hi)
        lo = np.where(~ok & (lo < hi), mid + 1, lo)
    return lo


def _cutoffs(n: np.ndarray, a: float, b: float, delta: float) -> np.ndarray:
    """Vectorised :func:`binomial_cutoff` for n >= 1; -1 where no test on n examples works."""
    k = _smallest_safe_cutoff(n, a, delta)
    return np.where(binomial_cdf(k - 1, n, b) <= delta, k, -1)


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
    """Smallest n (and its cutoff) of an exact binomial test; see the module docstring."""
    if a < 0 or b > 1:
        return Design(0, float(binomial_cutoff(0, a, b, delta)))
    z = -_special().ndtri(delta)  # the normal quantile: only seeds the exact search
    guess = (z * (math.sqrt(a * (1 - a)) + math.sqrt(b * (1 - b))) / (b - a)) ** 2
    lo, hi = 0, max(2, int(guess))
    while binomial_cutoff(hi, a, b, delta) is None:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # feasibility is monotone up to the lattice's ripples; see below
        mid = (lo + hi) // 2
        if binomial_cutoff(mid, a, b, delta) is None:
            lo = mid
        else:
            hi = mid
    # The lattice makes feasibility ripple near the boundary: look a little below for a smaller n.
    below = np.arange(max(1, int(hi * 0.98)), hi)
    feasible = below[_cutoffs(below, a, b, delta) >= 0] if len(below) else below
    best = int(feasible[0]) if len(feasible) else hi
    return Design(best, float(binomial_cutoff(best, a, b, delta)))


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
        """Smallest N and its cutoff for ``E <= a`` vs ``E >= b`` at error ``delta`` per side."""
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
