"""The `easeml-ci` command line.

Each subcommand lives in its own module, imported when it is the one invoked (or listed by
``--help``): a check does not pay for the imports of the other commands. User mistakes surface
as :class:`~easeml_ci.errors.EasemlError` (or :class:`conditions.ConditionError`) and are turned
into one line on stderr and the error's exit code, never a traceback.
"""
from __future__ import annotations

import importlib

import click

from .group import ErrorMappingGroup

#: name -> (module, attribute) of each subcommand (a command or a group).
COMMANDS = {
    "plan": (".plan", "plan"), "check": (".check", "check"), "ledger": (".ledger", "ledger"),
    "testset": (".testset", "testset"), "action": (".action", "action"),
    "meter": (".meter", "meter"), "pick": (".pick", "pick"), "round": (".round", "round_group"),
    "status": (".status", "status"),
}


class _LazyGroup(ErrorMappingGroup):
    def list_commands(self, ctx):
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx, name):
        if name not in self.commands and name in COMMANDS:
            module, attribute = COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module, __name__), attribute), name)
        return self.commands.get(name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="easeml-ci")
def main() -> None:
    """Gate ML models on a secret test set with a statistical guarantee (ease.ml/ci)."""
