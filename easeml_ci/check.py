"""One gated check, end to end: validate, evaluate, decide, commit the step, then reveal.

The order is the guarantee (DESIGN.md §4): every piece of user input is validated before
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

from . import alerts, private_sink
from .errors import BudgetExhausted, ConfigError, TestSetTooSmall, UsageError
from .ledger import Budget, Ledger, LedgerSpent, open_backend
from .ledger.budget import compute as compute_budget

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
    from .config import load_config

    if isinstance(config, (str, Path)):
        return load_config(config)
    return config


def _config_name(cfg) -> str:
    return str(cfg.path) if getattr(cfg, "path", None) else ".easeml.yml"


def _line(cfg, key: str) -> int | None:
    lines = getattr(cfg, "lines", None) or {}
    return lines.get(key)


def _where(cfg, key: str) -> str:
    line = _line(cfg, key)
    return f"{_config_name(cfg)}:{line}: {key}" if line else f"{_config_name(cfg)}: {key}"


def pinned_terms(cfg) -> dict:
    """The plan terms that fix the budget, as stored in the ledger's register entry."""
    return {"condition": str(cfg.formula), "reliability": cfg.reliability, "mode": cfg.mode,
            "adaptivity": cfg.adaptivity, "steps": cfg.steps, "passes": cfg.passes}


def check_pinned(cfg, registered: dict | None, fingerprint: str) -> None:
    """Refuse a config whose budget terms differ from those the test set was registered with."""
    if registered is None:
        return
    pinned = registered.get("terms", {})
    for key, now in pinned_terms(cfg).items():
        if key in pinned and pinned[key] != now:
            raise ConfigError(
                f"{_where(cfg, key)} is {now!r}, but test set {fingerprint[:12]} was registered "
                f"with {key} {pinned[key]!r}; its budget is fixed at registration, so register a "
                f"new test set to change it (`easeml-ci testset register`)")


def _plan(cfg):
    try:
        return cfg.plan()
    except conditions.PlanError as exc:
        raise ConfigError(f"{_config_name(cfg)}: {exc}") from None


def plan_summary(plan) -> dict:
    return {"condition": str(plan.formula), "reliability": plan.reliability, "mode": plan.mode,
            "adaptivity": plan.adaptivity, "steps": plan.steps, "passes": plan.passes,
            "method": plan.method, "test_examples": plan.test_examples, "labels": plan.labels}


def _pool_ranking(cfg, plan, new: str, old: str | None, workdir: Path, fingerprint: str,
                  progress: Progress, requests_dir: Path) -> tuple[str | None, str | None]:
    """Write the label-request CSV for ``cfg.pool``; returns (path, how it was ranked)."""
    if not getattr(cfg, "pool", None):
        return None, None
    from .testset import load_pool

    pool_path = Path(cfg.pool)
    if not pool_path.is_absolute():
        pool_path = workdir / pool_path
    X = load_pool(pool_path, label_column=cfg.label_column)
    new_pred = old_pred = None
    how = "pool order (the models are prediction files, which say nothing about the pool)"
    if plan.variables & {"o", "d"} and old and all(str(s).endswith(".onnx") for s in (new, old)):
        progress("ranking the pool by where the two models disagree")
        new_pred = _onnx(new, workdir).predict(X, source=pool_path)
        old_pred = _onnx(old, workdir).predict(X, source=pool_path)
        how = "examples where the old and new model disagree come first"
    elif not plan.variables & {"o", "d"}:
        how = "pool order (the condition does not compare two models)"
    order, disagree = alerts.rank_pool(new_pred, old_pred, X.shape[0])
    out = requests_dir / f"{fingerprint[:16]}.csv"
    alerts.write_label_request_csv(out, order, disagree, plan.labels)
    if disagree is not None:
        how += f"; {int(disagree.sum())} of {X.shape[0]} pool examples are disagreements"
    return str(out), how


def _onnx(spec: str, workdir: Path):
    from .models import GIT_PREFIX, OnnxModel, read_git_blob

    if str(spec).startswith(GIT_PREFIX):
        return OnnxModel(read_git_blob(str(spec), workdir)[1], str(spec))
    return OnnxModel(_resolve(spec, workdir), str(spec))


