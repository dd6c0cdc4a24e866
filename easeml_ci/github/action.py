"""The GitHub Action's entry point: one gated check, reported on the pull request.

Order (commit, then reveal — docs/design.md §3): :func:`easeml_ci.gate.check.run_check` records the step in
the ledger before it returns anything; only then are the summary, outputs, annotations, comment
and alert issue written. A run that fails before the step is recorded (bad input, a token that
may not write the repository ledger) reports the error and nothing about the test set.

Exit code = the gate: 0 pass or withheld (adaptivity ``none`` never fails the job), 1 fail,
2 bad input or configuration (including a ledger the token may not write), 3 test set retired,
spent or too small. GitHub API trouble on the *reporting* side (a fork's read-only token, a
missing ``pull-requests: write``) is a warning: the summary and the exit code still work.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from conditions import ConditionsError

from ..errors import BudgetExhausted, EasemlError, ExitCode, UsageError
from ..redact import redact
from . import workflow
from .alert_issue import DEFAULT_LABELS, upsert_alert_issue
from .api import GitHubClient, GitHubError, GitHubForbidden, GitHubRateLimited
from .comment import marker, upsert_comment
from .old_model import check_old_model
from .report import GateReport, render_comment, render_meter_gauge, render_summary

KEY_ENV = "EASEML_TESTSET_KEY"


# --- inputs and context ----------------------------------------------------------------------

@dataclass
class ActionInputs:
    """The action's inputs, already parsed (see ``action.yml`` for their documentation)."""

    config: str = ".easeml.yml"
    new_model: str | None = None
    old_model: str | None = None
    testset: str | None = None
    gate_name: str | None = None
    comment: bool = True
    alert_issue: bool | None = None  # None: the config's alerts.issue
    alert_labels: tuple[str, ...] = DEFAULT_LABELS
    alert_webhook: str | None = None
    pr_number: int | None = None
    underpowered: bool = False
    config_from_base: bool = True
    token: str | None = None
    head_sha: str | None = None  # workflow_run: the commit the verdict is about (finds the PR)
    commit_status: bool = False  # post the verdict as commit status easeml-ci/<gate> on it
    meter_validation: str | None = None  # run the overfitting meter on this validation set too
    meter_fail_above: float | None = None  # fail the job when the meter's range starts here
    label_store: str | None = None  # a test set labelled on demand: its store, outside the workspace
    command: str = "check"  # "close-round" / "round-requests": the rounds' cron jobs
    # --- registration (ledger-auth): the owner asks for it; never a run by itself ---
    register: bool = False  # register a test set not registered yet (default branch only)
    # the run holds the key: the environment that holds it, whose settings are checked
    environment: str = "easeml-gate"
    status_token: str | None = None  # posts the commit status (a GitHub App's token), if given


def parse_bool(name: str, value: str | bool | None, default: bool | None) -> bool | None:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("true", "yes", "1", "on"):
        return True
    if v in ("false", "no", "0", "off"):
        return False
    raise UsageError(f"input {name}: expected true or false, got {value!r}")


def parse_threshold(value: str | float | None) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        out = float(str(value).strip())
    except ValueError:
        out = -1.0
    if not 0 < out < 1:
        raise UsageError(f"input meter-fail-above: expected one of the meter's edges, a number "
                         f"in (0, 1) such as 0.05, got {value!r}")
    return out


def parse_pr_number(value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"input pr-number: expected a pull request number (1, 2, ...), got {value!r}")
    return n


