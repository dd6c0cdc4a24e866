"""Label requests in batches (conditions.rounds.request_batch / next_request): an owner who
labels every batch until the pair is decided reaches the decision every label gives, and labels
exactly what conditions.label_cost.owner_labels (the bench's column) says."""
import inspect

import numpy as np
import pytest

from conditions import decide_at_round_end, sequential_plan
from conditions.label_cost import NONE_FIRST_BATCH, NONE_GROWTH, owner_labels, request_totals
from conditions.rounds import REQUEST_BATCH, next_request, request_batch
from conditions.sequential import decide_in_order, label_request, row_order

from test_rounds import PAIRED, _pair

VANISHING = "n - o > 0.05 +/- 0.05"  # no d clause: the formula is the labelled clause's


def _follow(sp, order, labels, new, old, batch):
    """The owner: the check's first batch, then each request's next batch, until decided.
    Returns (the round-end verdict, the rows labelled, the number of requests)."""
    known = np.zeros(len(labels), dtype=bool)
    asked = request_batch(sp, order, known, new, old, batch=batch)
    trips = 0
    while asked:
        trips += 1
        known[list(asked)] = True
        made = decide_at_round_end(sp, order, labels, known, new, old)
        asked = next_request(sp, made, order, known, new, old, batch=batch)
        assert trips < 10_000
    return decide_at_round_end(sp, order, labels, known, new, old), known, trips


@pytest.mark.parametrize("new_right", [0.2, 0.5, 0.58, 0.62, 0.75, 0.95])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_following_the_batches_decides_as_every_label_and_costs_what_owner_labels_says(
        new_right, batch):
    sp = sequential_plan(VANISHING, 0.6, "fp-free", "full", 2)
    rows = sp.rows
    labels, new, old = _pair(rows, 0.3, new_right, seed=int(new_right * 100) + batch)
    order = row_order(rows, 11)
    every = decide_in_order(sp, order, labels, np.ones(rows, bool), new, old)
    made, known, trips = _follow(sp, order, labels, new, old, batch)
    assert made.passed == (every.status == "pass") and not made.late
    assert [s.status for s in made.decision.clauses] == [s.status for s in every.clauses]
    clause = sp.clauses[0]
    d = (new != old)[order][:clause.cap_rows]
    read, in_cap = every.clauses[0].labels, int(d.sum())
    assert known.sum() == owner_labels(read, in_cap, batch=batch)
    assert known.sum() <= max(read, 1) + batch - 1 and trips == max(1, -(-min(read, in_cap) // batch)) \
        or known.sum() == in_cap
    assert not known[order[clause.cap_rows:]].any()  # never past the cap
    assert set(np.flatnonzero(known)) <= set(order[:clause.cap_rows][d])  # only rows it needs


def test_a_decided_prefix_asks_nothing_more_and_a_failed_clause_closes_the_formula():
    sp = sequential_plan(VANISHING, 0.6, "fp-free", "full", 2)
    both = sequential_plan(PAIRED, 0.6, "fp-free", "full", 2)
    rows = max(sp.rows, both.rows)
    labels, new, old = _pair(rows, 0.3, 0.05, seed=3)  # far below the zone: fails fast
    order = row_order(rows, 5)
    every, none = np.ones(rows, dtype=bool), np.zeros(rows, dtype=bool)
    made = decide_at_round_end(sp, order, labels, every, new, old)
    assert not made.passed and not made.late and next_request(sp, made, order, every, new, old) == ()
    late = decide_at_round_end(sp, order, labels, none, new, old)
    needed = int((new != old)[order][:sp.clauses[0].cap_rows].sum())
    assert late.late and len(next_request(sp, late, order, none, new, old)) == min(REQUEST_BATCH,
                                                                                   needed)
    # d = 0.3, past d's edge 0.25: that clause fails with no label, and the formula with it
    late = decide_at_round_end(both, order, labels, none, new, old)
    assert late.late and late.by[1] == "fixed" and late.decision.clauses[1].status == "fail"
    assert next_request(both, late, order, none, new, old) == ()  # no label can make it pass


def test_the_first_batch_depends_on_which_rows_are_labelled_not_on_the_labels():
    sp = sequential_plan(PAIRED, 0.6, "fp-free", "full", 2)
    labels, new, old = _pair(sp.rows, 0.3, 0.6, seed=4)
    order = row_order(sp.rows, 6)
    known = np.zeros(sp.rows, dtype=bool)
    known[order[:50]] = True
    first = request_batch(sp, order, known, new, old, batch=16)
    assert first == request_batch(sp, order, known, new, old, batch=16)  # no labels passed in
    positions = np.argsort(order)[list(first)]
    assert (positions >= 50).all() and list(positions) == sorted(positions)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        request_batch(sp, order, known, new, old, batch=0)


def test_owner_labels_under_none_follow_the_checks_growing_requests():
    defaults = inspect.signature(label_request).parameters
    assert (defaults["first_batch"].default, defaults["growth"].default) == (NONE_FIRST_BATCH,
                                                                             NONE_GROWTH)
    assert request_totals(700, 64, 0.5).tolist() == [64, 128, 192, 288, 432, 648, 972]
    assert owner_labels([0, 1, 65, 700], [5000] * 4, batch=64, growth=0.5,
                        first_always=False).tolist() == [0, 64, 128, 972]
    assert owner_labels([0, 1, 256, 257, 1686], [1000] * 5, batch=256).tolist() == [
        256, 256, 256, 512, 1000]  # never past the labels the cap needs


def test_the_documented_owner_figures_follow_from_owner_labels():
    """docs/statistics.md §6 and docs/benchmarks.md: the batch and the owner's medians at the
    headline condition's edges, from the medians the decisions read (1,686 / 1,593 under full,
    716 / 640 under firstChange; the bench's rows)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    stats = " ".join((root / "docs" / "statistics.md").read_text().split())
    bench = " ".join((root / "docs" / "benchmarks.md").read_text().split())
    assert REQUEST_BATCH == 256 and "batches of B = 256 per clause" in stats
    full = owner_labels([1686, 1593], [6700, 6700]).tolist()
    first_change = owner_labels([716, 640], [2800, 2800]).tolist()
    assert full == [1792, 1792] and first_change == [768, 768]
    assert "= 1,792 in 7 batches; under `firstChange` 768" in stats
    assert "a median of 1,792 / 1,792 under `full` (7 batches of 256) and 768 / 768" in bench
    assert owner_labels(1686, 6700, batch=512) == 2048 and "512: 2,048 / 2,048" in stats
