"""`easeml-ci check` and `easeml-ci testset register`.

Exit codes: 0 pass (or withheld), 1 fail, 2 bad input, 3 test set retired, spent or too small.
Under ``--json`` stdout carries exactly one JSON object and progress stays silent.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import render as report
from ..errors import BudgetExhausted, TestSetTooSmall, UsageError

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
        alert = getattr(exc, "alert", None)
        if alert and not as_json:
            click.echo(report.render_alert(alert))
        raise
    click.echo(report.render_json(result) if as_json else report.render_terminal(result))
    sys.exit(result.exit_code)


@click.command("register")
@click.argument("path")
@click.option("--config", "config_path", default=".easeml.yml", show_default=True)
@click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True,
              help="Environment variable holding the key of an encrypted test set.")
@click.option("--underpowered", is_flag=True, help="Register a test set smaller than the plan needs.")
@click.option("--repository-ledger", is_flag=True,
              help="Register in the repository ledger the GitHub Action uses by default "
                   "(needs GITHUB_TOKEN that may write, and GITHUB_REPOSITORY=owner/name).")
@click.option("--json", "as_json", is_flag=True)
def register(path, config_path, key_env, underpowered, repository_ledger, as_json):
    """Start the budget ledger of a (new) test set under the config's plan."""
    from ..gate import on_demand
    from ..gate.check import _load_config, _plan, plan_summary
    from ..gate.registration import (check_pinned, ledger_name, open_ledger_backend, pinned_terms,
                               testset_schema)
    from ..ledger import Ledger
    from ..testsets import UnlabelledTestSet, load_any_testset

    cfg = _load_config(config_path)
    plan = _plan(cfg)
    ts = load_any_testset(path, label_column=cfg.label_column, key_env=key_env)
    imported = None
    if isinstance(ts, UnlabelledTestSet):
        on_demand.admissible_plan(cfg, ts, path)
        imported = _import_file_labels(path, ts, cfg, key_env)
    elif len(ts) < plan.test_examples and not underpowered:
        raise TestSetTooSmall(f"test set {path}: need {plan.test_examples} labelled examples, "
                              f"have {len(ts)}; label more, or pass --underpowered")
    backend = open_ledger_backend(cfg, repository=repository_ledger)
    ledger = Ledger(backend, ts.fingerprint)
    entries = ledger.entries()
    existing = ledger.registration(entries)
    if existing is not None:
        check_pinned(cfg, existing, ts.fingerprint)
        budget = ledger.budget(entries=entries)
        if not budget.active:
            raise UsageError(f"test set {path} ({ts.fingerprint[:12]}) is already {budget.status}; "
                             "renaming or re-encrypting it does not reset its budget, label a new one")
        state = "already registered"
    else:
        note = {"plan": {k: v for k, v in plan_summary(plan).items()
                         if k in ("method", "test_examples", "labels")}}
        if isinstance(ts, UnlabelledTestSet):
            note.update(on_demand.registration_note(ts))
        else:
            note["schema"] = testset_schema(ts)
        ledger.register(pinned_terms(cfg), by="register", note=note)
        budget = ledger.budget()
        state = "registered"
    if as_json:
        out = {"status": state, "fingerprint": ts.fingerprint, "budget": budget.to_dict(),
               "ledger": ledger_name(backend)}
        if isinstance(ts, UnlabelledTestSet):
            out["labels"] = "on-demand"
        click.echo(json.dumps(out, sort_keys=True))
    else:
        click.echo(f"{state}: test set {ts.fingerprint[:12]} ({path}) in {ledger_name(backend)}\n"
                   f"budget: {report.budget_line(budget.to_dict())}")
        if isinstance(ts, UnlabelledTestSet):
            click.echo("labels: on demand (checks ask the owner, privately, for the rows they need)")
    if imported:
        click.echo(imported, err=True)


def _import_file_labels(path, ts, cfg, key_env: str) -> str | None:
    """The labels a partly labelled CSV test set carries go into its label store (append-only,
    so registering twice adds nothing); returns what was done, for stderr."""
    from ..testsets.labels import LabelStore, carried_labels, default_store_path

    batch = carried_labels(path, label_column=cfg.label_column)
    if batch is None:
        return None
    store = LabelStore.open(default_store_path(path), ts, None)
    result = store.add(batch)
    return (f"{result.added} labels from {path} added to the label store {store.path} "
            f"({len(store.labels)} of {len(ts)} rows labelled)")
