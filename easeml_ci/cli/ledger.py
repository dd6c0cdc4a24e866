"""`easeml-ci ledger status | log | verify | migrate | anchor`.

Which ledger: ``--testset PATH`` (its fingerprint; an encrypted file needs no key for this) or
``--fingerprint HEX``; with neither, every ledger the backend holds.

Authentication (format v2, :mod:`easeml_ci.ledger.auth`): with the ledger key (derived from the
test-set key in ``--key-env`` for an encrypted test set, else ``EASEML_LEDGER_KEY``) ``verify``
names every forged entry and ``log`` marks it FORGED; without a key both say the ledger is not
authenticated. ``status``, ``log`` and ``verify`` never write; ``migrate`` (a v1 ledger re-signed
as v2, once) and ``anchor`` (the registration anchor of the repository ledger) are the owner's.
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


def _select(config_path, testset, fingerprint, key_env, *, require_key: bool = False):
    from ..gate.registration import open_ledger_backend
    from ..config import load_config
    from ..ledger import Ledger, open_backend

    if config_path is None and not Path(DEFAULT_CONFIG).exists():
        cfg = None  # no config here: the default ledger location, terms from the ledgers
    else:
        cfg = load_config(config_path or DEFAULT_CONFIG)
    # the ledger the check uses: beside the config, or the repository ledger inside Actions
    backend = open_ledger_backend(cfg) if cfg else open_backend(None, base=Path("."))
    keys = None
    if testset:
        from ..gate.registration import ledger_key
        from ..testsets import TestSetSource, testset_fingerprint

        label_column = cfg.label_column if cfg else "label"
        fingerprints = [testset_fingerprint(testset, label_column=label_column,
                                            key_env=key_env)[0]]
        source = TestSetSource(Path(testset), testset, label_column=label_column, key_env=key_env)
        keys = [ledger_key(source)] if require_key else _keys_if_any(source)
    elif fingerprint:
        fingerprints = [fingerprint.lower()]
    else:
        lister = getattr(backend, "fingerprints", None)
        if lister is None:
            raise UsageError(f"ledger backend {backend.name!r} cannot list its ledgers; "
                             "pass --testset PATH or --fingerprint HEX")
        fingerprints = lister()
    if keys is None:
        from ..gate.registration import candidate_ledger_keys

        keys = candidate_ledger_keys(key_env)
    if require_key and not keys:
        raise UsageError(f"this command needs the ledger key: set {key_env} (an encrypted test "
                         "set's key) or EASEML_LEDGER_KEY (a plaintext test set's)")
    return cfg, backend, [Ledger(backend, fp, _key_for(backend, fp, keys)) for fp in fingerprints]


def _keys_if_any(source) -> list[bytes]:
    from ..errors import InputError
    from ..gate.registration import ledger_key

    try:
        return [ledger_key(source)]
    except InputError:
        return []


def _key_for(backend, fingerprint: str, keys: list[bytes]) -> bytes | None:
    """The key (of those given) the ledger's first entry authenticates under; the first key
    when none does (every entry then reads as forged), None without keys."""
    from ..ledger import auth

    if not keys:
        return None
    entries = backend.load(fingerprint)
    for key in keys:
        if entries and not auth.forged_entries(key, fingerprint, entries[:1]):
            return key
    return keys[0]


def _options(fn):
    fn = click.option("--config", "config_path", default=None,
                      help="The gate's config (default: .easeml.yml if present).")(fn)
    fn = click.option("--testset", default=None, help="The test set whose ledger to read.")(fn)
    fn = click.option("--fingerprint", default=None, help="A test-set fingerprint (hex).")(fn)
    fn = click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True,
                      help="The test-set key of an encrypted test set (its ledger key is "
                           "derived from it); a plaintext one's is EASEML_LEDGER_KEY.")(fn)
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


def _describe(entry: dict, completions: dict) -> str:
    kind = entry.get("kind")
    if kind == "register":
        terms = entry.get("terms", {})
        return (f"registered  `{terms.get('condition')}` reliability {terms.get('reliability')}, "
                f"adaptivity {terms.get('adaptivity')}, {terms.get('steps')} steps"
                + (f", {terms['passes']} passes" if terms.get("passes") else ""))
    if kind == "step":
        done = completions.get(entry.get("seq")) if entry.get("reserved") else entry
        passed = (done or {}).get("passed")
        verdict = ("reserved" if done is None else
                   "withheld" if passed is None else ("pass" if passed else "fail"))
        models = f"new={entry.get('new')}" + (f" old={entry['old']}" if entry.get("old") else "")
        underpowered = (done or {}).get("underpowered")
        note = "  (reserved, never completed: spent, no pass)" if done is None else ""
        return (f"step        {verdict:<8} {models}" + ("  (underpowered)" if underpowered else "")
                + note)
    if kind == "complete":
        passed = entry.get("passed")
        verdict = "withheld" if passed is None else ("pass" if passed else "fail")
        return f"complete    step {entry.get('step')}: {verdict}"
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

    Shown as stored, even when the ledger does not verify; with the ledger key an entry that
    does not authenticate is marked FORGED (and the exit code is 1), without it the listing
    says it is not authenticated. `ledger verify` lists every problem."""
    _, backend, ledgers = _select(config_path, testset, fingerprint, key_env)
    shown = [(led, led.unverified_entries()) for led in ledgers]
    forged = {led.fingerprint: led.forged(entries) for led, entries in shown}
    any_forged = any(forged.values())
    if as_json:
        click.echo(json.dumps({"ledger": repr(backend),
                               "testsets": [{"fingerprint": led.fingerprint,
                                             "authenticated": led.authenticated,
                                             "forged": sorted(forged[led.fingerprint]),
                                             "entries": entries}
                                            for led, entries in shown]},
                              sort_keys=True))
        sys.exit(1 if any_forged else 0)
    for led, entries in shown:
        bad = forged[led.fingerprint]
        if not led.authenticated:
            state = "NOT AUTHENTICATED (no ledger key: any entry may be forged)"
        elif bad:
            state = (f"FORGED: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} written without "
                     "the key (marked below); its budget cannot be trusted")
        else:
            state = "authenticated"
        click.echo(f"test set {led.fingerprint[:12]}  {state}")
        completions = {e.get("step"): e for e in entries if e.get("kind") == "complete"}
        for index, entry in enumerate(entries):
            mark = "FORGED  " if index in bad else ""
            click.echo(f"  {index:>4}  {entry.get('time') or ' ' * 25:<25}  {mark}"
                       f"{_describe(entry, completions)}")
    sys.exit(1 if any_forged else 0)


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
    elif not reports:
        click.echo(f"no ledgers in {backend!r}: nothing to verify")
    else:
        for led, rep in reports:
            state = "ok" if rep.ok else "TAMPERED"
            click.echo(f"test set {led.fingerprint[:12]}  {state}  ({rep.entries} entries)")
            for problem in rep.problems:
                click.echo(f"  problem: {problem}")
            for warning in rep.warnings:
                click.echo(f"  warning: {warning}")
    sys.exit(0 if all(r.ok for _, r in reports) else 1)


