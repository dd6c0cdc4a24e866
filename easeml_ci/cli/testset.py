"""`easeml-ci testset`: the test-set owner's tools (key, encrypt, decrypt, fingerprint, label).

The key only ever travels through an environment variable (``--key-env`` names which one), so
it never appears in shell history, process listings or CI logs. ``decrypt`` is for the owner
(to inspect or extend the data); a check never needs it, it decrypts in memory.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..testsets import crypto
from ..errors import InputError
from ..testsets import PLAIN_SUFFIXES, encrypt_testset, save_testset, testset_fingerprint

_KEY_ENV_HELP = "Environment variable that holds the key (never pass a key as an argument)."


@click.group()
def testset() -> None:
    """Create keys, encrypt, decrypt and fingerprint test sets."""


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
    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force to overwrite it")


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
def encrypt(in_path: Path, out_path: Path, label_column: str, id_column: str, key_env: str,
            in_key_env: str | None, force: bool) -> None:
    """Encrypt the test set IN (.npz, .csv, or encrypted) into OUT with AES-256-GCM.

    The fingerprint, which keys the budget ledger, depends on the data only: re-encrypting the
    same data under any key keeps its budget. A test set labelled on demand (row ids, labels
    absent or given on some rows only) is encrypted without labels; the labels a CSV does carry
    go to OUT's sealed label store (OUT.labels).
    """
    from ..testsets.labels import LabelStore, carried_labels, default_store_path
    from ..testsets import UnlabelledTestSet, encrypt_unlabelled_testset, load_any_testset

    key = crypto.key_from_env(key_env, purpose="the key to encrypt with")
    _refuse_overwrite(out_path, force)
    ts = load_any_testset(in_path, label_column=label_column, id_column=id_column,
                          key_env=in_key_env or key_env)
    if out_path.resolve() == in_path.resolve():
        raise InputError(f"OUT {out_path} is the same file as IN; write the encrypted copy elsewhere")
    if isinstance(ts, UnlabelledTestSet):
        batch = carried_labels(in_path, id_column, label_column)  # checked before writing
        store_path = default_store_path(out_path)
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
              help="The label store to append to [default: TESTSET.labels].")
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
    from ..testsets.labels import LabelStore, default_store_path, read_labels_csv
    from ..testsets import UnlabelledTestSet, load_any_testset

    ts = load_any_testset(testset_path, label_column=label_column, id_column=id_column, key_env=key_env)
    if not isinstance(ts, UnlabelledTestSet):
        raise InputError(f"test set {testset_path} has a label for every row; labels on demand "
                         f"need a test set of features and row ids (column {id_column!r}) whose "
                         f"labels are absent or empty")
    key = crypto.key_from_env(key_env) if crypto.is_encrypted(testset_path) else None
    batch = read_labels_csv(labels_path, id_column=id_column, label_column=label_column)
    store = LabelStore.open(store_path or default_store_path(testset_path), ts, key)
    result = store.add(batch)
    click.echo(f"{result.added} new labels, {result.unchanged} already given; {len(store.labels)} "
               f"of {len(ts)} rows labelled in {store.path}", err=True)
    click.echo(result.head)
