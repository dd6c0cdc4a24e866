"""The label store: labels that arrive over time for a test set registered without them.

A test set registered unlabelled (:class:`easeml_ci.testsets.UnlabelledTestSet`: features and
stable row ids) gets its labels in batches (``easeml-ci testset label TESTSET LABELS.csv``). The
store keeps them in one append-only JSON-lines file, by default next to the test set
(``TESTSET.labels``), one record per batch.

Why a hash chain *and* a seal
-----------------------------
* **Hash-chained** like the ledger (:mod:`easeml_ci.ledger.chain`): every record carries the
  previous record's hash and its own, and the first one names the test set's fingerprint. Editing,
  dropping or reordering a record breaks the chain; a store written for another test set is
  refused. The hash of the last record (:attr:`LabelStore.head`) pins everything a decision read:
  a check that records the head in its ledger entry can later prove which labels it used, so even
  a truncated-and-rewritten store (the one thing a chain alone cannot see) is caught against
  the ledger.
* **Sealed with the test-set key** (AES-256-GCM, :mod:`easeml_ci.testsets.crypto`'s key) when the test set is
  encrypted: the labels are the secret, so a store the team can read would void the guarantee.
  Each record's labels are encrypted under the key with the record's chain fields as associated
  data, so only the key holder (the owner) can read or append, and a record moved into another
  store or position fails authentication. A plaintext test set gets a plaintext store (nothing
  to hide that the test set does not already show) that is still chained.

A label once given never changes: a different label for a row that has one is refused (nobody can
flip a verdict by relabelling); the same label again is a no-op. Labels keep one kind per store:
integers, numbers or text (as :mod:`easeml_ci.testsets` canonicalises them).

Bad input (an unknown row id, a changed label, a store of another test set, a value that is not a
label) is an :class:`InputError` naming the file, line and row id; nothing is written.
"""
from __future__ import annotations

import base64
import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import crypto
from ..atomic import write_bytes
from ..errors import InputError
from ..work_tree import refuse_inside
from ..ledger.chain import GENESIS, canonical, entry_hash, seal
from .canonical import TestSet, UnlabelledTestSet

FORMAT = "easeml-ci-labels"
VERSION = 1
KINDS = ("integer", "number", "text")
STORE_SUFFIX = ".labels"


#: How to name a store's location, in every command that reads or writes one.
STORE_ADVICE = ("keep the label store outside the repository and pass its location: "
                "`easeml-ci check`/`pick` --labels PATH, `easeml-ci testset label`/`encrypt`/"
                "`register` --store PATH, the Action's label-store input")


def default_store_path(testset_path) -> Path:
    p = Path(testset_path)
    return p.with_name(p.name + STORE_SUFFIX)


def store_location(given, testset_path, workdir) -> Path:
    """Where the label store of the test set at ``testset_path`` is: ``given`` (from
    ``workdir``), else ``TESTSET.labels`` beside it. Refused (exit 2) inside the repository of
    ``workdir`` or of the test set, as a private sink is: the team could read the labels of a
    plaintext store, and of a sealed one when and how many labels were added, which shows whether
    a decision was possible (docs/threat-model.md, "Labels on demand")."""
    if given:
        path = Path(given).expanduser()
        path = path if path.is_absolute() else Path(workdir) / path
        where = f"label store {given}"
    else:
        path = default_store_path(testset_path)
        where = (f"the label store (by default TESTSET{STORE_SUFFIX}, beside the test set "
                 f"{testset_path})")
    return refuse_inside(path, Path(workdir), where, STORE_ADVICE, also=Path(testset_path))


@dataclass(frozen=True)
class AddResult:
    added: int  # rows that got their first label
    unchanged: int  # rows given the label they already had
    head: str  # the store's head after the batch


