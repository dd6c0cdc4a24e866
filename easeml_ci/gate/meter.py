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

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conditions.meter import MeterError, MeterPlan

from ..errors import ConfigError, InputError, TestSetTooSmall, UsageError
from ..ledger import Budget
from ..models import load_predictions
from ..testsets import crypto, load_testset
from . import registration, steps

GATE_NAME = "easeml-meter"


@dataclass
class MeterResult:
    """What a meter run may reveal."""

    answer: str                    # a range label, or "withheld" under adaptivity none
    ranges: list[str]
    validation_accuracy: float     # the team's own data
    budget: Budget
    fingerprint: str
    plan: MeterPlan
    config_path: str
    step: int
    ledger: str
    alert: dict | None = None
    private_sink: str | None = None
    notes: list[str] = field(default_factory=list)

    exit_code = 0

    @property
    def adaptivity(self) -> str:
        return self.plan.adaptivity

    def to_dict(self) -> dict:
        out = {"answer": self.answer, "ranges": self.ranges,
               "validation_accuracy": self.validation_accuracy, "budget": self.budget.to_dict(),
               "testset": {"fingerprint": self.fingerprint}, "plan": self.plan.to_dict(),
               "config": self.config_path, "step": self.step, "adaptivity": self.adaptivity,
               "alert": self.alert, "ledger": self.ledger, "exit_code": self.exit_code,
               "guarantee": "holds"}
        if self.private_sink:
            out["private_sink"] = self.private_sink
        return out


def meter_terms(cfg, plan: MeterPlan) -> dict:
    """The terms pinned in the meter test set's register entry (``kind: meter``)."""
    gate_terms = registration.pinned_terms(cfg)
    terms = {"kind": "meter", "edges": list(plan.ranges.edges), "tolerance": plan.ranges.tolerance,
             "reliability": plan.reliability, "adaptivity": plan.adaptivity, "steps": plan.steps,
             "private_sink": gate_terms["private_sink"] if plan.adaptivity == "none" else None,
             "ledger": gate_terms["ledger"]}
    for key in registration.OPTIONAL_TERMS:  # pinned when set (the gate's rule)
        if key in gate_terms:
            terms[key] = gate_terms[key]
    return terms


def meter_plan(cfg) -> MeterPlan:
    if cfg.meter is None:
        raise ConfigError(f"{cfg.display_name}: no `meter:` section; add one, e.g.\n"
                          "meter:\n  edges: [0.01, 0.025, 0.05]\n  tolerance: 0.005\n"
                          "  reliability: 0.999\n  steps: 32\n  adaptivity: full")
    try:
        return cfg.meter_plan()
    except MeterError as exc:
        key = f"meter.{exc.key}" if cfg.line(f"meter.{exc.key}") else "meter"
        raise ConfigError(f"{cfg.where(key)}: {exc}") from None


def register_testset(config, testset: str | None, *, key_env: str = "EASEML_TESTSET_KEY",
                     repository: bool = False) -> tuple[str, str, Budget]:
    """The owner starts the meter test set's ledger under the config's `meter:` terms, so that
    pull requests (which may not register) can be metered. Returns (state, ledger, budget)."""
    cfg = steps.config_of(config)
    plan = meter_plan(cfg)
    source = steps.testset_source(cfg, testset, Path("."), configured=(cfg.meter or {}).get("testset"),
                                  key_env=key_env, missing="no test set for the meter: pass "
                                  "--testset PATH or set `meter.testset:`")
    ts = load_testset(source.path, label_column=cfg.label_column, key_env=key_env)
    if len(ts) < plan.test_examples:
        raise TestSetTooSmall(f"test set {source.given}: the meter needs {plan.test_examples:,} "
                              f"labelled examples for {plan.steps} answers, have {len(ts):,}")
    backend = registration.open_ledger_backend(cfg, repository=repository)
    state, budget = registration.register(cfg, backend, ts.fingerprint, meter_terms(cfg, plan),
                                          {"schema": registration.testset_schema(ts)},
                                          given=source.given)
    return state, registration.ledger_name(backend), budget


def _validation_accuracy(gate: steps.Gate, validation: str) -> float:
    """The model on the team's own validation set (plaintext; any error may be shown)."""
    path = steps.resolve(str(validation), gate.workdir)
    if not path.is_file():
        raise InputError(f"--validation: {validation} does not exist or is not a file")
    if crypto.is_encrypted(path):
        raise InputError(f"--validation: {validation} is encrypted; the validation set is the "
                         "team's own, plaintext (.npz or .csv, the format of a test set)")
    data = load_testset(path, label_column=gate.cfg.label_column)
    gate.progress(f"evaluating {gate.new} on the validation set {validation}")
    try:
        pred = load_predictions(gate.models["new"], data)
    except InputError as exc:  # the models module says "test set"; here it is the validation set
        raise InputError(exc.message.replace("the test set", "the validation set")) from None
    return float(np.mean(pred == data.y))


