"""Monte Carlo of the round-end rule (conditions.rounds): the mode's promise whatever the labels.

A pending pair is decided at its round's end on the labelled prefix (docs/statistics.md §6). The
promise on the mode's side (fp-free: P(pass | mu <= a) <= delta'; fn-free: P(fail | mu >= b) <=
delta') must hold for every way the owner labels: all in time, none, a prefix cut at a random
point, after a number of answered requests, or cut by someone who reads the labels and wants the
wrong answer. The plans are loose (reliability 0.6, full, 2 steps: delta' = 0.067 or 0.13 per
clause) so that errors are common enough to measure; seeds are fixed.

The vectorised rule here is checked against :func:`conditions.decide_at_round_end` itself on a
sample of runs and cuts, so the rates measure the function the gate calls.

A bound wrong by a factor of two would be seen: the pass side's (fail side's) wealth at the null
edge crosses ``1/(2 alpha)`` more often than alpha allows, a rule with a doubled alpha errs
measurably more, and the rule the design rejects (the cap's fixed-size test on a labelled prefix
of data-dependent length) errs above delta' under a cut that reads the labels.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from conditions import decide_at_round_end, sequential_plan
from conditions.rounds import LATE_DEFAULT
from conditions.sequential import label_request

SEED = 20261207
RUNS = 4000
PAIRED = "n - o > 0.05 +/- 0.05 /\\ d < 0.3 +/- 0.05"
SINGLE = "n > 0.6 +/- 0.1"

# (n, o, d) outcomes of a single-label classifier pair, and labels/predictions realising them
OUTCOMES = np.array([(1, 1, 0), (1, 0, 1), (0, 1, 1), (0, 0, 0), (0, 0, 1)], dtype=float)
NEW = np.array([0, 0, 1, 1, 1])  # the label is 0 on every row
OLD = np.array([0, 1, 0, 1, 2])


def _slack(p: float, runs: int = RUNS) -> float:
    return 4 * math.sqrt(p * (1 - p) / runs)


def _law(formula: str, mean: float, disagree: float = 0.2) -> np.ndarray:
    """An outcome law with the given mean of the clause's variable (n - o or n)."""
    if formula == PAIRED:
        return np.array([(1 - disagree) * 0.7, (disagree + mean) / 2, (disagree - mean) / 2,
                         (1 - disagree) * 0.3, 0.0])
    return np.array([mean * 0.8, mean * 0.2, (1 - mean) * 0.2, (1 - mean) * 0.8, 0.0])


class Runs:
    """Simulated test sets (rows in reading order) for the first clause of a plan."""

    def __init__(self, sp, formula: str, mean: float, runs: int, rng):
        self.sp, self.clause = sp, sp.clauses[0]
        cap = self.clause.cap_rows
        self.idx = rng.choice(5, size=(runs, cap), p=_law(formula, mean))
        n, o, d = (OUTCOMES[self.idx, k] for k in range(3))
        self.z = np.asarray(self.clause.fixed.compiled.value(n, o, d), dtype=float)
        self.need = self.clause.needs_label(d)
        self.labels_used = np.cumsum(self.need, axis=1)  # labels among the first t + 1 rows
        self.passed, self.rows, self.by_cap = self.clause.decide_many(self.z)
        self.up, self.down = self.clause.bettor.log_wealth(self.z)
        self.level = math.log(1 / self.clause.alpha)

    @property
    def cap(self) -> int:
        return self.clause.cap_rows

    def at_cut(self, prefix: np.ndarray) -> np.ndarray:
        """The round-end rule with the first ``prefix`` rows (per run) read: the full-label
        decision where the prefix covers the rows it read, else the mode default."""
        default = LATE_DEFAULT[self.sp.fixed.mode] == "pass"
        return np.where(prefix >= self.rows, self.passed, default)

    def prefix_of_labels(self, count: np.ndarray) -> np.ndarray:
        """Rows readable when the first ``count`` rows needing a label (in order) have one."""
        return (self.labels_used <= np.asarray(count)[:, None]).sum(axis=1)

    def check_against_the_function(self, prefix: np.ndarray, sample: int = 12) -> None:
        """decide_at_round_end on the same rows and labels gives the vectorised answer."""
        rows = self.sp.rows
        for k in np.linspace(0, len(prefix) - 1, sample).astype(int):
            idx = np.zeros(rows, dtype=int)  # rows beyond the cap: both right, agreeing
            idx[:self.cap] = self.idx[k]
            known = np.zeros(rows, dtype=bool)
            known[:prefix[k]] = True
            v = decide_at_round_end(self.sp, np.arange(rows), np.zeros(rows, int), known,
                                    NEW[idx], OLD[idx])
            assert (v.decision.clauses[0].status == "pass") == self.at_cut(prefix)[k], (k, prefix[k])