@dataclass
class LabelStore:
    """The labels of one test set, read from (and appended to) its store file."""

    path: Path
    testset: UnlabelledTestSet
    key: bytes | None
    kind: str | None = None
    labels: dict[str, object] = field(default_factory=dict)  # row id -> label (SECRET)
    head: str = GENESIS
    records: int = 0
    _raw: bytes = b""

    # --- reading ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path, testset: UnlabelledTestSet, key: bytes | None) -> "LabelStore":
        """Open (or start, if the file does not exist) the store of ``testset``.

        ``key`` is the test-set key when the test set is encrypted (the store is then sealed),
        None for a plaintext one.
        """
        store = cls(Path(path), testset, key)
        if store.path.exists():
            store._load()
        return store

    @property
    def sealed(self) -> bool:
        return self.key is not None

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read the label store {self.path}: {exc.strerror or exc}") from None
        prev = GENESIS
        for number, line in enumerate(raw.split(b"\n"), start=1):
            if not line:
                continue
            where = f"{self.path} line {number}"
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError
            except ValueError:
                raise InputError(f"{where}: not a label-store record (the file was edited or "
                                 f"torn); restore it from the owner's copy") from None
            if record.get("format") != FORMAT or record.get("version") != VERSION:
                raise InputError(f"{where}: not an easeml-ci label store (format {FORMAT} v{VERSION})")
            if record.get("testset") != self.testset.fingerprint:
                raise InputError(
                    f"{self.path} holds labels for test set {str(record.get('testset'))[:16]}..., "
                    f"not for {self.testset.source} ({self.testset.fingerprint[:16]}...)")
            if record.get("seq") != self.records or record.get("prev_hash") != prev \
                    or record.get("hash") != entry_hash(record):
                raise InputError(f"{where}: the label store's hash chain is broken (a record was "
                                 f"edited, dropped or reordered); restore it from the owner's copy")
            batch = self._open_record(record, where)
            kind = record.get("label_kind")
            if kind not in KINDS or (self.kind is not None and kind != self.kind):
                raise InputError(f"{where}: label kind {kind!r} does not match the store's "
                                 f"{self.kind!r}")
            self.kind = kind
            for row_id, label in batch:
                if self.labels.get(row_id, label) != label:
                    raise InputError(f"{where}: row id {row_id!r} is labelled twice differently")
                self.labels[row_id] = label
            prev = record["hash"]
            self.records += 1
        self.head = prev
        self._raw = raw

    def _open_record(self, record: dict, where: str) -> list:
        sealed = record.get("sealed")
        if sealed and self.key is None:
            raise InputError(f"{where}: the label store is sealed; set the test-set key to read it")
        if not sealed and self.key is not None:
            raise InputError(f"{where}: the label store is not sealed but the test set is encrypted; "
                             f"an encrypted test set's labels must be sealed")
        if not sealed:
            return [(str(i), v) for i, v in record["labels"]]
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if record.get("key_id") != crypto.key_id(self.key):
            raise InputError(f"{where}: the label store was sealed with another key (key id "
                             f"{record.get('key_id')}, yours {crypto.key_id(self.key)})")
        try:
            nonce = base64.b64decode(record["nonce"])
            plain = AESGCM(self.key).decrypt(nonce, base64.b64decode(record["ciphertext"]),
                                             _associated(record))
        except (InvalidTag, ValueError, KeyError, TypeError):
            raise InputError(f"{where}: a sealed label record failed authentication (edited or "
                             f"moved); restore the store from the owner's copy") from None
        return [(str(i), v) for i, v in json.loads(plain)]

    # --- adding ----------------------------------------------------------------------------

    def add(self, batch: "LabelBatch") -> AddResult:
        """Append a batch (see :func:`read_labels_csv`); all-or-nothing.

        Refuses an unknown row id, a row labelled differently (in the store or in the batch),
        and a kind other than the store's; nothing is written then.
        """
        rows = self.testset.row_of()
        kind, source = batch.kind, batch.source
        if self.kind is not None and kind != self.kind:
            line, value = batch.witness
            raise InputError(f"{source} line {line}: {value!r} is not a label of this store (it "
                             f"holds {self.kind} labels, this file has {kind} ones)")
        new: dict[str, tuple[object, int]] = {}
        unchanged = 0
        for row_id, label, line in batch.entries:
            if row_id not in rows:
                raise InputError(f"{source} line {line}: row id {row_id!r} is not in the test set "
                                 f"{self.testset.source}")
            have = self.labels.get(row_id, new.get(row_id, (None,))[0])
            if have is not None and have != label:
                raise InputError(f"{source} line {line}: row id {row_id!r} already has a different "
                                 f"label; a label once given never changes")
            if row_id in self.labels:
                unchanged += 1
            elif row_id in new:
                unchanged += 1
            else:
                new[row_id] = (label, line)
        if not new:
            return AddResult(0, unchanged, self.head)
        pairs = [[i, v] for i, (v, _) in new.items()]
        record = {"format": FORMAT, "version": VERSION, "testset": self.testset.fingerprint,
                  "label_kind": kind, "sealed": self.sealed}
        if self.sealed:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            record["key_id"] = crypto.key_id(self.key)
            record["seq"], record["prev_hash"] = self.records, self.head
            nonce = os.urandom(crypto.NONCE_BYTES)
            body = json.dumps(pairs, separators=(",", ":"), ensure_ascii=False).encode()
            record["nonce"] = base64.b64encode(nonce).decode()
            record["ciphertext"] = base64.b64encode(
                AESGCM(self.key).encrypt(nonce, body, _associated(record))).decode()
        else:
            record["labels"] = pairs
        record = seal(record, self.records, self.head)
        data = self._raw + canonical(record) + b"\n"
        _write_atomically(self.path, data)
        self._raw = data
        self.records += 1
        self.head = record["hash"]
        self.kind = kind
        self.labels.update({i: v for i, (v, _) in new.items()})
        return AddResult(len(new), unchanged, self.head)

    # --- what a decision reads ---------------------------------------------------------------

    def summary(self) -> dict:
        """Where the store is, its head and how many rows are labelled (the owner's eyes only)."""
        return {"store": str(self.path), "head": self.head, "labelled": len(self.labels)}

    def labelled_view(self, ts: UnlabelledTestSet, y: np.ndarray) -> "UnlabelledTestSet | TestSet":
        """``ts`` with the label vector ``y`` (:meth:`label_vector`), so that models are checked
        against the label kind of the labels so far; ``ts`` itself while there are none."""
        if self.kind is None:
            return ts
        return TestSet(X=ts.X, y=y, fingerprint=ts.fingerprint, source=ts.source)

    def label_vector(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, known)`` in the test set's row order; unknown rows hold a placeholder
        (0 or "") and ``known`` False. SECRET: never show either to the team."""
        ids = self.testset.ids.tolist()
        known = np.array([i in self.labels for i in ids], dtype=bool)
        if self.kind == "text":
            y = np.array([str(self.labels.get(i, "")) for i in ids])
        elif self.kind == "number":
            y = np.array([float(self.labels.get(i, 0.0)) for i in ids], dtype=np.float64)
        else:
            y = np.array([int(self.labels.get(i, 0)) for i in ids], dtype=np.int64)
        return y, known


def _associated(record: dict) -> bytes:
    """What a sealed record's ciphertext is bound to: its test set, kind, place in the chain."""
    return canonical({k: record[k] for k in ("format", "version", "testset", "label_kind",
                                             "key_id", "seq", "prev_hash")})


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        write_bytes(path, data, perms=0o600)
    except OSError as exc:
        raise InputError(f"cannot write the label store {path}: {exc.strerror or exc}") from None


