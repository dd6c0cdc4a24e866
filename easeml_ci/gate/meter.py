"""ease.ml/meter: how far a model's validation accuracy overstates its true accuracy.

The same contract as the gate (docs/design.md §2-§3) with an m-valued answer instead of a
pass/fail bit, through the same steps (docs/design.md#the-pipeline) with a ``decide`` and a
``reveal`` of its own: the answer is the range of ``v - a_hat`` (conditions.meter.MeterPlan);
under `full` the step's entry carries the range (the symbol revealed), under `none` the ledger
holds no answer and the range goes to the private sink.

The team sees its own validation accuracy (its own data), the range, the budget and the plan's
public sizes; nothing else derived from the test set.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from conditions.meter import MeterPlan

from ..errors import ConfigError, InputError
from ..models import accuracy
from ..testsets import load_own_testset
from . import registration, steps
from .results import METER_NAME as GATE_NAME, MeterResult

def validate(config, model: str, validation: str, testset: str | None, workdir: Path, *,
             key_env: str = "EASEML_TESTSET_KEY", progress=None) -> tuple[steps.Gate, float]:
    """Everything that needs no test set, the model's run on the validation set included."""
    cfg = steps.config_of(config)
    plan = cfg.checked_meter_plan()
    spec = str(model)
    if not spec.lower().endswith(".onnx"):
        raise InputError(f"--model: {spec} is a predictions file; the meter runs the model on the "
                         "validation set and on its own test set, so it needs the model itself "
                         "(.onnx, or git:REF:PATH to one)")
    source = steps.testset_source(
        cfg, testset, workdir, configured=(cfg.meter or {}).get("testset"), key_env=key_env,
        missing="no test set for the meter: pass --testset PATH or set `meter.testset:` in the "
                "config (the meter's own, not the gate's)")
    if cfg.testset and cfg.resolve(cfg.testset).resolve() == source.path.resolve():
        raise ConfigError(f"{cfg.where('meter.testset' if cfg.line('meter.testset') else 'meter')}: "
                          f"{source.given} is the gate's test set (`testset:`); the meter needs "
                          "its own, since each answer spends that test set's budget")
    gate = steps.validate(cfg, plan=plan, terms=registration.meter_terms(cfg, plan), testset=source,
                          models={"new": (spec, "--model")}, workdir=workdir, progress=progress,
                          next_step=plan.next_step)
    own = load_own_testset(steps.resolve(str(validation), workdir), "--validation", str(validation),
                           label_column=cfg.label_column)
    gate.progress(f"evaluating {spec} on the validation set {validation}")
    return gate, accuracy(gate.models["new"], own, what="the validation set")


def decide(plan: MeterPlan, v: float, labels, outputs: steps.Evaluation) -> int:
    """The range index of ``v - a_hat``, in memory. A model that failed on the test data gets
    the most pessimistic range: a distinct "failed" would be a symbol the plan does not count."""
    if outputs.failed:
        return len(plan.ranges.labels) - 1
    correct = np.asarray(outputs.new) == np.asarray(labels)
    size = plan.usable_size(len(correct), v)
    return int(plan.answer(v, int(correct[:size].sum()), size))


def run_meter(config, model: str, validation: str, testset: str | None = None, *,
              key_env: str = "EASEML_TESTSET_KEY", workdir: Path = Path("."), backend=None,
              register: bool = True, progress=None) -> MeterResult:
    """One meter answer; raises BudgetExhausted (with its alert), TestSetTooSmall, UsageError."""
    workdir = Path(workdir)
    gate, v = validate(config, model, validation, testset, workdir, key_env=key_env,
                       progress=progress)
    plan: MeterPlan = gate.plan
    state = steps.read_ledger(gate, backend or registration.open_ledger_backend(gate.cfg),
                              register=register)
    steps.check_terms(gate, state)
    steps.admit(gate, state)
    too_small = (f"the meter needs them for {plan.steps} answers (adaptivity {plan.adaptivity}): "
                 "label more, or configure fewer steps, a wider tolerance or a lower reliability")
    known = gate.testset.peek()
    if known is not None:  # refused before a step is spent where the size is known
        steps.require_rows(gate, len(known), plan.test_examples, too_small)
    steps.register_if_new(gate, state)
    reserved = steps.reserve(gate, state, details={"new": gate.new})
    ts = steps.open_testset(gate, state)
    steps.require_rows(gate, len(ts), plan.test_examples, too_small)
    outputs = steps.evaluate(gate, ts)
    label = plan.label(decide(plan, v, ts.y, outputs))
    del ts
    done = steps.complete(gate, state, reserved, passed=None,
                          details={"meter": "withheld" if gate.withheld else label})
    result = reveal(gate, state, done, label, v, outputs)
    steps.release(outputs)
    return result


def reveal(gate: steps.Gate, state: steps.LedgerState, done: steps.Committed, label: str,
           v: float, outputs: steps.Evaluation) -> MeterResult:
    """Only the range (or `withheld` under `none`, the answer going to the private sink)."""
    result = MeterResult(
        answer="withheld" if gate.withheld else label, ranges=list(gate.plan.ranges.labels),
        validation_accuracy=v, budget=done.budget, fingerprint=state.fingerprint, plan=gate.plan,
        config_path=gate.cfg.display_name, step=done.step,
        ledger=registration.ledger_name(state.ledger.backend))
    if outputs.failed:  # the owner's eyes only: the text may quote the secret features
        steps.deliver_private(gate, {"gate": GATE_NAME, "testset": state.fingerprint,
                                     **steps.failure_record(outputs)})
    if gate.withheld:
        result.private_sink = steps.deliver_private(gate, {
            "gate": GATE_NAME, "testset": state.fingerprint, "step": done.step,
            "time": done.entry["time"], "model": gate.new, "meter": label,
            "validation_accuracy": v})
    result.alert = steps.alert_if_spent(gate, state.ledger, done.budget)
    return result


__all__ = ["GATE_NAME", "decide", "reveal", "run_meter", "validate"]
