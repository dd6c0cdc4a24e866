"""Picking the best of k: wrong-pick rates at the edges, labels only where survivors disagree, an
answer that does not depend on when labels arrive, and bounds that would show a factor of two.

The Monte Carlo cases run at a loose reliability (0.8) so that wrong picks are common enough to
measure with a few hundred simulated test sets; seeds are fixed.
"""
import math

import numpy as np
import pytest

import conditions
from conditions import best_of_k as pick_module
from conditions import pick, pick_queries, pick_reliability
from conditions.best_of_k import StakeMixture, pair_alphas
from conditions.sequential import row_order, transcript_queries

SEED = 20261207
NAMES = np.array(["cat", "dog", "emu", "fox"])


def _slack(p: float, runs: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / runs)


def _draw(rng, rows: int, accuracies, labels=NAMES):
    """k x rows predictions (strings) for models right independently with the given accuracies."""
    acc = np.asarray(accuracies, dtype=float)
    y = rng.integers(0, len(labels), rows)
    right = rng.random((len(acc), rows)) < acc[:, None]
    wrong = (y + 1 + rng.integers(0, len(labels) - 1, (len(acc), rows))) % len(labels)
    return labels[np.where(right, y, wrong)], labels[y]


def _wrong_rate(rng, runs, rows, accuracies, reliability, tolerance=0.0):
    acc = np.asarray(accuracies)
    wrong = picked = 0
    for r in range(runs):
        p, y = _draw(rng, rows, acc)
        res = pick(p, y, np.ones(rows, bool), reliability, tolerance, order=row_order(rows, r))
        if res.pick is not None:
            picked += 1
            best = int(np.argmax(acc))
            # at the edge (exactly tolerance below the best) a non-best pick counts as wrong: the
            # limit of a model a hair more than tolerance below
            wrong += (acc[res.pick] < acc[best] - 1e-12 if tolerance == 0 else
                      res.pick != best and acc[res.pick] <= acc[best] - tolerance + 1e-12)
    return wrong / runs, picked / runs


def test_exports_and_result_object():
    assert conditions.pick is pick and "PickResult" in conditions.__all__
    rng = np.random.default_rng(SEED)
    p, y = _draw(rng, 400, [0.9, 0.5, 0.4])
    res = pick(p, y, np.ones(400, bool), 0.95, order=row_order(400, 1))
    assert res.decided and res.pick == 0 and res.status == "picked"
    assert res.survivors == (0,) and res.request == () and res.labels_used <= res.rows_read
    assert res.to_dict()["pick"] == 0 and res.candidates == 3


