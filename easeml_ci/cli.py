"""The `easeml-ci` command line.

Each subcommand lives in its own module and is registered here. User mistakes surface as
:class:`~easeml_ci.errors.EasemlError` (or :class:`conditions.ConditionError`) and are turned
into one line on stderr and the error's exit code, never a traceback.
"""
from __future__ import annotations

import sys

import click

from conditions import ConditionError

from .errors import EasemlError


class GateGroup(click.Group):
    """A click group that maps domain errors to their exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EasemlError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except ConditionError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=GateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="easeml-ci")
def main() -> None:
    """Gate ML models on a secret test set with a statistical guarantee (ease.ml/ci)."""


# --- subcommands (each module adds one command or group) ---------------------------------
from .action_cmd import action  # noqa: E402
from .check_cmd import check, register  # noqa: E402
from .ledger_cmd import ledger  # noqa: E402
from .plan_cmd import plan  # noqa: E402
from .testset_cmd import testset  # noqa: E402

testset.add_command(register)  # `easeml-ci testset register`: start the next test set
for command in (plan, check, ledger, testset, action):
    main.add_command(command)
