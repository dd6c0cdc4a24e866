"""ease.ml/meter, end to end: how far a model's validation accuracy overstates its true accuracy.

The same contract as the gate (docs/design.md §2-§3) with an m-valued answer instead of a
pass/fail bit, and the same steps, reusing :mod:`easeml_ci.gate.check`:

    validate      config and its `meter:` section, the model (ONNX: it runs on two sets), the
                  team's validation set, the private sink; the model on the validation set
                  (features and label kind): all before the test set is opened
    budget        check.budget: fingerprint, verified ledger, pinned terms (kind: meter), steps
    open_testset  check.open_testset: decrypt; a test set smaller than the plan is refused (exit 3)
    evaluate      check.evaluate: the model's predictions on the test set
    decide        the range of v - a_hat (conditions.meter.MeterPlan), in memory
    commit        the step appended to the ledger: under `full` its details carry the answer (the
                  symbol revealed); under `none` the ledger holds no answer
    reveal        only the range (or `withheld` under `none`, the answer going to the private
                  sink); the new-test-set alert (check.raise_alert) when the steps are spent

The team sees its own validation accuracy (its own data), the range, the budget and the plan's
public sizes; nothing else derived from the test set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conditions.meter import MeterError, MeterPlan

from . import check, private_sink, registration
from ..errors import (BudgetExhausted, ConfigError, InputError, ModelFailedOnTestSet,
                     TestSetTooSmall, UsageError)
from ..ledger import Ledger, LedgerSpent

GATE_NAME = "easeml-meter"


@dataclass
class MeterResult:
    """What a meter run may reveal."""

    answer: str                    # a range label, or "withheld" under adaptivity none
    ranges: list[str]
    validation_accuracy: float     # the team's own data
    budget: dict
    fingerprint: str
    plan: dict
    config_path: str
    step: int
    adaptivity: str
    alert: dict | None = None
    private_sink: str | None = None
    ledger: str | None = None
    notes: list[str] = field(default_factory=list)

    exit_code = 0

    def to_dict(self) -> dict:
        out = {"answer": self.answer, "ranges": self.ranges,
               "validation_accuracy": self.validation_accuracy, "budget": self.budget,
               "testset": {"fingerprint": self.fingerprint}, "plan": self.plan,
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


def register_testset(config, testset: str | None, *, key_env: str = "EASEML_TESTSET_KEY",
                     repository: bool = False) -> tuple[str, str, dict]:
    """The owner starts the meter test set's ledger under the config's `meter:` terms, so that
    pull requests (which may not register) can be metered. Returns (state, ledger, budget)."""
    from ..testsets import load_testset

    cfg = check._load_config(config)
    plan = _meter_plan(cfg)
    given = testset or (cfg.meter or {}).get("testset")
    if not given:
        raise UsageError("no test set for the meter: pass --testset PATH or set `meter.testset:`")
    path = Path(given) if testset else cfg.resolve(given)
    ts = load_testset(path, label_column=cfg.label_column, key_env=key_env)
    if len(ts) < plan.test_examples:
        raise TestSetTooSmall(f"test set {given}: the meter needs {plan.test_examples:,} labelled "
                              f"examples for {plan.steps} answers, have {len(ts):,}")
    backend = registration.open_ledger_backend(cfg, repository=repository)
    ledger = Ledger(backend, ts.fingerprint)
    terms = meter_terms(cfg, plan)
    entries = ledger.entries()
    existing = ledger.registration(entries)
    if existing is not None:
        registration.check_pinned(cfg, existing, ts.fingerprint, terms)
        state = "already registered"
    else:
        ledger.register(terms, by="register", note={"schema": registration.testset_schema(ts)})
        state = "registered"
    return state, registration.ledger_name(backend), ledger.budget().to_dict()


def _meter_plan(cfg) -> MeterPlan:
    if cfg.meter is None:
        raise ConfigError(f"{registration._config_name(cfg)}: no `meter:` section; add one, e.g.\n"
                          "meter:\n  edges: [0.01, 0.025, 0.05]\n  tolerance: 0.005\n"
                          "  reliability: 0.999\n  steps: 32\n  adaptivity: full")
    try:
        return cfg.meter_plan()
    except MeterError as exc:
        key = f"meter.{exc.key}" if registration._line(cfg, f"meter.{exc.key}") else "meter"
        raise ConfigError(f"{registration._where(cfg, key)}: {exc}") from None


def _load_validation(path: Path, given: str, label_column: str):
    from ..testsets import crypto
    from ..testsets import load_testset

    if not path.is_file():
        raise InputError(f"--validation: {given} does not exist or is not a file")
    if crypto.is_encrypted(path):
        raise InputError(f"--validation: {given} is encrypted; the validation set is the team's "
                         "own, plaintext (.npz or .csv, the format of a test set)")
    return load_testset(path, label_column=label_column)


def validate(config, model: str, validation: str, testset: str | None, workdir: Path,
             progress=None) -> tuple[check.Gate, float]:
    """Everything that needs no test set, including the model on the validation set (exit 2).

    Returns the gate (``plan`` is the :class:`MeterPlan`) and the validation accuracy.
    """
    from ..models import load_predictions, preflight

    cfg = check._load_config(config)
    plan = _meter_plan(cfg)
    sink = None
    if plan.adaptivity == "none":
        sink = private_sink.validate(cfg.private_sink, workdir, registration._line(cfg, "private_sink"))
    spec = str(model)
    if not spec.startswith(check.GIT_PREFIX) and not check._resolve(spec, workdir).is_file():
        raise UsageError(f"--model: {spec} does not exist or is not a file")
    if not spec.lower().endswith(".onnx"):
        raise InputError(f"--model: {spec} is a predictions file; the meter runs the model on the "
                         "validation set and on its own test set, so it needs the model itself "
                         "(.onnx, or git:REF:PATH to one)")
    if testset:
        testset_path, given = check._resolve(str(testset), workdir), str(testset)
    elif (cfg.meter or {}).get("testset"):
        given = cfg.meter["testset"]
        testset_path = cfg.resolve(given)
    else:
        raise UsageError("no test set for the meter: pass --testset PATH or set `meter.testset:` "
                         "in the config (the meter's own, not the gate's)")
    if getattr(cfg, "testset", None) and cfg.resolve(cfg.testset).resolve() == testset_path.resolve():
        raise ConfigError(f"{registration._where(cfg, 'meter.testset' if registration._line(cfg, 'meter.testset') else 'meter')}: "
                          f"{given} is the gate's test set (`testset:`); the meter needs its own, "
                          "since each answer spends that test set's budget")
    opened_model = preflight(check._model_spec(spec, workdir), repo=workdir,
                             output=getattr(cfg, "output", None))
    validation_path = check._resolve(str(validation), workdir)
    vset = _load_validation(validation_path, str(validation), cfg.label_column)
    if progress:
        progress(f"evaluating {spec} on the validation set {validation}")
    try:
        pred = load_predictions(opened_model, vset)
    except InputError as exc:  # the models module says "test set"; here it is the validation set
        raise InputError(exc.message.replace("the test set", "the validation set")) from None
    v = float(np.mean(pred == vset.y))
    gate = check.Gate(cfg=cfg, plan=plan, new=spec, old=None, testset=testset_path,
                      testset_given=given, sink=sink, workdir=workdir,
                      terms=meter_terms(cfg, plan), progress=progress or (lambda _m: None),
                      models={"new": opened_model})
    return gate, v


def decide(plan: MeterPlan, v: float, labels, pred) -> int:
    """The range index of ``v - a_hat``, in memory (conditions.meter: usable size, then answer)."""
    correct = np.asarray(pred) == np.asarray(labels)
    size = plan.usable_size(len(correct), v)
    return int(plan.answer(v, int(correct[:size].sum()), size))


def commit(gate: check.Gate, opened: check.Opened, label: str):
    """Spend the step durably; under `full` the ledger keeps the revealed symbol."""
    details = {"new": gate.new, "meter": "withheld" if gate.plan.adaptivity == "none" else label}
    try:
        return opened.ledger.record_step(passed=None, terms=gate.terms, details=details)
    except LedgerSpent as spent:
        alert = check.raise_alert(gate, budget=spent.budget, ledger=opened.ledger)
        raise check._exhausted(spent.budget, alert, opened.fingerprint) from None


def run_meter(config, model: str, validation: str, testset: str | None = None, *,
              key_env: str = "EASEML_TESTSET_KEY", workdir: Path = Path("."), backend=None,
              register: bool = True, progress=None) -> MeterResult:
    """One meter answer; raises BudgetExhausted (with ``.alert``), TestSetTooSmall, UsageError."""
    workdir = Path(workdir)
    gate, v = validate(config, model, validation, testset, workdir, progress)
    plan: MeterPlan = gate.plan
    if backend is None:
        backend = registration.open_ledger_backend(gate.cfg)
    opened = check.budget(gate, backend, key_env=key_env, register=register)
    try:
        ts, _ = check.open_testset(gate, opened, key_env=key_env, underpowered=False)
    except TestSetTooSmall:
        raise TestSetTooSmall(f"test set {gate.testset_given}: the meter needs "
                              f"{plan.test_examples:,} labelled examples for {plan.steps} answers "
                              f"(adaptivity {plan.adaptivity}); label more, or configure fewer "
                              "steps, a wider tolerance or a lower reliability") from None
    try:
        pred, _ = check.evaluate(gate, ts)
    except ModelFailedOnTestSet as failure:
        # As in the gate (docs/threat-model.md): whether a model fails on the test data depends
        # on the secret features, so it is a counted answer, shown exactly as the most
        # pessimistic range; a distinct "failed" would be an (m+1)-th symbol the plan does not
        # count. The details go to the private sink, if there is one.
        pred = None
        if gate.sink is not None:
            gate.sink.deliver({"gate": GATE_NAME, "testset": opened.fingerprint,
                               "model_failed": failure.spec, "detail": failure.detail})
    labels = ts.y
    del ts
    index = decide(plan, v, labels, pred) if pred is not None else len(plan.ranges.labels) - 1
    del labels, pred
    label = plan.label(index)
    entry, after = commit(gate, opened, label)
    withheld = plan.adaptivity == "none"
    result = MeterResult(
        answer="withheld" if withheld else label, ranges=list(plan.ranges.labels),
        validation_accuracy=v, budget=after.to_dict(), fingerprint=opened.fingerprint,
        plan=plan.to_dict(), config_path=registration._config_name(gate.cfg), step=entry["seq"],
        adaptivity=plan.adaptivity, ledger=registration.ledger_name(opened.ledger.backend))
    if withheld:
        gate.sink.deliver({"gate": GATE_NAME, "testset": opened.fingerprint, "step": entry["seq"],
                           "time": entry["time"], "model": gate.new, "meter": label,
                           "validation_accuracy": v})
        result.private_sink = gate.sink.describe()
    if not after.active:
        result.alert = check.raise_alert(gate, budget=after, ledger=opened.ledger)
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
        lines.append(f"  guaranteed up to +/- {100 * result.plan['tolerance']:g}% at each edge, "
                     f"reliability {result.plan['reliability']} over the test set's life")
    b = result.budget
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
    b = result.budget
    return "\n".join([
        f"### {GATE_NAME}", "", head, "", gauge, "",
        f"Validation accuracy (your own set): {result.validation_accuracy:.4f}. Guaranteed up to "
        f"±{100 * result.plan['tolerance']:g}% at each edge, reliability "
        f"{result.plan['reliability']} for every answer of the test set's life.",
        f"Test set `{result.fingerprint[:12]}`: {b['used']} of {b['total']} answers used "
        f"({b['status']})."])


__all__ = ["MeterResult", "run_meter", "render", "render_gauge", "fails_above", "meter_terms",
           "BudgetExhausted"]
