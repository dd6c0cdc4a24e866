"""The label store: labels that arrive over time for a test set registered without them.

A test set registered unlabelled (:class:`easeml_ci.testsets.UnlabelledTestSet`: features and
stable row ids) gets its labels in batches (``easeml-ci testset label TESTSET LABELS.csv``). The
store keeps them in one append-only JSON-lines file outside the repository (a store inside its
work tree is refused, :func:`store_location`), one record per batch (or per block of a sealed
batch).

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
  Each record's labels and their kind are encrypted under the key with the record's chain
  fields as associated data, so only the key holder (the owner) can read or append, and a
  record moved into another store or position fails authentication. Every sealed record holds
  exactly :data:`SEALED_BYTES` of plaintext (format version 2): ``cat`` and ``horse`` make
  records of one size, and a batch too large for one record fills several. Version-1 stores
  (sized by their labels, kind in clear) are read; ``easeml-ci testset migrate-labels``
  rewrites one as version 2, and appending to a sealed one asks for that first. A plaintext test set gets a plaintext store (nothing
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
VERSION = 2  # 2: a sealed record's label kind is sealed and its plaintext is SEALED_BYTES long
READABLE = (1, 2)  # a store of version 1 is read; appending to a sealed one asks to migrate it
#: The length of every sealed record's plaintext: ``{"label_kind": ..., "labels": [...]}``
#: padded with spaces. A record's size says nothing of its labels' lengths or kind; a batch
#: that does not fit in one record fills as many as it needs, so a store's size shows only how
#: many such blocks its labels take (docs/threat-model.md, row 10b).
SEALED_BYTES = 4096
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
    legacy: int = 0  # records of version 1 (sealed ones: label kind in clear, sized by labels)
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
            if record.get("format") != FORMAT or record.get("version") not in READABLE:
                raise InputError(f"{where}: not an easeml-ci label store (format {FORMAT} "
                                 f"v{' or v'.join(map(str, READABLE))})")
            if record.get("testset") != self.testset.fingerprint:
                raise InputError(
                    f"{self.path} holds labels for test set {str(record.get('testset'))[:16]}..., "
                    f"not for {self.testset.source} ({self.testset.fingerprint[:16]}...)")
            if record.get("seq") != self.records or record.get("prev_hash") != prev \
                    or record.get("hash") != entry_hash(record):
                raise InputError(f"{where}: the label store's hash chain is broken (a record was "
                                 f"edited, dropped or reordered); restore it from the owner's copy")
            batch, kind = self._open_record(record, where)
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
            self.legacy += record["version"] == 1
        self.head = prev
        self._raw = raw

    def _open_record(self, record: dict, where: str) -> tuple[list, object]:
        """The record's ``(row id, label)`` pairs and its label kind."""
        sealed = record.get("sealed")
        if sealed and self.key is None:
            raise InputError(f"{where}: the label store is sealed; set the test-set key to read it")
        if not sealed and self.key is not None:
            raise InputError(f"{where}: the label store is not sealed but the test set is encrypted; "
                             f"an encrypted test set's labels must be sealed")
        if not sealed:
            return [(str(i), v) for i, v in record["labels"]], record.get("label_kind")
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
        if record["version"] == 1:
            return [(str(i), v) for i, v in json.loads(plain)], record.get("label_kind")
        try:
            body = json.loads(plain)
            if len(plain) != SEALED_BYTES or not isinstance(body, dict):
                raise ValueError
            return [(str(i), v) for i, v in body["labels"]], body["label_kind"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{where}: a sealed label record is not a version-2 record "
                             f"({SEALED_BYTES} bytes of labels); restore the store from the "
                             "owner's copy") from None

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
        if self.legacy and self.sealed:
            raise InputError(f"the label store {self.path} is in format version 1, whose sealed "
                             "records show each batch's label lengths and kind; migrate it "
                             "first: easeml-ci testset migrate-labels TESTSET --store "
                             f"{self.path}")
        pairs = [(i, v, line) for i, (v, line) in new.items()]
        records, head = self._records(pairs, kind, self.records, self.head, source)
        data = self._raw + b"".join(canonical(r) + b"\n" for r in records)
        _write_atomically(self.path, data)
        self._raw = data
        self.records += len(records)
        self.head = head
        self.kind = kind
        self.labels.update({i: v for i, (v, _) in new.items()})
        return AddResult(len(new), unchanged, self.head)

    def migrate(self) -> int:
        """Rewrite a store holding version-1 records as version 2 (the same labels, in the order
        they came, in sealed records of :data:`SEALED_BYTES`); atomic. Returns the records
        written, 0 when there was nothing to migrate."""
        if not self.legacy:
            return 0
        pairs = [(i, v, None) for i, v in self.labels.items()]
        records, head = self._records(pairs, self.kind, 0, GENESIS, self.path)
        data = b"".join(canonical(r) + b"\n" for r in records)
        _write_atomically(self.path, data)
        self._raw, self.records, self.head, self.legacy = data, len(records), head, 0
        return len(records)

    def _records(self, pairs: list, kind: str, seq: int, prev: str, source) -> tuple[list, str]:
        """Chained records holding ``pairs`` ((row id, label, line) in order) of ``kind``."""
        if not self.sealed:
            body = {"format": FORMAT, "version": VERSION, "testset": self.testset.fingerprint,
                    "label_kind": kind, "sealed": False, "labels": [[i, v] for i, v, _ in pairs]}
            record = seal(body, seq, prev)
            return [record], record["hash"]
        records = []
        for chunk in _blocks(pairs, kind, source):
            records.append(self._sealed_record(chunk, kind, seq, prev))
            seq, prev = seq + 1, records[-1]["hash"]
        return records, prev

    def _sealed_record(self, plain: bytes, kind: str, seq: int, prev: str) -> dict:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        record = {"format": FORMAT, "version": VERSION, "testset": self.testset.fingerprint,
                  "sealed": True, "key_id": crypto.key_id(self.key), "seq": seq,
                  "prev_hash": prev}
        nonce = os.urandom(crypto.NONCE_BYTES)
        record["nonce"] = base64.b64encode(nonce).decode()
        record["ciphertext"] = base64.b64encode(
            AESGCM(self.key).encrypt(nonce, plain, _associated(record))).decode()
        return seal(record, seq, prev)

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
    """What a sealed record's ciphertext is bound to: its test set, place in the chain (and, in
    version 1, its label kind, then kept in clear)."""
    keys = ("format", "version", "testset", "key_id", "seq", "prev_hash")
    if record.get("version") == 1:
        keys = ("format", "version", "testset", "label_kind", "key_id", "seq", "prev_hash")
    return canonical({k: record[k] for k in keys})


def _encoded(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _blocks(pairs: list, kind: str, source) -> list[bytes]:
    """The plaintexts of sealed records for ``pairs``: each ``{"label_kind", "labels"}`` padded
    with spaces to exactly :data:`SEALED_BYTES`, as many pairs in each as fit, in order."""
    head, tail = b'{"label_kind":' + _encoded(kind) + b',"labels":[', b"]}"
    room = SEALED_BYTES - len(head) - len(tail)
    blocks, chunk, used = [], [], 0
    for row_id, label, line in pairs:
        item = _encoded([row_id, label])
        if len(item) > room:
            at = f"{source} line {line}: " if line else f"{source}: "
            raise InputError(f"{at}row id {row_id!r} and its label take {len(item):,} bytes; a "
                             f"sealed label record holds at most {room:,} (shorten the id or "
                             "the label)")
        if chunk and used + 1 + len(item) > room:
            blocks.append(chunk)
            chunk, used = [], 0
        used += len(item) + (1 if chunk else 0)
        chunk.append(item)
    if chunk:
        blocks.append(chunk)
    out = []
    for items in blocks:
        plain = head + b",".join(items) + tail
        out.append(plain + b" " * (SEALED_BYTES - len(plain)))
    return out


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
