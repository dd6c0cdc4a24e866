"""`easeml-ci action`: the GitHub Action's step (``action.yml`` runs exactly this).

Inputs arrive as ``INPUT_*`` environment variables set by the composite action's ``env:``
mapping (never interpolated into a shell line), or as options when run by hand. The test-set key
comes from ``EASEML_TESTSET_KEY`` and the token from ``GITHUB_TOKEN``; neither is ever an option,
so neither lands in a process listing.

Exit code = the gate: 0 pass or withheld, 1 fail, 2 bad input/configuration, 3 test set spent.
"""
from __future__ import annotations

import os
import sys

import click

DEFAULT_LABELS = ("easeml-ci", "new-test-set")  # as easeml_ci.github.alert_issue; importing it here
# would pull requests into every easeml-ci start-up (a test pins the two equal)


def _opt(name: str, env: str, help: str, **kw):
    return click.option(name, envvar=env, show_envvar=True, help=help, **kw)


@click.command("action")
@_opt("--config", "INPUT_CONFIG", "The gate's .easeml.yml.", default=".easeml.yml", show_default=True)
@_opt("--new-model", "INPUT_NEW_MODEL", "The model to gate (.onnx, predictions, git:REF:PATH).")
@_opt("--old-model", "INPUT_OLD_MODEL",
      "The model to compare with; default: the same path on the pull request's base commit.")
@_opt("--testset", "INPUT_TESTSET", "The test set; default: `testset:` in the config.")
@_opt("--gate-name", "INPUT_GATE_NAME", "Name of the gate (keys the sticky comment); default: config `name`.")
@_opt("--comment", "INPUT_COMMENT", "Post/update the sticky pull request comment (true/false).",
      default="true", show_default=True)
@_opt("--alert-issue", "INPUT_ALERT_ISSUE",
      "Open an issue when a new test set is needed (true/false); default: config alerts.issue.")
@_opt("--alert-labels", "INPUT_ALERT_LABELS", "Comma-separated labels of the alert issue.",
      default=",".join(DEFAULT_LABELS), show_default=True)
@_opt("--alert-webhook", "INPUT_ALERT_WEBHOOK", "Webhook URL for alerts; overrides config alerts.webhook.")
@_opt("--pr-number", "INPUT_PR_NUMBER",
      "Pull request to comment on; default: from the event (set it in a workflow_run job).")
@_opt("--underpowered", "INPUT_UNDERPOWERED",
      "Decide on a test set smaller than the plan, at the tolerance it supports (true/false).",
      default="false", show_default=True)
@_opt("--config-from-base", "INPUT_CONFIG_FROM_BASE",
      "Read the config from the pull request's base commit, so a PR cannot change its own gate "
      "(true/false).", default="true", show_default=True)
@_opt("--head-sha", "INPUT_HEAD_SHA",
      "The commit the verdict is about (workflow_run: github.event.workflow_run.head_sha); the "
      "pull request is the open one with that head, and --pr-number must agree.")
@_opt("--commit-status", "INPUT_COMMIT_STATUS",
      "Post the verdict as commit status easeml-ci/<gate> on the head commit (true/false).",
      default="false", show_default=True)
@_opt("--environment", "INPUT_ENVIRONMENT",
      "The environment that holds the key; its settings are checked before anything is opened.",
      default="easeml-gate", show_default=True)
@_opt("--meter-validation", "INPUT_METER_VALIDATION",
      "Also run the overfitting meter (the config's `meter:`) on this validation set.")
@_opt("--meter-fail-above", "INPUT_METER_FAIL_ABOVE",
      "Fail the job when the meter's range starts at or above this edge (e.g. 0.05).")
@_opt("--label-store", "INPUT_LABEL_STORE",
      "Label store of a test set labelled on demand: an absolute path outside the workspace.")
@_opt("--command", "INPUT_COMMAND",
      "check (a pull request's model), close-round (a cron job of the default branch: release "
      "the verdicts of every ended round, post each pull request's status and comment), or "
      "round-requests (a cron job of the default branch: the next label requests to the "
      "private sink).",
      default="check", show_default=True)
@_opt("--register", "INPUT_REGISTER",
      "Register a test set that is not registered yet (the owner asks for it; only on the "
      "default branch, never on a pull request) (true/false).", default="false",
      show_default=True)
def action(config, new_model, old_model, testset, gate_name, comment, alert_issue, alert_labels,
           alert_webhook, pr_number, underpowered, config_from_base, head_sha, commit_status,
           meter_validation, meter_fail_above, label_store, command, register, environment):
    """Run the gate as the GitHub Action does: check, summary, outputs, PR comment, alerts."""
    from ..errors import UsageError
    from ..github.action import ActionInputs, parse_bool, parse_pr_number, parse_threshold, run_action

    command = (command or "check").strip()
    if command not in ("check", "close-round", "round-requests"):
        raise UsageError("input command: expected check, close-round or round-requests, got "
                         f"{command!r}")

    inputs = ActionInputs(
        config=config or ".easeml.yml",
        new_model=new_model or None,
        old_model=old_model or None,
        testset=testset or None,
        gate_name=gate_name or None,
        comment=parse_bool("comment", comment, True),
        alert_issue=parse_bool("alert-issue", alert_issue, None),
        alert_labels=tuple(x.strip() for x in (alert_labels or "").split(",") if x.strip()),
        alert_webhook=alert_webhook or None,
        pr_number=parse_pr_number(pr_number),
        underpowered=parse_bool("underpowered", underpowered, False),
        config_from_base=parse_bool("config-from-base", config_from_base, True),
        head_sha=(head_sha or "").strip() or None,
        commit_status=parse_bool("commit-status", commit_status, False),
        meter_validation=meter_validation or None,
        meter_fail_above=parse_threshold(meter_fail_above),
        label_store=(label_store or "").strip() or None,
        command=command,
        register=parse_bool("register", register, False),
        environment=(environment or "").strip(),
        # a token, like GITHUB_TOKEN: from the environment only, never an option
        status_token=os.environ.get("INPUT_STATUS_TOKEN") or None,
    )
    if command == "close-round":  # the cron job of the default branch (gate/rounds.py)
        from ..github.action import ActionContext
        from ..github.round_close import run_round_close

        sys.exit(run_round_close(inputs, ActionContext.from_env(), out=sys.stdout))
    if command == "round-requests":  # the cron job of the default branch (gate/rounds.py)
        from ..github.action import ActionContext
        from ..github.round_requests import run_round_requests

        sys.exit(run_round_requests(inputs, ActionContext.from_env(), out=sys.stdout))
    sys.exit(run_action(inputs))
