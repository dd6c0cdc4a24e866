"""`easeml-ci check`.

Exit codes: 0 pass (or withheld), 1 fail, 2 bad input, 3 test set retired, spent or too small.
Under ``--json`` stdout carries exactly one JSON object and progress stays silent.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import render as report
from ..errors import BudgetExhausted

DEFAULT_KEY_ENV = "EASEML_TESTSET_KEY"


def _progress(enabled: bool):
    if not enabled:
        return None
    return lambda message: click.echo(f"... {message}", err=True)


@click.command("check")
@click.option("--config", "config_path", default=".easeml.yml", show_default=True,
              help="The gate's .easeml.yml.")
@click.option("--new", "new", required=True, help="New model: .onnx, .csv/.npy predictions, or git:REF:PATH.")
@click.option("--old", "old", default=None, help="Old model (needed when the condition uses o or d).")
@click.option("--testset", default=None, help="Test set (.npz, .csv or encrypted); default: `testset:` in the config.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else on stdout.")
@click.option("--underpowered", is_flag=True,
              help="Decide on a test set smaller than the plan, at the tolerance it supports.")
@click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True,
              help="Environment variable holding the key of an encrypted test set.")
@click.option("--labels", "label_store", default=None,
              help="Label store of a test set labelled on demand [default: TESTSET.labels].")
def check(config_path, new, old, testset, as_json, underpowered, key_env, label_store):
    """Gate a model on the secret test set; the step is recorded before the verdict is shown."""
    from ..gate.check import run_check

    try:
        result = run_check(config_path, new, old, testset, underpowered=underpowered,
                           key_env=key_env, workdir=Path("."), progress=_progress(not as_json),
                           label_store=label_store)
    except BudgetExhausted as exc:  # the alert is part of the answer (under --json: the object)
        if not as_json:
            click.echo(report.render_alert(exc.alert))
        raise
    click.echo(report.render_json(result) if as_json else report.render_terminal(result))
    sys.exit(result.exit_code)
