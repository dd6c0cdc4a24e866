"""Pick the best of k models on fresh data: the shared steps with a certified ``decide``.

The test set is usually labelled on demand (features and row ids; labels arrive with
``easeml-ci testset label``); :func:`conditions.pick` reads its rows in the secret order
fixed at registration (:mod:`.reading_order`), asks for labels only where surviving candidates disagree, and certifies a pick
at the plan's per-pick reliability (:class:`conditions.pick_plan.PickPlan`).

What the team sees: under ``adaptivity: none`` nothing ("withheld"), and as for labels on demand
the first run of a set of candidates spends its step, later runs of the same set spend none and
complete the pick privately. Under ``full`` every run spends a step and releases one of k + 1
symbols (a candidate, or "no pick yet"): the transcript tree the plan counts. Label requests,
labels used and survivors depend on the labels: they go to the private sink only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from conditions.best_of_k import pick as certify

from ..errors import ConfigError, UsageError
from ..models.digest import models_digest
from ..testsets import UnlabelledTestSet
from . import reading_order, steps
from .registration import ON_DEMAND, ledger_name, open_ledger_backend, pick_terms
from .results import PickAnswer

NO_PICK = "no pick yet"


def validate(config, models: list[str], testset: str | None, workdir: Path, *, key_env: str,
             progress=None) -> steps.Gate:
    """The candidates (at least 2, at most the registered ``candidates``), the test set, the sink."""
    cfg = steps.config_of(config)
    plan = cfg.checked_pick_plan()
    if len(models) < 2:
        raise UsageError(f"--models: a pick compares at least 2 models, got {len(models)}")
    if len(models) > plan.candidates:
        raise ConfigError(f"{cfg.where('pick.candidates' if cfg.line('pick.candidates') else 'pick')}"
                          f": {len(models)} models given, at most {plan.candidates} allowed (the "
                          "transcript tree the budget counts is fixed at registration)")
    source = steps.testset_source(cfg, testset, workdir, configured=cfg.pick.get("testset"),
                                  key_env=key_env, missing="no test set for the pick: pass "
                                  "--testset PATH or set `pick.testset:` in the config")
    return steps.validate(cfg, plan=plan, terms=pick_terms(cfg, plan), testset=source,
                          models={f"model {i}": (m, "--models") for i, m in enumerate(models, 1)},
                          workdir=workdir, progress=progress, next_step=plan.next_step)


def decide(gate: steps.Gate, secret: bytes, ts, labels, known, outputs: steps.Evaluation) -> dict:
    """The pick on the labels present, or the rows to label next (the private record)."""
    if outputs.failed:  # a candidate that cannot be evaluated makes the set unanswerable
        return {"status": "model failed", "pick": None}
    predictions = np.stack([np.asarray(outputs.outputs[role]) for role in gate.specs])
    made = certify(predictions, labels, known, gate.plan.pick_reliability,
                           gate.plan.tolerance, order=reading_order.permutation(secret, len(ts)))
    record = {**made.to_dict(), "pick": list(gate.specs.values())[made.pick] if made.decided else None}
    if made.awaiting:  # only a test set labelled on demand can await labels
        record["label_request"] = {"row_ids": [str(ts.ids[i]) for i in made.request],
                                   "then": f"easeml-ci testset label {gate.testset.given} LABELS.csv, "
                                           "then run the same pick again"}
    return record


def run_pick(config, models: list[str], testset: str | None = None, *,
             key_env: str = "EASEML_TESTSET_KEY", workdir: Path = Path("."), backend=None,
             register: bool = True, progress=None, label_store=None) -> PickAnswer:
    """One pick; raises BudgetExhausted (with its alert), TestSetTooSmall, UsageError."""
    workdir = Path(workdir)
    gate = validate(config, models, testset, workdir, key_env=key_env, progress=progress)
    state = steps.read_ledger(gate, backend or open_ledger_backend(gate.cfg), register=register)
    steps.check_terms(gate, state)
    if label_store or (state.registration or {}).get("labels") == ON_DEMAND:
        steps.locate_label_store(gate, label_store)  # refused in the team's sight up front
    digest = models_digest(list(gate.specs.values()), gate.cfg.output, workdir)
    earlier = state.step_of_pair(digest) if gate.withheld else None
    secret = steps.order_secret(gate, state)
    steps.admit(gate, state, spends_step=earlier is None)
    steps.register_if_new(gate, state, note=reading_order.note(gate.testset.encrypted,
                                                               gate.testset.given))
    reserved = (steps.reserve(gate, state, details={"models": list(gate.specs.values()),
                                                    "pair": digest})
                if earlier is None else None)
    ts = steps.open_testset(gate, state)
    unlabelled = isinstance(ts, UnlabelledTestSet)
    store = steps.open_label_store(gate, ts, label_store) if unlabelled else None
    labels, known = store.label_vector() if store else (ts.y, np.ones(len(ts), dtype=bool))
    outputs = steps.evaluate(gate, store.labelled_view(ts, labels) if store else ts)
    record = decide(gate, secret, ts, labels, known, outputs)
    del ts
    shown = "withheld" if gate.withheld else (record["pick"] or NO_PICK)
    done = (steps.complete(gate, state, reserved, passed=None, details={"pick": shown})
            if reserved is not None else steps.Committed(earlier, state.budget(gate.terms)))
    result = PickAnswer(
        answer=shown, candidates=list(gate.specs.values()), budget=done.budget,
        fingerprint=state.fingerprint, plan=gate.plan, config_path=gate.cfg.display_name,
        step=done.step, ledger=ledger_name(state.ledger.backend),
        notes=[f"this set of models was picked from before (step {done.step}); no step spent"]
        if earlier is not None else [])
    result.private_sink = steps.deliver_private(gate, {
        "gate": gate.cfg.gate_name, "testset": state.fingerprint, "step": done.step,
        "time": done.entry["time"], "models": result.candidates, "repeat": earlier is not None,
        **({"labels": store.summary()} if store else {}), **record, **steps.failure_record(outputs)})
    result.alert = steps.alert_if_spent(gate, state.ledger, done.budget)
    steps.release(outputs)
    return result


__all__ = ["NO_PICK", "decide", "run_pick", "validate"]
