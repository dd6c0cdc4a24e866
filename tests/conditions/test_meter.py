"""ease.ml/meter's statistics (conditions/meter.py): ranges, counts, sizes, and Monte Carlo.

The Monte Carlo tests run at a large delta so that errors are observable, compare the measured
error with the exact binomial probability of an unacceptable answer, and include a simulated
team that reuses one test set and picks its next model from the meter's earlier answers. The
factor-of-two tests run with half the planned test set (or the size planned for 4 delta) and
require the error to exceed delta: a bound wrong by a factor of two would pass the others.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conditions.bounds import binomial_cdf, binomial_design, binomial_sf
from conditions.meter import (MeterError, answer_count, deviation_tail, deviation_tail_lower,
                              estimate_size, hoeffding_size, meter_plan, naive_size, ranges,
                              validation_size)

EDGES = (0.01, 0.025, 0.05)


# --- ranges, counts --------------------------------------------------------------------------

def test_ranges_labels_and_index():
    r = ranges(EDGES, 0.005)
    assert r.labels == ("none", "below 1%", "1-2.5%", "2.5-5%", "5% or more")
    assert r.m == 5
    assert list(r.index([-0.001, 0.0, 0.009, 0.01, 0.03, 0.05, 0.2])) == [0, 1, 1, 2, 3, 4, 4]
    # near an edge either neighbour is acceptable; two ranges away is not
    assert r.acceptable(1, 0.014) and r.acceptable(2, 0.014)
    assert not r.acceptable(1, 0.0151) and not r.acceptable(3, 0.0149)
    assert r.acceptable(0, 0.005) and not r.acceptable(0, 0.0051)


@pytest.mark.parametrize("edges,tol,key,words", [
    ([0.02, 0.01], 0.001, "edges", "strictly increasing"),
    ([0.01, 0.01], 0.001, "edges", "strictly increasing"),
    ([0.0, 0.01], 0.001, "edges", "in (0, 1)"),
    ([], 0.001, "edges", "non-empty"),
    ("0.01", 0.001, "edges", "non-empty list"),
    ([0.01, 0.025], 0.006, "tolerance", "wider than half the narrowest range"),
    ([0.01], 0.0, "tolerance", "> 0"),
])
def test_bad_ranges_name_the_key(edges, tol, key, words):
    with pytest.raises(MeterError) as exc:
        ranges(edges, tol)
    assert exc.value.key == key and words in str(exc.value)


def test_answer_count_is_the_m_ary_transcript_tree():
    assert answer_count("none", 32, 5) == 32
    assert answer_count("full", 3, 5) == 1 + 5 + 25
    assert answer_count("full", 4, 2) == 2 ** 4 - 1  # the gate's pass/fail tree
    assert answer_count("full", 128, 5) == (5 ** 128 - 1) // 4


# --- the deviation bound and the sizes -------------------------------------------------------

def test_deviation_tail_is_the_supremum_over_p():
    n, eps = 300, 0.03
    grid = np.linspace(1e-6, 1 - eps - 1e-6, 20001)
    k = np.floor(n * (grid + eps))  # X > n (p + eps)  iff  X >= k + 1
    brute = np.max(binomial_sf(k, np.full(len(grid), n), grid))
    sup = deviation_tail(n, eps)
    assert brute <= sup + 1e-12 and sup - brute < 0.01 * sup
    assert deviation_tail_lower(n, eps) == pytest.approx(sup, rel=1e-9)  # symmetry
    assert deviation_tail(n, eps, target=sup / 2) == pytest.approx(sup, rel=1e-9)
    assert deviation_tail(n, eps, target=sup * 10) <= sup * 10


@pytest.mark.parametrize("eps,side", [(0.03, 0.05), (0.02, 0.001), (0.01, 1e-6)])
def test_estimate_size_is_the_smallest_verified(eps, side):
    n = estimate_size(eps, side)
    assert deviation_tail(n, eps) <= side < deviation_tail(n - 1, eps)
    floor = binomial_design(0.5 - eps, 0.5 + eps, side).sample_size
    assert floor * 0.99 <= n <= floor * 1.05 <= hoeffding_size(eps, side)


def test_plan_sizes_grow_with_the_count():
    none = meter_plan(EDGES, 0.005, 0.999, "none", 8)
    full = meter_plan(EDGES, 0.005, 0.999, "full", 8)
    assert none.answers == 8 and full.answers == answer_count("full", 8, 5)
    assert none.delta_per_answer == pytest.approx(0.001 / 8)
    assert full.delta_per_answer == pytest.approx(0.001 / full.answers)
    assert none.test_examples < full.test_examples
    assert none.test_examples < naive_size(0.005, 0.999, 8)  # exact beats Hoeffding
    with pytest.raises(MeterError, match="adaptivity"):
        meter_plan(EDGES, 0.005, 0.999, "firstChange", 8)


def test_validation_size_counts_adaptive_looks():
    fixed = validation_size(10, 0.01, 0.99, adaptive=False)
    adaptive = validation_size(10, 0.01, 0.99, adaptive=True)
    assert fixed < adaptive
    assert fixed == estimate_size(0.01, 0.01 / 20)
    assert adaptive == estimate_size(0.01, 0.01 / (2 * 1023))
    assert validation_size(10, 0.01, 0.99, adaptive=False, method="hoeffding") == \
        math.ceil(math.log(20 / 0.01) / (2 * 0.01 ** 2))
    # 1,000 adaptive looks: delta / 2^1000 underflows; the closed form still answers
    assert validation_size(1000, 0.01, 0.99) == validation_size(1000, 0.01, 0.99, method="hoeffding")


# --- exact error of one answer ---------------------------------------------------------------

def _exact_error(plan, v: float, a: float, n: int) -> float:
    """P(the answer is unacceptable) for true accuracy a and validation accuracy v, exactly."""
    x = np.arange(n + 1)
    pmf = np.diff(np.concatenate([[0.0], binomial_cdf(x, np.full(n + 1, n), a)]))
    bad = ~plan.ranges.acceptable(plan.answer(v, x, n), v - a)
    return float(pmf[bad].sum())


def _worst_cases(plan, n: int):
    """(v, a) at every boundary's two sides, just outside the tolerance, a near 1/2, where each
    one-sided error is largest; and a case between two edges 2 eps apart (both sides at once)."""
    eps, tiny = plan.ranges.tolerance, 1e-9
    cases = []
    for b in plan.ranges.boundaries:
        for a in np.linspace(0.47, 0.53, 13):
            cases.append((a + b + eps + tiny, a))  # O just above b + eps: "below b" is wrong
            cases.append((a + b - eps - tiny, a))  # O just below b - eps: "b or more" is wrong
    return cases


def test_one_answer_errs_at_most_delta_prime_at_every_edge():
    plan = meter_plan((0.01, 0.02, 0.05), 0.005, 0.9, "none", 1)  # delta' = 0.1
    n = plan.test_examples
    errors = [_exact_error(plan, v, a, n) for v, a in _worst_cases(plan, n)]
    assert max(errors) <= plan.delta_per_answer
    assert max(errors) >= 0.3 * plan.delta_per_answer  # the bound is not loose by much
    mid = _exact_error(plan, 0.5 + 0.035, 0.5, n)  # mid-range of 2.5-5%: practically never wrong
    assert mid < 1e-6


def _draw_answers(plan, v, a, n, trials, rng):
    x = rng.binomial(n, a, size=trials)
    return ~plan.ranges.acceptable(plan.answer(v, x, n), v - a)


def test_monte_carlo_matches_the_exact_error_at_edges_and_mid_range():
    rng = np.random.default_rng(9)
    plan = meter_plan((0.01, 0.02, 0.05), 0.005, 0.9, "none", 1)
    n, trials = plan.test_examples, 200_000
    cases = _worst_cases(plan, n)
    errors = [_exact_error(plan, v, a, n) for v, a in cases]
    worst = cases[int(np.argmax(errors))]
    for (v, a), exact in ((worst, max(errors)), ((0.5 + 0.035, 0.5), 0.0),
                          ((0.7 + 0.015, 0.7), None)):
        exact = _exact_error(plan, v, a, n) if exact is None else exact
        measured = _draw_answers(plan, v, a, n, trials, rng).mean()
        se = math.sqrt(max(exact, 1e-6) * (1 - exact) / trials)
        assert abs(measured - exact) <= 4 * se + 1e-5
        assert measured <= plan.delta_per_answer + 4 * se


def test_a_bound_wrong_by_a_factor_of_two_is_caught():
    rng = np.random.default_rng(10)
    plan = meter_plan((0.01, 0.02, 0.05), 0.005, 0.9, "none", 1)
    loose = meter_plan((0.01, 0.02, 0.05), 0.005, 0.6, "none", 1)  # planned for 4 delta
    for n in (plan.test_examples // 2, loose.test_examples):
        cases = _worst_cases(plan, n)
        v, a = cases[int(np.argmax([_exact_error(plan, v, a, n) for v, a in cases]))]
        measured = _draw_answers(plan, v, a, n, 100_000, rng).mean()
        assert measured > plan.delta_per_answer


# --- a team reusing one test set, adapting to the answers --------------------------------------

GRID = np.round(np.arange(0.30, 0.801, 0.025), 3)


def _shared_test_sets(n: int, lives: int, rng) -> np.ndarray:
    """Correct counts of nested models on one test set per life: model g gets example i right
    iff U_i < GRID[g] (one uniform per example), so every model reuses the same examples."""
    cells = np.diff(np.concatenate([[0.0], GRID, [1.0]]))
    return np.cumsum(rng.multinomial(n, cells, size=lives), axis=1)[:, :len(GRID)]


def _life_errors(plan, n: int, lives: int, rng, adaptive: bool) -> float:
    counts = _shared_test_sets(n, lives, rng)
    eps = plan.ranges.tolerance
    bounds = np.array(plan.ranges.boundaries)
    rows = np.arange(lives)
    g = np.full(lives, len(GRID) // 2)
    answer = np.zeros(lives, dtype=int)
    wrong = np.zeros(lives, dtype=bool)
    for step in range(plan.steps):
        if adaptive:  # next model and validation accuracy chosen from the answers so far
            g = (g * 3 + answer + step) % len(GRID)
            b = bounds[(answer + step) % len(bounds)]
            side = np.where(answer % 2 == 0, 1.0, -1.0)
        else:
            g = np.full(lives, (step * 5) % len(GRID))
            b = bounds[step % len(bounds)]
            side = 1.0 if step % 2 == 0 else -1.0
        a = GRID[g]
        v = a + b + side * (eps + 1e-9)  # every answer sits just outside an edge's tolerance
        answer = plan.answer(v, counts[rows, g], n)
        wrong |= ~plan.ranges.acceptable(answer, v - a)
    return float(wrong.mean())


def test_adaptive_team_life_error_within_delta():
    rng = np.random.default_rng(11)
    plan = meter_plan((0.01, 0.02), 0.005, 0.7, "full", 3)
    assert plan.answers == 1 + 4 + 16
    measured = _life_errors(plan, plan.test_examples, 4000, rng, adaptive=True)
    assert measured <= plan.delta + 4 * math.sqrt(plan.delta / 4000)


def test_life_error_with_half_the_test_set_exceeds_delta():
    rng = np.random.default_rng(12)
    plan = meter_plan((0.01, 0.02), 0.005, 0.8, "none", 4)
    ok = _life_errors(plan, plan.test_examples, 4000, rng, adaptive=False)
    assert ok <= plan.delta
    half = _life_errors(plan, plan.test_examples // 2, 4000, rng, adaptive=False)
    assert half > plan.delta


def test_usable_size_uses_a_larger_test_set_only_where_it_holds():
    plan = meter_plan(EDGES, 0.005, 0.99, "none", 2)
    n = plan.test_examples
    assert plan.usable_size(n, 0.8) == n
    bigger = plan.usable_size(2 * n, 0.8)
    assert bigger == 2 * n
    with pytest.raises(MeterError):
        plan.usable_size(n - 1, 0.8)