@dataclass
class ActionContext:
    """What the runner tells a step through its environment (``GITHUB_*``)."""

    repository: str | None
    workspace: Path
    event_name: str | None = None
    event: dict = field(default_factory=dict)
    sha: str | None = None
    base_ref: str | None = None
    server_url: str = "https://github.com"
    run_id: str | None = None
    api_url: str | None = None
    ref: str | None = None
    workflow_ref: str | None = None  # GITHUB_WORKFLOW_REF: the workflow file and its ref

    @classmethod
    def from_env(cls, env: dict | None = None) -> "ActionContext":
        env = os.environ if env is None else env
        event: dict = {}
        path = env.get("GITHUB_EVENT_PATH")
        if path:
            try:
                event = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UsageError(f"GITHUB_EVENT_PATH {path}: cannot read the event payload ({exc})") from None
        return cls(repository=env.get("GITHUB_REPOSITORY"),
                   workspace=Path(env.get("GITHUB_WORKSPACE") or "."),
                   event_name=env.get("GITHUB_EVENT_NAME"), event=event or {},
                   sha=env.get("GITHUB_SHA"), base_ref=env.get("GITHUB_BASE_REF") or None,
                   ref=env.get("GITHUB_REF") or None,
                   workflow_ref=env.get("GITHUB_WORKFLOW_REF") or None,
                   server_url=env.get("GITHUB_SERVER_URL") or "https://github.com",
                   run_id=env.get("GITHUB_RUN_ID"), api_url=env.get("GITHUB_API_URL"))

    @property
    def pull_request(self) -> dict | None:
        pr = self.event.get("pull_request")
        return pr if isinstance(pr, dict) else None

    @property
    def pr_number(self) -> int | None:
        pr = self.pull_request
        if pr and pr.get("number"):
            return int(pr["number"])
        return None

    @property
    def head_sha(self) -> str | None:
        pr = self.pull_request
        return (pr or {}).get("head", {}).get("sha") or self.sha

    @property
    def base_commitish(self) -> str | None:
        """Where the old model lives: the PR's base commit, else the push's previous commit."""
        pr = self.pull_request
        if pr and pr.get("base", {}).get("sha"):
            return pr["base"]["sha"]
        if self.base_ref:
            return f"origin/{self.base_ref}"
        before = self.event.get("before")
        if before and set(str(before)) != {"0"}:
            return str(before)
        return None

    @property
    def may_register(self) -> bool:
        """Only a run on the default branch (trusted code) may register a test set: never a
        pull request, and never a push to another branch, whose workflow its author wrote.
        Even there only when the owner asked (the ``register`` input, :func:`registers`): a
        push after the ledger branch was deleted must not start a fresh budget by itself."""
        if self.event_name in PULL_REQUEST_EVENTS:
            return False
        default = (self.event.get("repository") or {}).get("default_branch")
        return bool(default) and self.ref == f"refs/heads/{default}"

    @property
    def run_url(self) -> str | None:
        if self.repository and self.run_id:
            return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"
        return None


# --- the run ----------------------------------------------------------------------------------

def _rel(path: str, workspace: Path) -> str:
    p = Path(path)
    if p.is_absolute():
        return workflow.relative_to_workspace(p, str(workspace))
    return p.as_posix()


def _ensure_commit(workspace: Path, commitish: str, say: Callable[[str], None]) -> None:
    """Fetch the base commit when a shallow checkout lacks it (actions/checkout fetch-depth 1)."""
    def git(*args: str) -> int:
        try:
            return subprocess.run(["git", "-C", str(workspace), *args], capture_output=True,
                                  timeout=120).returncode
        except (OSError, subprocess.TimeoutExpired):
            return 1
    if git("cat-file", "-e", f"{commitish}^{{commit}}") == 0:
        return
    target = commitish[len("origin/"):] if commitish.startswith("origin/") else commitish
    say(f"fetching {target} for the old model")
    git("fetch", "--no-tags", "--depth=1", "origin", target)


def default_old_model(new_model: str, ctx: ActionContext) -> str | None:
    """``git:BASE:PATH`` — the new model's path as it is on the pull request's base."""
    base = ctx.base_commitish
    if not base or new_model.startswith("git:"):
        return None
    return f"git:{base}:{_rel(new_model, ctx.workspace)}"


