"""One gated check, end to end: validate, evaluate, decide, commit the step, then reveal.

The order is the guarantee (docs/design.md §3 and §5): every piece of user input is validated before
anything is evaluated or written; the verdict is computed in memory; the step is appended to
the ledger and fsynced; only then does anything about the verdict leave this function (return
value, private sink, alert). A crash anywhere before the append reveals nothing; a crash after
it costs a step but never leaks an uncounted bit.

:func:`run_check` is the API the CLI and the GitHub Action share. It returns a
:class:`CheckResult`, or raises :class:`~easeml_ci.errors.BudgetExhausted` (with ``.alert``) when
the test set is retired or spent, :class:`~easeml_ci.errors.TestSetTooSmall` when it is smaller
than the plan needs, and a :class:`~easeml_ci.errors.UsageError` for bad input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import conditions

from . import alert as alerts, on_demand, private_sink
from ..errors import (BudgetExhausted, ConfigError, ModelFailedOnTestSet, TestSetTooSmall,
                     UsageError)
from ..ledger import Budget, Ledger, LedgerSpent
from .registration import (_config_name, _line, _where, check_pinned, ledger_name,
                           open_ledger_backend, pinned_terms, testset_schema)
from ..ledger.budget import compute as compute_budget
from ..models import GIT_PREFIX

Progress = Callable[[str], None]


@dataclass
class CheckResult:
    """What a check may reveal. Nothing here is derived from the labels except the verdict
    bits, unless ``show_metrics`` put estimates in ``metrics`` (and voided the guarantee)."""

    verdict: str                      # "pass" | "fail" | "withheld"
    clauses: list[dict]               # text, verdict, line (+ tolerance when underpowered)
    budget: dict                      # used, total, remaining, status, ...
    fingerprint: str
    plan: dict                        # the configured plan's summary
    config_path: str
    gate: str
    step: int                         # the ledger position of this step
    alert: dict | None = None
    underpowered: bool = False
    private_sink: str | None = None   # where a withheld verdict went
    metrics: dict | None = None       # only with show_metrics: true (guarantee void)
    notes: list[str] = field(default_factory=list)
    ledger: str | None = None         # where the budget lives (named in every report)
    history: list[str] = field(default_factory=list)  # times of the spent steps (public)

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict == "fail" else 0

    def to_dict(self) -> dict:
        out = {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "clauses": self.clauses,
            "budget": self.budget,
            "testset": {"fingerprint": self.fingerprint},
            "plan": self.plan,
            "gate": self.gate,
            "config": self.config_path,
            "step": self.step,
            "underpowered": self.underpowered,
            "alert": self.alert,
            "guarantee": "void: show_metrics is on" if self.metrics is not None else "holds",
            "ledger": self.ledger,
        }
        if self.private_sink:
            out["private_sink"] = self.private_sink
        if self.metrics is not None:
            out["metrics"] = self.metrics
        if self.notes:
            out["notes"] = self.notes
        return out


# --- helpers --------------------------------------------------------------------------------

def _load_config(config):
    from ..config import load_config

    if isinstance(config, (str, Path)):
        return load_config(config)
    return config


def _plan(cfg):
    try:
        return cfg.plan()
    except conditions.PlanError as exc:
        raise ConfigError(f"{_config_name(cfg)}: {exc}") from None


def plan_summary(plan) -> dict:
    if hasattr(plan, "summary"):  # the meter's plan (conditions.meter.MeterPlan)
        return plan.summary()
    return {"condition": str(plan.formula), "reliability": plan.reliability, "mode": plan.mode,
            "adaptivity": plan.adaptivity, "steps": plan.steps, "passes": plan.passes,
            "method": plan.method, "test_examples": plan.test_examples, "labels": plan.labels}


def _pool_ranking(gate, event: str, fingerprint: str, requests_dir: Path
                  ) -> tuple[str | None, str | None]:
    """Write the label-request CSV for ``cfg.pool`` once per event; returns (path, how)."""
    cfg, plan, new, old, progress = gate.cfg, gate.plan, gate.new, gate.old, gate.progress
    workdir = gate.workdir
    if not getattr(cfg, "pool", None):
        return None, ("no label request: set `pool:` in the config to a file of unlabelled "
                      "examples, and the alert will say which of them to label first")
    from ..testsets import load_pool

    out = requests_dir / f"{fingerprint[:16]}-{event}.csv"
    if out.is_file():  # written when this event first happened; later refused checks keep it
        return str(out), "written when the test set was first found spent"
    pool_path = cfg.resolve(cfg.pool)
    X = load_pool(pool_path, label_column=cfg.label_column)
    new_pred = old_pred = None
    how = "pool order (the models are prediction files, which say nothing about the pool)"
    if plan.variables & {"o", "d"} and old and all(str(s).endswith(".onnx") for s in (new, old)):
        progress("ranking the pool by where the two models disagree")
        new_pred = _onnx(new, workdir, cfg).predict(X, source=pool_path)
        old_pred = _onnx(old, workdir, cfg).predict(X, source=pool_path)
        how = "examples where the old and new model disagree come first"
    elif not plan.variables & {"o", "d"}:
        how = "pool order (the condition does not compare two models)"
    order, disagree = alerts.rank_pool(new_pred, old_pred, X.shape[0])
    alerts.write_label_request_csv(out, order, disagree, plan.labels)
    if disagree is not None:
        how += f"; {int(disagree.sum())} of {X.shape[0]} pool examples are disagreements"
    return str(out), how


def _onnx(spec: str, workdir: Path, cfg):
    from ..models import OnnxModel

    return OnnxModel.from_spec(_model_spec(spec, workdir), repo=workdir,
                               output=getattr(cfg, "output", None))


def _requests_dir(ledger: Ledger, workdir: Path) -> Path:
    """Label requests sit beside a file ledger (``.easeml/label-requests``), else in the workdir."""
    directory = getattr(ledger.backend, "directory", None)
    if directory is not None:
        return Path(directory).parent / "label-requests"
    return workdir / ".easeml" / "label-requests"


def _resolve(spec: str, workdir: Path) -> Path:
    path = Path(spec)
    return path if path.is_absolute() else workdir / path


def raise_alert(gate, *, budget: Budget, ledger: Ledger) -> dict:
    """Build the new-test-set alert, write the pool CSV, and dispatch it once per event."""
    cfg, plan = gate.cfg, gate.plan
    try:
        pool_csv, pool_info = _pool_ranking(gate, budget.status, ledger.fingerprint,
                                            _requests_dir(ledger, gate.workdir))
    except UsageError as exc:  # the alert still goes out; the pool problem is named in it
        pool_csv, pool_info = None, f"POOL NOT RANKED, no label request: {exc.message}"
    alert = alerts.build_alert(event=budget.status, gate=cfg.name or "default",
                               fingerprint=ledger.fingerprint, budget=budget.to_dict(),
                               plan_summary=plan_summary(plan), config_path=_config_name(cfg),
                               pool_csv=pool_csv, pool_info=pool_info)
    next_step = getattr(plan, "next_step", None)  # the meter registers a test set differently
    if next_step:
        alert["text"] = alert["text"].replace(alert["next_step"], next_step)
        alert["next_step"] = next_step
    return alerts.dispatch(alert, ledger, getattr(cfg, "webhook", None))


def _exhausted(budget: Budget, alert: dict, fingerprint: str) -> BudgetExhausted:
    what = {"retired": f"was retired after {budget.passes_used} pass"
                       f"{'es' if budget.passes_used != 1 else ''}",
            "exhausted": "has used its only step" if budget.total == 1 else
                         f"has used all {budget.total} steps"}[budget.status]
    exc = BudgetExhausted(f"test set {fingerprint[:12]} {what}; checks no longer certify. "
                          f"{alert['next_step'][0].upper()}{alert['next_step'][1:]}")
    exc.alert = alert
    exc.budget = budget.to_dict()
    return exc


# --- the check: six steps, in the order that is the guarantee -------------------------------

@dataclass
class Gate:
    """What :func:`validate` resolved; every later step trusts it and nothing else."""

    cfg: object                    # the validated GateConfig
    plan: conditions.Plan          # the configured plan (before any --underpowered widening)
    new: str                       # model specs as given (paths from workdir, or git:REF:PATH)
    old: str | None
    testset: Path
    testset_given: str             # as the user wrote it, for messages
    sink: private_sink.PrivateSink | None
    workdir: Path
    terms: dict
    progress: Progress
    models: dict = field(default_factory=dict)  # "new"/"old" -> the model preflight opened


@dataclass
class Opened:
    """A test set whose budget admits one more step, and its ledger (see :func:`budget`)."""

    ledger: Ledger
    entries: list[dict]
    fingerprint: str
    testset: object | None = None  # loaded already (plaintext files are read to fingerprint them)
    pair: str | None = None  # labels on demand: the model pair's digest (on_demand.pair_digest)


def _model_spec(spec: str, workdir: Path) -> str:
    return str(spec) if str(spec).startswith(GIT_PREFIX) else str(_resolve(spec, workdir))


def validate(cfg, new: str, old: str | None, testset: str | None, workdir: Path,
             progress: Progress | None = None) -> Gate:
    """Step 1: everything that can be checked without the test set or a model run (exit 2)."""
    from ..models import preflight

    cfg = _load_config(cfg)
    sink = None
    if cfg.adaptivity == "none" or getattr(cfg, "private_sink", None):
        sink = private_sink.validate(cfg.private_sink, workdir, _line(cfg, "private_sink"))
    comparing = cfg.formula.variables & {"o", "d"}
    if comparing and not old:
        raise UsageError(f"--old is required: the condition `{cfg.formula}` uses "
                         f"{', '.join(sorted(comparing))}, which compare the new model with the "
                         "old one")
    if not comparing:
        old = None  # not needed: do not evaluate it, and do not record it
    if testset:
        testset_path = _resolve(str(testset), workdir)  # a command-line path: from the cwd
    elif getattr(cfg, "testset", None):
        testset, testset_path = cfg.testset, cfg.resolve(cfg.testset)  # from the config's folder
    else:
        raise UsageError("no test set: pass --testset PATH or set `testset:` in the config")
    models = {}
    for role, spec, flag in (("new", new, "--new"), ("old", old, "--old")):
        if spec and not str(spec).startswith(GIT_PREFIX) and not _resolve(spec, workdir).is_file():
            raise UsageError(f"{flag}: model {spec} does not exist or is not a file")
        if spec:  # file, git ref, graph, input and output on synthetic rows: before any data
            models[role] = preflight(_model_spec(spec, workdir), repo=workdir,
                                     output=getattr(cfg, "output", None))
    if getattr(cfg, "pool", None) and not cfg.resolve(cfg.pool).is_file():
        raise ConfigError(f"{_where(cfg, 'pool')}: {cfg.resolve(cfg.pool)} does not exist or is "
                          "not a file; the new-test-set alert ranks the label request from it")
    return Gate(cfg=cfg, plan=_plan(cfg), new=str(new), old=str(old) if old else None,
                testset=testset_path,
                testset_given=str(testset), sink=sink, workdir=workdir, terms=pinned_terms(cfg),
                progress=progress or (lambda _msg: None), models=models)


def budget(gate: Gate, backend, *, key_env: str, register: bool = True) -> Opened:
    """Step 2: the test set's identity and its ledger; refuse early when no step may be spent.

    Runs before the test set is decrypted: an encrypted file's fingerprint is in its header
    (bound into every chunk, so :func:`open_testset` refuses a header that lies). A ledger that
    does not verify, an unregistered test set where registration is required, terms that differ
    from the registered ones, a spent budget or a ledger the token may not write: no verdict.
    """
    from ..testsets import crypto
    from ..testsets import load_any_testset

    probe = getattr(backend, "check_writable", None)
    if probe is not None:  # a ledger we could not write would waste the evaluation: ask first
        probe()
    ts = None
    if crypto.is_encrypted(gate.testset):
        fingerprint = crypto.read_header(gate.testset).fingerprint
    else:
        gate.progress(f"loading test set {gate.testset_given}")
        ts = load_any_testset(gate.testset, label_column=gate.cfg.label_column, key_env=key_env)
        fingerprint = ts.fingerprint
    ledger = Ledger(backend, fingerprint)
    entries = ledger.entries()
    registered = ledger.registration(entries)
    if registered is None and not register:
        raise UsageError(
            f"test set {gate.testset_given} ({fingerprint[:12]}) is not registered in "
            f"{ledger_name(backend)}: a pull request cannot start a budget. Its owner registers "
            "it once with `easeml-ci testset register PATH` (or a run of the gate on the default "
            "branch); a test set a pull request added is refused")
    pair = None
    if on_demand.is_on_demand(ts, registered):  # before anything is written: adaptive modes
        on_demand.refuse_adaptive(gate.cfg, gate.testset_given)  # are refused (exit 2)
        pair = on_demand.pair_digest(gate)
    check_pinned(gate.cfg, registered, fingerprint, gate.terms)
    _check_models(gate, ts, registered)
    before = compute_budget(entries, gate.terms)
    # A pair checked before on a test set labelled on demand spends no step: it may still
    # complete its decision privately when the budget has run out since.
    if not before.active and not (pair and on_demand.spent_step(entries, pair) is not None):
        alert = raise_alert(gate, budget=before, ledger=ledger)
        raise _exhausted(before, alert, fingerprint)
    return Opened(ledger=ledger, entries=entries, fingerprint=fingerprint, testset=ts, pair=pair)


def _check_models(gate: Gate, ts, registered: dict | None) -> None:
    """The models against the test set's schema (feature count, label kind), before it is
    opened: a plaintext file was read to fingerprint it; an encrypted one's schema was pinned
    when its owner registered it (the header carries none)."""
    from ..models import TestSetSchema

    if ts is not None:  # labelled, or on demand (no label kind yet)
        schema = TestSetSchema.of(ts)
    elif registered is not None and registered.get("schema"):
        schema = TestSetSchema.from_dict(registered["schema"])
    else:
        return  # an encrypted test set registered before schemas were pinned: checked after
    for model in gate.models.values():
        model.check(schema)


def open_testset(gate: Gate, opened: Opened, *, key_env: str, underpowered: bool):
    """Decrypt (or reuse) the test set and size the plan to it; returns (test set, plan).

    A test set labelled on demand comes back with its sequential plan (:mod:`.on_demand`)."""
    from ..testsets import UnlabelledTestSet, load_any_testset

    ts = opened.testset
    if ts is None:
        gate.progress(f"loading test set {gate.testset_given}")
        ts = load_any_testset(gate.testset, label_column=gate.cfg.label_column, key_env=key_env)
    if ts.fingerprint != opened.fingerprint:  # cannot happen for an authentic file
        raise UsageError(f"test set {gate.testset_given}: its content does not match the "
                         "fingerprint its header claims; refusing it")
    opened.testset = None
    if isinstance(ts, UnlabelledTestSet):
        return ts, on_demand.admit(gate, opened, ts, underpowered=underpowered)
    plan = gate.plan
    if len(ts) < plan.test_examples:
        if not underpowered:
            raise TestSetTooSmall(
                f"test set {gate.testset_given}: need {plan.test_examples} labelled examples, "
                f"have {len(ts)}; label more, or run with --underpowered to decide at the "
                "tolerance it supports")
        plan = _widened(gate, plan, len(ts))
    if opened.ledger.registration(opened.entries) is None:  # the first check registers it
        opened.ledger.register(gate.terms, by="check", note={"schema": testset_schema(ts)})
        opened.entries = opened.ledger.entries()
    return ts, plan


def _widened(gate: Gate, plan, m: int):
    try:
        return plan.for_sample_size(m)
    except conditions.PlanError as exc:
        raise TestSetTooSmall(f"test set {gate.testset_given}: {exc}") from None


def evaluate(gate: Gate, ts):
    """Step 3: both models' predictions on the test set (the features are freed by the caller).

    A model that fails on the test data raises :class:`ModelFailedOnTestSet`, whose message is
    fixed: see :func:`failed_verdict` for what it costs. With ``evaluation_time`` set, the two
    runs take exactly that long together, whether they finish, fail or are stopped
    (:mod:`.evaluation_clock`)."""
    from ..models import load_predictions

    clock = None
    seconds = getattr(gate.cfg, "evaluation_time", None)
    if seconds is not None:
        from ..models.clock import EvaluationClock

        clock = EvaluationClock(seconds)
        # One line now, none between the models: its time in the log would show when the new
        # model finished.
        gate.progress(f"evaluating new model {gate.new}"
                      + (f" and old model {gate.old}" if gate.old else "")
                      + f" (evaluation_time: {seconds:g} s, whatever they do)")
    try:
        if clock is None:
            gate.progress(f"evaluating new model {gate.new}")
        new_pred = load_predictions(gate.models["new"], ts, clock=clock)
        old_pred = None
        if gate.old:
            if clock is None:
                gate.progress(f"evaluating old model {gate.old}")
            old_pred = load_predictions(gate.models["old"], ts, clock=clock)
    finally:
        if clock is not None:
            clock.pad()
    return new_pred, old_pred


def failed_verdict(plan) -> conditions.Verdict:
    """The verdict of a model that could not be evaluated on the test set: a fail.

    Such a failure depends on the secret features, so whether it happened is information about
    the test set. Shown for free it would be a probe without end; shown as a third outcome it
    would make the transcript tree ternary. It is therefore a step, recorded and shown exactly
    as a fail (docs/threat-model.md, "Model failures on the test set")."""
    clauses = tuple(conditions.ClauseVerdict(text=c.text, answer="unknown", passed=False,
                                             estimate=float("nan")) for c in plan.clauses)
    return conditions.Verdict(passed=False, clauses=clauses, test_examples=0)


def decide(gate: Gate, plan, labels, new_pred, old_pred) -> conditions.Verdict:
    """Step 4: the verdict, in memory only."""
    outcomes = conditions.Outcomes.from_predictions(labels, new_pred, old_pred)
    try:
        return plan.decide(outcomes)
    except conditions.SampleTooSmall as exc:
        raise TestSetTooSmall(f"test set {gate.testset_given}: {exc}") from None


def commit(gate: Gate, opened: Opened, verdict, *, underpowered: bool,
           details: dict | None = None):
    """Step 5: spend the step durably. Only after this may anything about the verdict show.

    ``details``: more fields for the step's ledger entry (public: nothing label-dependent)."""
    withheld = gate.cfg.adaptivity == "none"
    details = {"new": gate.new, "old": gate.old, **(details or {})}
    if underpowered:
        details["underpowered"] = True
    try:
        return opened.ledger.record_step(passed=None if withheld else verdict.passed,
                                         terms=gate.terms, details=details)
    except LedgerSpent as spent:  # another check took the last step while we evaluated
        alert = raise_alert(gate, budget=spent.budget, ledger=opened.ledger)
        raise _exhausted(spent.budget, alert, opened.fingerprint) from None


