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

from ..errors import TestSetTooSmall
from ..testsets import UnlabelledTestSet
from . import steps
from .registration import ledger_name, open_ledger_backend
from .results import CheckResult, shown_clauses


def _on_demand():
    """:mod:`.on_demand`, imported when a test set labelled on demand needs it (its statistics
    and label stores are not a labelled check's imports)."""
    from . import on_demand

    return on_demand


def _admissible_on_demand(gate: steps.Gate):
    """register_if_new's refusal of a test set found to be labelled on demand that this config
    cannot answer (a labelled one passes without loading :mod:`.on_demand`)."""
    def admissible(ts) -> None:
        if isinstance(ts, UnlabelledTestSet):
            _on_demand().admissible(gate, ts)

    return admissible


def sized_plan(gate: steps.Gate, rows: int, *, underpowered: bool) -> conditions.Plan:
    """The plan for a test set of ``rows`` examples: the configured one, or (``--underpowered``)
    the tolerances that size supports."""
    plan = gate.plan
    if rows >= plan.test_examples:
        return plan
    if not underpowered:
        steps.require_rows(gate, rows, plan.test_examples, "label more, or run with "
                           "--underpowered to decide at the tolerance it supports")
    try:
        return plan.for_sample_size(rows)
    except conditions.PlanError as exc:
        raise TestSetTooSmall(f"test set {gate.testset.given}: {exc}") from None


def decide(gate: steps.Gate, plan: conditions.Plan, labels, outputs: steps.Evaluation
           ) -> conditions.Verdict:
    """The verdict, in memory only. A model that failed on the test data fails every clause."""
    if outputs.failed:
        return conditions.Verdict.failed(plan)
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
    cfg, withheld, metrics = gate.cfg, gate.withheld, bool(gate.cfg.show_metrics)
    result = CheckResult(
        verdict="withheld" if withheld else ("pass" if verdict.passed else "fail"),
        clauses=shown_clauses(gate.plan, plan, verdict, line=cfg.line("condition"),
                              withheld=withheld, one_bit=len(verdict.clauses) > 1 and not metrics),
        budget=done.budget, fingerprint=state.fingerprint, plan=gate.plan,
        config_path=cfg.display_name, gate=cfg.gate_name, step=done.step,
        underpowered=plan is not gate.plan, ledger=ledger_name(state.ledger.backend),
        history=state.history(done.entry))
    if withheld or outputs.failed:  # a failure's text is for the owner's eyes only
        where = steps.deliver_private(gate, steps.private_record(
            gate, state, done, **verdict.to_dict(reveal_estimates=metrics),
            **steps.failure_record(outputs)))
        result.private_sink = where if withheld else None
    if metrics and not withheld:
        result.metrics = {"test_examples": rows,
                          "clauses": verdict.to_dict(reveal_estimates=True)["clauses"]}
    result.alert = steps.alert_if_spent(gate, state.ledger, done.budget)
    return result


def run_check(config, new: str, old: str | None, testset: str | None, *,
              underpowered: bool = False, key_env: str = "EASEML_TESTSET_KEY",
              workdir: Path = Path("."), backend=None, register: bool = True,
              progress: steps.Progress | None = None, label_store=None,
              pull_request: dict | None = None) -> CheckResult:
    """Gate ``new`` (against ``old``) on ``testset`` under ``config``; see the module docstring.

    ``register=False`` refuses a test set its owner has not registered (pull requests).
    ``label_store``: the label store of a test set labelled on demand (default: beside it).
    ``pull_request``: ``{"number", "head_sha"}`` a check in rounds records with its step.
    """
    workdir = Path(workdir)
    gate = steps.validate_pair(config, new, old, testset, workdir, key_env=key_env,
                               progress=progress, underpowered=underpowered)
    state = steps.read_ledger(gate, backend or open_ledger_backend(gate.cfg), register=register)
    if steps.labelled_on_demand(gate, state):
        return _on_demand().run(gate, state, underpowered=underpowered, store_path=label_store,
                                pull_request=pull_request)
    steps.check_terms(gate, state)
    steps.admit(gate, state)
    known = gate.testset.peek()  # a plaintext test set's size is refused before a step is spent
    if known is not None:
        sized_plan(gate, len(known), underpowered=underpowered)
    steps.register_if_new(gate, state, admissible=_admissible_on_demand(gate))
    if steps.labelled_on_demand(gate, state):  # registered just now, as labelled on demand
        return _on_demand().run(gate, state, underpowered=underpowered, store_path=label_store)
    reserved = steps.reserve(gate, state, details=steps.public_details(gate))
    ts = steps.open_testset(gate, state)
    if isinstance(ts, UnlabelledTestSet):  # encrypted, registered before "labels" was noted
        return _on_demand().run(gate, state, underpowered=underpowered, store_path=label_store,
                                opened=ts, reserved=reserved, pull_request=pull_request)
    plan = sized_plan(gate, len(ts), underpowered=underpowered)
    outputs = steps.evaluate(gate, ts)
    labels, rows = ts.y, len(ts)
    del ts  # the labels own their buffer: deciding adds nothing to the models' peak memory
    verdict = decide(gate, plan, labels, outputs)
    outputs.drop_predictions()
    done = steps.complete(gate, state, reserved, passed=None if gate.withheld else verdict.passed,
                          details={"underpowered": True} if plan is not gate.plan else None)
    result = reveal(gate, state, verdict, plan, done, rows, outputs)
    steps.release(outputs)
    return result