class Reporter:
    """Writes what the team sees; every GitHub API problem becomes a warning, never a crash."""

    def __init__(self, ctx: ActionContext, inputs: ActionInputs, out: IO[str],
                 client: GitHubClient | None):
        self.ctx, self.inputs, self.out, self.client = ctx, inputs, out, client

    def log(self, message: str) -> None:
        self.out.write(message + "\n")
        self.out.flush()

    def warn(self, message: str) -> None:
        workflow.annotate(self.out, "warning", message, title="easeml-ci")

    def api_warning(self, what: str, exc: GitHubError) -> None:
        if isinstance(exc, GitHubRateLimited):
            hint = exc.advice()
        elif isinstance(exc, GitHubForbidden):
            hint = ("the token may not do this — a pull request from a fork gets a read-only token, "
                    "or the workflow lacks the permission")
        else:
            hint = "GitHub did not accept the call"
        self.warn(f"could not {what} (HTTP {exc.status}: {exc.api_message}); {hint}. "
                  "The job summary and the exit code are unaffected.")

    def comment(self, report: GateReport, repository: str, config_rel: str) -> None:
        number = self.inputs.pr_number or self.ctx.pr_number
        if not self.inputs.comment or number is None:
            return
        if self.client is None:
            self.warn("no github-token: the pull request comment was skipped")
            return
        mark = marker(repository, config_rel, report.gate)
        try:
            author = self.client.authenticated_login()
            got = upsert_comment(self.client, repository, number, render_comment(report, mark),
                                 mark, author)
            self.log(f"easeml-ci: pull request comment {got.action}")
        except GitHubError as exc:
            self.api_warning(f"post the pull request comment on #{number}", exc)

    def alert_issue(self, report: GateReport, repository: str, fingerprint: str | None) -> None:
        if self.client is None:
            self.warn("no github-token: the new-test-set alert issue was skipped")
            return
        if not fingerprint:
            return
        try:
            got = upsert_alert_issue(self.client, repository, report.alert or {}, gate=report.gate,
                                     fingerprint=fingerprint, labels=self.inputs.alert_labels,
                                     run_url=self.ctx.run_url)
            report.alert_issue = got.ref
            self.log(f"easeml-ci: new-test-set alert issue {got.ref} {got.action}")
        except GitHubError as exc:
            self.api_warning("open the new-test-set alert issue", exc)

    def commit_status(self, report: GateReport, repository: str, sha: str | None) -> None:
        """The verdict as a commit status on the head commit, which branch protection can require."""
        from .provenance import commit_status_for, post_commit_status, status_context

        if not sha:
            self.warn("commit-status: no head commit to post the status on")
            return
        if self.client is None:
            self.warn("no github-token: the commit status was skipped")
            return
        try:
            state, description = commit_status_for(report.verdict)
            context = status_context(report.gate)
            if report.verdict == "pending" and report.round:
                description = (f"pending: verdict at the end of round {report.round['round']} "
                               f"({report.round['ends']})")
            description = seal_description(repository, sha, context, state, description)
            post_commit_status(self.status_client or self.client, repository, sha, state,
                               description, context, target_url=self.ctx.run_url)
            self.log(f"easeml-ci: commit status {context}: {state}")
            self.status_source(repository, context)
        except GitHubError as exc:
            self.api_warning(f"post the commit status on {sha[:12]} (needs statuses: write)", exc)
        except (UsageError, ValueError) as exc:
            self.warn(f"could not post the commit status: {exc}")


    # -- who else can post that status (github/seal.py) ------------------------------------
    status_client: GitHubClient | None = None  # the status-token input's client, when given

    def status_source(self, repository: str, context: str) -> None:
        """Warn while another workflow could post ``context`` and satisfy the required check."""
        from .policy import UnsafeSetting, default_branch, rules_on
        from .seal import status_source_problem

        assert self.client is not None
        try:
            rules = rules_on(self.client, repository, default_branch(self.client, repository))
        except UnsafeSetting as exc:
            self.warn(f"could not read who may post {context}: {exc.message}")
            return
        problem = status_source_problem(rules, context)
        if problem:
            self.warn(problem)


def seal_description(repository: str, sha: str, context: str, state: str, sentence: str) -> str:
    """The status description, sealed under the key when this run holds one (github/seal.py)."""
    from .seal import seal_key, sealed

    key = seal_key()
    return sentence if key is None else sealed(key, repository, sha, context, state, sentence)


