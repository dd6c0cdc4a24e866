"""Command-line plumbing shared by `easeml-ci` and `easeml-automl`."""
from __future__ import annotations

import json
import sys

import click

from conditions import ConditionError, ConditionsError

from ..errors import BudgetExhausted, EasemlError, TestSetTooSmall


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


class ErrorMappingGroup(click.Group):
    """A click group that turns domain errors into one line on stderr and their exit code.

    A user mistake is an :class:`EasemlError` (which knows its exit code) or a
    :class:`conditions.ConditionsError` (exit 2, or 3 for a sample too small); neither ever
    shows a traceback.
    """

    def invoke(self, ctx: click.Context):
        as_json = "--json" in ctx.args  # everything after the subcommand's name
        try:
            return super().invoke(ctx)
        except (EasemlError, ConditionsError) as exc:
            code = exc.exit_code
            message = exc.message if isinstance(exc, EasemlError) else str(exc)
            if as_json:  # stdout still carries exactly one JSON object
                click.echo(json.dumps(error_object(exc, code), sort_keys=True, default=str))
            click.echo(f"error: {message}", err=True)
            sys.exit(code)
