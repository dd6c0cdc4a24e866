"""The expected labels per decision (conditions.label_cost): the Wald-type oracle the plan prints.

Checked against closed forms (a Bernoulli's KL_inf is the Bernoulli KL divergence), a brute-force
maximisation for the paired law, and a simulation of the sequential decision itself.
"""
import math

import numpy as np
import pytest

from conditions import sequential_plan
from conditions.label_cost import (ASSUMED_DISAGREEMENT, cap_labels, certified_disagreement,
                                   clause_costs, expected_labels, on_demand_rows)

PAIRED = "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01"


def _kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_a_bernoulli_clause_costs_log_one_over_alpha_over_the_kl_divergence():
    clause = sequential_plan("n > 0.8 +/- 0.05", 0.9999, adaptivity="full", steps=32).clauses[0]
    level = math.log(1 / clause.alpha)
    assert expected_labels(clause, 0.9) == pytest.approx(level / _kl(0.9, 0.8), rel=1e-4)
    assert expected_labels(clause, 0.8) == pytest.approx(level / _kl(0.8, 0.9), rel=1e-4)
    assert expected_labels(clause, 0.85) is None  # mid-zone: reads to the cap
    assert cap_labels(clause) == clause.cap_rows


def test_the_paired_clause_matches_a_brute_force_best_constant_bet():
    sp = sequential_plan(PAIRED, 0.9999, adaptivity="full", steps=32)
    clause, d_clause = sp.clauses
    d, mu, a = 0.1, 0.04, 0.02  # the pass edge, against the null edge a
    lam = np.linspace(0, 1 / (a + 1), 200_001)[:-1]
    y = np.array([1 - a, -1 - a, -a])
    p = np.array([(d + mu) / 2, (d - mu) / 2, 1 - d])
    best = np.max(np.log1p(lam[:, None] * y) @ p)
    assert expected_labels(clause, mu, d) == pytest.approx(d * math.log(1 / clause.alpha) / best,
                                                           rel=1e-4)
    assert expected_labels(d_clause, 0.05) == 0 and cap_labels(d_clause) == 0
    assert cap_labels(clause, d) == pytest.approx(clause.cap_rows * d)


def test_the_disagreement_comes_from_the_d_clause_or_is_assumed():
    assert certified_disagreement(PAIRED) == pytest.approx(0.1)
    assert certified_disagreement("n - o > 0.02 +/- 0.01") is None
    costs = clause_costs(sequential_plan("n - o > 0.02 +/- 0.01", 0.99, adaptivity="none", steps=4))
    assert costs[0].disagreement == ASSUMED_DISAGREEMENT


def test_the_oracle_predicts_the_sequential_decisions_labels():
    """Simulated decisions at the edges read on average within 25 % of the oracle's labels."""
    rng = np.random.default_rng(7)
    clause = sequential_plan("n > 0.6 +/- 0.1", 0.999, adaptivity="none", steps=1).clauses[0]
    a, b = clause.edges
    for mu in (a, b):
        z = (rng.random((2000, clause.cap_rows)) < mu).astype(float)
        _, rows, by_cap = clause.decide_many(z)
        oracle = expected_labels(clause, mu)
        assert 0.75 * oracle < rows.mean() < 1.25 * oracle, (mu, rows.mean(), oracle)


def test_the_adaptive_modes_cost_what_their_delta_costs_and_meet_the_targets():
    rows = {r.label: r for r in on_demand_rows(PAIRED, 0.9999, "fp-free", 32)}
    assert list(rows) == ["none", "firstChange", "full, passes 2", "full"]
    assert [r.queries for r in rows.values()] == [32, 32, 528, 2**32 - 1]
    for label, target in (("full", 2000), ("firstChange", 1600)):
        edges = rows[label].clauses[0]
        assert max(edges.at_fail_edge, edges.at_pass_edge) <= target
    assert rows["full"].rows == sequential_plan(PAIRED, 0.9999, adaptivity="full", steps=32).rows
    costs = [r.clauses[0].at_fail_edge for r in rows.values()]
    assert costs[0] == costs[1] < costs[2] < costs[3]
    assert [r.passes for r in on_demand_rows(PAIRED, 0.9999, "fp-free", 32, passes=5)] == [
        None, None, 5, None]
    assert "full, passes 2" not in {r.label for r in on_demand_rows(PAIRED, 0.99, "fp-free", 2)}