def _pull_request_of_head(inputs: ActionInputs, claimed: int | None,
                          client: GitHubClient | None, ctx: ActionContext) -> ActionInputs:
    """``head-sha`` set: the PR is the one GitHub says has that head; ``claimed`` (the
    ``pr-number`` input, from an untrusted artifact) only a hint that must agree."""
    from .provenance import check_sha, pull_request_for_head

    sha = check_sha(inputs.head_sha or "")
    if client is None or not ctx.repository:
        raise UsageError("input head-sha: finding the pull request of the head commit needs "
                         "github-token (pull-requests: read) and GITHUB_REPOSITORY")
    number = pull_request_for_head(client, ctx.repository, sha, claimed_number=claimed)
    return dataclasses.replace(inputs, head_sha=sha, pr_number=number)


PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target", "workflow_run")


def registers(inputs: ActionInputs, ctx: ActionContext) -> bool:
    """The run registers a new test set only when the owner asked (``register: true``) and it
    runs on the default branch; ``register: true`` anywhere else is refused (exit 2)."""
    if inputs.register and not ctx.may_register:
        raise UsageError("input register: true is allowed only on a push to (or a dispatch on) "
                         "the default branch; a pull request never registers a test set")
    return inputs.register


def run_action(inputs: ActionInputs, ctx: ActionContext | None = None, *,
               out: IO[str] | None = None, client: GitHubClient | None = None,
               summary_path: str | None = None, output_path: str | None = None) -> int:
    """Run the gate as the action does; returns the exit code."""
    from ..gate.check import run_check
    from ..gate.registration import ledger_name as name_of_ledger, open_ledger_backend
    from ..config import load_config

    out = out or sys.stdout
    ctx = ctx or ActionContext.from_env()
    token = inputs.token or os.environ.get("GITHUB_TOKEN")
    workflow.mask_secrets(out, key=os.environ.get(KEY_ENV), token=token,
                          webhooks=[inputs.alert_webhook])
    workflow.mask_secrets(out, key=os.environ.get("EASEML_ORDER_KEY"))  # a reading-order secret
    workflow.mask_secrets(out, key=os.environ.get(LEDGER_KEY_ENV), token=inputs.status_token)
    if client is None and token:
        client = GitHubClient(token, ctx.api_url)
    reporter = Reporter(ctx, inputs, out, client)
    if inputs.status_token:  # the commit status from a GitHub App's token (github/seal.py)
        reporter.status_client = GitHubClient(inputs.status_token, ctx.api_url)
    workspace = ctx.workspace
    config_rel = _rel(inputs.config, workspace)
    gate = inputs.gate_name or "easeml-ci"
    scratch = tempfile.TemporaryDirectory(prefix="easeml-ci-")
    cfg = None
    where = None  # the ledger used, named in every report
    result = None
    fingerprint = None
    verdict, exit_code, message, alert, budget = "error", ExitCode.USAGE, None, None, None
    try:
        if inputs.head_sha:  # before anything is decrypted; no PR is addressed until verified
            claimed = inputs.pr_number
            reporter.inputs = inputs = dataclasses.replace(inputs, pr_number=None)
            reporter.inputs = inputs = _pull_request_of_head(inputs, claimed, client, ctx)
        if not inputs.new_model:
            raise UsageError("input new-model is required: the path of the model to gate "
                             "(.onnx, .csv/.npy predictions, or git:REF:PATH)")
        config_path = Path(inputs.config)
        if not config_path.is_absolute():
            config_path = workspace / config_path
        config_dir = config_path.parent
        if inputs.config_from_base and ctx.pull_request is not None:
            # (a push or workflow_run job checked out trusted code: its config is the base's)
            config_path = _config_from_base(workspace, config_rel, ctx, reporter.log,
                                            Path(scratch.name))
        cfg = load_config(config_path, base=config_dir, runner=True)  # the Action is a runner
        cfg = dataclasses.replace(cfg, path=Path(config_rel))  # named as in the repository
        workflow.mask_secrets(out, webhooks=[cfg.webhook, cfg.private_sink
                                             if "://" in (cfg.private_sink or "") else None])
        gate = inputs.gate_name or cfg.name or gate
        if inputs.alert_webhook:
            cfg = dataclasses.replace(cfg, webhook=inputs.alert_webhook)
        if inputs.alert_issue is not None:  # pinned with the config's alerts (term `alerts`)
            cfg = dataclasses.replace(cfg, alert_issue=inputs.alert_issue)
        check_old_model(inputs.old_model, inputs.new_model, ctx, workspace, cfg)
        old = inputs.old_model
        if not old:
            needs_old = bool(cfg.formula.variables & {"o", "d"})
            if needs_old:
                old = default_old_model(inputs.new_model, ctx)
                if old is None:
                    raise UsageError("input old-model is required here: the condition compares "
                                     "with the old model and this run is not on a pull request "
                                     "(no base commit to take it from)")
                _ensure_commit(workspace, old.split(":", 2)[1], reporter.log)
        backend = open_ledger_backend(cfg)
        where = name_of_ledger(backend)
        reporter.log(f"easeml-ci: budget ledger: {where}")
        if holds_a_key():  # the repository's settings, read before anything is opened
            check_trust(client, ctx, inputs)
        elif os.environ.get(LEDGER_KEY_ENV):
            warn_ledger_key_in_reach(reporter, client, ctx)
        result = run_check(cfg, inputs.new_model, old, inputs.testset,
                           underpowered=inputs.underpowered, key_env=KEY_ENV, workdir=workspace,
                           backend=backend, register=registers(inputs, ctx),
                           progress=lambda m: reporter.log(f"... {m}"),
                           label_store=inputs.label_store,
                           pull_request={"number": inputs.pr_number or ctx.pr_number,
                                         "head_sha": inputs.head_sha or ctx.head_sha})
        verdict, exit_code = result.verdict, result.exit_code
        fingerprint, alert, budget = result.fingerprint, result.alert, result.budget.to_dict()
    except BudgetExhausted as exc:
        verdict, exit_code, message = "exhausted", exc.exit_code, exc.message
        alert, budget, fingerprint = exc.alert, exc.budget.to_dict(), exc.fingerprint
    except EasemlError as exc:  # bad input (2), a test set too small (3), a ledger we may not write (2)
        verdict, exit_code, message = "error", exc.exit_code, exc.message
        if KEY_ENV in message and not os.environ.get(KEY_ENV):
            message += (" — the testset-key input was empty: pass it from a secret; pull requests "
                        "from forks get no secrets (see the fork-safe workflow_run pattern)")
    except ConditionsError as exc:  # the language's own errors; anything else is a bug and says so
        verdict, exit_code, message = "error", exc.exit_code, str(exc)

    if message:  # the summary and the comment are not masked by the runner
        message = redact(message, [inputs.alert_webhook, *((cfg.webhook, cfg.private_sink)
                                                           if cfg else ())])
    adaptivity = cfg.adaptivity if cfg else None
    report = GateReport.build(
        gate=gate, config_path=config_rel, verdict=verdict, exit_code=exit_code,
        adaptivity=adaptivity, clauses=[c.to_dict() for c in result.clauses] if result else None, budget=budget,
        show_metrics=result is not None and bool(cfg.show_metrics),
        metrics=result.metrics if result else None, message=message, alert=alert,
        history=result.history if result else [], commit=inputs.head_sha or ctx.head_sha,
        ledger=where, round=getattr(result, "round", None))

    alert_wanted = inputs.alert_issue if inputs.alert_issue is not None else bool(
        cfg.alert_issue if cfg else True)
    repository = ctx.repository
    if alert and alert_wanted and repository:
        reporter.alert_issue(report, repository, fingerprint)

    _annotate(reporter, report, cfg, config_rel)
    workflow.append_summary(render_summary(report), summary_path)
    workflow.write_outputs(report.outputs(), output_path)
    reporter.log(f"easeml-ci: gate '{report.gate}': {report.verdict}"
                 + (f" — {message}" if message else ""))
    if repository:
        reporter.comment(report, repository, config_rel)
    if inputs.commit_status and repository:
        reporter.commit_status(report, repository, inputs.head_sha or ctx.head_sha)
    exit_code = report.exit_code
    if inputs.meter_validation and cfg is not None and exit_code != ExitCode.USAGE:
        meter_code = run_meter_step(inputs, ctx, cfg, reporter, config_rel, summary_path)
        exit_code = max(exit_code, meter_code)
    scratch.cleanup()
    return exit_code


