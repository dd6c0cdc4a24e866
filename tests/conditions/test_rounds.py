"""The round-end rule (conditions.rounds): every pending pair gets a bit on the labels present.

Unit cases: labels all in, none at all, a late prefix, a prefix with a gap, a crossing before
the labels stop, the cap, the mode defaults, d-only clauses and formulas without ``o``.
"""
from dataclasses import replace

import numpy as np
import pytest

import conditions
from conditions import decide_at_round_end, sequential_plan
from conditions.rounds import LATE_DEFAULT, RoundVerdict, labels_late
from conditions.sequential import decide_in_order, row_order

PAIRED = "n - o > 0.05 +/- 0.05 /\\ d < 0.3 +/- 0.05"


def _pair(rows: int, disagree: float, new_right: float, seed: int):
    """Labels and two models' predictions (3 classes): they differ on about ``disagree`` of the
    rows, the new one right on ``new_right`` of those, the old one right on the rest."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, rows)
    differ = rng.random(rows) < disagree
    new_wins = rng.random(rows) < new_right
    wrong = (labels + 1) % 3
    new = np.where(differ & ~new_wins, wrong, labels)
    old = np.where(differ & new_wins, wrong, labels)
    return labels, new, old


def _verdict(sp, order, labels, known, new, old):
    return decide_at_round_end(sp, order, labels, known, new, old)


def test_exported_from_conditions():
    assert conditions.decide_at_round_end is decide_at_round_end
    assert conditions.RoundVerdict is RoundVerdict
    assert LATE_DEFAULT == {"fp-free": "fail", "fn-free": "pass"}
    assert labels_late("fp-free") == "labels late: fp-free fails"
    assert labels_late("fn-free") == "labels late: fn-free passes"


@pytest.mark.parametrize("new_right, expected", [(0.95, True), (0.05, False)])
def test_every_label_in_decides_as_decide_in_order(new_right, expected):
    sp = sequential_plan(PAIRED, 0.6, adaptivity="full", steps=2)
    labels, new, old = _pair(sp.rows, 0.2, new_right, 1)
    order = row_order(sp.rows, 11)
    known = np.ones(sp.rows, bool)
    v = _verdict(sp, order, labels, known, new, old)
    made = decide_in_order(sp, order, labels, known, new, old)
    assert made.decided and v.decision == made
    assert v.passed is expected and v.decision.status == ("pass" if expected else "fail")
    assert v.by == ("sequential", "fixed") and not v.late


@pytest.mark.parametrize("mode, passed", [("fp-free", False), ("fn-free", True)])
def test_no_labels_at_all_takes_the_mode_default(mode, passed):
    sp = sequential_plan(PAIRED, 0.6, mode=mode, adaptivity="full", steps=2)
    labels, new, old = _pair(sp.rows, 0.2, 0.95, 2)  # a clearly better model: still the default
    order = row_order(sp.rows, 12)
    v = _verdict(sp, order, np.zeros(sp.rows, int), np.zeros(sp.rows, bool), new, old)
    assert v.passed is passed
    assert v.by == (labels_late(mode), "fixed") and v.late
    late = v.decision.clauses[0]
    assert late.status == LATE_DEFAULT[mode] and late.next_row is None and late.labels == 0
    assert v.decision.request == () and v.decision.decided


def test_a_late_prefix_takes_the_default_and_counts_what_it_read():
    sp = sequential_plan(PAIRED, 0.6, adaptivity="full", steps=2)
    labels, new, old = _pair(sp.rows, 0.2, 0.95, 3)
    order = row_order(sp.rows, 13)
    everything = _verdict(sp, order, labels, np.ones(sp.rows, bool), new, old)
    assert everything.passed and everything.decision.clauses[0].by == "sequential"
    needed = everything.decision.clauses[0].rows  # rows read to the crossing
    known = np.zeros(sp.rows, bool)
    known[order[:needed - 1]] = True  # one row short of the crossing
    known[order[needed:]] = True  # every row after it: read past the gap? never
    v = _verdict(sp, order, labels, known, new, old)
    assert not v.passed and v.by[0] == "labels late: fp-free fails"
    assert v.decision.clauses[0].rows == needed - 1


def test_a_crossing_on_the_prefix_decides_whatever_is_missing_after_it():
    sp = sequential_plan(PAIRED, 0.6, mode="fn-free", adaptivity="full", steps=2)
    labels, new, old = _pair(sp.rows, 0.2, 0.02, 4)  # a clearly worse model
    order = row_order(sp.rows, 14)
    everything = _verdict(sp, order, labels, np.ones(sp.rows, bool), new, old)
    assert not everything.passed and everything.by[0] == "sequential"
    known = np.zeros(sp.rows, bool)
    known[order[:everything.decision.clauses[0].rows]] = True  # exactly the prefix it read
    v = _verdict(sp, order, labels, known, new, old)
    assert v.passed is False and v.by == everything.by and not v.late
    assert v.decision.clauses == everything.decision.clauses


def test_a_prefix_that_reaches_the_cap_is_decided_by_the_cap():
    """With a sequential budget too small to cross within the cap, the cap decides once the
    labelled prefix holds its N rows, and one label short of them the labels are late."""
    sp = sequential_plan(PAIRED, 0.6, adaptivity="full", steps=2)
    clause = replace(sp.clauses[0], alpha=1e-300)  # 690 nats: no crossing within the cap
    sp = replace(sp, clauses=(clause,) + sp.clauses[1:])
    cap = clause.cap_rows
    for new_right, passed in ((0.95, True), (0.3, False)):
        labels, new, old = _pair(sp.rows, 0.2, new_right, 7)
        order = row_order(sp.rows, 18)
        known = np.zeros(sp.rows, bool)
        known[order[:cap]] = True
        v = _verdict(sp, order, labels, known, new, old)
        assert v.by[0] == "cap" and v.decision.clauses[0].rows == cap
        z = ((new == labels).astype(float) - (old == labels))[order[:cap]]
        assert clause.cap.answer(z).passed is passed and v.decision.clauses[0].status == (
            "pass" if passed else "fail")
        last = order[:cap][new[order[:cap]] != old[order[:cap]]][-1]  # the last row needing a label
        known[last] = False
        short = _verdict(sp, order, labels, known, new, old)
        assert short.by[0] == "labels late: fp-free fails" and not short.passed


def test_a_failed_d_clause_fails_a_late_fn_free_formula():
    sp = sequential_plan(PAIRED, 0.6, mode="fn-free", adaptivity="full", steps=2)
    labels, new, old = _pair(sp.rows, 0.6, 0.5, 5)  # d = 0.6, far above 0.3
    v = _verdict(sp, row_order(sp.rows, 15), labels, np.zeros(sp.rows, bool), new, old)
    assert v.by == ("labels late: fn-free passes", "fixed")
    assert v.decision.clauses[1].status == "fail" and not v.passed


@pytest.mark.parametrize("mode, passed", [("fp-free", False), ("fn-free", True)])
def test_a_formula_without_the_old_model(mode, passed):
    sp = sequential_plan("n > 0.6 +/- 0.1", 0.6, mode=mode, adaptivity="full", steps=2)
    rows = sp.rows
    labels = np.zeros(rows, int)
    new = np.zeros(rows, int)  # always right
    order = row_order(rows, 16)
    known = np.zeros(rows, bool)
    known[order[:2]] = True  # two labels: not enough to cross at alpha = 1/15
    v = _verdict(sp, order, labels, known, new, None)
    assert v.passed is passed and v.by == (labels_late(mode),)
    assert (v.decision.clauses[0].rows, v.decision.clauses[0].labels) == (2, 2)
    all_in = _verdict(sp, order, labels, np.ones(rows, bool), new, None)
    assert all_in.passed and all_in.by == ("sequential",)


def test_agreeing_rows_need_no_label_at_the_round_end_either():
    sp = sequential_plan(PAIRED, 0.6, adaptivity="full", steps=2)
    labels, new, old = _pair(sp.rows, 0.2, 0.95, 6)
    order = row_order(sp.rows, 17)
    v = _verdict(sp, order, labels, new != old, new, old)  # labels only where they differ
    assert v.passed and v.by == ("sequential", "fixed")
