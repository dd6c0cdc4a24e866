"""A check on a labelled test set: the shared steps with a fixed-size ``decide`` and a ``reveal``.

:func:`run_check` is the API the CLI and the GitHub Action share. It returns a
:class:`~.results.CheckResult`, or raises :class:`~easeml_ci.errors.BudgetExhausted` when the
test set is retired or spent, :class:`~easeml_ci.errors.TestSetTooSmall` when it is smaller
than the plan needs, and a :class:`~easeml_ci.errors.UsageError` for bad input. A test set
labelled on demand is answered by :mod:`.on_demand` after the same first steps.
"""
from __future__ import annotations

from pathlib import Path

import conditions

from ..errors import TestSetTooSmall, UsageError
from ..testsets import UnlabelledTestSet
from . import on_demand, steps
from .registration import ledger_name, open_ledger_backend, pinned_terms, testset_schema
from .results import CheckResult, ShownClause


def validate(config, new: str, old: str | None, testset: str | None, workdir: Path, *,
             key_env: str, progress: steps.Progress | None = None) -> steps.Gate:
    """Everything that can be checked without the test set or a model run (exit 2)."""
    cfg = steps.config_of(config)
    sink = steps.validate_sink(cfg, workdir, needed=cfg.adaptivity == "none")
    comparing = cfg.formula.variables & {"o", "d"}
    if comparing and not old:
        raise UsageError(f"--old is required: the condition `{cfg.formula}` uses "
                         f"{', '.join(sorted(comparing))}, which compare the new model with the "
                         "old one")
    old = old if comparing else None  # not needed: neither evaluated nor recorded
    source = steps.testset_source(cfg, testset, workdir, configured=cfg.testset, key_env=key_env,
                                  missing="no test set: pass --testset PATH or set `testset:` in the config")
    models = steps.preflight_models(cfg, {"new": (new, "--new"), "old": (old, "--old")}, workdir)
    if cfg.pool and not cfg.resolve(cfg.pool).is_file():
        raise UsageError(f"{cfg.where('pool')}: {cfg.resolve(cfg.pool)} does not exist or is not "
                         "a file; the new-test-set alert ranks the label request from it")
    try:
        plan = cfg.plan()
    except conditions.PlanError as exc:
        raise steps.refuse_config(cfg, exc) from None
    return steps.Gate(cfg=cfg, plan=plan, terms=pinned_terms(cfg), testset=source, new=str(new),
                      old=str(old) if old else None, models=models, sink=sink, workdir=workdir,
                      progress=progress or (lambda _message: None))


def sized_plan(gate: steps.Gate, rows: int, *, underpowered: bool) -> conditions.Plan:
    """The plan for a test set of ``rows`` examples: the configured one, or (``--underpowered``)
    the tolerances that size supports."""
    plan = gate.plan
    if rows >= plan.test_examples:
        return plan
    if not underpowered:
        raise TestSetTooSmall(f"test set {gate.testset.given}: need {plan.test_examples} labelled "
                              f"examples, have {rows}; label more, or run with --underpowered to "
                              "decide at the tolerance it supports")
    try:
        return plan.for_sample_size(rows)
    except conditions.PlanError as exc:
        raise TestSetTooSmall(f"test set {gate.testset.given}: {exc}") from None


def decide(gate: steps.Gate, plan: conditions.Plan, labels, outputs: steps.Evaluation
           ) -> conditions.Verdict:
    """The verdict, in memory only. A model that failed on the test data fails every clause."""
    if outputs.failed:
        return conditions.Verdict(passed=False, test_examples=0, clauses=tuple(
            conditions.ClauseVerdict(text=c.text, answer="unknown", passed=False,
                                     estimate=float("nan")) for c in plan.clauses))
    try:
        return plan.decide(conditions.Outcomes.from_predictions(labels, outputs.new, outputs.old))
    except conditions.SampleTooSmall as exc:
        raise TestSetTooSmall(f"test set {gate.testset.given}: {exc}") from None


