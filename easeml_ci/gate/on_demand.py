"""A check on a test set labelled on demand: the shared steps with a sequential ``decide``.

A test set registered without labels (:class:`easeml_ci.testsets.UnlabelledTestSet`) gets them
in batches (:mod:`easeml_ci.testsets.labels`). A check on it evaluates both models on every row,
reads the rows in an order fixed at registration (:func:`order_seed`) and decides each clause
with the sequential test of :mod:`conditions.sequential`, capped by the fixed-size plan
(:func:`conditions.sequential.decide_in_order`). When the labels present settle every clause the
formula is decided; otherwise the check is "awaiting labels" and the owner gets the label request.

What the team sees (docs/statistics.md §6): whether a check decides or awaits, and how many
labels it asks for, depend on the labels. So this path runs only under ``adaptivity: none``
(:func:`refuse_adaptive`), where the team sees "withheld" whatever happens, and the step is spent
by a rule that never looks at the labels: **the first check of a model pair spends one step**; a
later check of the same pair (:func:`easeml_ci.models.digest.pair_digest`) spends nothing and
completes or repeats its step's decision privately. A decision never changes once made: labels
are append-only, the sequential test stops at the first row where an e-process crosses, the cap
reads a fixed prefix, and a failed clause fails the formula.
"""
from __future__ import annotations

from pathlib import Path

import conditions
from conditions.sequential import FormulaDecision, decide_in_order, row_order

from ..errors import ConfigError, TestSetTooSmall, UsageError
from ..models import TestSetSchema
from ..models.digest import pair_digest
from ..testsets import TestSet, UnlabelledTestSet
from ..testsets.labels import LabelStore, default_store_path
from . import steps
from .registration import ledger_name
from .results import CheckResult, ShownClause

ON_DEMAND = "on-demand"  # the register entry's "labels" note for such a test set


def applies(gate: steps.Gate, state: steps.LedgerState) -> bool:
    """A plaintext unlabelled test set, or one registered as labelled on demand."""
    return (isinstance(gate.testset.peek(), UnlabelledTestSet)
            or bool(state.registration) and state.registration.get("labels") == ON_DEMAND)


def refuse_adaptive(cfg, testset: str) -> None:
    """Labels on demand only under ``adaptivity: none`` (exit 2 otherwise): under an adaptive
    mode the team would see a verdict at a time that depends on when the labels sufficed."""
    if cfg.adaptivity == "none":
        return
    passes = f" with passes {cfg.passes}" if cfg.passes is not None else ""
    raise ConfigError(
        f"{cfg.where('adaptivity')} is '{cfg.adaptivity}'{passes}, but test set {testset} is "
        "labelled on demand: whether a check decides or awaits labels depends on the labels, and "
        "under an adaptive mode the team would see it as an outcome the budget does not count. "
        "Use `adaptivity: none` (verdicts and label requests go to the private sink), or label "
        "every row and register a labelled test set (features and a label column)")


def admissible_plan(cfg, ts: UnlabelledTestSet, name: str) -> conditions.SequentialPlan:
    """The sequential plan for ``ts``; refuses an adaptive mode (exit 2) and a test set with
    fewer rows than the plan's cap (exit 3)."""
    refuse_adaptive(cfg, name)
    try:
        plan = conditions.sequential_plan(cfg.formula, cfg.reliability, cfg.mode, cfg.adaptivity,
                                          cfg.steps, cfg.passes)
    except conditions.PlanError as exc:
        raise steps.refuse_config(cfg, exc) from None
    if len(ts) < plan.rows:
        raise TestSetTooSmall(
            f"test set {name}: labelled on demand, it needs {plan.rows} rows "
            f"(features and ids; labels only where a decision asks), has {len(ts)}; add rows")
    return plan


def registration_note(ts: UnlabelledTestSet) -> dict:
    return {"labels": ON_DEMAND, "schema": TestSetSchema.of(ts).to_dict()}


def spent_step(entries: list[dict], pair: str) -> dict | None:
    """The step an earlier check of this pair spent, or None."""
    return next((e for e in entries if e.get("kind") == "step" and e.get("pair") == pair), None)


def order_seed(fingerprint: str) -> int:
    """The reading order's seed: fixed by the fingerprint, i.e. at registration."""
    return int(fingerprint[:16], 16)


def open_store(gate: steps.Gate, ts: UnlabelledTestSet, store_path) -> LabelStore:
    """The label store of ``ts``: ``store_path`` (from the workdir), or the default beside it."""
    path = steps.resolve(store_path, gate.workdir) if store_path else default_store_path(gate.testset.path)
    return LabelStore.open(path, ts, gate.testset.key())


