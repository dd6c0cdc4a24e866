"""`easeml-ci round requests` and `round close`: the next label requests of every pending pair,
and the verdicts of every ended round (cron jobs of the default branch, with the key;
docs/labels-on-demand.md).

Exit code 0 whenever it ran (what it decided is in the output, never in the exit code), 2 for bad
input. Under ``--json`` stdout carries exactly one JSON object and progress stays silent.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import render as report
from .check import DEFAULT_KEY_ENV


def _progress(enabled: bool):
    return (lambda message: click.echo(f"... {message}", err=True)) if enabled else None


@click.group("round")
def round_group() -> None:
    """Verdicts in rounds: send the next label requests, close the rounds that have ended."""


def _round_options(command):
    """The options both round commands take."""
    for option in reversed([
        click.option("--config", "config_path", default=".easeml.yml", show_default=True,
                     help="The gate's .easeml.yml (with its `rounds:` schedule)."),
        click.option("--testset", default=None,
                     help="The test set; default: `testset:` in the config."),
        click.option("--labels", "--label-store", "label_store", default=None,
                     help="Label store of the test set [default: TESTSET.labels]; the pending "
                          "store sits beside it (STORE.pending)."),
        click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True,
                     help="Environment variable holding the key of an encrypted test set."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON object and nothing else on stdout."),
    ]):
        command = option(command)
    return command


def _run(answer, render, config_path, testset, label_store, key_env, as_json) -> None:
    result = answer(config_path, testset, key_env=key_env, workdir=Path("."),
                    label_store=label_store, progress=_progress(not as_json))
    click.echo(json.dumps(result.to_dict(), sort_keys=True, default=str) if as_json
               else render(result))


@round_group.command("close")
@_round_options
def close(config_path, testset, label_store, key_env, as_json):
    """Decide every pending pair whose round has ended, complete its step, release its verdict."""
    from ..gate.rounds import close as close_rounds

    _run(close_rounds, report.render_round_close, config_path, testset, label_store, key_env,
         as_json)


@round_group.command("requests")
@_round_options
def requests(config_path, testset, label_store, key_env, as_json):
    """Send the owner, through the private sink, the next batch of rows to label for every pending
    pair whose round has not ended (or "decided, no more labels"). What it prints is the same
    whatever the labels: the steps it wrote about."""
    from ..gate.rounds import requests as round_requests

    _run(round_requests, report.render_round_requests, config_path, testset, label_store,
         key_env, as_json)