def reveal(gate: Gate, opened: Opened, verdict, plan, entry: dict, after: Budget,
           test_examples: int, failure: ModelFailedOnTestSet | None = None) -> CheckResult:
    """Step 6: what the team may see. Under the adaptive modes the union bound counts one bit
    per step (the formula's verdict): per-clause verdicts of a multi-clause formula would be
    more bits, so they stay undisclosed unless show_metrics voided the guarantee."""
    cfg, configured = gate.cfg, gate.plan
    withheld = cfg.adaptivity == "none"
    line = _line(cfg, "condition")
    one_bit = not withheld and len(verdict.clauses) > 1 and not cfg.show_metrics
    clauses = []
    for index, cv in enumerate(verdict.clauses):
        shown = "withheld" if withheld else ("undisclosed" if one_bit else
                                             ("pass" if cv.passed else "fail"))
        row = {"text": configured.clauses[index].text, "verdict": shown, "line": line}
        if plan is not configured:
            row["tolerance"] = plan.clauses[index].tolerance
            row["configured_tolerance"] = configured.clauses[index].tolerance
        clauses.append(row)
    result = CheckResult(
        verdict="withheld" if withheld else ("pass" if verdict.passed else "fail"),
        clauses=clauses, budget=after.to_dict(), fingerprint=opened.fingerprint,
        plan=plan_summary(configured), config_path=_config_name(cfg), gate=cfg.name or "default",
        step=entry["seq"], underpowered=plan is not configured,
        ledger=ledger_name(opened.ledger.backend),
        history=[str(e["time"]) for e in [*opened.entries, entry]
                 if e.get("kind") == "step" and e.get("time")])
    record = {"gate": result.gate, "testset": opened.fingerprint, "step": entry["seq"],
              "time": entry["time"], "new": gate.new, "old": gate.old,
              "verdict": "pass" if verdict.passed else "fail",
              "clauses": [cv.to_dict(reveal_estimates=bool(cfg.show_metrics))
                          for cv in verdict.clauses]}
    if failure is not None:  # the owner's eyes only: the text may quote the secret features
        record["model_failed"] = {"model": failure.spec, "detail": failure.detail}
    if withheld or (failure is not None and gate.sink is not None):
        gate.sink.deliver(record)
    if withheld:
        result.private_sink = gate.sink.describe()
    elif cfg.show_metrics:
        result.metrics = {"test_examples": test_examples,
                          "clauses": [cv.to_dict(reveal_estimates=True) for cv in verdict.clauses]}
    if not after.active:
        result.alert = raise_alert(gate, budget=after, ledger=opened.ledger)
    return result


