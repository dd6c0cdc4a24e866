"""Command-line plumbing shared by `easeml-ci` and `easeml-automl`."""
from __future__ import annotations

import sys

import click

from conditions import ConditionError

from .errors import EasemlError


class ErrorMappingGroup(click.Group):
    """A click group that turns domain errors into one line on stderr and their exit code.

    A user mistake is an :class:`EasemlError` (which knows its exit code) or a
    :class:`conditions.ConditionError` (exit 2); neither ever shows a traceback.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EasemlError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except ConditionError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