# --- reading a labels CSV ------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelBatch:
    """Labels read from one file: ``(row id, label, line)`` entries of one kind."""

    source: Path
    entries: list
    kind: str
    witness: tuple  # (line, raw value) that made the kind: a first word, a first fraction


def read_labels_csv(path, id_column: str = "id", label_column: str = "label") -> LabelBatch:
    """The labels of a CSV with a header; lines counted from 1 (the header).

    A label is an integer, a finite number or non-empty text, one kind per file (a file of
    numbers with one word in it names that word's line). Empty, NaN and infinite values are not
    labels.
    """
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise InputError(f"labels file {path} does not exist" if not path.exists()
                         else f"labels file {path} is a directory, not a file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    except (OSError, csv.Error) as exc:
        raise InputError(f"cannot read labels file {path}: {exc}") from None
    if not rows:
        raise InputError(f"{path} is empty; a labels file needs a header line with columns "
                         f"{id_column!r} and {label_column!r}")
    header = [h.strip() for h in rows[0]]
    for name in (id_column, label_column):
        if name not in header:
            raise InputError(f"{path}: no column {name!r} in the header (columns: "
                             f"{', '.join(repr(h) for h in header)})")
    id_at, label_at = header.index(id_column), header.index(label_column)
    raw: list[tuple[str, str, int]] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(f"{path} line {line}: {len(row)} columns, the header has {len(header)}")
        raw.append((row[id_at].strip(), row[label_at].strip(), line))
    if not raw:
        raise InputError(f"{path}: no labels (only a header)")
    return batch_from_rows(path, raw)


def carried_labels(path, id_column: str = "id", label_column: str = "label") -> "LabelBatch | None":
    """The labels a partly labelled plaintext CSV test set carries, checked like a labels file
    (None for any other file, or when it carries none): ``testset encrypt`` and ``register``
    move them into the label store."""
    from . import crypto
    from .readers import load_partly_labelled_csv

    path = Path(path)
    if crypto.is_encrypted(path) or path.suffix.lower() != ".csv":
        return None
    rows = load_partly_labelled_csv(path, id_column, label_column)[1]
    return batch_from_rows(path, rows) if rows else None


def batch_from_rows(path, raw: list) -> LabelBatch:
    """A :class:`LabelBatch` from ``(row id, label text, line)`` rows read elsewhere (a labels
    CSV, or the labelled rows of a partly labelled test set CSV), checked the same way."""
    path = Path(path)
    for row_id, value, line in raw:
        if not row_id:
            raise InputError(f"{path} line {line}: empty row id")
        if not value or value.lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
            raise InputError(f"{path} line {line}: row id {row_id!r} has {value or 'an empty value'!r}, "
                             f"which is not a label (an integer, a finite number or text)")
    numbers = []
    for row_id, value, line in raw:
        try:
            numbers.append(float(value))
        except ValueError:
            return LabelBatch(path, [(i, v, n) for i, v, n in raw], "text", (line, value))
    fractions = [k for k, x in enumerate(numbers) if not (x == int(x) and abs(x) < 2**63)]
    if not fractions:
        return LabelBatch(path, [(i, int(x), n) for (i, _, n), x in zip(raw, numbers)], "integer",
                          (raw[0][2], raw[0][1]))
    first = raw[fractions[0]]
    return LabelBatch(path, [(i, float(x), n) for (i, _, n), x in zip(raw, numbers)], "number",
                      (first[2], first[1]))