@ledger.command("migrate")
@_options
def migrate(config_path, testset, fingerprint, key_env, as_json):
    """Re-sign a v1 ledger (no MACs) as v2 with the ledger key: the owner, once.

    Check `easeml-ci ledger log` first: migrating signs the entries as they stand, so a v1
    ledger someone rewrote would be signed as it is. A v2 ledger is never re-signed."""
    _, backend, ledgers = _select(config_path, testset, fingerprint, key_env, require_key=True)
    done = []
    for led in ledgers:
        count = led.migrate()
        done.append({"fingerprint": led.fingerprint, "entries": count,
                     "budget": led.budget().to_dict() if led.registration() else None})
    if as_json:
        click.echo(json.dumps({"ledger": repr(backend), "migrated": done}, sort_keys=True))
        return
    for row in done:
        click.echo(f"test set {row['fingerprint'][:12]}  migrated to v2 ({row['entries']} entries "
                   "signed)" + (f"; {budget_line(row['budget'])}" if row["budget"] else ""))


@ledger.command("anchor")
@_options
def anchor(config_path, testset, fingerprint, key_env, as_json):
    """Write the registration anchor of a test set registered in the repository ledger: its
    register entry, committed to the default branch, so that a deleted ledger branch reads as
    "ledger missing", never as "not registered yet"."""
    _, backend, ledgers = _select(config_path, testset, fingerprint, key_env, require_key=True)
    write_anchor = getattr(backend, "write_anchor", None)
    if write_anchor is None:
        raise UsageError(f"ledger anchor: {backend!r} keeps no registration anchor (only the "
                         "repository ledger does: `backend: github`)")
    written = []
    for led in ledgers:
        registered = led.registration(led.entries())
        if registered is None:
            raise UsageError(f"ledger anchor: test set {led.fingerprint[:12]} is not registered "
                             f"in {backend!r}; `easeml-ci testset register` writes its anchor")
        written.append({"fingerprint": led.fingerprint, "anchor": write_anchor(led.fingerprint,
                                                                               registered)})
    if as_json:
        click.echo(json.dumps({"ledger": repr(backend), "anchors": written}, sort_keys=True))
        return
    for row in written:
        click.echo(f"test set {row['fingerprint'][:12]}  anchored: {row['anchor']}")