def _requests_dir(ledger: Ledger, workdir: Path) -> Path:
    """Label requests sit beside a file ledger (``.easeml/label-requests``), else in the workdir."""
    directory = getattr(ledger.backend, "directory", None)
    if directory is not None:
        return Path(directory).parent / "label-requests"
    return workdir / ".easeml" / "label-requests"


def _resolve(spec: str, workdir: Path) -> Path:
    path = Path(spec)
    return path if path.is_absolute() else workdir / path


def raise_alert(*, cfg, plan, budget: Budget, ledger: Ledger, new: str, old: str | None,
                workdir: Path, progress: Progress) -> dict:
    """Build the new-test-set alert, write the pool CSV, and dispatch it once per event."""
    try:
        pool_csv, pool_info = _pool_ranking(cfg, plan, new, old, workdir, ledger.fingerprint,
                                            progress, _requests_dir(ledger, workdir))
    except UsageError as exc:  # the alert still goes out; the pool problem is named in it
        pool_csv, pool_info = None, f"pool not ranked: {exc.message}"
    alert = alerts.build_alert(event=budget.status, gate=cfg.name or "default",
                               fingerprint=ledger.fingerprint, budget=budget.to_dict(),
                               plan_summary=plan_summary(plan), config_path=_config_name(cfg),
                               pool_csv=pool_csv, pool_info=pool_info)
    return alerts.dispatch(alert, ledger, getattr(cfg, "webhook", None))


def _exhausted(budget: Budget, alert: dict, fingerprint: str) -> BudgetExhausted:
    what = {"retired": f"was retired after {budget.passes_used} pass"
                       f"{'es' if budget.passes_used != 1 else ''}",
            "exhausted": f"has used all {budget.total} steps"}[budget.status]
    exc = BudgetExhausted(f"test set {fingerprint[:12]} {what}; checks no longer certify. "
                          f"{alert['next_step'][0].upper()}{alert['next_step'][1:]}")
    exc.alert = alert
    exc.budget = budget.to_dict()
    return exc


# --- the check --------------------------------------------------------------------------------