def run_meter_step(inputs: ActionInputs, ctx: ActionContext, cfg, reporter: Reporter,
                   config_rel: str, summary_path: str | None) -> int:
    """The overfitting meter on the pull request's model, after the gate: a gauge in the summary
    and its own sticky comment (gate name ``easeml-meter``). It fails the job only when
    ``meter-fail-above`` is set and the reported range starts at or above it (or the meter
    cannot run: with a threshold set, no answer is a failure, exit 2); otherwise its problems
    are warnings. Its answer is a step of the meter's own test set, recorded before it shows."""
    from ..gate.meter import GATE_NAME, run_meter
    from ..gate.registration import open_ledger_backend

    try:
        if inputs.meter_fail_above is not None:  # a threshold that is no edge: before any step
            edges = cfg.meter_plan().ranges.edges if cfg.meter else []
            if not any(abs(inputs.meter_fail_above - e) < 1e-12 for e in edges):
                raise UsageError(f"input meter-fail-above: {inputs.meter_fail_above:g} is not one "
                                 f"of the meter's edges {list(edges)}; the guarantee is stated at "
                                 "the edges")
        result = run_meter(cfg, inputs.new_model, inputs.meter_validation, None,
                           key_env=KEY_ENV, workdir=ctx.workspace,
                           backend=open_ledger_backend(cfg),
                           register=registers(inputs, ctx),
                           progress=lambda m: reporter.log(f"... meter: {m}"))
    except (EasemlError, ConditionsError) as exc:
        text = redact(getattr(exc, "message", str(exc)), [inputs.alert_webhook])
        workflow.append_summary(f"### {GATE_NAME}\n\n> the meter could not run: {text}\n",
                                summary_path)
        if inputs.meter_fail_above is not None:
            workflow.annotate(reporter.out, "error", f"the meter could not run: {text}",
                              title=GATE_NAME)
            return ExitCode.USAGE
        reporter.warn(f"the meter could not run: {text}")
        return ExitCode.PASS
    gauge = render_meter_gauge(result)
    workflow.append_summary(gauge + "\n", summary_path)
    reporter.log(f"easeml-ci: {GATE_NAME}: {result.answer}")
    number = inputs.pr_number or ctx.pr_number
    if ctx.repository and inputs.comment and number is not None and reporter.client is not None:
        mark = marker(ctx.repository, config_rel, GATE_NAME)
        try:
            upsert_comment(reporter.client, ctx.repository, number, f"{mark}\n{gauge}\n", mark,
                           reporter.client.authenticated_login())
        except GitHubError as exc:
            reporter.api_warning(f"post the meter comment on #{number}", exc)
    if result.fails_above(inputs.meter_fail_above):
        workflow.annotate(reporter.out, "error", f"overfitting {result.answer}: at or above "
                          f"{inputs.meter_fail_above:g} (meter-fail-above)", title=GATE_NAME)
        return ExitCode.FAIL
    return ExitCode.PASS


