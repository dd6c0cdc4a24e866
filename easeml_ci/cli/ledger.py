"""`easeml-ci ledger status | log | verify`: read the budget ledger, never write it.

Which ledger: ``--testset PATH`` (its fingerprint; an encrypted file needs no key for this) or
``--fingerprint HEX``; with neither, every ledger the backend holds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import UsageError
from .render import budget_line

DEFAULT_KEY_ENV = "EASEML_TESTSET_KEY"
DEFAULT_CONFIG = ".easeml.yml"


def _select(config_path, testset, fingerprint, key_env):
    from ..gate.registration import open_ledger_backend
    from ..config import load_config
    from ..ledger import Ledger, open_backend

    if config_path is None and not Path(DEFAULT_CONFIG).exists():
        cfg = None  # no config here: the default ledger location, terms from the ledgers
    else:
        cfg = load_config(config_path or DEFAULT_CONFIG)
    # the ledger the check uses: beside the config, or the repository ledger inside Actions
    backend = open_ledger_backend(cfg) if cfg else open_backend(None, base=Path("."))
    if testset:
        from ..testsets import testset_fingerprint

        label_column = cfg.label_column if cfg else "label"
        fingerprints = [testset_fingerprint(testset, label_column=label_column,
                                            key_env=key_env)[0]]
    elif fingerprint:
        fingerprints = [fingerprint.lower()]
    else:
        lister = getattr(backend, "fingerprints", None)
        if lister is None:
            raise UsageError(f"ledger backend {backend.name!r} cannot list its ledgers; "
                             "pass --testset PATH or --fingerprint HEX")
        fingerprints = lister()
    return cfg, backend, [Ledger(backend, fp) for fp in fingerprints]


def _options(fn):
    fn = click.option("--config", "config_path", default=None,
                      help="The gate's config (default: .easeml.yml if present).")(fn)
    fn = click.option("--testset", default=None, help="The test set whose ledger to read.")(fn)
    fn = click.option("--fingerprint", default=None, help="A test-set fingerprint (hex).")(fn)
    fn = click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True)(fn)
    fn = click.option("--json", "as_json", is_flag=True)(fn)
    return fn


@click.group("ledger")
def ledger() -> None:
    """Show the test-set budget ledger and check it for tampering."""


@ledger.command("status")
@_options
def status(config_path, testset, fingerprint, key_env, as_json):
    """Steps used, total, remaining and status (active, retired, exhausted) per test set."""
    from ..gate.registration import pinned_terms

    cfg, backend, ledgers = _select(config_path, testset, fingerprint, key_env)
    rows = []
    for led in ledgers:
        entries = led.entries()
        registered = led.registration(entries) is not None
        if not registered and cfg is None:
            rows.append({"fingerprint": led.fingerprint, "registered": False, "used": None,
                         "total": None, "remaining": None, "status": "unregistered"})
            continue
        budget = led.budget(pinned_terms(cfg) if cfg else None, entries=entries)
        rows.append({"fingerprint": led.fingerprint, "registered": registered,
                     **budget.to_dict()})
    if as_json:
        click.echo(json.dumps({"ledger": repr(backend), "testsets": rows}, sort_keys=True))
        return
    if not rows:
        click.echo(f"no ledgers in {backend!r}")
        return
    for row in rows:
        if row["used"] is None:
            click.echo(f"test set {row['fingerprint'][:12]}  not registered (no budget terms; "
                       "pass --config)")
            continue
        note = "" if row["registered"] else "  [not registered yet]"
        click.echo(f"test set {row['fingerprint'][:12]}  {budget_line(row)}{note}")


def _describe(entry: dict) -> str:
    kind = entry.get("kind")
    if kind == "register":
        terms = entry.get("terms", {})
        return (f"registered  `{terms.get('condition')}` reliability {terms.get('reliability')}, "
                f"adaptivity {terms.get('adaptivity')}, {terms.get('steps')} steps"
                + (f", {terms['passes']} passes" if terms.get("passes") else ""))
    if kind == "step":
        passed = entry.get("passed")
        verdict = "withheld" if passed is None else ("pass" if passed else "fail")
        models = f"new={entry.get('new')}" + (f" old={entry['old']}" if entry.get("old") else "")
        return f"step        {verdict:<8} {models}" + ("  (underpowered)" if entry.get("underpowered") else "")
    if kind == "torn":
        return "torn write  (a process died mid-write; counted as a spent step)"
    if kind == "alert":
        return f"alert       {entry.get('event')} (claimed)"
    if kind == "alert-result":
        return (f"alert       {entry.get('event')} "
                f"{'delivered' if entry.get('delivered') else 'NOT delivered'} {entry.get('detail', '')}")
    return f"{kind}"


@ledger.command("log")
@_options
def log(config_path, testset, fingerprint, key_env, as_json):
    """Every entry, oldest first: registration, steps (verdict bit only), alerts.

    Shown as stored, even when the ledger does not verify (run `ledger verify` for that)."""
    _, backend, ledgers = _select(config_path, testset, fingerprint, key_env)
    if as_json:
        click.echo(json.dumps({"ledger": repr(backend),
                               "testsets": [{"fingerprint": led.fingerprint,
                                             "entries": led.unverified_entries()}
                                            for led in ledgers]},
                              sort_keys=True))
        return
    for led in ledgers:
        click.echo(f"test set {led.fingerprint[:12]}")
        for index, entry in enumerate(led.unverified_entries()):
            click.echo(f"  {index:>4}  {entry.get('time', ' ' * 25):<25}  {_describe(entry)}")


@ledger.command("verify")
@_options
def verify(config_path, testset, fingerprint, key_env, as_json):
    """Check hash chain, order and head; exit 1 if anything was tampered with or truncated."""
    _, backend, ledgers = _select(config_path, testset, fingerprint, key_env)
    reports = [(led, led.verify()) for led in ledgers]
    if as_json:
        click.echo(json.dumps({"ledger": repr(backend), "ok": all(r.ok for _, r in reports),
                               "testsets": [{"fingerprint": led.fingerprint, **r.to_dict()}
                                            for led, r in reports]}, sort_keys=True))
    else:
        for led, rep in reports:
            state = "ok" if rep.ok else "TAMPERED"
            click.echo(f"test set {led.fingerprint[:12]}  {state}  ({rep.entries} entries)")
            for problem in rep.problems:
                click.echo(f"  problem: {problem}")
            for warning in rep.warnings:
                click.echo(f"  warning: {warning}")
    sys.exit(0 if all(r.ok for _, r in reports) else 1)
