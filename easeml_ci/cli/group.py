"""Command-line plumbing shared by `easeml-ci` and `easeml-automl`."""
from __future__ import annotations

import json
import os
import sys
import traceback

import click

from conditions import ConditionError, ConditionsError

from ..atomic import FULL_DISK
from ..errors import BudgetExhausted, DiskFull, EasemlError, Interrupted, TestSetTooSmall

#: Set to 1 to see the traceback of an internal error (it may quote test data: owner only).
TRACEBACK_ENV = "EASEML_CI_TRACEBACK"


def error_object(exc: Exception, exit_code: int) -> dict:
    """The one JSON object a ``--json`` command prints when it cannot give its answer."""
    kind = ("exhausted" if isinstance(exc, BudgetExhausted) else
            "too_small" if isinstance(exc, TestSetTooSmall) else
            "condition" if isinstance(exc, ConditionError) else
            type(exc).__name__.removesuffix("Error").lower() or "error")
    out = {"verdict": None, "error": kind, "message": getattr(exc, "message", str(exc)),
           "exit_code": exit_code}
    if isinstance(exc, BudgetExhausted):
        out["budget"], out["alert"] = exc.budget.to_dict(), exc.alert
    return out


def internal_error(exc: BaseException) -> EasemlError:
    """An exception nobody expected, as one line and exit 2 (no verdict), never exit 1 (a
    fail) and never a traceback: its text and its frames' values may come from the test data, so
    the line names only the exception's type and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "easeml_ci" in f.filename or "automl_runner" in f.filename
            or "conditions" in f.filename] or frames
    where = f" at {os.path.basename(ours[-1].filename)}:{ours[-1].lineno}" if ours else ""
    error = EasemlError(f"internal error: {type(exc).__name__}{where}; no verdict was given by "
                        f"this run. Please report it (set {TRACEBACK_ENV}=1 to see the traceback; "
                        "it may show test data, so only the test set's owner should)")
    return error


def as_domain_error(exc: BaseException) -> EasemlError | None:
    """What the command line shows for an exception that is not a user mistake: Ctrl-C (130),
    a full disk (2, naming the file where known), anything else as an internal error (2)."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted()
    if isinstance(exc, click.exceptions.Abort):  # click's own prompt, stopped or out of input
        return (Interrupted() if isinstance(exc.__context__, KeyboardInterrupt) else
                EasemlError("aborted: a prompt got no answer (end of input)"))
    if isinstance(exc, OSError) and exc.errno in FULL_DISK:
        return DiskFull(exc.filename or "a file (not named by the system)",
                        exc.strerror or os.strerror(exc.errno), unchanged=False)
    if isinstance(exc, Exception) and not isinstance(exc, (click.exceptions.ClickException,
                                                           click.exceptions.Exit)):
        if os.environ.get(TRACEBACK_ENV) == "1":
            return None
        return internal_error(exc)
    return None


class ErrorMappingGroup(click.Group):
    """A click group that turns errors into one line on stderr and their exit code.

    A user mistake is an :class:`EasemlError` (which knows its exit code) or a
    :class:`conditions.ConditionsError` (exit 2, or 3 for a sample too small); Ctrl-C exits 130,
    a full disk and any unexpected error exit 2 (:func:`as_domain_error`). None of them shows a
    traceback, and none exits 1: that is a fail, a verdict.
    """

    def invoke(self, ctx: click.Context):
        as_json = "--json" in ctx.args  # everything after the subcommand's name
        try:
            return super().invoke(ctx)
        except (EasemlError, ConditionsError) as exc:
            self.exit_with(exc, as_json)
        except BaseException as exc:  # noqa: BLE001 - SystemExit and click's own pass through
            error = None if isinstance(exc, SystemExit) else as_domain_error(exc)
            if error is None:
                raise
            self.exit_with(error, as_json)

    @staticmethod
    def exit_with(exc: Exception, as_json: bool) -> None:
        code = exc.exit_code
        message = exc.message if isinstance(exc, EasemlError) else str(exc)
        if as_json:  # stdout still carries exactly one JSON object
            click.echo(json.dumps(error_object(exc, code), sort_keys=True, default=str))
        click.echo(f"error: {message}", err=True)
        sys.exit(code)