def reveal(gate: steps.Gate, state: steps.LedgerState, verdict: conditions.Verdict,
           plan: conditions.Plan, done: steps.Committed, rows: int, outputs: steps.Evaluation
           ) -> CheckResult:
    """What the team may see. Under the adaptive modes the union bound counts one bit per step
    (the formula's verdict), so a multi-clause formula's clauses stay undisclosed unless
    show_metrics voided the guarantee; under `none` everything goes to the private sink."""
    cfg, configured, withheld = gate.cfg, gate.plan, gate.withheld
    one_bit = not withheld and len(verdict.clauses) > 1 and not cfg.show_metrics
    widened = plan is not configured
    shown = tuple(ShownClause(
        text=configured.clauses[i].text, line=cfg.line("condition"),
        verdict="withheld" if withheld else "undisclosed" if one_bit else
                ("pass" if cv.passed else "fail"),
        tolerance=plan.clauses[i].tolerance if widened else None,
        configured_tolerance=configured.clauses[i].tolerance if widened else None)
        for i, cv in enumerate(verdict.clauses))
    result = CheckResult(
        verdict="withheld" if withheld else ("pass" if verdict.passed else "fail"), clauses=shown,
        budget=done.budget, fingerprint=state.fingerprint, plan=configured,
        config_path=cfg.display_name, gate=cfg.gate_name, step=done.step, underpowered=widened,
        ledger=ledger_name(state.ledger.backend), history=state.history(done.entry))
    record = {"gate": result.gate, "testset": state.fingerprint, "step": done.step,
              "time": done.entry["time"], "new": gate.new, "old": gate.old,
              "verdict": "pass" if verdict.passed else "fail",
              "clauses": [cv.to_dict(reveal_estimates=bool(cfg.show_metrics))
                          for cv in verdict.clauses], **steps.failure_record(outputs)}
    if withheld or outputs.failed:  # a failure's text is for the owner's eyes only
        where = steps.deliver_private(gate, record)
        result.private_sink = where if withheld else None
    if not withheld and cfg.show_metrics:
        result.metrics = {"test_examples": rows,
                          "clauses": [cv.to_dict(reveal_estimates=True) for cv in verdict.clauses]}
    result.alert = steps.alert_if_spent(gate, state.ledger, done.budget)
    return result


def run_check(config, new: str, old: str | None, testset: str | None, *,
              underpowered: bool = False, key_env: str = "EASEML_TESTSET_KEY",
              workdir: Path = Path("."), backend=None, register: bool = True,
              progress: steps.Progress | None = None, label_store=None) -> CheckResult:
    """Gate ``new`` (against ``old``) on ``testset`` under ``config``; see the module docstring.

    ``register=False`` refuses a test set its owner has not registered (pull requests).
    ``label_store``: the label store of a test set labelled on demand (default: beside it).
    """
    workdir = Path(workdir)
    gate = validate(config, new, old, testset, workdir, key_env=key_env, progress=progress)
    state = steps.read_ledger(gate, backend or open_ledger_backend(gate.cfg), register=register)
    if on_demand.applies(gate, state):
        return on_demand.run(gate, state, underpowered=underpowered, store_path=label_store)
    steps.check_terms(gate, state)
    steps.admit(gate, state)
    ts = steps.open_testset(gate)
    if isinstance(ts, UnlabelledTestSet):  # encrypted, first seen: its header could not say
        return on_demand.run(gate, state, underpowered=underpowered, store_path=label_store,
                             opened=ts)
    plan = sized_plan(gate, len(ts), underpowered=underpowered)
    steps.register_if_new(gate, state, {"schema": testset_schema(ts)})
    outputs = steps.evaluate(gate, ts)
    labels, rows = ts.y, len(ts)
    del ts  # the labels own their buffer: deciding adds nothing to the models' peak memory
    verdict = decide(gate, plan, labels, outputs)
    outputs.new = outputs.old = None
    details = steps.public_details(gate, **({"underpowered": True} if plan is not gate.plan else {}))
    done = steps.commit(gate, state, passed=None if gate.withheld else verdict.passed,
                        details=details)
    return reveal(gate, state, verdict, plan, done, rows, outputs)