def decide(plan, fingerprint: str, ts: UnlabelledTestSet, y, known, outputs: steps.Evaluation
           ) -> tuple[str, list[dict], list[str]]:
    """(status, the clauses' private record, the row ids to label next)."""
    if outputs.failed:  # as for a labelled test set: a model that fails on the test data fails
        return "fail", [{"text": c.text, "status": "fail", "rows": 0, "labels": 0,
                         "by": "model failed"} for c in plan.clauses], []
    order = row_order(len(ts.ids), order_seed(fingerprint))
    made: FormulaDecision = decide_in_order(plan, order, y, known, outputs.new, outputs.old)
    clauses = [{"text": c.text, "status": s.status, "rows": s.rows, "labels": s.labels, "by": s.by}
               for c, s in zip(plan.clauses, made.clauses)]
    return made.status, clauses, [str(ts.ids[i]) for i in made.request]


def run(gate: steps.Gate, state: steps.LedgerState, *, underpowered: bool, store_path=None,
        opened: UnlabelledTestSet | None = None) -> CheckResult:
    """Spend (first check of the pair) or reuse the pair's step; decide privately; reveal.

    ``opened``: an encrypted test set whose header could not say it is unlabelled, already
    opened (and admitted) by the labelled check."""
    refuse_adaptive(gate.cfg, gate.testset.given)
    if opened is None:
        steps.check_terms(gate, state)
    pair = pair_digest(gate.new, gate.old, gate.cfg.output, gate.workdir)
    earlier = spent_step(state.entries, pair)
    if opened is None:  # a pair with its step spent may still complete its decision privately
        steps.admit(gate, state, spends_step=earlier is None)
    ts = opened if opened is not None else steps.open_testset(gate)
    plan = admissible_plan(gate.cfg, ts, gate.testset.given)
    if underpowered:
        raise UsageError(f"--underpowered: test set {gate.testset.given} is labelled on demand; "
                         "a sequential decision reads as many rows as it needs up to its cap, so "
                         "give the test set at least the cap's rows instead")
    steps.register_if_new(gate, state, registration_note(ts))
    store = open_store(gate, ts, store_path)  # everything that can refuse, before the step
    y, known = store.label_vector()
    view = ts if store.kind is None else TestSet(X=ts.X, y=y, fingerprint=ts.fingerprint,
                                                 source=ts.source)  # models meet the label kind
    outputs = steps.evaluate(gate, view)
    status, clauses, request = decide(plan, state.fingerprint, ts, y, known, outputs)
    del ts, view
    if earlier is None:
        done = steps.commit(gate, state, passed=None, details=steps.public_details(gate, pair=pair))
    else:
        done = steps.Committed(earlier, state.budget(gate.terms))
    record = {"pair": pair, "repeat": earlier is not None, "verdict": status, "clauses": clauses,
              "labels": {"store": str(store.path), "head": store.head,
                         "labelled": len(store.labels)}, **steps.failure_record(outputs)}
    if status in ("pass", "fail") and earlier is not None:
        record["completes_step"] = done.step
    if status == "awaiting labels":
        record["label_request"] = {
            "row_ids": request, "count": len(request),
            "order": "priority (label the first ones first)",
            "then": f"easeml-ci testset label {gate.testset.given} LABELS.csv (columns id,label), "
                    "then re-run the same check: it spends no new step"}
    return reveal(gate, state, done, record, repeat=earlier is not None)


def reveal(gate: steps.Gate, state: steps.LedgerState, done: steps.Committed, record: dict, *,
           repeat: bool) -> CheckResult:
    """The team sees the same for every decision and for "awaiting labels"; the private sink
    gets everything."""
    cfg = gate.cfg
    result = CheckResult(
        verdict="withheld", budget=done.budget, fingerprint=state.fingerprint, plan=gate.plan,
        clauses=tuple(ShownClause(c.text, "withheld", cfg.line("condition")) for c in gate.plan.clauses),
        config_path=cfg.display_name, gate=cfg.gate_name, step=done.step,
        ledger=ledger_name(state.ledger.backend),
        history=state.history() if repeat else state.history(done.entry))
    result.notes.append("labels on demand: the decision, or the request for the labels it needs, "
                        "goes to the private sink")
    if repeat:
        result.notes.append(f"this model pair was checked before (step {done.step}); no step spent")
    result.private_sink = steps.deliver_private(gate, {
        "gate": result.gate, "testset": state.fingerprint, "step": done.step,
        "time": done.entry["time"], "new": gate.new, "old": gate.old, **record})
    result.alert = steps.alert_if_spent(gate, state.ledger, done.budget)
    return result


__all__ = ["ON_DEMAND", "admissible_plan", "applies", "order_seed", "refuse_adaptive",
           "registration_note", "run", "spent_step"]
