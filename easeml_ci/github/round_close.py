"""The Action's ``command: close-round``: a scheduled workflow of the default branch (the trusted
job, with the key) closes every ended round and reports each released verdict where the pull
request shows it: the commit status ``easeml-ci/<gate>`` on its head commit, and its sticky
comment. The ledger is written (:func:`easeml_ci.gate.rounds.close` completes every step) before
anything is posted; the job's exit code is 0 whenever it ran, whatever it released. A close that
died after completing steps but before posting their statuses is repaired by the next one: for
every step an earlier close completed whose commit status is still missing or ``pending``, it
posts the verdict (the ledger's bit) and updates the comment.
"""
from __future__ import annotations

from pathlib import Path
from typing import IO

from ..errors import ExitCode
from . import workflow
from .api import GitHubClient
from .report import GateReport
from .round_job import KEY_ENV, job_client, run_keyed


def _report(gate: str, config_rel: str, released, result, clauses: list[str], line, ledger
            ) -> GateReport:
    """The pull request's report for one released verdict: the bit (one bit per step: a formula
    of several clauses shows them undisclosed) and the budget after the close."""
    shown = released.verdict if len(clauses) == 1 and released.verdict in ("pass", "fail") \
        else "undisclosed"
    return GateReport.build(
        gate=gate, config_path=config_rel, verdict=released.verdict,
        exit_code=ExitCode.FAIL if released.verdict != "pass" else ExitCode.PASS,
        adaptivity=None, clauses=[{"text": c, "verdict": shown, "line": line} for c in clauses],
        budget=result.budget.to_dict(), alert=result.alert, commit=released.head_sha,
        ledger=ledger, round={"round": released.round, "status": "released"})


def run_round_close(inputs, ctx, *, out: IO[str], client: GitHubClient | None = None,
                    summary_path: str | None = None) -> int:
    """Close the rounds of the config's test set; post what each pull request may see (the
    summary_path default: the runner's $GITHUB_STEP_SUMMARY, as for a check)."""
    from ..gate.rounds import close
    from .action import Reporter

    client = job_client(inputs, ctx, out, client)
    reporter = Reporter(ctx, inputs, out, client)
    if inputs.status_token:  # the commit statuses from a GitHub App's token (github/seal.py)
        reporter.status_client = GitHubClient(inputs.status_token, ctx.api_url)
    workspace = ctx.workspace
    config_rel = (workflow.relative_to_workspace(Path(inputs.config), str(workspace))
                  if Path(inputs.config).is_absolute() else Path(inputs.config).as_posix())
    done = run_keyed(inputs, ctx, client, out=out, summary_path=summary_path,
                     title="easeml-ci round close", job=lambda cfg, backend: close(
                         cfg, inputs.testset, key_env=KEY_ENV, workdir=workspace, backend=backend,
                         label_store=getattr(inputs, "label_store", None),
                         progress=lambda m: reporter.log(f"... {m}")))
    if isinstance(done, int):
        return done
    cfg, result = done
    gate = inputs.gate_name or cfg.name or "easeml-ci"
    clauses = [c.text for c in cfg.checked_plan().clauses]
    rows = ["### easeml-ci round close", "", "| step | round | pull request | verdict |",
            "|---|---|---|---|"]
    for released in [*result.released, *result.not_released]:
        rows.append(f"| {released.step} | {released.round} | "
                    f"{'#' + str(released.pr) if released.pr else '-'} | {released.verdict} |")
        report = _report(gate, config_rel, released, result, clauses, cfg.line("condition"),
                         result.ledger)
        reporter.log(f"easeml-ci: step {released.step} (round {released.round}): "
                     f"{released.verdict}")
        if not ctx.repository:
            continue
        if released.pr is not None:
            reporter.inputs = _for_pull_request(inputs, released.pr)
            reporter.comment(report, ctx.repository, config_rel)
        if released.head_sha and inputs.commit_status:
            reporter.commit_status(report, ctx.repository, released.head_sha)
    repaired = _repair_statuses(result, reporter, inputs, ctx, gate, config_rel, clauses,
                                cfg.line("condition"))
    for released in repaired:
        rows.append(f"| {released.step} | {released.round} | "
                    f"{'#' + str(released.pr) if released.pr else '-'} | {released.verdict} "
                    "(status re-posted) |")
    if not result.released and not result.not_released and not repaired:
        rows.append("| - | - | - | no round has ended with a pending check |")
    rows += ["", f"Still pending: {result.pending}. Budget: {result.budget.describe()}."]
    if result.alert and ctx.repository and (inputs.alert_issue is not False) and cfg.alert_issue:
        reporter.alert_issue(_report(gate, config_rel, (result.released or result.not_released)[-1],
                                     result, clauses, cfg.line("condition"), result.ledger),
                             ctx.repository, result.fingerprint)
    workflow.append_summary("\n".join(rows) + "\n", summary_path)
    return ExitCode.PASS


def _status_unposted(client: GitHubClient, repository: str, sha: str, context: str) -> bool:
    """Whether the newest commit status ``context`` on ``sha`` is missing or still pending."""
    from .api import repo_path

    for status in client.get(repo_path(repository, "commits", sha, "statuses"), per_page=100):
        if status.get("context") == context:  # newest first
            return status.get("state") == "pending"
    return True


def _repair_statuses(result, reporter, inputs, ctx, gate: str, config_rel: str,
                     clauses: list[str], line) -> list:
    """Steps an earlier close completed whose commit status is still missing or pending (that
    close died between the ledger and the statuses): post the verdict and the sticky comment now.
    The bits are the ledger's, public since that close; which steps need it is GitHub's state."""
    from .api import GitHubError
    from .provenance import status_context

    if not (ctx.repository and inputs.commit_status and reporter.client is not None):
        return []
    repaired = []
    for released in result.released_before:
        if not released.head_sha:
            continue
        try:
            unposted = _status_unposted(reporter.client, ctx.repository, released.head_sha,
                                        status_context(gate))
        except GitHubError as exc:
            reporter.api_warning(f"read the commit statuses of {released.head_sha[:12]} "
                                 "(needs statuses: read)", exc)
            continue
        if not unposted:
            continue
        report = _report(gate, config_rel, released, result, clauses, line, result.ledger)
        reporter.log(f"easeml-ci: step {released.step} (round {released.round}): "
                     f"{released.verdict}, its status re-posted")
        if released.pr is not None:
            reporter.inputs = _for_pull_request(inputs, released.pr)
            reporter.comment(report, ctx.repository, config_rel)
        reporter.commit_status(report, ctx.repository, released.head_sha)
        repaired.append(released)
    return repaired


def _for_pull_request(inputs, number: int):
    import dataclasses

    return dataclasses.replace(inputs, pr_number=number)


__all__ = ["run_round_close"]
