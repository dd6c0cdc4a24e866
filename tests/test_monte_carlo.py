"""Monte Carlo checks of every method at the edges of the indifference zone.

Each case simulates many test sets with the planned size at a loose reliability (so it runs in
seconds) and asserts the observed error rate stays within delta, with a binomial slack of four
standard errors for the simulation's own noise. Seeds are fixed, so a failure is reproducible.
"""
import math

import numpy as np
import pytest

from conditions import plan

TRIALS = 20_000
RNG_SEED = 20261123


def _slack(delta: float) -> float:
    return 4 * math.sqrt(delta * (1 - delta) / TRIALS)


# Outcome order: (n, o, d) in (1,1,0), (1,0,1), (0,1,1), (0,0,0), (0,0,1)
OUTCOMES = np.array([(1, 1, 0), (1, 0, 1), (0, 1, 1), (0, 0, 0), (0, 0, 1)])


def _probabilities(new_minus_old: float, disagree: float, both_wrong_differ: float = 0.0) -> np.ndarray:
    """Outcome law with E[n - o] and E[d] as given (the rest split between agreeing outcomes)."""
    plus = (disagree - both_wrong_differ + new_minus_old) / 2
    minus = (disagree - both_wrong_differ - new_minus_old) / 2
    rest = 1 - disagree
    p = np.array([rest * 0.7, plus, minus, rest * 0.3, both_wrong_differ])
    assert (p >= -1e-12).all() and abs(p.sum() - 1) < 1e-12
    return np.clip(p, 0, 1)


def _formula_pass_rate(p, probabilities, rng) -> float:
    """Simulate TRIALS test sets of the planned size; fraction on which the formula passes."""
    m = p.test_examples
    counts = rng.multinomial(m, probabilities, size=TRIALS)  # (TRIALS, 5)
    passed = np.ones(TRIALS, dtype=bool)
    for cp in p.clauses:
        per_outcome = np.array([cp.statistic_of(*o) for o in OUTCOMES], dtype=float)
        passed &= cp.decide_many(counts @ per_outcome, m)
    return passed.mean()


@pytest.mark.parametrize("condition, mode, null, alternative", [
    ("n > 0.8 +/- 0.05", "fp-free", 0.8, 0.9),
    ("n > 0.8 +/- 0.05", "fn-free", 0.7, 0.8),
    ("n >= 0.95 +/- 0.01", "fp-free", 0.95, 0.97),
    ("o < 0.3 +/- 0.05", "fp-free", 0.3, 0.2),       # '<': large values must not pass
    ("2 * n > 1.4 +/- 0.1", "fn-free", 0.6, 0.7),    # a scaled variable
])
def test_exact_binomial_keeps_delta_at_both_edges(condition, mode, null, alternative):
    rng = np.random.default_rng(RNG_SEED)
    p = plan(condition, 0.9, mode=mode, adaptivity="none", steps=1)
    cp = p.clauses[0]
    assert cp.method == "exact-binomial"
    var = next(iter(cp.clause.variables))
    delta = 0.1
    errors = []
    for mean, must_pass in [(null, False), (alternative, True)]:
        ones = rng.binomial(p.test_examples, mean, size=TRIALS)
        stat = np.array([cp.statistic_of(**{v: (1 if v == var else 0) for v in "nod"}),
                         cp.statistic_of(**{v: 0 for v in "nod"})], dtype=float)
        sums = ones * stat[0] + (p.test_examples - ones) * stat[1]
        rate = cp.decide_many(sums, p.test_examples).mean()
        error = (1 - rate) if must_pass else rate
        assert error <= delta + _slack(delta), (mean, error)
        errors.append(error)
    # and the test is tight, not vacuous: at one edge it spends a good part of its budget
    assert max(errors) >= delta / 4