def _plan(formula: str, mode: str):
    return sequential_plan(formula, 0.6, mode=mode, adaptivity="full", steps=2)


def _request_schedule(labels: int, batches: int) -> int:
    """Labels present after the owner answers ``batches`` requests (label_request's sizes)."""
    got = labels
    for _ in range(batches):
        rows = 2 * got + 128
        got += len(label_request(np.ones(rows, bool), np.arange(rows) < got, got, got))
    return got


def _cuts(r: Runs, wrong: bool, rng) -> dict[str, np.ndarray]:
    """Labelled prefixes per strategy. ``wrong`` is the wrong answer (True: a pass)."""
    runs, cap = r.z.shape
    own, other = (r.up, r.down) if wrong else (r.down, r.up)
    first_other = np.where((other >= r.level).any(axis=1), (other >= r.level).argmax(axis=1), cap)
    total = r.labels_used[:, -1]
    batches = np.array([_request_schedule(0, k) for k in range(8)])
    # an owner who answers requests while the wrong side's wealth grew in the last batch
    stop = np.zeros(runs, dtype=int)
    going = np.ones(runs, dtype=bool)
    for k in range(1, 8):
        before = own[np.arange(runs), np.maximum(r.prefix_of_labels(np.full(runs, batches[k - 1])) - 1, 0)]
        after = own[np.arange(runs), np.maximum(r.prefix_of_labels(np.full(runs, batches[k])) - 1, 0)]
        stop = np.where(going, k, stop)
        going &= after > before
    return {
        "early (every label in)": np.full(runs, cap),
        "none at all": np.zeros(runs, dtype=int),
        "a random row": rng.integers(0, cap + 1, runs),
        "a random label count": r.prefix_of_labels(rng.integers(0, total + 1)),
        "one request answered": r.prefix_of_labels(np.full(runs, batches[1])),
        "a random number of requests": r.prefix_of_labels(batches[rng.integers(0, 4, runs)]),
        "requests while the wrong side gains": r.prefix_of_labels(batches[stop]),
        "just before the right side crosses": first_other,
        "at the wrong side's peak": own.argmax(axis=1) + 1,
    }


CASES = [(PAIRED, "fp-free"), (PAIRED, "fn-free"), (SINGLE, "fp-free"), (SINGLE, "fn-free")]


@pytest.mark.parametrize("formula, mode", CASES)
def test_the_modes_promise_holds_for_every_labelled_prefix(formula, mode):
    """At the edge where the mode's side is wrong (fp-free: a pass at a; fn-free: a fail at b),
    every labelling strategy errs at most delta' (plus the simulation's noise), and no cut turns
    a run the full labels decide rightly into a wrong answer."""
    rng = np.random.default_rng(SEED)
    sp = _plan(formula, mode)
    a, b = sp.clauses[0].edges
    wrong = mode == "fp-free"  # the wrong answer at the edge: a pass under fp-free
    r = Runs(sp, formula, _truth(formula, sp, a if wrong else b), RUNS, rng)
    delta = sp.clauses[0].delta
    full_wrong = r.passed == wrong
    for name, prefix in _cuts(r, wrong, rng).items():
        assert ((0 <= prefix) & (prefix <= r.cap)).all()
        decided_wrong = r.at_cut(prefix) == wrong
        assert decided_wrong.mean() <= delta + _slack(delta), (name, decided_wrong.mean(), delta)
        assert not (decided_wrong & ~full_wrong).any(), name
        r.check_against_the_function(prefix)
    assert (r.at_cut(np.zeros(RUNS, dtype=int)) == wrong).mean() == 0  # no labels: never wrong