# --- a run that holds the key (github/policy.py) ------------------------------------------------

LEDGER_KEY_ENV = "EASEML_LEDGER_KEY"  # the ledger's own key, where the test set is not encrypted


def holds_a_key(env: dict | None = None) -> bool:
    """Whether this run holds the test-set key, which code a pull request controls must never
    meet. (A plaintext test set is in reach of every job that gates it, and so is its
    EASEML_LEDGER_KEY: :func:`warn_ledger_key_in_reach`.)"""
    env = os.environ if env is None else env
    return bool(env.get(KEY_ENV))


def warn_ledger_key_in_reach(reporter: "Reporter", client: GitHubClient | None,
                             ctx: ActionContext) -> None:
    """A plaintext test set's run that is not the default branch's own workflow: warn that the
    test set and its ledger key are in reach of the pull request's workflow."""
    from .policy import UnsafeSetting, check_run_context

    try:
        check_run_context(event_name=ctx.event_name, ref=ctx.ref, workflow_ref=ctx.workflow_ref,
                          repository=ctx.repository or "", default=(ctx.event.get("repository")
                                                                    or {}).get("default_branch")
                          or "main")
    except UnsafeSetting:
        reporter.warn(f"this {ctx.event_name or 'unknown'} run gates a plaintext test set with "
                      f"{LEDGER_KEY_ENV}: a workflow this run's branch defines can read both, "
                      "and with the ledger key rewrite the budget. Encrypt the test set and gate "
                      "from the workflow_run split (docs/action.md)")


