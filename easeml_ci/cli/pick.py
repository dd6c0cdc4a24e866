"""`easeml-ci pick`: the best of k models on fresh data, certified at a stated reliability.

Exit codes: 0 answered (a pick, "no pick yet", or withheld), 2 bad input (nothing written), 3
test set spent. Under ``--json`` stdout carries exactly one JSON object and progress is silent.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import BudgetExhausted, UsageError

DEFAULT_KEY_ENV = "EASEML_TESTSET_KEY"


@click.command("pick")
@click.option("--config", "config_path", default=".easeml.yml", show_default=True,
              help="The .easeml.yml with a `pick:` section.")
@click.option("--models", "models", multiple=True,
              help="The candidates: .onnx, .csv/.npy predictions or git:REF:PATH, in order "
                   "(--models A B C, or --models A --models B).")
@click.argument("more_models", nargs=-1, metavar="[MODEL]...")
@click.option("--testset", default=None,
              help="The pick's test set (usually labelled on demand); default: `pick.testset:`.")
@click.option("--labels", "label_store", default=None,
              help="Label store of the test set [default: TESTSET.labels].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
@click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True,
              help="Environment variable holding the key of an encrypted test set.")
def pick(config_path, models, more_models, testset, label_store, as_json, key_env):
    """Which of the models is best on the pick's test set, with the configured confidence."""
    from ..gate.pick import run_pick
    from .render import render_pick

    candidates = [*models, *more_models]
    if not candidates:
        raise UsageError("--models required: `easeml-ci pick --models A.onnx B.onnx ... "
                         "--testset TESTSET`")
    progress = None if as_json else (lambda m: click.echo(f"... {m}", err=True))
    try:
        result = run_pick(config_path, candidates, testset, key_env=key_env, workdir=Path("."),
                          progress=progress, label_store=label_store)
    except BudgetExhausted as exc:
        if not as_json:
            click.echo(exc.alert["text"])
        raise
    click.echo(json.dumps(result.to_dict(), sort_keys=True) if as_json else render_pick(result))
    sys.exit(result.exit_code)
