"""A check on a test set labelled on demand: the shared steps with a sequential ``decide``.

A test set registered without labels (:class:`easeml_ci.testsets.UnlabelledTestSet`) gets them
in batches (:mod:`easeml_ci.testsets.labels`). A check on it evaluates both models on every row,
reads the rows in a secret order fixed at registration (:mod:`.reading_order`) and decides each clause
with the sequential test of :mod:`conditions.sequential`, capped by the fixed-size plan
(:func:`conditions.sequential.decide_in_order`). When the labels present settle every clause the
formula is decided; otherwise the check is "awaiting labels" and the owner gets the label request.

What the team sees (docs/statistics.md §6): whether a check decides or awaits, and how many
labels it asks for, depend on the labels. So this path runs only under ``adaptivity: none``
(:func:`refuse_adaptive`; an adaptive mode with a ``rounds:`` schedule goes to :mod:`.rounds`), where the team sees "withheld" whatever happens, and the step is spent
by a rule that never looks at the labels: **the first check of a model pair spends one step**; a
later check of the same pair (:func:`easeml_ci.models.digest.pair_digest`) spends nothing and
completes or repeats its step's decision privately. A decision never changes once made: labels
are append-only, the sequential test stops at the first row where an e-process crosses, the cap
reads a fixed prefix, and a failed clause fails the formula.
"""
from __future__ import annotations


from conditions.sequential import FormulaDecision, decide_in_order

from ..errors import UsageError
from ..models.digest import pair_digest
from ..testsets import UnlabelledTestSet
from . import reading_order, rounds, steps
from .registration import admissible_plan, ledger_name, refuse_adaptive
from .results import CheckResult, shown_clauses

def admissible(gate: steps.Gate, ts: UnlabelledTestSet) -> None:
    """Refuse a test set found to be labelled on demand (an encrypted one, opened to register
    it) that this config cannot answer, before anything is registered."""
    admissible_plan(gate.cfg, ts, gate.testset.given)


def decide(gate: steps.Gate, plan, secret: bytes, ts: UnlabelledTestSet, y, known,
           outputs: steps.Evaluation) -> dict:
    """The decision on the labels present, or the request for more (the private record)."""
    if outputs.failed:  # as for a labelled test set: a model that fails on the test data fails
        return {"verdict": "fail", "clauses": [{"text": c.text, "status": "fail", "rows": 0,
                                                "labels": 0, "by": "model failed"}
                                               for c in plan.clauses]}
    order = reading_order.permutation(secret, len(ts.ids))
    made: FormulaDecision = decide_in_order(plan, order, y, known, outputs.new, outputs.old)
    record = {"verdict": made.status, "clauses": [
        {"text": c.text, "status": s.status, "rows": s.rows, "labels": s.labels, "by": s.by}
        for c, s in zip(plan.clauses, made.clauses)]}
    if not made.decided:
        ids = [str(ts.ids[i]) for i in made.request]
        record["label_request"] = {
            "row_ids": ids, "count": len(ids), "order": "priority (label the first ones first)",
            "then": f"easeml-ci testset label {gate.testset.given} LABELS.csv (columns id,label), "
                    "then re-run the same check: it spends no new step"}
    return record


def run(gate: steps.Gate, state: steps.LedgerState, *, underpowered: bool, store_path=None,
        opened: UnlabelledTestSet | None = None, reserved: steps.Reserved | None = None,
        pull_request: dict | None = None) -> CheckResult:
    """Reserve (first check of the pair) or reuse the pair's step; decide privately; reveal.

    ``opened``, ``reserved``: an encrypted test set whose header could not say it is
    unlabelled, opened by the labelled check after reserving its step (which this run spends)."""
    if underpowered:
        raise UsageError(f"--underpowered: test set {gate.testset.given} is labelled on demand; "
                         "a sequential decision reads as many rows as it needs up to its cap, so "
                         "give the test set at least the cap's rows instead")
    refuse_adaptive(gate.cfg, gate.testset.given)
    steps.locate_label_store(gate, store_path)  # refused in the team's sight before anything
    if rounds.applies(gate):  # verdicts in rounds: gate/rounds.py
        return rounds.run(gate, state, store_path=store_path, opened=opened,
                          pull_request=pull_request)
    pair = pair_digest(gate.new, gate.old, gate.cfg.output, gate.workdir)
    earlier = state.step_of_pair(pair) if reserved is None else None
    if opened is None:  # a pair with its step spent may still complete its decision privately
        steps.check_terms(gate, state)
        steps.admit(gate, state, spends_step=earlier is None)
        known = gate.testset.peek()
        if known is not None:  # refused before a step is spent where the size is known
            admissible_plan(gate.cfg, known, gate.testset.given)
            steps.open_label_store(gate, known, store_path)
        steps.register_if_new(gate, state)
        secret = steps.order_secret(gate, state)  # checked against the registration first
        if earlier is None:  # the first check of the pair spends its step before the open
            reserved = steps.reserve(gate, state, details=steps.public_details(gate, pair=pair))
    else:
        secret = steps.order_secret(gate, state)
    ts = opened if opened is not None else steps.open_testset(gate, state)
    plan = admissible_plan(gate.cfg, ts, gate.testset.given)
    store = steps.open_label_store(gate, ts, store_path)
    y, known_rows = store.label_vector()
    view = store.labelled_view(ts, y)  # the models meet the label kind of the labels so far
    outputs = steps.evaluate(gate, view)
    record = decide(gate, plan, secret, ts, y, known_rows, outputs)
    del ts, view
    done = (steps.complete(gate, state, reserved, passed=None) if reserved is not None
            else steps.Committed(earlier, state.budget(gate.terms)))
    if earlier is not None and "label_request" not in record:
        record["completes_step"] = done.step
    record.update(pair=pair, repeat=earlier is not None, labels=store.summary(),
                  **steps.failure_record(outputs))
    result = reveal(gate, state, done, record, repeat=earlier is not None)
    steps.release(outputs)
    return result


def reveal(gate: steps.Gate, state: steps.LedgerState, done: steps.Committed, record: dict, *,
           repeat: bool) -> CheckResult:
    """The team sees the same for every decision and for "awaiting labels"; the private sink
    gets everything."""
    cfg = gate.cfg
    result = CheckResult(
        verdict="withheld", budget=done.budget, fingerprint=state.fingerprint, plan=gate.plan,
        clauses=shown_clauses(gate.plan, line=cfg.line("condition"), withheld=True, one_bit=False),
        config_path=cfg.display_name, gate=cfg.gate_name, step=done.step,
        ledger=ledger_name(state.ledger.backend),
        history=state.history() if repeat else state.history(done.entry))
    result.notes = ["labels on demand: the decision, or the request for the labels it needs, goes "
                    "to the private sink"] + ([f"this model pair was checked before (step "
                                               f"{done.step}); no step spent"] if repeat else [])
    result.private_sink = steps.deliver_private(gate, steps.private_record(gate, state, done,
                                                                           **record))
    result.alert = steps.alert_if_spent(gate, state.ledger, done.budget)
    return result


__all__ = ["admissible", "decide", "run"]
