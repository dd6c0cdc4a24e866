"""Reading test sets: ``.npz``, CSV, encrypted, labelled or unlabelled, into canonical form."""
from __future__ import annotations

import csv
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from . import crypto
from ..errors import InputError
from .canonical import ALLOWED_SUFFIXES, resolve, CanonicalAssembler, ENCRYPTED_SUFFIX, IsUnlabelled, TestSet, UNLABELLED_MAGIC, UnlabelledTestSet, canonical_features, canonical_labels, canonical_row_ids, finish, pad, refuse_missing, unlabelled_from_arrays


# --- readers -----------------------------------------------------------------------------------

def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} is not readable (permission denied)")


def _read_npz(path: Path, needs_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    import zipfile  # np.load's own: loaded where an .npz is read, not by every check (~3 ms)

    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head.startswith(b"PK"):
        kind = "a single .npy array" if head.startswith(b"\x93NUMPY") else "not a zip archive"
        raise InputError(f"{path} is not a readable .npz file ({kind}); save the test set with "
                         f"numpy.savez(path, X=features, y=labels)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise InputError(f"{path} holds a single array, not an .npz archive with "
                                 f"arrays 'X' and 'y'")
            names = list(data.files)
            wanted = ["X", "y"] if needs_labels else ["X"]
            absent = [n for n in wanted if n not in names]
            if absent:
                raise InputError(
                    f"{path} has no array {' or '.join(repr(a) for a in absent)} (it holds "
                    f"{', '.join(repr(n) for n in names) or 'no arrays'}); a test set .npz needs "
                    f"'X' (features, examples x features)" + (" and 'y' (labels)" if needs_labels else ""))
            X = data["X"]
            y = data["y"] if needs_labels else None
    except InputError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputError(f"{path} stores Python objects (pickled); save plain numeric or "
                             f"text arrays instead") from None
        raise InputError(f"{path} is not a readable .npz file: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path} is not a readable .npz file: {exc}") from None
    return X, y


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; a test set CSV must be UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise InputError(f"cannot read CSV {path}: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise InputError(f"{path} is empty; a CSV test set needs a header line naming its columns")
    return [h.strip() for h in header]


def _loadtxt(path: Path, cols: list[int], dtype, what: str, names: list[str]) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": we say so
            return np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, dtype=dtype,
                              quotechar='"', ndmin=2 if dtype is not str else 1,
                              encoding="utf-8-sig")
    except ValueError as exc:
        raise InputError(f"{path}: {what}: {_numpy_csv_message(exc, names)}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None


_NUMPY_CSV_ERROR = re.compile(r"could not convert string (?P<value>.*) to \w+ at row (?P<row>\d+), "
                              r"column (?P<col>\d+)")


_NUMPY_CSV_RAGGED = re.compile(r"invalid column index \d+ at row (?P<row>\d+) with (?P<have>\d+) columns")


def _numpy_csv_message(exc: ValueError, names: list[str]) -> str:
    """Restate numpy's message in our row numbering (data rows from 1, header not counted) and
    with the column's name instead of its position."""
    text = str(exc).splitlines()[0]
    m = _NUMPY_CSV_RAGGED.search(text)
    if m:  # numpy counts these rows from 1
        return (f"data row {m['row']} has {m['have']} columns but the header has {len(names)}; "
                f"every row needs a value for every column")
    m = _NUMPY_CSV_ERROR.search(text)
    if not m:
        return text
    col = int(m["col"])
    name = names[col - 1] if 0 < col <= len(names) else f"#{col}"
    return f"{m['value']} is not a number (data row {int(m['row']) + 1}, column {name!r})"


def _read_csv(path: Path, label_column: str | None, parse_labels: bool = True,
              ) -> tuple[np.ndarray, np.ndarray | None]:
    names = _csv_header(path)
    label_at = None
    if label_column is not None:
        hits = [i for i, n in enumerate(names) if n == label_column]
        if len(hits) > 1:
            raise InputError(f"{path}: the label column {label_column!r} appears {len(hits)} times in the header")
        label_at = hits[0] if hits else None
    features = [i for i in range(len(names)) if i != label_at]
    if not features:
        raise InputError(f"{path}: no feature columns besides the label column {label_column!r}")
    y = None
    if label_at is not None and parse_labels:
        raw = _loadtxt(path, [label_at], str, f"label column {label_column!r}", names)
        raw = np.atleast_1d(raw)
        y = _labels_from_text(raw, path, label_column)
    X = _loadtxt(path, features, np.float32,
                 "features (every column but the label must be numeric)", names)
    if X.shape[0] == 0 and X.shape[1] != len(features):
        X = X.reshape(0, len(features))
    return X, y


def _labels_from_text(raw: np.ndarray, path: Path, label_column: str) -> np.ndarray:
    stripped = np.char.strip(raw) if raw.size else raw
    what = f"labels in column {label_column!r}"
    if raw.size:
        missing = (np.char.str_len(stripped) == 0) | (np.char.lower(stripped) == "nan")
        refuse_missing(missing, path, what, 1, "data row")
    try:
        numeric = stripped.astype(np.float64)
    except ValueError:
        return canonical_labels(stripped, path, what, 1, "data row")  # text labels
    return canonical_labels(numeric, path, what, 1, "data row")


def load_testset(path, label_column: str = "label", key_env: str = crypto.DEFAULT_KEY_ENV) -> TestSet:
    """Load, validate and fingerprint a test set; every problem is an :class:`InputError`.

    ``label_column`` only matters for CSV. An encrypted file needs its key in ``key_env``;
    the plaintext stays in memory.
    """
    path = resolve(path)
    _check_readable(path, "test set")
    if crypto.is_encrypted(path):
        return _load_encrypted(path, key_env)
    return _load_plain_labelled(path, label_column)


def _load_plain_labelled(path: Path, label_column: str) -> TestSet:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, y = _read_npz(path)
        row_word = "index"
        base = 0
    elif suffix == ".csv":
        X, y = _read_csv(path, label_column)
        if y is None:
            raise InputError(f"{path}: no label column {label_column!r}; the columns are "
                             f"{', '.join(repr(n) for n in _csv_header(path))} (name it with "
                             f"`label_column:` in .easeml.yml; the `testset` commands also take "
                             f"--label-column)")
        row_word, base = "data row", 1
    elif suffix == ENCRYPTED_SUFFIX:
        crypto.read_header(path)  # raises the "not our format" error
        raise AssertionError("unreachable")  # pragma: no cover
    else:
        raise InputError(f"test set {path} has extension {path.suffix or '(none)'!r}; allowed: "
                         f"{', '.join(ALLOWED_SUFFIXES)} (an encrypted test set is recognised by "
                         f"its content, whatever its name)")
    y = canonical_labels(np.asarray(y), path, "labels", base, row_word)
    X = canonical_features(np.asarray(X), path, "")
    return finish(X, y, path)


def _load_encrypted(path: Path, key_env: str, *, rehash: bool = True) -> TestSet:
    key = crypto.key_from_env(key_env, purpose=f"needed to decrypt the test set {path}")
    sinks: list[CanonicalAssembler] = []

    def make_sink(header: crypto.EncryptedHeader) -> CanonicalAssembler:
        sinks.append(CanonicalAssembler(header, path, rehash=rehash))
        return sinks[0]

    try:
        header = crypto.decrypt_into_sink(path, key, make_sink, key_env=key_env)
    finally:
        for sink in sinks:
            sink.close()
    assembler = sinks[0]
    X, y = assembler.arrays()
    if rehash and assembler.hexdigest() != header.fingerprint:
        raise InputError(f"{path}: decrypted content does not match the fingerprint in its header")
    if canonical_labels(y, path, "labels").dtype != y.dtype:
        raise assembler._bad("labels not in canonical form")
    return _finish_encrypted(X, y, header.fingerprint, path)


def _finish_encrypted(X, y, fp, path) -> TestSet:
    if len(y) == 0:
        raise InputError(f"{path}: the test set is empty (0 examples)")
    if X.shape[0] != y.shape[0]:
        raise InputError(f"{path}: X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    return TestSet(X=X, y=y, fingerprint=fp, source=path)


def testset_fingerprint(path, label_column: str = "label", key_env: str = crypto.DEFAULT_KEY_ENV,
                        ) -> tuple[str, bool]:
    """The fingerprint of a test set and whether it was verified against the content.

    For an encrypted file without its key in the environment, the header's (authenticated but,
    without the key, unverified) fingerprint is returned with ``False``.
    """
    path = resolve(path)
    _check_readable(path, "test set")
    if crypto.is_encrypted(path) and not os.environ.get(key_env, "").strip():
        return crypto.read_header(path).fingerprint, False
    return load_any_testset(path, label_column=label_column, key_env=key_env).fingerprint, True


def load_pool(path, label_column: str | None = "label") -> np.ndarray:
    """Features of an unlabelled pool (``.npz`` with ``X``, or CSV; a ``label_column``, if the
    CSV happens to have one, is ignored), as canonical float32, for the label request."""
    path = resolve(path)
    _check_readable(path, "pool")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, _ = _read_npz(path, needs_labels=False)
    elif suffix == ".csv":
        X, _ = _read_csv(path, label_column, parse_labels=False)
    else:
        raise InputError(f"pool {path} has extension {path.suffix or '(none)'!r}; allowed: .npz, .csv")
    X = canonical_features(np.asarray(X), path, "")
    if X.shape[0] == 0:
        raise InputError(f"pool {path} is empty (0 examples)")
    return X


def load_unlabelled_testset(path, id_column: str = "id", key_env: str = crypto.DEFAULT_KEY_ENV,
                            ) -> UnlabelledTestSet:
    """Load a test set registered without labels: ``.npz`` with ``X`` and ``ids``, a CSV with an
    id column and feature columns, or either encrypted (``encrypt_unlabelled_testset``)."""
    path = resolve(path)
    _check_readable(path, "test set")
    if crypto.is_encrypted(path):
        key = crypto.key_from_env(key_env, purpose=f"needed to decrypt the test set {path}")
        header, plain = crypto.decrypt_file(path, key, key_env=key_env)
        return _parse_unlabelled(bytes(plain), header.fingerprint, path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        import zipfile  # see _read_npz

        try:
            with np.load(path, allow_pickle=False) as data:
                names = list(getattr(data, "files", []))
                if "X" not in names or "ids" not in names:
                    raise InputError(f"{path}: an unlabelled test set .npz needs arrays 'X' (features) "
                                     f"and 'ids' (row ids); it holds {', '.join(map(repr, names)) or 'none'}")
                X, ids = data["X"], data["ids"]
        except InputError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(f"{path} is not a readable .npz file: {exc}") from None
        return unlabelled_from_arrays(X, ids, path)
    if suffix == ".csv":
        names = _csv_header(path)
        if id_column not in names:
            raise InputError(f"{path}: no row id column {id_column!r}; the columns are "
                             f"{', '.join(repr(n) for n in names)} (pass --id-column)")
        ids = np.atleast_1d(_loadtxt(path, [names.index(id_column)], str, f"id column {id_column!r}", names))
        X, _ = _read_csv(path, id_column, parse_labels=False)
        source = path
        ids = canonical_row_ids(ids, source, 1, "data row")
        return unlabelled_from_arrays(X, ids, source)
    raise InputError(f"test set {path} has extension {path.suffix or '(none)'!r}; allowed: "
                     f"{', '.join(ALLOWED_SUFFIXES)}")


def _parse_unlabelled(plain: bytes, fingerprint: str, path: Path) -> UnlabelledTestSet:
    bad = InputError(f"{path}: decrypted content is not an unlabelled easeml-ci test set")
    newline = plain.find(b"\n", 0, 4096)
    if not plain.startswith(UNLABELLED_MAGIC) or newline < 0:
        raise bad
    try:
        meta = json.loads(plain[len(UNLABELLED_MAGIC):newline].decode("ascii"))
        xd, xs = np.dtype(meta["X"][0]), tuple(int(v) for v in meta["X"][1])
        idd, ids_shape = np.dtype(meta["ids"][0]), tuple(int(v) for v in meta["ids"][1])
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        raise bad from None
    if xd != np.dtype("<f4") or idd.kind != "U" or len(xs) != 2 or len(ids_shape) != 1:
        raise bad
    start = newline + 1
    x_bytes = xs[0] * xs[1] * 4
    id_at = start + x_bytes + pad(x_bytes)
    if id_at + ids_shape[0] * idd.itemsize != len(plain):
        raise bad
    X = np.frombuffer(plain, dtype=xd, count=xs[0] * xs[1], offset=start).reshape(xs)
    ids = np.frombuffer(plain, dtype=idd, count=ids_shape[0], offset=id_at)
    ts = unlabelled_from_arrays(X, ids, path)
    if ts.fingerprint != fingerprint:
        raise InputError(f"{path}: decrypted content does not match the fingerprint in its header")
    return ts


def is_unlabelled_file(path, label_column: str = "label", id_column: str = "id") -> bool:
    """Whether a plaintext test set file holds row ids and no (complete) labels, without loading
    it: an ``.npz`` with ``ids`` and no ``y``, or a CSV with the id column and no label column
    (or a label column with an empty cell: labelled in part). Encrypted files: see
    :func:`load_any_testset`. A file that is neither is left to the labelled loader's messages.
    """
    path = resolve(path)
    if crypto.is_encrypted(path) or not path.is_file():
        return False
    return _plain_is_unlabelled(path, label_column, id_column)


def _plain_is_unlabelled(path: Path, label_column: str, id_column: str) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        import zipfile  # see _read_npz

        try:
            with np.load(path, allow_pickle=False) as data:
                names = set(getattr(data, "files", []))
        except (ValueError, OSError, zipfile.BadZipFile, EOFError):
            return False
        return "ids" in names and "y" not in names
    if suffix == ".csv":
        try:
            names = _csv_header(path)
        except InputError:
            return False
        if id_column not in names:
            return False
        if label_column not in names:
            return True
        return bool(_partial_labels(path, names, id_column, label_column)[1])
    return False


def _partial_labels(path: Path, names: list[str], id_column: str, label_column: str,
                    ) -> tuple[list, list]:
    """``(labelled, empty)``: (row id, label text, line) of the CSV's labelled rows, and the lines
    whose label cell is empty."""
    labelled, empty = [], []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = csv.reader(fh)
        next(rows, None)
        id_at, label_at = names.index(id_column), names.index(label_column)
        for line, row in enumerate(rows, start=2):
            if not any(cell.strip() for cell in row) or len(row) <= max(id_at, label_at):
                continue
            value = row[label_at].strip()
            if value:
                labelled.append((row[id_at].strip(), value, line))
            else:
                empty.append(line)
    return labelled, empty


def load_partly_labelled_csv(path, id_column: str = "id", label_column: str = "label",
                             ) -> tuple[UnlabelledTestSet, list]:
    """A CSV with row ids whose label column is empty on some rows (or absent): the unlabelled
    test set (features without the id and label columns) and the labels it does have, as
    ``(row id, label text, line)`` for the label store (:func:`easeml_ci.testsets.labels.batch_from_rows`)."""
    path = resolve(path)
    _check_readable(path, "test set")
    names = _csv_header(path)
    if id_column not in names:
        raise InputError(f"{path}: no row id column {id_column!r}; the columns are "
                         f"{', '.join(repr(n) for n in names)} (pass --id-column)")
    ids = np.atleast_1d(_loadtxt(path, [names.index(id_column)], str, f"id column {id_column!r}", names))
    ids = canonical_row_ids(ids, path, 1, "data row")
    features = [i for i, n in enumerate(names) if n not in (id_column, label_column)]
    if not features:
        raise InputError(f"{path}: no feature columns besides {id_column!r} and {label_column!r}")
    X = _loadtxt(path, features, np.float32,
                 f"features (every column but {id_column!r} and {label_column!r} must be numeric)",
                 names)
    ts = unlabelled_from_arrays(X, ids, path)
    labelled = _partial_labels(path, names, id_column, label_column)[0] if label_column in names else []
    return ts, labelled


def load_own_testset(path, flag: str, given: str, label_column: str = "label") -> TestSet:
    """A labelled set the team holds itself (a validation set): plaintext, any format of a test
    set; ``flag`` and ``given`` name it in errors."""
    path = resolve(path)
    if not path.is_file():
        raise InputError(f"{flag}: {given} does not exist or is not a file")
    if crypto.is_encrypted(path):
        raise InputError(f"{flag}: {given} is encrypted; the validation set is the team's own, "
                         "plaintext (.npz or .csv, the format of a test set)")
    return load_testset(path, label_column=label_column)


def load_encrypted(path, key_env: str = crypto.DEFAULT_KEY_ENV, *, rehash: bool = True,
                   ) -> "TestSet | UnlabelledTestSet":
    """Decrypt an encrypted test set, labelled or unlabelled (the plaintext says which).

    ``rehash=False`` takes a labelled test set's fingerprint from its header instead of hashing
    the plaintext again (~30 ms and a core's worth of SHA-256 per million rows). The header is
    bound into every chunk's authentication tag, so the file decrypts only as the key holder
    wrote it; what the re-hash adds is a check that the writer computed the fingerprint
    honestly, which registration makes (docs/threat-model.md, row 9b). An
    unlabelled test set is always re-hashed (its ids are parsed in the same pass)."""
    path = resolve(path)
    try:
        return _load_encrypted(path, key_env, rehash=rehash)
    except IsUnlabelled:
        key = crypto.key_from_env(key_env, purpose=f"needed to decrypt the test set {path}")
        header, plain = crypto.decrypt_file(path, key, key_env=key_env)
        return _parse_unlabelled(bytes(plain), header.fingerprint, path)


def load_plaintext(path, label_column: str = "label", id_column: str = "id",
                   ) -> "TestSet | UnlabelledTestSet":
    """A plaintext test set file (the caller knows it is not encrypted: :class:`TestSetSource`):
    labelled, or (row ids without all labels) unlabelled."""
    path = resolve(path)
    _check_readable(path, "test set")
    if _plain_is_unlabelled(path, label_column, id_column):
        if path.suffix.lower() == ".csv":
            return load_partly_labelled_csv(path, id_column, label_column)[0]
        return load_unlabelled_testset(path, id_column=id_column)
    return _load_plain_labelled(path, label_column)


def load_any_testset(path, label_column: str = "label", id_column: str = "id",
                     key_env: str = crypto.DEFAULT_KEY_ENV) -> "TestSet | UnlabelledTestSet":
    """A labelled :class:`TestSet` or, for a file that holds row ids without (all) labels, an
    :class:`UnlabelledTestSet` (labels on demand: :mod:`easeml_ci.testsets.labels`). Plaintext labels
    of a partly labelled CSV are not returned here: ``testset register`` / ``encrypt`` move them
    into the label store."""
    path = resolve(path)
    _check_readable(path, "test set")
    if crypto.is_encrypted(path):
        return load_encrypted(path, key_env)
    return load_plaintext(path, label_column, id_column)
