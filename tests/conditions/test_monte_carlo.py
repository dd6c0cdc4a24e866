"""Monte Carlo checks of every method at the edges of the indifference zone.

Each case simulates many test sets with the planned size and asserts the observed error rate
stays within delta, with a binomial slack of four standard errors for the simulation's own
noise. Seeds are fixed, so a failure is reproducible.

A check that cannot fail proves nothing, so every method also has a test that a bound wrong by a
factor of two would fail, and a witness that it does:

* exact-binomial: the observed rates match the exact binomial tails of the plan's own cutoff, and
  a plan made for 2 delta errs above delta + slack at one edge (the floor is tight);
* bennett, bennett-d, easeml: these bounds are loose at delta = 0.1 (a plan on half the examples
  still errs under delta there), so they are tested at delta = 0.001 with 200,000 simulated test
  sets (slack 4 SE = 0.00028), on the edge distributions where the bound is tightest (every
  disagreement is one model right, the other wrong; a Bernoulli near 1/2). There, half the
  planned examples (a bound whose exponent is twice too large) errs 3-4x above delta.
"""
import math

import numpy as np
import pytest
from scipy import stats

from conditions import plan

TRIALS = 20_000
RNG_SEED = 20261123
STRICT_DELTA = 0.001
STRICT_TRIALS = 200_000


def _slack(delta: float, trials: int = TRIALS) -> float:
    return 4 * math.sqrt(delta * (1 - delta) / trials)


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


def _clause_error_rate(cp, m: int, probabilities, must_pass: bool, rng) -> float:
    """One clause's error rate over STRICT_TRIALS simulated test sets of m examples."""
    counts = rng.multinomial(m, probabilities, size=STRICT_TRIALS)
    per_outcome = np.array([cp.statistic_of(*o) for o in OUTCOMES], dtype=float)
    passed = cp.decide_many(counts @ per_outcome, m)
    return float(1 - passed.mean()) if must_pass else float(passed.mean())


def _one_variable(variable: str, mean: float) -> np.ndarray:
    """Outcome law with E[variable] = mean (n alone: both models right or both wrong; d alone:
    both wrong, differing or not)."""
    if variable == "n":
        return np.array([mean, 0, 0, 1 - mean, 0])
    return np.array([0, 0, 0, 1 - mean, mean])


EXACT_CASES = [
    ("n > 0.8 +/- 0.05", "fp-free", 0.8, 0.9),
    ("n > 0.8 +/- 0.05", "fn-free", 0.7, 0.8),
    ("n >= 0.95 +/- 0.01", "fp-free", 0.95, 0.97),
    ("o < 0.3 +/- 0.05", "fp-free", 0.3, 0.2),       # '<': large values must not pass
    ("2 * n > 1.4 +/- 0.1", "fn-free", 0.6, 0.7),    # a scaled variable
]


def _exact_edge_errors(condition, mode, null, alternative, reliability, rng):
    """Observed and exact (binomial tail) error rates at the two edges of a one-variable plan."""
    p = plan(condition, reliability, mode=mode, adaptivity="none", steps=1)
    cp = p.clauses[0]
    assert cp.method == "exact-binomial"
    var = next(iter(cp.clause.variables))
    m = p.test_examples
    k = cp._zone_cutoff(mode, m)[1]
    stat = np.array([cp.statistic_of(**{v: (1 if v == var else 0) for v in "nod"}),
                     cp.statistic_of(**{v: 0 for v in "nod"})], dtype=float)
    observed, exact = [], []
    for mean, must_pass in [(null, False), (alternative, True)]:
        ones = rng.binomial(m, mean, size=TRIALS)
        sums = ones * stat[0] + (m - ones) * stat[1]
        rate = cp.decide_many(sums, m).mean()
        observed.append((1 - rate) if must_pass else rate)
        u = mean if stat[0] == 1 else 1 - mean  # the counted Bernoulli's mean
        exact.append(stats.binom.cdf(k - 1, m, u) if must_pass else stats.binom.sf(k - 1, m, u))
    return np.array(observed), np.array(exact)


