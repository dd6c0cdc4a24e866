"""`easeml-ci testset`: the test-set owner's tools (key, encrypt, decrypt, fingerprint, label,
register).

The key only ever travels through an environment variable (``--key-env`` names which one), so
it never appears in shell history, process listings or CI logs. ``decrypt`` is for the owner
(to inspect or extend the data); a check never needs it, it decrypts in memory.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigError, InputError, TestSetTooSmall, UsageError
from ..testsets import crypto
from ..testsets import PLAIN_SUFFIXES, encrypt_testset, save_testset, testset_fingerprint

_KEY_ENV_HELP = "Environment variable that holds the key (never pass a key as an argument)."


@click.group()
def testset() -> None:
    """Create keys, encrypt, decrypt, fingerprint, label and register test sets."""


@testset.command()
@click.option("--key-env", default=crypto.DEFAULT_KEY_ENV, show_default=True,
              help="Name of the secret to store the key under (shown in the instructions).")
def keygen(key_env: str) -> None:
    """Print a new random 256-bit key (URL-safe base64) on stdout."""
    click.echo(crypto.generate_key())
    click.echo(
        f"Store this key as a secret named {key_env} (GitHub: Settings > Secrets and variables > "
        f"Actions) and in your password manager. Anyone with it can read the test set; without "
        f"it nobody can, including you.",
        err=True,
    )


def _refuse_overwrite(out: Path, force: bool) -> None:
    """OUT must be a new file (or --force) in a folder that exists: checked before anything is
    read or written."""
    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir():
        raise InputError(f"OUT {out} is a directory; name a file in it")
    if not out.parent.is_dir():
        raise InputError(f"OUT {out}: the folder {out.parent} does not exist; create it "
                         f"(mkdir -p {out.parent}) or name another OUT")


@testset.command()
@click.argument("in_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("out_path", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--label-column", default="label", show_default=True,
              help="Label column of a CSV test set (all other columns are features).")
@click.option("--id-column", default="id", show_default=True,
              help="Row id column of a test set labelled on demand (a CSV whose label column is "
                   "absent or empty on some rows).")
@click.option("--key-env", default=crypto.DEFAULT_KEY_ENV, show_default=True, help=_KEY_ENV_HELP)
@click.option("--in-key-env", default=None,
              help="Key of IN when IN is already encrypted (re-encrypting under a new key); "
                   "defaults to --key-env.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
              help="Label store for the labels a partly labelled CSV carries, outside the "
                   "repository [default: OUT.labels].")
def encrypt(in_path: Path, out_path: Path, label_column: str, id_column: str, key_env: str,
            in_key_env: str | None, force: bool, store_path: Path | None) -> None:
    """Encrypt the test set IN (.npz, .csv, or encrypted) into OUT with AES-256-GCM.

    The fingerprint, which keys the budget ledger, depends on the data only: re-encrypting the
    same data under any key keeps its budget. A test set labelled on demand (row ids, labels
    absent or given on some rows only) is encrypted without labels; the labels a CSV does carry
    go to OUT's sealed label store (--store, outside the repository).
    """
    from ..testsets.labels import LabelStore, carried_labels, store_location
    from ..testsets import UnlabelledTestSet, encrypt_unlabelled_testset, load_any_testset

    key = crypto.key_from_env(key_env, purpose="the key to encrypt with")
    _refuse_overwrite(out_path, force)
    ts = load_any_testset(in_path, label_column=label_column, id_column=id_column,
                          key_env=in_key_env or key_env)
    if out_path.resolve() == in_path.resolve():
        raise InputError(f"OUT {out_path} is the same file as IN; write the encrypted copy elsewhere")
    if isinstance(ts, UnlabelledTestSet):
        batch = carried_labels(in_path, id_column, label_column)  # checked before writing
        if batch is not None:
            store_path = store_location(store_path, out_path, Path("."))
        if batch is not None and store_path.exists():
            raise InputError(f"{store_path} already exists; move it away before encrypting a "
                             f"partly labelled test set to {out_path}")
        encrypt_unlabelled_testset(ts, out_path, key)
        click.echo(f"encrypted {len(ts)} rows labelled on demand to {out_path} (fingerprint "
                   f"{ts.fingerprint})", err=True)
        if batch is not None:
            added = LabelStore.open(store_path, ts, key).add(batch).added
            click.echo(f"{added} labels from {in_path} sealed into {store_path}", err=True)
        click.echo(ts.fingerprint)
        return
    encrypt_testset(ts, out_path, key)
    click.echo(f"encrypted {len(ts)} examples to {out_path} (fingerprint {ts.fingerprint})", err=True)
    click.echo(ts.fingerprint)


@testset.command()
@click.argument("in_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("out_path", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--label-column", default="label", show_default=True,
              help="Name of the label column when OUT is a CSV.")
@click.option("--key-env", default=crypto.DEFAULT_KEY_ENV, show_default=True, help=_KEY_ENV_HELP)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def decrypt(in_path: Path, out_path: Path, label_column: str, key_env: str, force: bool) -> None:
    """Decrypt IN into the plaintext OUT (.npz or .csv, by extension), readable by you only.

    For the test set's owner. Keep OUT out of the repository: anyone who sees the labels can
    overfit to them and the gate's guarantee is void.
    """
    if out_path.suffix.lower() not in PLAIN_SUFFIXES:
        raise InputError(f"cannot write {out_path}: extension {out_path.suffix or '(none)'!r}; "
                         f"allowed: {', '.join(PLAIN_SUFFIXES)}")
    _refuse_overwrite(out_path, force)
    if not crypto.is_encrypted(in_path):
        if not in_path.exists():
            raise InputError(f"test set {in_path} does not exist")
        raise InputError(f"{in_path} is not an easeml-ci encrypted test set; nothing to decrypt")
    from ..testsets import UnlabelledTestSet, load_any_testset, save_unlabelled_testset

    ts = load_any_testset(in_path, key_env=key_env)
    if isinstance(ts, UnlabelledTestSet):  # labelled on demand: features and ids (the labels
        save_unlabelled_testset(ts, out_path)  # stay in its sealed store)
    else:
        save_testset(ts, out_path, label_column=label_column)
    click.echo(f"wrote the plaintext test set ({len(ts)} examples) to {out_path} with mode 0600; "
               f"keep it out of the repository", err=True)


@testset.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--label-column", default="label", show_default=True,
              help="Label column of a CSV test set.")
@click.option("--key-env", default=crypto.DEFAULT_KEY_ENV, show_default=True, help=_KEY_ENV_HELP)
def fingerprint(path: Path, label_column: str, key_env: str) -> None:
    """Print the fingerprint (SHA-256 of the canonical content) that keys PATH's ledger.

    For an encrypted file without the key in the environment, the fingerprint comes from its
    header; with the key, it is recomputed from the decrypted content.
    """
    fp, verified = testset_fingerprint(path, label_column=label_column, key_env=key_env)
    click.echo(fp)
    if not verified:
        click.echo(f"(read from the encrypted header; set {key_env} to verify it against the "
                   f"content)", err=True)


@testset.command()
@click.argument("testset_path", metavar="TESTSET", type=click.Path(path_type=Path))
@click.argument("labels_path", metavar="LABELS.csv", type=click.Path(path_type=Path))
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
              help="The label store to append to, outside the repository "
                   "[default: TESTSET.labels].")
@click.option("--id-column", default="id", show_default=True,
              help="Row id column of LABELS.csv (and of a CSV TESTSET).")
@click.option("--label-column", default="label", show_default=True,
              help="Label column of LABELS.csv (and of a CSV TESTSET).")
@click.option("--key-env", default=crypto.DEFAULT_KEY_ENV, show_default=True, help=_KEY_ENV_HELP)
def label(testset_path: Path, labels_path: Path, store_path: Path | None, id_column: str,
          label_column: str, key_env: str) -> None:
    """Add the labels in LABELS.csv (rows by id) to the label store of the unlabelled TESTSET.

    Append-only: a label once given never changes (a different one is refused, the same one is
    a no-op). An encrypted TESTSET's store is sealed with its key, so only the owner can read it.
    """
    from ..testsets.labels import LabelStore, read_labels_csv, store_location
    from ..testsets import UnlabelledTestSet, load_any_testset

    ts = load_any_testset(testset_path, label_column=label_column, id_column=id_column, key_env=key_env)
    if not isinstance(ts, UnlabelledTestSet):
        raise InputError(f"test set {testset_path} has a label for every row; labels on demand "
                         f"need a test set of features and row ids (column {id_column!r}) whose "
                         f"labels are absent or empty")
    where = store_location(store_path, testset_path, Path("."))
    key = crypto.key_from_env(key_env) if crypto.is_encrypted(testset_path) else None
    batch = read_labels_csv(labels_path, id_column=id_column, label_column=label_column)
    store = LabelStore.open(where, ts, key)
    result = store.add(batch)
    click.echo(f"{result.added} new labels, {result.unchanged} already given; {len(store.labels)} "
               f"of {len(ts)} rows labelled in {store.path}", err=True)
    click.echo(result.head)


@testset.command("migrate-labels")
@click.argument("testset_path", metavar="TESTSET", type=click.Path(path_type=Path))
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
              help="The label store to migrate, outside the repository [default: TESTSET.labels].")
@click.option("--id-column", default="id", show_default=True, help="Row id column of a CSV TESTSET.")
@click.option("--label-column", default="label", show_default=True,
              help="Label column of a CSV TESTSET.")
@click.option("--key-env", default=crypto.DEFAULT_KEY_ENV, show_default=True, help=_KEY_ENV_HELP)
def migrate_labels(testset_path: Path, store_path: Path | None, id_column: str,
                   label_column: str, key_env: str) -> None:
    """Rewrite TESTSET's label store of format version 1 as version 2 (sealed records of one
    fixed size, label kind sealed): the same labels in the order they came, atomically.

    Prints the store's new head (a private record that named the old head names a store that
    no longer exists; the labels it read are all still there).
    """
    from ..testsets.labels import VERSION, LabelStore, store_location
    from ..testsets import UnlabelledTestSet, load_any_testset

    ts = load_any_testset(testset_path, label_column=label_column, id_column=id_column,
                          key_env=key_env)
    if not isinstance(ts, UnlabelledTestSet):
        raise InputError(f"test set {testset_path} has a label for every row; it has no label store")
    where = store_location(store_path, testset_path, Path("."))
    if not where.exists():
        raise InputError(f"label store {where} does not exist; pass --store PATH")
    key = crypto.key_from_env(key_env) if crypto.is_encrypted(testset_path) else None
    store = LabelStore.open(where, ts, key)
    written = store.migrate()
    click.echo(f"{store.path}: {'migrated' if written else 'already'} to format version "
               f"{VERSION} ({len(store.labels)} labels in {store.records} records)", err=True)
    click.echo(store.head)


@testset.command("register")
@click.argument("path")
@click.option("--config", "config_path", default=".easeml.yml", show_default=True)
@click.option("--key-env", default=crypto.DEFAULT_KEY_ENV, show_default=True,
              help="Environment variable holding the key of an encrypted test set.")
@click.option("--underpowered", is_flag=True, help="Register a test set smaller than the plan needs.")
@click.option("--repository-ledger", is_flag=True,
              help="Register in the repository ledger the GitHub Action uses by default "
                   "(needs GITHUB_TOKEN that may write, and GITHUB_REPOSITORY=owner/name).")
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
              help="Label store for the labels a partly labelled CSV carries, outside the "
                   "repository [default: PATH.labels].")
@click.option("--alert-webhook-env", default=None, metavar="NAME",
              help="Environment variable holding the alert webhook the Action passes as its "
                   "alert-webhook input (pinned as a digest; never pass the URL itself).")
@click.option("--json", "as_json", is_flag=True)
def register(path, config_path, key_env, underpowered, repository_ledger, store_path,
             alert_webhook_env, as_json):
    """Start the budget ledger of a (new) test set under the config's plan.

    Every term that shapes a verdict is pinned (docs/gate.md): the plan, what the team sees,
    where the budget and the alerts go, the old-model policy; --underpowered pins that checks
    may decide at a wider tolerance.
    """
    import dataclasses
    import os

    from ..config import load_config
    from ..gate import reading_order, registration
    from ..testsets import TestSetSource, UnlabelledTestSet, load_any_testset

    # --repository-ledger: the ledger the Action uses, under the clock a runner keeps
    cfg = load_config(config_path, runner=True if repository_ledger else None)
    if cfg.adaptivity == "none" and not cfg.private_sink:  # every later check would refuse it
        raise ConfigError(
            f"{cfg.where('adaptivity')} is 'none', which withholds every verdict from the team "
            "and sends it to a private sink, but the config has no private_sink: every check "
            "would be refused. Set private_sink to a file outside the repository or an https:// "
            "webhook URL, then register")
    if repository_ledger and cfg.ledger_explicit and cfg.ledger.get("backend", "file") == "file":
        raise UsageError(
            f"--repository-ledger: {cfg.where('ledger')} names the file ledger "
            f"{cfg.ledger.get('path')!r}, not the repository ledger; drop --repository-ledger to "
            "register in that file ledger, or drop `ledger:` from the config to use the "
            "repository ledger (the Action's default)")
    if alert_webhook_env:
        hook = os.environ.get(alert_webhook_env, "").strip()
        if not hook.startswith(("http://", "https://")):
            raise UsageError(f"--alert-webhook-env: the environment variable {alert_webhook_env} "
                             f"{'is not set' if not hook else 'is not an http(s):// URL'}; set "
                             "it to the webhook URL the Action's alert-webhook input passes")
        cfg = dataclasses.replace(cfg, webhook=hook)
    plan = cfg.checked_plan()
    ts = load_any_testset(path, label_column=cfg.label_column, key_env=key_env)
    key = registration.ledger_key(TestSetSource(Path(path), path, label_column=cfg.label_column,
                                                key_env=key_env))
    on_demand_set = isinstance(ts, UnlabelledTestSet)
    imported = None
    if on_demand_set:
        registration.admissible_plan(cfg, ts, path)
        imported = _import_file_labels(path, ts, cfg, store_path)
    elif len(ts) < plan.test_examples and not underpowered:
        raise TestSetTooSmall(f"test set {path}: need {plan.test_examples} labelled examples, "
                              f"have {len(ts)}; label more, or pass --underpowered")
    backend = registration.open_ledger_backend(cfg, repository=repository_ledger)
    note = {"plan": {k: v for k, v in plan.summary().items()
                     if k in ("method", "test_examples", "labels")}}
    note.update(registration.registration_note(ts) if on_demand_set
                else {"schema": registration.testset_schema(ts)})
    generated = None
    if on_demand_set:  # read in a secret order (gate/reading_order.py), pinned by its key id
        encrypted = crypto.is_encrypted(Path(path))
        if not encrypted:
            generated = reading_order.generate_order_key()
        note.update(reading_order.note(encrypted, path))
    if generated is not None and registration.registered(backend, ts.fingerprint):
        raise InputError(f"{reading_order.ORDER_KEY_ENV} is not set, and test set {path} is "
                         "already registered: its checks need the reading-order secret printed "
                         "when it was registered")
    state, budget = registration.register(cfg, backend, ts.fingerprint,
                                          registration.pinned_terms(cfg, underpowered=underpowered),
                                          note, given=path, key=key)
    where = registration.ledger_name(backend)
    if as_json:
        out = {"status": state, "fingerprint": ts.fingerprint, "budget": budget.to_dict(),
               "ledger": where}
        if on_demand_set:
            out["labels"] = "on-demand"
        click.echo(json.dumps(out, sort_keys=True))
    else:
        click.echo(f"{state}: test set {ts.fingerprint[:12]} ({path}) in {where}\n"
                   f"budget: {budget.describe()}")
        if on_demand_set:
            click.echo("labels: on demand (checks ask the owner, privately, for the rows they need)")
    if imported:
        click.echo(imported, err=True)
    if generated:
        click.echo(f"reading-order secret of {path} (the order its rows are read in; the team must "
                   f"never see it): {generated}\nStore it as a secret named "
                   f"{reading_order.ORDER_KEY_ENV} for the jobs that check this test set, and in "
                   "your password manager: a check refuses any other value.", err=True)


def _import_file_labels(path, ts, cfg, store_path) -> str | None:
    """The labels a partly labelled CSV test set carries go into its label store (append-only,
    so registering twice adds nothing); returns what was done, for stderr."""
    from ..testsets.labels import LabelStore, carried_labels, store_location

    batch = carried_labels(path, label_column=cfg.label_column)
    if batch is None:
        return None
    store = LabelStore.open(store_location(store_path, path, Path(".")), ts, None)
    result = store.add(batch)
    return (f"{result.added} labels from {path} added to the label store {store.path} "
            f"({len(store.labels)} of {len(ts)} rows labelled)")
