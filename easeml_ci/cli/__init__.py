"""The `easeml-ci` command line.

Each subcommand lives in its own module, imported when it is the one invoked (or listed by
``--help``): a check does not pay for the imports of the other commands. User mistakes surface
as :class:`~easeml_ci.errors.EasemlError` (or :class:`conditions.ConditionError`) and are turned
into one line on stderr and the error's exit code, never a traceback.
"""
from __future__ import annotations

import gc
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


def run() -> None:
    """The ``easeml-ci`` console script: :func:`main`, then an exit without the interpreter's
    last garbage-collection pass.

    By then the answer is out (printed, recorded, posted) and the process is about to end: the
    pass over the ~30,000 objects a check leaves (numpy, onnxruntime, click, the gate's modules)
    would only find them alive and cost ~20 ms of the job's wall time (bench/check_overhead.py).
    :func:`gc.freeze` moves them out of the collector's sight; the interpreter still tears down
    every module and frees what they hold, runs ``atexit`` handlers (temporary folders, logging)
    and flushes the standard streams. Only cyclic garbage left at the very end goes unfinalized,
    which Python never promises at exit anyway."""
    try:
        main()
    finally:
        gc.freeze()