@pytest.mark.parametrize("condition, mode, null, alternative", EXACT_CASES)
def test_exact_binomial_keeps_delta_at_both_edges(condition, mode, null, alternative):
    rng = np.random.default_rng(RNG_SEED)
    delta = 0.1
    observed, exact = _exact_edge_errors(condition, mode, null, alternative, 1 - delta, rng)
    assert (observed <= delta + _slack(delta)).all(), observed
    # the simulation is the binomial tail of the plan's own cutoff, to within its noise
    assert (abs(observed - exact) <= _slack(0.25)).all(), (observed, exact)
    assert (exact <= delta).all()
    # and the test is tight, not vacuous: at one edge it spends most of its budget
    assert max(exact) >= 0.8 * delta


@pytest.mark.parametrize("condition, mode, null, alternative", EXACT_CASES)
def test_exact_binomial_check_catches_a_plan_made_for_twice_the_delta(condition, mode, null, alternative):
    """What the test above would see if the planner spent 2 delta: an error above its limit."""
    rng = np.random.default_rng(RNG_SEED)
    delta = 0.1
    observed, _ = _exact_edge_errors(condition, mode, null, alternative, 1 - 2 * delta, rng)
    assert observed.max() > delta + _slack(delta)


def _strict_plan(condition, method="tight"):
    p = plan(condition, 1 - STRICT_DELTA * len(condition.split("/\\")), mode="fp-free",
             adaptivity="none", steps=1, method=method)
    cp = p.clauses[0]
    assert cp.delta == pytest.approx(STRICT_DELTA)
    return p, cp


STRICT_CASES = [  # (condition, method, expected method, edge law as a function of the mean)
    ("n - o > 0.02 +/- 0.02", "tight", "bennett", lambda mu: _probabilities(mu, 1.0)),
    ("n - o > 0.02 +/- 0.02 /\\ d < 0.15 +/- 0.02", "tight", "bennett-d",
     lambda mu: _probabilities(mu, 0.15)),  # d at the bound the d clause certifies
    ("n - o > 0.01 +/- 0.01 /\\ d < 0.05 +/- 0.01", "tight", "bennett-d",
     lambda mu: _probabilities(mu, 0.05)),
    ("n - o > 0.02 +/- 0.02", "easeml", "easeml", lambda mu: _probabilities(mu, 1.0)),
    ("n > 0.45 +/- 0.05", "easeml", "easeml", lambda mu: _one_variable("n", mu)),
]


@pytest.mark.parametrize("condition, method, expected, law", STRICT_CASES)
def test_bounded_methods_keep_a_small_delta_at_both_edges(condition, method, expected, law):
    rng = np.random.default_rng(RNG_SEED)
    p, cp = _strict_plan(condition, method)
    assert cp.method == expected
    a, b = cp.compiled.edges("fp-free")
    for mean, must_pass in [(a, False), (b, True)]:
        error = _clause_error_rate(cp, p.test_examples, law(mean), must_pass, rng)
        assert error <= STRICT_DELTA + _slack(STRICT_DELTA, STRICT_TRIALS), (mean, error)


@pytest.mark.parametrize("condition, method, expected, law", STRICT_CASES)
def test_bounded_methods_check_catches_a_bound_off_by_a_factor_of_two(condition, method, expected, law):
    """On half the planned examples (what an exponent twice too large would plan) the same edge
    laws err well above delta + slack, so the test above would fail for such a bound."""
    rng = np.random.default_rng(RNG_SEED)
    p, cp = _strict_plan(condition, method)
    a, b = cp.compiled.edges("fp-free")
    half = p.test_examples // 2
    errors = [_clause_error_rate(cp, half, law(mean), must_pass, rng)
              for mean, must_pass in [(a, False), (b, True)]]
    assert max(errors) > 2 * (STRICT_DELTA + _slack(STRICT_DELTA, STRICT_TRIALS)), errors


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