def run_check(config, new: str, old: str | None, testset: str | None, *,
              underpowered: bool = False, key_env: str = "EASEML_TESTSET_KEY",
              workdir: Path = Path("."), backend=None, register: bool = True,
              progress: Progress | None = None, label_store=None) -> CheckResult:
    """Gate ``new`` (against ``old``) on ``testset`` under ``config``; see the module docstring.

    ``register=False`` refuses a test set its owner has not registered (pull requests).
    ``label_store``: the label store of a test set labelled on demand (default: beside it).
    """
    workdir = Path(workdir)
    gate = validate(config, new, old, testset, workdir, progress)
    if backend is None:
        backend = open_ledger_backend(gate.cfg)
    opened = budget(gate, backend, key_env=key_env, register=register)
    ts, plan = open_testset(gate, opened, key_env=key_env, underpowered=underpowered)
    if isinstance(plan, conditions.SequentialPlan):  # labels on demand: its own steps 3-6
        return on_demand.run(gate, opened, ts, plan, key_env=key_env, store_path=label_store)
    failure = None
    try:
        new_pred, old_pred = evaluate(gate, ts)
    except ModelFailedOnTestSet as exc:
        failure = exc
    labels, m = ts.y, len(ts)
    del ts  # the labels own their buffer: deciding adds nothing to the models' peak memory
    if failure is None:
        verdict = decide(gate, plan, labels, new_pred, old_pred)
        del new_pred, old_pred
    else:
        verdict = failed_verdict(plan)
    entry, after = commit(gate, opened, verdict, underpowered=plan is not gate.plan)
    return reveal(gate, opened, verdict, plan, entry, after, m, failure=failure)