@pytest.mark.parametrize("mode", ["fp-free", "fn-free"])
@pytest.mark.parametrize("disagree", [0.05, 0.3, 1.0])
def test_bennett_keeps_delta_for_any_disagreement_rate(mode, disagree):
    rng = np.random.default_rng(RNG_SEED)
    p = plan("n - o > 0.02 +/- 0.02", 0.9, mode=mode, adaptivity="none", steps=1)
    assert p.clauses[0].method == "bennett"
    a, b = p.clauses[0].compiled.edges(mode)
    for mean, must_pass in [(a, False), (b, True)]:
        if abs(mean) > disagree:
            continue
        rate = _formula_pass_rate(p, _probabilities(mean, disagree), rng)
        error = (1 - rate) if must_pass else rate
        assert error <= 0.1 + _slack(0.1)


@pytest.mark.parametrize("mode", ["fp-free", "fn-free"])
def test_bennett_with_a_d_clause_keeps_delta_for_the_formula(mode):
    rng = np.random.default_rng(RNG_SEED)
    p = plan("n - o > 0.02 +/- 0.02 /\\ d < 0.15 +/- 0.02", 0.8, mode=mode, adaptivity="none", steps=1)
    assert [c.method for c in p.clauses] == ["bennett-d", "exact-binomial"]
    (a, b), (da, db) = p.clauses[0].compiled.edges(mode), p.clauses[1].compiled.edges(mode)
    d_max, d_true = -da, -db  # d-scale: must not pass above d_max, must not fail below d_true
    delta = 0.2
    # false pass through the n - o clause at the largest d the d clause lets through
    assert _formula_pass_rate(p, _probabilities(a, d_max), rng) <= delta + _slack(delta)
    # a d far above the bound: the d clause must stop the pass even though n - o's test is weak there
    assert _formula_pass_rate(p, _probabilities(a, 0.6), rng) <= delta + _slack(delta)
    # false fail: everything true with margin
    for d in (d_true, b + 0.01):
        assert 1 - _formula_pass_rate(p, _probabilities(b, d), rng) <= delta + _slack(delta)


@pytest.mark.parametrize("condition, edges", [
    ("n - o > 0.05 +/- 0.05", None), ("n > 0.7 +/- 0.05", None), ("d < 0.2 +/- 0.05", None),
])
def test_easeml_method_keeps_delta(condition, edges):
    rng = np.random.default_rng(RNG_SEED)
    p = plan(condition, 0.9, adaptivity="none", steps=1, method="easeml")
    cp = p.clauses[0]
    a, b = cp.compiled.edges("fp-free")
    for mean, must_pass in [(a, False), (b, True)]:
        if cp.clause.variables == {"n", "o"}:
            probs = _probabilities(mean, 0.5)
        elif cp.clause.variables == {"n"}:
            probs = np.array([mean, 0, 0, 1 - mean, 0])
        else:  # d, sign-normalised: E[Z] = -d
            probs = np.array([1 + mean, 0, 0, 0, -mean])
        rate = _formula_pass_rate(p, probs, rng)
        error = (1 - rate) if must_pass else rate
        assert error <= 0.1 + _slack(0.1)


def test_steps_share_delta_over_the_life_of_the_test_set():
    """H non-adaptive queries at the null: the chance that any of them passes stays within delta."""
    rng = np.random.default_rng(RNG_SEED)
    steps, delta = 8, 0.2
    p = plan("n > 0.6 +/- 0.05", 1 - delta, adaptivity="none", steps=steps)
    cp = p.clauses[0]
    sums = rng.binomial(p.test_examples, 0.6, size=(TRIALS, steps)).astype(float)
    any_pass = cp.decide_many(sums, p.test_examples).any(axis=1).mean()
    assert any_pass <= delta + _slack(delta)
    # a single-step plan spends all of delta on one query: reusing it H times would overshoot
    single = plan("n > 0.6 +/- 0.05", 1 - delta, adaptivity="none", steps=1)
    reused = rng.binomial(single.test_examples, 0.6, size=(TRIALS, steps)).astype(float)
    assert single.clauses[0].decide_many(reused, single.test_examples).any(axis=1).mean() > delta
