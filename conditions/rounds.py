"""Decisions at a round's end: every pending pair gets a verdict bit on the labels present.

Under ``full``, ``firstChange`` and ``passes`` a check of a test set labelled on demand shows the
team "pending" and the verdict is released when its round ends (docs/statistics.md §6). At that
time every clause is decided on the labels present, its rows read in the secret reading order
(the *labelled prefix*: the sequential test reads rows in order and stops at the first row whose
label it needs and does not have), by the first rule that applies:

1. an e-process crossed (pass side or fail side) on the prefix: that decision (``"sequential"``);
2. the prefix reached the cap's N rows: the cap's fixed-size test on those N rows (``"cap"``);
3. otherwise the labels are late: the clause's **mode default**, ``fp-free`` fails
   (``"labels late: fp-free fails"``), ``fn-free`` passes (``"labels late: fn-free passes"``).

A clause on ``d`` alone needs no label and keeps its fixed-size test (``"fixed"``). The formula
fails when a clause fails and passes when all pass, as in
:func:`conditions.sequential.decide_in_order`, which this module calls and does not repeat.

Why the mode's promise holds however late the labels are
--------------------------------------------------------
Take ``fp-free`` and a truth ``mu <= a`` (a pass would be wrong). A clause passes only by rule 1
on the pass side or by rule 2; rule 3 fails. So, whatever labelled prefix the owner produced, by
whatever rule (early, late, none, cut where the requests or the labels themselves suggest)::

    P(pass | mu <= a) <= P(sup_t K_t >= 1/alpha) + P(cap test on the first N rows passes)
                      <= alpha + delta_c = delta'

The first term is Ville's inequality for the pass-side wealth K, a nonnegative supermartingale
under ``mu <= a`` over the rows in the secret order; it bounds the event that K *ever* crosses,
so it covers every point where the prefix may end. The second is a fixed event (the first N rows
in the order, N fixed by the plan), bounded by the planner. Neither depends on when the labels
came. ``fn-free`` is the mirror image with the fail-side wealth L and ``mu >= b``. A fixed-size
test on a prefix whose length depends on the labels would not be valid: that length is a
stopping time.

The other side (under ``fp-free``, a clause with ``mu >= b`` fails with probability at most
delta') holds when the owner labels the requested rows before the round ends; late labels only
turn passes into fails (``fn-free``: fails into passes), never the other way.

Each pending pair is one binary bit at a time fixed by the schedule, so the transcript tree and
the planner's query count (``2^H - 1`` under full, ``H`` under firstChange) are unchanged.

SECRET: ``by``, the rows and labels read, and whether the labels were late depend on the labels;
they are for the test-set owner's private sink only. The team sees ``passed``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .sequential import FormulaDecision, SequentialPlan, decide_in_order

#: What a late clause becomes, per mode: fp-free keeps "a pass is right", fn-free "a fail is right".
LATE_DEFAULT = {"fp-free": "fail", "fn-free": "pass"}


def labels_late(mode: str) -> str:
    """The ``by`` of a clause decided by its mode default (labels late)."""
    return {"fp-free": "labels late: fp-free fails", "fn-free": "labels late: fn-free passes"}[mode]


@dataclass(frozen=True)
class RoundVerdict:
    """The verdict of a pending pair at its round's end.

    ``passed`` is the bit the team sees. ``decision`` is the formula decided ("pass"/"fail",
    never "awaiting labels", no request), each clause's :class:`SequentialDecision` with the rows
    and labels it read; ``by`` per clause: ``"sequential"``, ``"cap"``, ``"fixed"`` (a clause on
    ``d`` alone) or :func:`labels_late`. SECRET apart from ``passed`` (see the module docstring).
    """

    passed: bool
    decision: FormulaDecision
    by: tuple[str, ...]

    @property
    def late(self) -> bool:
        """Whether some clause was decided by its mode default."""
        return any(b.startswith("labels late") for b in self.by)


def decide_at_round_end(plan: SequentialPlan, order: np.ndarray, labels: np.ndarray,
                        known: np.ndarray, new_pred: np.ndarray, old_pred: np.ndarray | None
                        ) -> RoundVerdict:
    """Decide a pending pair on the labels present at its round's end (always pass or fail).

    Arguments as for :func:`conditions.sequential.decide_in_order`: ``order`` the reading order
    (positions into the test set), ``labels`` and ``known`` per test-set row (a label where
    ``known``; anything elsewhere), the models' predictions per row (``old_pred`` None for a
    formula without ``o`` and ``d``).
    """
    made = decide_in_order(plan, order, labels, known, new_pred, old_pred)
    mode = plan.fixed.mode
    default = LATE_DEFAULT[mode]
    clauses = tuple(s if s.decided else replace(s, status=default, by=labels_late(mode),
                                                next_row=None)
                    for s in made.clauses)
    status = "fail" if any(s.status == "fail" for s in clauses) else "pass"
    return RoundVerdict(status == "pass", FormulaDecision(status, clauses),
                        tuple(str(s.by) for s in clauses))


#: Rows per label request in rounds: the check's first batch and each later one (docs/statistics.md
#: §6, "Label requests in batches"). An owner who labels every batch until the pair is decided
#: labels ``REQUEST_BATCH * ceil(L / REQUEST_BATCH)`` rows for a decision that reads L labels
#: (:func:`conditions.label_cost.owner_labels`): under ``full``, 32 steps, 0.9999 the headline
#: condition's median 1,686 at the fail edge becomes 1,792 (target 2,000), in 7 batches.
REQUEST_BATCH = 256


def request_batch(plan: SequentialPlan, order: np.ndarray, known: np.ndarray,
                  new_pred: np.ndarray, old_pred: np.ndarray | None, *,
                  clauses: tuple[int, ...] | None = None, batch: int | None = None
                  ) -> tuple[int, ...]:
    """The next rows to label, as indices into the test set in the secret reading order: for each
    clause in ``clauses`` (default every clause), its first ``batch`` (default
    :data:`REQUEST_BATCH`) rows within its cap that need
    a label and have none. Those are exactly the rows the clause reads next: its labelled prefix
    ends at the first of them.

    A function of the predictions and of which rows are labelled, never of a label's value (the
    check sends it before anything is decided). :func:`next_request` asks only for the clauses
    still open on the labelled prefix."""
    batch = REQUEST_BATCH if batch is None else batch
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    order = np.asarray(order)
    unknown = ~np.asarray(known, dtype=bool)[order]
    new_pred = np.asarray(new_pred)[order]
    d = (new_pred != np.asarray(old_pred)[order]) if old_pred is not None else \
        np.ones(len(order), dtype=bool)
    wanted: set[int] = set()
    for k, clause in enumerate(plan.clauses):
        if clauses is not None and k not in clauses:
            continue
        cap = min(clause.cap_rows, len(order))
        todo = np.flatnonzero(clause.needs_label(d[:cap]) & unknown[:cap])
        wanted.update(todo[:batch].tolist())
    return tuple(int(order[p]) for p in sorted(wanted))


def next_request(plan: SequentialPlan, verdict: RoundVerdict, order: np.ndarray,
                 known: np.ndarray, new_pred: np.ndarray, old_pred: np.ndarray | None, *,
                 batch: int | None = None) -> tuple[int, ...]:
    """The next batch for a pending pair given :func:`decide_at_round_end` on the labels present:
    empty when the labelled prefix already decides it (every clause decided, or one failed: no
    later label changes a decision, as labels are append-only, an e-process stops at its first
    crossing and the cap reads a fixed prefix), else :func:`request_batch` for the clauses still
    open. SECRET: it depends on the labels."""
    late = [by.startswith("labels late") for by in verdict.by]
    open_clauses = tuple(k for k, is_late in enumerate(late) if is_late)
    failed = any(s.status == "fail" and not is_late
                 for s, is_late in zip(verdict.decision.clauses, late))
    if failed or not open_clauses:
        return ()
    return request_batch(plan, order, known, new_pred, old_pred, clauses=open_clauses,
                         batch=batch)


__all__ = ["LATE_DEFAULT", "REQUEST_BATCH", "RoundVerdict", "decide_at_round_end", "labels_late",
           "next_request", "request_batch"]