def validate(config, model: str, validation: str, testset: str | None, workdir: Path, *,
             key_env: str = "EASEML_TESTSET_KEY", progress=None) -> tuple[steps.Gate, float]:
    """Everything that needs no test set, the model's run on the validation set included."""
    cfg = steps.config_of(config)
    plan = meter_plan(cfg)
    sink = steps.validate_sink(cfg, workdir, needed=plan.adaptivity == "none")
    spec = str(model)
    if not spec.startswith("git:") and not steps.resolve(spec, workdir).is_file():
        raise UsageError(f"--model: {spec} does not exist or is not a file")
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
    models = steps.preflight_models(cfg, {"new": (spec, "--model")}, workdir)
    gate = steps.Gate(cfg=cfg, plan=plan, terms=meter_terms(cfg, plan), testset=source, new=spec,
                      old=None, models=models, sink=sink, workdir=workdir,
                      progress=progress or (lambda _m: None), next_step=plan.next_step)
    return gate, _validation_accuracy(gate, validation)


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
    ts = steps.open_testset(gate)
    if len(ts) < plan.test_examples:
        raise TestSetTooSmall(f"test set {gate.testset.given}: the meter needs "
                              f"{plan.test_examples:,} labelled examples for {plan.steps} answers "
                              f"(adaptivity {plan.adaptivity}); label more, or configure fewer "
                              "steps, a wider tolerance or a lower reliability")
    steps.register_if_new(gate, state, {"schema": registration.testset_schema(ts)})
    outputs = steps.evaluate(gate, ts)
    labels = ts.y
    del ts
    label = plan.label(decide(plan, v, labels, outputs))
    del labels
    done = steps.commit(gate, state, passed=None, details={
        "new": gate.new, "meter": "withheld" if gate.withheld else label})
    return reveal(gate, state, done, label, v, outputs)


def reveal(gate: steps.Gate, state: steps.LedgerState, done: steps.Committed, label: str,
           v: float, outputs: steps.Evaluation) -> MeterResult:
    """Only the range (or `withheld` under `none`, the answer going to the private sink)."""
    plan: MeterPlan = gate.plan
    result = MeterResult(
        answer="withheld" if gate.withheld else label, ranges=list(plan.ranges.labels),
        validation_accuracy=v, budget=done.budget, fingerprint=state.fingerprint, plan=plan,
        config_path=gate.cfg.display_name, step=done.step,
        ledger=registration.ledger_name(state.ledger.backend))
    if outputs.failed:  # the owner's eyes only: the text may quote the secret features
        steps.deliver_private(gate, {"gate": GATE_NAME, "testset": state.fingerprint,
                                     "model_failed": outputs.failure.spec,
                                     "detail": outputs.failure.detail})
    if gate.withheld:
        result.private_sink = steps.deliver_private(gate, {
            "gate": GATE_NAME, "testset": state.fingerprint, "step": done.step,
            "time": done.entry["time"], "model": gate.new, "meter": label,
            "validation_accuracy": v})
    result.alert = steps.alert_if_spent(gate, state.ledger, done.budget)
    return result


def render(result: MeterResult) -> str:
    """The terminal text: the range among the ranges, and the budget."""
    lines = [f"easeml-meter: validation accuracy {result.validation_accuracy:.4f}"]
    if result.answer == "withheld":
        lines.append(f"overfitting: withheld (adaptivity none: the answer went to "
                     f"{result.private_sink})")
    else:
        gauge = "  ".join(f"[{r}]" if r == result.answer else r for r in result.ranges)
        lines.append(f"overfitting (validation minus true accuracy): {result.answer}")
        lines.append(f"  {gauge}")
        lines.append(f"  guaranteed up to +/- {100 * result.plan.ranges.tolerance:g}% at each edge, "
                     f"reliability {result.plan.reliability} over the test set's life")
    b = result.budget.to_dict()
    lines.append(f"test set {result.fingerprint[:12]}: {b['used']} of {b['total']} answers used, "
                 f"{b['remaining']} remaining ({b['status']}); ledger: {result.ledger}")
    if result.alert:
        lines.append(result.alert["text"])
    return "\n".join(lines)


def fails_above(result: MeterResult, threshold: float | None, edges) -> bool:
    """Whether a run should fail its job: the reported range lies at or above ``threshold``,
    which must be one of the edges (the guarantee is stated at the edges). A withheld answer
    (adaptivity none) never fails; ``threshold`` None never fails.

    Since an answer may be the neighbour of the true range within the tolerance, a model whose
    overfitting is at least ``threshold + tolerance`` fails with probability at least the
    reliability, and one below ``threshold - tolerance`` passes with it.
    """
    if threshold is None or result.answer == "withheld":
        return False
    if not any(abs(threshold - e) < 1e-12 for e in edges):
        raise UsageError(f"meter-fail-above: {threshold!r} is not one of the meter's edges "
                         f"{list(edges)!r}; the guarantee is stated at the edges")
    index = result.ranges.index(result.answer)
    lower = 0.0 if index == 1 else (-math.inf if index == 0 else edges[index - 2])
    return lower >= threshold - 1e-12


def render_gauge(result: MeterResult) -> str:
    """Markdown for a job summary or a pull-request comment: the ranges as a gauge, the answer
    marked, and the budget. Shows nothing about the test set beyond the answer."""
    if result.answer == "withheld":
        head = "**Overfitting:** withheld (adaptivity `none`: the answer went to a private sink)"
        gauge = " · ".join(result.ranges)
    else:
        head = f"**Overfitting** (validation minus true accuracy): **{result.answer}**"
        gauge = " · ".join(f"**[ {r} ]**" if r == result.answer else r for r in result.ranges)
    b = result.budget.to_dict()
    return "\n".join([
        f"### {GATE_NAME}", "", head, "", gauge, "",
        f"Validation accuracy (your own set): {result.validation_accuracy:.4f}. Guaranteed up to "
        f"±{100 * result.plan.ranges.tolerance:g}% at each edge, reliability "
        f"{result.plan.reliability} for every answer of the test set's life.",
        f"Test set `{result.fingerprint[:12]}`: {b['used']} of {b['total']} answers used "
        f"({b['status']})."])


__all__ = ["MeterResult", "run_meter", "render", "render_gauge", "fails_above", "meter_terms"]
