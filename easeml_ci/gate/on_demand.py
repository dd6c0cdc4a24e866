"""A check on a test set labelled on demand: decide from the labels present, or ask for more.

A test set registered without labels (:class:`easeml_ci.testsets.UnlabelledTestSet`) gets them
in batches (:mod:`easeml_ci.testsets.labels`). A check on it evaluates both models on every row, reads
the rows in an order fixed at registration (:func:`order_seed`: a function of the fingerprint
only, so of neither the labels nor the models) and decides each clause with the sequential test
of :mod:`conditions.sequential`, capped by the fixed-size plan. When the labels present settle
every clause, the formula is decided; otherwise the check is "awaiting labels" and the owner gets
the label request: which row ids, how many, in order of priority.

What the team sees (docs/statistics.md §6, "What 'awaiting labels' reveals")
------------------------------------------------------------------------------
Whether a check decides or awaits, and how many labels it asks for, depend on the labels (the
stopping time). So this path runs only under ``adaptivity: none`` (:func:`refuse_adaptive`), where
the team sees "withheld" whatever happens, and the step is spent by a rule that never looks at the
labels: **the first check of a model pair spends one step**, decided or awaiting; a later check
of the same pair (same content digests of the model files, :func:`pair_digest`) spends nothing
and completes or repeats its step's decision privately. The visible output, the exit code and the
ledger change are functions of the pair and the ledger alone. The pair's digest is in the step's
ledger entry (a function of the models, which the team has anyway); the decision, the label
request, the store's head and every count stay in the private sink.

A decision never changes once made: labels are append-only and never change, and the sequential
test stops at the first row where an e-process crosses (rows labelled later lie beyond it), the
cap reads a fixed prefix, and a failed clause fails the formula. So a step's first private record
with a verdict is its decision; later records for the same step repeat it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import conditions
from conditions.sequential import label_request, row_order

from ..errors import ConfigError, InputError, ModelFailedOnTestSet, TestSetTooSmall, UsageError
from ..ledger.budget import compute as compute_budget
from .registration import _config_name, _line, _where, ledger_name

ON_DEMAND = "on-demand"  # the register entry's "labels" note for such a test set


# --- what kind of test set, and may it be used this way -------------------------------------------

def is_on_demand(ts, registered: dict | None) -> bool:
    """A loaded unlabelled test set, or one registered as labelled on demand."""
    from ..testsets import UnlabelledTestSet

    if isinstance(ts, UnlabelledTestSet):
        return True
    return bool(registered) and registered.get("labels") == ON_DEMAND


def refuse_adaptive(cfg, testset: str) -> None:
    """Labels on demand only under ``adaptivity: none``: exit 2 otherwise.

    Under an adaptive mode the team would see a verdict at a time that depends on when the labels
    sufficed (or an "awaiting labels" answer): an outcome the budget does not count."""
    if cfg.adaptivity == "none":  # (passes apply to `full` only: the config refuses the rest)
        return
    passes = f" with passes {cfg.passes}" if cfg.passes is not None else ""
    raise ConfigError(
        f"{_where(cfg, 'adaptivity')} is '{cfg.adaptivity}'{passes}, but test set {testset} is labelled on demand: whether a "
        "check decides or awaits labels depends on the labels, and under an adaptive mode the team "
        "would see it as an outcome the budget does not count. Use `adaptivity: none` (verdicts "
        "and label requests go to the private sink), or label every row and register a labelled "
        "test set (features and a label column)")


def sequential(cfg) -> conditions.SequentialPlan:
    """The sequential plan of the configured formula, at the planner's delta' (§6)."""
    try:
        return conditions.sequential_plan(cfg.formula, cfg.reliability, cfg.mode, cfg.adaptivity,
                                          cfg.steps, cfg.passes)
    except conditions.PlanError as exc:
        raise ConfigError(f"{_config_name(cfg)}: {exc}") from None


def registration_note(ts) -> dict:
    from ..models import TestSetSchema

    return {"labels": ON_DEMAND, "schema": TestSetSchema.of(ts).to_dict()}


def admissible_plan(cfg, ts, name: str) -> conditions.SequentialPlan:
    """The sequential plan for ``ts`` under ``cfg``, refusing an adaptive mode (exit 2) and a
    test set with fewer rows than the plan's cap (exit 3)."""
    refuse_adaptive(cfg, name)
    plan = sequential(cfg)
    if len(ts) < plan.rows:
        raise TestSetTooSmall(
            f"test set {name}: labelled on demand, it needs {plan.rows} rows "
            f"(features and ids; labels only where a decision asks), has {len(ts)}; add rows")
    return plan