def check_trust(client: GitHubClient | None, ctx: ActionContext, inputs: ActionInputs) -> None:
    """Refuse (exit 2, nothing opened) unless the repository keeps the key from code a pull
    request controls and the ledger branch from being rewound (:mod:`.policy`)."""
    from .policy import check_keyed_run

    check_keyed_run(client, repository=ctx.repository, event_name=ctx.event_name, ref=ctx.ref,
                    workflow_ref=ctx.workflow_ref, environment=inputs.environment,
                    ledger_branch=None)
    # The ledger branch's rules are read by steps.read_ledger (the backend's check_protected),
    # before anything is opened, for every run: keyed or not.


def _config_from_base(workspace: Path, config_rel: str, ctx: ActionContext,
                      say: Callable[[str], None], scratch: Path) -> Path:
    """The config as it is on the base commit, so a pull request cannot change its own gate."""
    base = ctx.base_commitish
    if not base:
        raise UsageError("input config-from-base: this run has no base commit (not a pull "
                         "request or push); set config-from-base: false")
    _ensure_commit(workspace, base, say)
    done = subprocess.run(["git", "-C", str(workspace), "show", f"{base}:{config_rel}"],
                          capture_output=True, timeout=60)
    if done.returncode != 0:
        raise UsageError(f"input config-from-base: {config_rel} does not exist on the base "
                         f"commit {base[:12]}; merge the config first, or set "
                         "config-from-base: false for this pull request")
    path = scratch / Path(config_rel).name
    path.write_bytes(done.stdout)
    say(f"... using {config_rel} from the base commit {base[:12]}")
    return path


def _annotate(reporter: Reporter, report: GateReport, cfg, config_rel: str) -> None:
    lines = (cfg.lines if cfg else None) or {}
    out = reporter.out
    if report.verdict == "fail":
        failed = [c for c in report.clauses if c.get("verdict") == "fail"]
        for c in failed:
            workflow.annotate(out, "error", f"clause `{c.get('text')}` failed",
                              file=config_rel, line=c.get("line") or lines.get("condition"),
                              title=f"easeml-ci gate {report.gate}")
        if not failed:  # one bit per step: which clause failed stays undisclosed
            workflow.annotate(out, "error", "the condition failed (per-clause verdicts are not "
                              "disclosed under adaptive modes: one bit per step)",
                              file=config_rel, line=lines.get("condition"),
                              title=f"easeml-ci gate {report.gate}")
    elif report.verdict == "exhausted":
        workflow.annotate(out, "error", report.message or "the test set is spent",
                          file=config_rel, line=lines.get("testset") or lines.get("condition"),
                          title=f"easeml-ci gate {report.gate}: new test set needed")
    elif report.verdict == "error":
        workflow.annotate(out, "error", report.message or "the gate could not run",
                          title=f"easeml-ci gate {report.gate}")
    elif report.verdict == "withheld":
        workflow.annotate(out, "notice", "adaptivity none: the verdict went to the private sink",
                          title=f"easeml-ci gate {report.gate}")
    elif report.verdict == "pending" and report.round:
        workflow.annotate(out, "notice", f"pending: verdict at the end of round "
                          f"{report.round['round']} ({report.round['ends']})",
                          title=f"easeml-ci gate {report.gate}")
