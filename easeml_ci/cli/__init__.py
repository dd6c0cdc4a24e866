"""The `easeml-ci` command line.

Each subcommand lives in its own module and is registered here. User mistakes surface as
:class:`~easeml_ci.errors.EasemlError` (or :class:`conditions.ConditionError`) and are turned
into one line on stderr and the error's exit code, never a traceback.
"""
from __future__ import annotations

import click

from .group import ErrorMappingGroup


@click.group(cls=ErrorMappingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="easeml-ci")
def main() -> None:
    """Gate ML models on a secret test set with a statistical guarantee (ease.ml/ci)."""


# --- subcommands (each module adds one command or group) ---------------------------------
from .action import action  # noqa: E402
from .check import check  # noqa: E402
from .ledger import ledger  # noqa: E402
from .meter import meter  # noqa: E402
from .pick import pick  # noqa: E402
from .plan import plan  # noqa: E402
from .round import round_group  # noqa: E402
from .status import status  # noqa: E402
from .testset import testset  # noqa: E402

for command in (plan, check, ledger, testset, action, meter, pick, round_group, status):
    main.add_command(command)