def admit(gate, opened, ts, *, underpowered: bool):
    """Open step for an unlabelled test set: refusals first, then register if needed.

    Returns the sequential plan. Nothing is written before every refusal has had its say."""
    plan = admissible_plan(gate.cfg, ts, gate.testset_given)
    if underpowered:
        raise UsageError(f"--underpowered: test set {gate.testset_given} is labelled on demand; "
                         "a sequential decision reads as many rows as it needs up to its cap, so "
                         "give the test set at least the cap's rows instead")
    if opened.pair is None:  # an encrypted test set seen first here (budget knew it by header)
        opened.pair = pair_digest(gate)
    if opened.ledger.registration(opened.entries) is None:  # the first check registers it
        opened.ledger.register(gate.terms, by="check", note=registration_note(ts))
        opened.entries = opened.ledger.entries()
    return plan


# --- the model pair ------------------------------------------------------------------------------

def model_digest(spec: str, workdir: Path) -> str:
    """SHA-256 of a model's bytes (a path from ``workdir``, or ``git:REF:PATH``), with the
    external data files an ONNX model keeps its weights in: new weights beside the same graph
    file are another model, and must spend their own step."""
    import posixpath

    from ..models import GIT_PREFIX, _parse_onnx, external_data_locations, parse_git_spec, read_git_blob

    def read(where: str) -> bytes:
        if where.startswith(GIT_PREFIX):
            return read_git_blob(where, workdir)[1]
        path = Path(where)
        path = path if path.is_absolute() else workdir / path
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read model {where}: {exc.strerror or exc}") from None

    spec = str(spec)
    blob = read(spec)
    digest = hashlib.sha256(blob)
    proto = _parse_onnx(blob) if spec.endswith(".onnx") and b"location" in blob else None
    for location in sorted(external_data_locations(proto)) if proto is not None else []:
        if spec.startswith(GIT_PREFIX):
            ref, path = parse_git_spec(spec)
            data = read(f"{GIT_PREFIX}{ref}:{posixpath.join(posixpath.dirname(path), location)}")
        else:
            data = read(str(Path(spec).parent / location))
        digest.update(b"\0" + location.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def pair_digest(gate) -> str:
    """What identifies a model pair on one test set: the models' contents (not their paths) and
    the rule that turns their outputs into labels."""
    parts = {"new": model_digest(gate.new, gate.workdir),
             "old": model_digest(gate.old, gate.workdir) if gate.old else None,
             "output": repr(getattr(gate.cfg, "output", None))}
    text = json.dumps(parts, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()


def spent_step(entries: list[dict], pair: str) -> dict | None:
    """The step an earlier check of this pair spent, or None."""
    for entry in entries:
        if entry.get("kind") == "step" and entry.get("pair") == pair:
            return entry
    return None


# --- deciding -------------------------------------------------------------------------------------

def order_seed(fingerprint: str) -> int:
    """The reading order's seed: fixed by the fingerprint, i.e. at registration."""
    return int(fingerprint[:16], 16)


@dataclass
class Decision:
    """A formula's sequential decision on the labels present (SECRET: the owner's eyes only)."""

    status: str                              # "pass" | "fail" | "awaiting labels"
    clauses: list[dict]
    request: list[str] = field(default_factory=list)  # row ids to label, in priority order

    @property
    def decided(self) -> bool:
        return self.status in ("pass", "fail")


def decide(plan: conditions.SequentialPlan, seed: int, ids: np.ndarray, labels: np.ndarray,
           known: np.ndarray, new_pred: np.ndarray, old_pred: np.ndarray | None) -> Decision:
    """Decide every clause over the rows in reading order with the labels ``known``.

    A failed clause fails the formula; all clauses passed pass it; otherwise it awaits labels,
    and the request is the union of the awaiting clauses' next batches (positions in reading
    order are the priority), as row ids."""
    order = row_order(len(ids), seed)
    known = np.asarray(known, dtype=bool)[order]
    new_pred = np.asarray(new_pred)[order]
    labels = np.asarray(labels)[order]
    n = np.where(known, new_pred == labels, np.nan)
    o = d = None
    if old_pred is not None:
        old_pred = np.asarray(old_pred)[order]
        o = np.where(known, old_pred == labels, np.nan)
        d = (new_pred != old_pred).astype(np.float64)
    decisions = plan.decide(conditions.Outcomes(n, o, d))
    clauses = [{"text": c.text, "status": s.status, "rows": s.rows, "labels": s.labels, "by": s.by}
               for c, s in zip(plan.clauses, decisions)]
    if any(s.status == "fail" for s in decisions):
        return Decision("fail", clauses)
    if all(s.status == "pass" for s in decisions):
        return Decision("pass", clauses)
    wanted: set[int] = set()
    for c, s in zip(plan.clauses, decisions):
        if s.decided:
            continue
        need = c.needs_label(d if d is not None else np.ones(len(ids)))
        wanted.update(label_request(need, known, s.next_row, s.labels).tolist())
    return Decision("awaiting labels", clauses,
                    [str(ids[order[p]]) for p in sorted(wanted)])


def evaluate(gate, ts, kind: str | None, y: np.ndarray):
    """Both models' predictions on every row of an unlabelled test set, as for a labelled one
    (:func:`easeml_ci.gate.check.evaluate`: the memory ceiling, ``evaluation_time``, the fixed text
    of a failure on the test data).

    The models are checked against the label kind of the labels given so far (none yet: any
    kind of labels is accepted)."""
    from .check import evaluate as run_models
    from ..testsets import TestSet

    view = ts if kind is None else TestSet(X=ts.X, y=y, fingerprint=ts.fingerprint, source=ts.source)
    return run_models(gate, view)


def open_store(gate, ts, key_env: str, store_path):
    """The label store of ``ts``: ``store_path``, or the default beside the test set."""
    from ..testsets import crypto
    from ..testsets.labels import LabelStore, default_store_path

    key = crypto.key_from_env(key_env) if crypto.is_encrypted(gate.testset) else None
    path = Path(store_path) if store_path else default_store_path(gate.testset)
    if store_path and not path.is_absolute():
        path = gate.workdir / path
    return LabelStore.open(path, ts, key)


# --- the check -------------------------------------------------------------------------------------

def run(gate, opened, ts, plan, *, key_env: str, store_path=None):
    """Evaluate, decide, spend (first check of the pair) or reuse the pair's step, reveal.

    Everything that can refuse (the store, the models' kinds) runs before the step is spent."""
    from .check import commit

    store = open_store(gate, ts, key_env, store_path)
    pair = opened.pair
    earlier = spent_step(opened.entries, pair)
    y, known = store.label_vector()
    failure = None
    try:
        new_pred, old_pred = evaluate(gate, ts, store.kind, y)
    except ModelFailedOnTestSet as exc:
        failure = exc
    if failure is None:
        decision = decide(plan, order_seed(opened.fingerprint), ts.ids, y, known, new_pred, old_pred)
        del new_pred, old_pred
    else:  # as for a labelled test set: a model that fails on the test data fails (check.py)
        decision = Decision("fail", [{"text": c.text, "status": "fail", "rows": 0, "labels": 0,
                                      "by": "model failed"} for c in plan.clauses])
    del ts
    if earlier is None:
        entry, after = commit(gate, opened, None, underpowered=False, details={"pair": pair})
        entries = [*opened.entries, entry]
    else:
        entry, entries = earlier, opened.entries
        after = compute_budget(entries, gate.terms)
    return reveal(gate, opened, decision, store, entry, after, entries, pair,
                  repeat=earlier is not None, failure=failure)


def reveal(gate, opened, decision: Decision, store, entry: dict, after, entries: list[dict],
           pair: str, *, repeat: bool, failure=None):
    """What the team sees (the same for every decision and for "awaiting labels") and what the
    owner's private sink gets (everything)."""
    from .check import CheckResult, plan_summary, raise_alert

    cfg = gate.cfg
    line = _line(cfg, "condition")
    result = CheckResult(
        verdict="withheld",
        clauses=[{"text": c.text, "verdict": "withheld", "line": line} for c in gate.plan.clauses],
        budget=after.to_dict(), fingerprint=opened.fingerprint, plan=plan_summary(gate.plan),
        config_path=_config_name(cfg), gate=cfg.name or "default", step=entry["seq"],
        ledger=ledger_name(opened.ledger.backend),
        history=[str(e["time"]) for e in entries if e.get("kind") == "step" and e.get("time")])
    result.notes.append("labels on demand: the decision, or the request for the labels it needs, "
                        "goes to the private sink")
    if repeat:
        result.notes.append(f"this model pair was checked before (step {entry['seq']}); no step "
                            "spent")
    record = {"gate": result.gate, "testset": opened.fingerprint, "step": entry["seq"],
              "time": entry["time"], "new": gate.new, "old": gate.old, "pair": pair,
              "repeat": repeat, "verdict": decision.status, "clauses": decision.clauses,
              "labels": {"store": str(store.path), "head": store.head,
                         "labelled": len(store.labels)}}
    if decision.decided and repeat:
        record["completes_step"] = entry["seq"]
    if not decision.decided:
        record["label_request"] = {
            "row_ids": decision.request, "count": len(decision.request),
            "order": "priority (label the first ones first)",
            "then": f"easeml-ci testset label {gate.testset_given} LABELS.csv (columns id,label), "
                    "then re-run the same check: it spends no new step"}
    if failure is not None:
        record["model_failed"] = {"model": failure.spec, "detail": failure.detail}
    gate.sink.deliver(record)
    result.private_sink = gate.sink.describe()
    if not after.active:
        result.alert = raise_alert(gate, budget=after, ledger=opened.ledger)
    return result