@pytest.mark.parametrize("formula, mode", CASES)
def test_the_other_side_holds_when_the_labels_come_in_time(formula, mode):
    """Power: at the other edge the full-label decision errs at most delta'; with no labels the
    mode default decides, which is the point of choosing a mode."""
    rng = np.random.default_rng(SEED + 1)
    sp = _plan(formula, mode)
    a, b = sp.clauses[0].edges
    wrong = mode == "fn-free"  # at the other edge the wrong answer is a fail under fp-free
    r = Runs(sp, formula, _truth(formula, sp, b if mode == "fp-free" else a), RUNS, rng)
    delta = sp.clauses[0].delta
    assert ((r.passed == wrong).mean()) <= delta + _slack(delta)
    assert (r.at_cut(np.zeros(RUNS, dtype=int)) == wrong).all()


def _truth(formula: str, sp, z_mean: float) -> float:
    """The mean of the clause's variable that puts E[Z] at ``z_mean``."""
    return z_mean / sp.clauses[0].fixed.compiled.weights[0]


@pytest.mark.parametrize("formula, mode", CASES)
def test_a_bound_wrong_by_a_factor_of_two_would_be_seen(formula, mode):
    """Ville's bound is nearly tight at this alpha (the wrong side's wealth crosses 1/(2 alpha)
    more often than alpha), and the rule with a doubled alpha errs more than the noise allows."""
    rng = np.random.default_rng(SEED + 2)
    sp = _plan(formula, mode)
    clause = sp.clauses[0]
    a, b = clause.edges
    wrong = mode == "fp-free"
    r = Runs(sp, formula, _truth(formula, sp, a if wrong else b), RUNS, rng)
    own = r.up if wrong else r.down
    crossed = (own >= r.level).any(axis=1).mean()
    assert crossed <= clause.alpha + _slack(clause.alpha)
    assert (own >= r.level - math.log(2)).any(axis=1).mean() > clause.alpha + _slack(clause.alpha)
    right = (r.passed == wrong).mean()
    doubled = replace(clause, alpha=2 * clause.alpha).decide_many(r.z)[0]
    assert (doubled == wrong).mean() > right + _slack(right)


def test_the_rejected_rule_a_fixed_test_on_a_late_prefix_is_caught():
    """The design rejects deciding a late clause by the cap's fixed-size test on however many
    rows are labelled: the prefix's length then depends on the labels. An owner who stops
    labelling as soon as that test passes gets a wrong pass far above delta', and the same
    simulation keeps the built rule within delta'."""
    rng = np.random.default_rng(SEED + 3)
    sp = _plan(PAIRED, "fp-free")
    clause = sp.clauses[0]
    a, _ = clause.edges
    r = Runs(sp, PAIRED, _truth(PAIRED, sp, a), RUNS, rng)
    sums = np.cumsum(r.z, axis=1)
    first_pass = np.full(RUNS, r.cap)
    for t in range(20, r.cap):  # the first prefix (from 20 rows on) on which the cap test passes
        hit = clause.cap.decide_many(sums[:, t - 1], t) & (first_pass == r.cap)
        first_pass[hit] = t
    rejected = np.where(first_pass < r.cap, True, r.passed)
    assert rejected.mean() > 2 * clause.delta
    assert (r.at_cut(first_pass) == True).mean() <= clause.delta + _slack(clause.delta)  # noqa: E712


@pytest.mark.slow
@pytest.mark.parametrize("formula, mode", CASES)
def test_the_modes_promise_on_forty_thousand_test_sets(formula, mode):
    rng = np.random.default_rng(SEED + 4)
    sp = _plan(formula, mode)
    a, b = sp.clauses[0].edges
    wrong = mode == "fp-free"
    runs = 40_000
    r = Runs(sp, formula, _truth(formula, sp, a if wrong else b), runs, rng)
    delta = sp.clauses[0].delta
    for name, prefix in _cuts(r, wrong, rng).items():
        error = (r.at_cut(prefix) == wrong).mean()
        assert error <= delta + _slack(delta, runs), (name, error, delta)