def run_check(config, new: str, old: str | None, testset: str | None, *,
              underpowered: bool = False, key_env: str = "EASEML_TESTSET_KEY",
              workdir: Path = Path("."), backend=None,
              progress: Progress | None = None) -> CheckResult:
    """Gate ``new`` (against ``old``) on ``testset`` under ``config``; see the module docstring."""
    from .models import load_predictions, validate_model_spec
    from .testset import load_testset

    say = progress or (lambda _msg: None)
    workdir = Path(workdir)

    # 1. Validate everything that can be validated without evaluating a model.
    cfg = _load_config(config)
    sink = None
    if cfg.adaptivity == "none":
        sink = private_sink.validate(cfg.private_sink, workdir, _line(cfg, "private_sink"))
    comparing = cfg.formula.variables & {"o", "d"}
    if comparing and not old:
        raise UsageError(f"--old is required: the condition `{cfg.formula}` uses "
                         f"{', '.join(sorted(comparing))}, which compare the new model with the "
                         "old one")
    if not comparing:
        old = None  # not needed: do not evaluate it, and do not record it
    testset = testset or getattr(cfg, "testset", None)
    if not testset:
        raise UsageError("no test set: pass --testset PATH or set `testset:` in the config")
    testset_path = _resolve(str(testset), workdir)
    for spec, flag in ((new, "--new"), (old, "--old")):
        if spec and not str(spec).startswith("git:") and not _resolve(spec, workdir).is_file():
            raise UsageError(f"{flag}: model {spec} does not exist or is not a file")
        if spec:  # extension, git ref and path: refuse a typo before decrypting anything
            validate_model_spec(str(spec) if str(spec).startswith("git:") else
                                str(_resolve(spec, workdir)), repo=workdir)
    say(f"loading test set {testset}")
    ts = load_testset(testset_path, label_column=cfg.label_column, key_env=key_env)

    # 2. Budget: refuse early, before spending time on the models.
    backend = backend if backend is not None else open_backend(cfg.ledger, base=workdir)
    ledger = Ledger(backend, ts.fingerprint)
    terms = pinned_terms(cfg)
    entries = ledger.entries()
    check_pinned(cfg, ledger.registration(entries), ts.fingerprint)
    plan = configured = _plan(cfg)
    before = compute_budget(entries, terms)
    if not before.active:
        alert = raise_alert(cfg=cfg, plan=configured, budget=before, ledger=ledger, new=new,
                            old=old, workdir=workdir, progress=say)
        raise _exhausted(before, alert, ts.fingerprint)
    m = len(ts)
    if m < plan.test_examples:
        if not underpowered:
            raise TestSetTooSmall(
                f"test set {testset}: need {plan.test_examples} labelled examples, have {m}; "
                "label more, or run with --underpowered to decide at the tolerance it supports")
        plan = plan.for_sample_size(m)

    # 3. Evaluate the models (shape mismatches surface here as InputError, before any write).
    repo = workdir
    say(f"evaluating new model {new}")
    new_pred = load_predictions(str(new) if str(new).startswith("git:") else
                                str(_resolve(new, workdir)), ts, repo=repo)
    old_pred = None
    if old:
        say(f"evaluating old model {old}")
        old_pred = load_predictions(str(old) if str(old).startswith("git:") else
                                    str(_resolve(old, workdir)), ts, repo=repo)

    # 4. Decide (in memory only). The features are no longer needed: free them first (the
    # labels own their buffer), so deciding adds nothing to the models' peak memory.
    labels, fingerprint = ts.y, ts.fingerprint
    del ts
    outcomes = conditions.Outcomes.from_predictions(labels, new_pred, old_pred)
    try:
        verdict = plan.decide(outcomes)
    except conditions.SampleTooSmall as exc:
        raise TestSetTooSmall(f"test set {testset}: {exc}") from None
    del outcomes, new_pred, old_pred

    # 5. Commit the step durably. Only after this may anything about the verdict be shown.
    withheld = cfg.adaptivity == "none"
    details = {"new": str(new), "old": str(old) if old else None}
    if plan is not configured:
        details["underpowered"] = True
    try:
        entry, after = ledger.record_step(passed=None if withheld else verdict.passed,
                                          terms=terms, details=details)
    except LedgerSpent as spent:  # another check took the last step while we evaluated
        alert = raise_alert(cfg=cfg, plan=configured, budget=spent.budget, ledger=ledger,
                            new=new, old=old, workdir=workdir, progress=say)
        raise _exhausted(spent.budget, alert, fingerprint) from None

    # 6. Reveal. Under the adaptive modes the union bound counts one bit per step (the
    # formula's verdict): per-clause verdicts of a multi-clause formula would be more bits, so
    # they stay undisclosed unless the user opted into show_metrics (which voids the guarantee).
    line = _line(cfg, "condition")
    one_bit = not withheld and len(verdict.clauses) > 1 and not cfg.show_metrics
    clauses = []
    for index, cv in enumerate(verdict.clauses):
        shown = "withheld" if withheld else ("undisclosed" if one_bit else
                                             ("pass" if cv.passed else "fail"))
        row = {"text": configured.clauses[index].text if index < len(configured.clauses)
               else cv.text,
               "verdict": shown,
               "line": line}
        if plan is not configured:
            row["tolerance"] = plan.clauses[index].tolerance
            row["configured_tolerance"] = configured.clauses[index].tolerance
        clauses.append(row)
    result = CheckResult(
        verdict="withheld" if withheld else ("pass" if verdict.passed else "fail"),
        clauses=clauses, budget=after.to_dict(), fingerprint=fingerprint,
        plan=plan_summary(configured), config_path=_config_name(cfg), gate=cfg.name or "default",
        step=entry["seq"], underpowered=plan is not configured)
    if withheld:
        sink.deliver({"gate": result.gate, "testset": fingerprint, "step": entry["seq"],
                      "time": entry["time"], "new": str(new), "old": details["old"],
                      "verdict": "pass" if verdict.passed else "fail",
                      "clauses": [cv.to_dict(reveal_estimates=bool(cfg.show_metrics))
                                  for cv in verdict.clauses]})
        result.private_sink = sink.describe()
    elif cfg.show_metrics:
        result.metrics = {"test_examples": m,
                          "clauses": [cv.to_dict(reveal_estimates=True) for cv in verdict.clauses]}
    if not after.active:
        result.alert = raise_alert(cfg=cfg, plan=configured, budget=after, ledger=ledger,
                                   new=new, old=old, workdir=workdir, progress=say)
    return result