def test_one_candidate_is_picked_without_labels():
    res = pick([["a", "b"]], ["a", "a"], np.zeros(2, bool), 0.99, order=np.array([1, 0]))
    assert res.pick == 0 and res.labels_used == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"reliability": 1.5}, "reliability must be in (0, 1), got 1.5"),
    ({"reliability": 0.0}, "reliability must be in (0, 1), got 0.0"),
    ({"tolerance": -0.1}, "tolerance must be in [0, 1), got -0.1"),
    ({"order": np.array([0, 0, 1])}, "order must be a permutation of the 3 rows"),
    ({"order": np.array([0.0, 1.0, 2.0])}, "order must be a permutation"),
    ({"known": np.array([1, 0, 1])}, "known must be a boolean mask"),
    ({"labels": ["a", "b"]}, "labels must have one entry per row (3)"),
    ({"predictions": ["a", "b", "c"]}, "predictions must be k x N"),
])
def test_bad_input_names_the_value(kwargs, message):
    args = {"predictions": [["a", "b", "a"], ["b", "b", "a"]], "labels": ["a", "b", "a"],
            "known": np.ones(3, bool), "reliability": 0.9, "tolerance": 0.0, "order": np.arange(3)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        pick(args.pop("predictions"), args.pop("labels"), args.pop("known"), **args)


def test_labels_only_where_surviving_candidates_disagree():
    rng = np.random.default_rng(SEED + 1)
    p, y = _draw(rng, 3000, [0.8, 0.78, 0.6, 0.55])
    p[:, 1::2] = p[0, 1::2]  # every other row: all agree
    order = row_order(3000, 7)
    res = pick(p, y, np.zeros(3000, bool), 0.9, order=order)
    assert res.awaiting and len(res.request) > 0
    agree = (p == p[0]).all(axis=0)
    assert not agree[list(res.request)].any()
    position = np.argsort(order)
    assert list(position[list(res.request)]) == sorted(position[list(res.request)])
    full = pick(p, y, np.ones(3000, bool), 0.9, order=order)
    read = order[:full.rows_read]
    assert full.labels_used <= (~agree[read]).sum()


@pytest.mark.parametrize("tolerance", [0.0, 0.02])
def test_answer_does_not_depend_on_when_labels_arrive(tolerance):
    """Labelling only what is asked, in any order and with extra labels, ends at the pick the
    replay gives with every label on hand, after the same labels."""
    rng = np.random.default_rng(SEED + 2)
    p, y = _draw(rng, 4000, [0.8, 0.75, 0.7, 0.74, 0.5])
    order = row_order(4000, 3)
    full = pick(p, y, np.ones(4000, bool), 0.9, tolerance, order=order)
    known = np.zeros(4000, bool)
    known[rng.choice(4000, 300, replace=False)] = True  # labels nobody asked for
    for _ in range(400):
        res = pick(p, y, known, 0.9, tolerance, order=order)
        if not res.awaiting:
            break
        asked = np.array(res.request)
        known[rng.permutation(asked)[: max(1, len(asked) // 2)]] = True  # part, out of order
    assert (res.pick, res.labels_used, res.rows_read) == (full.pick, full.labels_used, full.rows_read)
    assert res.survivors == full.survivors


def test_stake_mixture_ville_bound_exact_and_tight_enough_for_a_factor_of_two():
    """Exact crossing probability (a walk over the win count, no sampling noise) of one pair's
    elimination e-process at a tie, over 3000 disagreement rows: at most alpha, and at the level
    of 2 alpha (a bound wrong by a factor of two) more than alpha."""
    mix = StakeMixture(0.0)

    def crossing(alpha, steps=3000):
        level, dist, crossed = math.log(1 / alpha), np.array([1.0]), 0.0
        for t in range(1, steps + 1):
            new = np.zeros(t + 1)
            new[1:] += dist * 0.5
            new[:-1] += dist * 0.5
            lo, hi = 0, t + 1  # the evidence grows with the wins: find the first crossing count
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (mid + 1, hi) if mix.log_e(mid, t - mid, 0) < level else (lo, mid)
            crossed += new[lo:].sum()
            new[lo:] = 0.0
            dist = new
        return crossed

    for alpha in (0.2, 0.1):
        assert crossing(alpha) <= alpha
    assert crossing(0.4) > 0.2


def test_tolerance_edge_two_models_exactly_tolerance_apart():
    """The worse model is exactly tolerance below the best (the edge of what may be picked):
    picking it is the error whose rate must stay within 1 - reliability."""
    rng = np.random.default_rng(SEED + 3)
    acc = [0.75, 0.70]
    runs = 200
    wrong, picked = _wrong_rate(rng, runs, 600, acc, 0.8, tolerance=0.05)
    assert wrong <= 0.2 + _slack(0.2, runs)
    assert picked > 0.5  # the test decides, so the rate measures something


def _best_eliminated(seed, runs, rows, accuracies, reliability):
    rng = np.random.default_rng(seed)
    out = 0
    for r in range(runs):
        p, y = _draw(rng, rows, accuracies)
        res = pick(p, y, np.ones(rows, bool), reliability, order=row_order(rows, r))
        out += 0 not in res.survivors
    return out / runs


def test_many_near_ties_need_the_split_over_k_minus_one():
    """Nine rivals a hair behind the best: each can knock it out. A wrong pick needs the best
    eliminated; with delta / (k - 1) per pair that stays within delta, with delta per pair (the
    split dropped, the bound nine times too loose) it does not."""
    acc = [0.70] + [0.69] * 9
    runs = 150
    assert _best_eliminated(SEED + 4, runs, 500, acc, 0.7) <= 0.3 + _slack(0.3, runs)
    original = pick_module.pair_alphas
    try:
        pick_module.pair_alphas = lambda k, r, t=0.0: (1 - r, 1 - r)
        dropped = _best_eliminated(SEED + 4, runs, 500, acc, 0.7)
    finally:
        pick_module.pair_alphas = original
    assert dropped > 0.3 + _slack(0.3, runs), dropped


def test_pair_alphas_split_delta_over_the_pairs_with_the_best():
    assert pair_alphas(5, 0.95) == pytest.approx((0.0125, 0.0125))
    a, b = pair_alphas(5, 0.95, 0.01)
    assert a + b == pytest.approx(0.0125)


@pytest.mark.parametrize("adaptivity, steps, k", [("none", 7, 5), ("full", 4, 3), ("full", 1, 9)])
def test_pick_queries_count_the_k_ary_transcript_tree(adaptivity, steps, k):
    q = pick_queries(adaptivity, steps, k)
    m = k + 1
    assert q == (steps if adaptivity == "none" else sum(m ** s for s in range(steps)))
    assert q == (steps if adaptivity == "none" else transcript_queries("full", steps, outcomes=m))
    assert pick_reliability(0.99, adaptivity, steps, k) == pytest.approx(1 - 0.01 / q)
    with pytest.raises(ValueError, match="adaptivity for picks"):
        pick_queries("firstChange", steps, k)


@pytest.mark.slow
@pytest.mark.parametrize("accuracies, tolerance", [
    ([0.75, 0.70], 0.05),
    ([0.70] + [0.69] * 9, 0.0),
    ([0.70, 0.69, 0.69, 0.68, 0.68], 0.01),
])
def test_wrong_picks_within_delta_many_runs(accuracies, tolerance):
    runs = 1000
    wrong, _ = _wrong_rate(np.random.default_rng(SEED + 5), runs, 600, accuracies, 0.8, tolerance)
    assert wrong <= 0.2 + _slack(0.2, runs)


def test_any_label_type_and_labels_no_model_predicts():
    """Integer labels work like strings; a label no candidate predicts makes every model wrong."""
    rng = np.random.default_rng(SEED + 6)
    p, y = _draw(rng, 2000, [0.9, 0.6, 0.5], labels=np.array([3, 7, 11]))
    y = y.copy()
    y[::10] = 99  # nobody predicts 99
    order = row_order(2000, 5)
    as_int = pick(p, y, np.ones(2000, bool), 0.9, order=order)
    as_str = pick(p.astype(str), y.astype(str), np.ones(2000, bool), 0.9, order=order)
    assert as_int.pick == as_str.pick == 0
    assert as_int.labels_used == as_str.labels_used


def test_conditions_pick_is_the_function_whatever_was_imported_first():
    """The package loads its rarer statistics on first use (PEP 562); importing the module
    first no longer turns ``conditions.pick`` into a module, and every lazy name is listed."""
    import subprocess
    import sys

    code = ("import conditions.best_of_k, conditions; import inspect; "
            "print(inspect.isfunction(conditions.pick), conditions.pick is conditions.best_of_k.pick, "
            "sorted(set(conditions.__all__) - set(dir(conditions))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "[]"]
    with pytest.raises(AttributeError, match="no attribute 'picks'"):
        conditions.picks  # noqa: B018
