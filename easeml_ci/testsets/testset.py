"""Loading, validating and fingerprinting test sets.

A test set is a feature matrix ``X`` and a label vector ``y``. It comes as ``.npz`` (arrays
``X`` and ``y``), as CSV with a header and a label column, or encrypted (``easeml-ci testset
encrypt``; detected by its leading marker whatever the file is called, decrypted in memory only).

Canonical form (why): the budget ledger is keyed by the test set's *fingerprint*, so the same
data must always get the same fingerprint — after a rename, a CSV -> npz conversion or a fresh
encryption — or a team could reset its budget by re-saving the file. Every loader therefore
normalises to one canonical form before hashing:

* features: 2-D, C-contiguous, little-endian float32 (what skl2onnx models take; every NaN is
  the same quiet NaN). Float64 values that differ only beyond float32 precision share a
  fingerprint, which can only make budgets stricter, never reset them;
* labels: 1-D; integer-valued numbers (ints, bools, 1.0) become int64, other numbers float64,
  text becomes little-endian unicode of the longest label's width.

The canonical byte layout (a padded JSON line with dtypes and shapes, then X's bytes, zero
padding to 64 bytes, then y's bytes) is also the plaintext of an encrypted test set, so loading
an encrypted file is a decryption straight into the arrays' memory (features and labels in
separate buffers), and the fingerprint is the SHA-256 of exactly these bytes.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from . import crypto
from ..atomic import atomic_write
from ..errors import InputError

PLAIN_SUFFIXES = (".npz", ".csv")
ENCRYPTED_SUFFIX = ".enc"
ALLOWED_SUFFIXES = PLAIN_SUFFIXES + (ENCRYPTED_SUFFIX,)
_PREAMBLE_MAGIC = b"easeml-ci testset v1 "
_ALIGN = 64


@dataclass(frozen=True, eq=False)
class TestSet:
    """A loaded, validated test set. ``y`` is secret: never print it or numbers derived from it."""

    __test__ = False  # not a pytest class

    X: np.ndarray
    y: np.ndarray
    fingerprint: str
    source: Path

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def nbytes(self) -> int:
        """Size of the decrypted arrays in memory (the base of the memory budget)."""
        return int(self.X.nbytes + self.y.nbytes)

    def __repr__(self) -> str:  # never show data
        return (f"TestSet(source={str(self.source)!r}, examples={len(self)}, "
                f"features={self.n_features}, fingerprint={self.fingerprint[:12]}...)")


# --- canonical form -----------------------------------------------------------------------

def _pad(n: int) -> int:
    return -n % _ALIGN


def _preamble(X: np.ndarray, y: np.ndarray) -> bytes:
    meta = json.dumps(
        {"X": [X.dtype.str, list(X.shape)], "y": [y.dtype.str, list(y.shape)]},
        sort_keys=True, separators=(",", ":"),
    ).encode("ascii")
    head = _PREAMBLE_MAGIC + meta
    return head + b" " * _pad(len(head) + 1) + b"\n"


def canonical_parts(X: np.ndarray, y: np.ndarray) -> list:
    """The canonical bytes of (X, y) as a list of buffers (no copy of the arrays)."""
    pre = _preamble(X, y)
    return [pre, memoryview(X).cast("B"), b"\0" * _pad(X.nbytes), memoryview(y).cast("B")]


def canonical_size(X: np.ndarray, y: np.ndarray) -> int:
    return len(_preamble(X, y)) + X.nbytes + _pad(X.nbytes) + y.nbytes


def fingerprint_arrays(X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 (hex) of the canonical bytes of already-canonical arrays."""
    h = hashlib.sha256()
    for part in canonical_parts(X, y):
        h.update(part)
    return h.hexdigest()


class _CanonicalAssembler:
    """Receives the decrypted canonical bytes of an encrypted test set, chunk by chunk.

    Hashes them in order (the fingerprint), parses the preamble, and lays X and y out in two
    buffers of their own: chunks that fall inside one of them are decrypted in place, the rest
    (the preamble and chunks straddling a boundary) are copied from a scratch chunk. Why two
    buffers: the labels never share memory with the features, so a caller that is done with
    the features can drop them and free 80% of the test set while keeping the labels.
    """

    _MAX_PREAMBLE = 4096

    def __init__(self, header: crypto.EncryptedHeader, source: Path):
        self.total = header.plaintext_bytes
        self.source = source
        self.hash = hashlib.sha256()
        self.head = bytearray()
        self.meta: tuple | None = None  # (X dtype, X shape, y dtype, y shape)
        self.buffers: dict[str, bytearray] = {}
        self.regions: list[tuple[int, int, memoryview]] = []

    def _bad(self, why: str) -> InputError:
        return InputError(f"{self.source}: decrypted content is not an easeml-ci test set ({why})")

    def target(self, offset: int, size: int) -> memoryview | None:
        for start, end, view in self.regions:
            if start <= offset and offset + size <= end:
                return view[offset - start:offset - start + size]
        return None

    def accept(self, offset: int, data: memoryview, in_place: bool) -> None:
        self.hash.update(data)
        if in_place:
            return
        pos = 0
        while pos < len(data):
            if self.meta is None:
                room = self._MAX_PREAMBLE - len(self.head)
                piece = bytes(data[pos:pos + min(room, len(data) - pos)])
                newline = piece.find(b"\n")
                if newline < 0:
                    self.head += piece
                    pos += len(piece)
                    if len(self.head) >= self._MAX_PREAMBLE:
                        raise self._bad("no header line")
                    continue
                self.head += piece[:newline + 1]
                pos += newline + 1
                self._lay_out()
                continue
            at = offset + pos
            for start, end, view in self.regions:
                if start <= at < end:
                    n = min(end - at, len(data) - pos)
                    view[at - start:at - start + n] = data[pos:pos + n]
                    pos += n
                    break
            else:
                raise self._bad("more bytes than its header line describes")

    def _lay_out(self) -> None:
        head = bytes(self.head)
        if head.startswith(_UNLABELLED_MAGIC):
            raise _IsUnlabelled(f"{self.source} is an unlabelled test set")
        if not head.startswith(_PREAMBLE_MAGIC):
            raise self._bad("no easeml-ci header line")
        try:
            meta = json.loads(head[len(_PREAMBLE_MAGIC):].decode("ascii"))
            xd, xs = np.dtype(meta["X"][0]), tuple(int(v) for v in meta["X"][1])
            yd, ys = np.dtype(meta["y"][0]), tuple(int(v) for v in meta["y"][1])
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
            raise self._bad("unreadable header line") from None
        if xd != np.dtype("<f4") or len(xs) != 2 or len(ys) != 1 or min(xs + ys) < 0:
            raise self._bad("not in canonical form")
        x_bytes = xs[0] * xs[1] * xd.itemsize
        y_bytes = ys[0] * yd.itemsize
        start = len(head)
        if start + x_bytes + _pad(x_bytes) + y_bytes != self.total:
            raise self._bad("its size does not match its header line")
        self.meta = (xd, xs, yd, ys)
        self.buffers = {"X": bytearray(x_bytes + _pad(x_bytes)), "y": bytearray(y_bytes)}
        for name in ("X", "y"):
            size = len(self.buffers[name])
            if size:
                self.regions.append((start, start + size, memoryview(self.buffers[name])))
            start += size

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.meta is None:
            raise self._bad("no header line")
        xd, xs, yd, ys = self.meta
        X = np.frombuffer(self.buffers["X"], dtype=xd, count=xs[0] * xs[1]).reshape(xs)
        y = np.frombuffer(self.buffers["y"], dtype=yd, count=ys[0])
        if bytes(self.head) != _preamble(X, y) or any(self.buffers["X"][X.nbytes:]):
            raise self._bad("not in canonical form")
        return X, y


# --- validation and normalisation --------------------------------------------------------------

def _canonical_features(X: np.ndarray, source: Path, where: str) -> np.ndarray:
    if X.ndim == 1:
        raise InputError(f"{source}: features {where} are 1-D (shape {X.shape}); a test set needs "
                         f"a 2-D feature matrix (examples x features)")
    if X.ndim != 2:
        raise InputError(f"{source}: features {where} have shape {X.shape}; expected 2-D "
                         f"(examples x features)")
    if X.dtype.kind not in "biuf":
        raise InputError(f"{source}: features {where} are not numeric (dtype {X.dtype}); "
                         f"easeml-ci feeds models float32 features")
    if X.shape[1] == 0:
        raise InputError(f"{source}: the test set has no feature columns")
    X = np.ascontiguousarray(X, dtype="<f4")
    # Cheap screen first: the sum is finite iff there is no NaN/inf (inf - inf gives NaN too).
    if X.size and not np.isfinite(X.sum(dtype=np.float64)):
        nan = np.isnan(X)
        if nan.any():
            if not X.flags.writeable:
                X = X.copy()
            X[nan] = np.float32("nan")  # one NaN bit pattern, so the fingerprint is canonical
    return X


def _canonical_labels(y: np.ndarray, source: Path, what: str, row_base: int = 0,
                      row_word: str = "index") -> np.ndarray:
    """Validate labels and bring them to the canonical dtype; ``what`` names them in messages."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"{source}: {what} have shape {y.shape}; expected one label per example (1-D)")
    kind = y.dtype.kind
    if kind in "US":
        if kind == "S":
            try:
                y = np.char.decode(y, "utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{source}: {what} are bytes that are not UTF-8") from None
        missing = np.char.str_len(np.char.strip(y)) == 0 if y.size else np.zeros(0, bool)
        _refuse_missing(missing, source, what, row_base, row_word)
        width = int(np.char.str_len(y).max()) if y.size else 1
        return np.ascontiguousarray(y, dtype=f"<U{max(width, 1)}")
    if kind == "b":
        return np.ascontiguousarray(y, dtype="<i8")
    if kind in "iu":
        if kind == "u" and y.size and int(y.max()) > np.iinfo(np.int64).max:
            raise InputError(f"{source}: {what} do not fit in int64")
        return np.ascontiguousarray(y, dtype="<i8")
    if kind == "f":
        _refuse_missing(np.isnan(y), source, what, row_base, row_word)
        if np.isinf(y).any():
            first = int(np.flatnonzero(np.isinf(y))[0])
            raise InputError(f"{source}: {what} contain infinite values (first at {row_word} "
                             f"{first + row_base})")
        with np.errstate(invalid="ignore"):  # huge floats do not fit int64: they stay float
            as_int = y.astype(np.int64)
        if np.array_equal(as_int, y):
            return np.ascontiguousarray(as_int, dtype="<i8")
        return np.ascontiguousarray(y, dtype="<f8")
    raise InputError(f"{source}: {what} have unsupported dtype {y.dtype}; use integers or text")


def _refuse_missing(missing: np.ndarray, source: Path, what: str, row_base: int, row_word: str) -> None:
    count = int(np.count_nonzero(missing))
    if count:
        first = int(np.flatnonzero(missing)[0]) + row_base
        raise InputError(f"{source}: {count} missing or NaN {what} (first at {row_word} {first}); "
                         f"every test example needs a label")


def _finish(X: np.ndarray, y: np.ndarray, source: Path) -> TestSet:
    if len(y) == 0 or X.shape[0] == 0:
        raise InputError(f"{source}: the test set is empty (0 examples)")
    if X.shape[0] != y.shape[0]:
        raise InputError(f"{source}: X has {X.shape[0]} rows but y has {y.shape[0]} labels; "
                         f"they must have one label per row")
    return TestSet(X=X, y=y, fingerprint=fingerprint_arrays(X, y), source=source)


def testset_from_arrays(X, y, source) -> TestSet:
    """A test set made in memory (e.g. by ``easeml-automl testset``), validated and brought to
    canonical form exactly as a loaded one; ``source`` names it in messages."""
    source = _resolve(source)
    y = _canonical_labels(np.asarray(y), source, "labels")
    X = _canonical_features(np.asarray(X), source, "")
    return _finish(X, y, source)


# --- readers -----------------------------------------------------------------------------------

def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} is not readable (permission denied)")


def _read_npz(path: Path, needs_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
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
        _refuse_missing(missing, path, what, 1, "data row")
    try:
        numeric = stripped.astype(np.float64)
    except ValueError:
        return _canonical_labels(stripped, path, what, 1, "data row")  # text labels
    return _canonical_labels(numeric, path, what, 1, "data row")


def _resolve(path) -> Path:
    return Path(os.fspath(path))


def load_testset(path, label_column: str = "label", key_env: str = crypto.DEFAULT_KEY_ENV) -> TestSet:
    """Load, validate and fingerprint a test set; every problem is an :class:`InputError`.

    ``label_column`` only matters for CSV. An encrypted file needs its key in ``key_env``;
    the plaintext stays in memory.
    """
    path = _resolve(path)
    _check_readable(path, "test set")
    if crypto.is_encrypted(path):
        return _load_encrypted(path, key_env)
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
    y = _canonical_labels(np.asarray(y), path, "labels", base, row_word)
    X = _canonical_features(np.asarray(X), path, "")
    return _finish(X, y, path)


def _load_encrypted(path: Path, key_env: str) -> TestSet:
    key = crypto.key_from_env(key_env, purpose=f"needed to decrypt the test set {path}")
    sinks: list[_CanonicalAssembler] = []

    def make_sink(header: crypto.EncryptedHeader) -> _CanonicalAssembler:
        sinks.append(_CanonicalAssembler(header, path))
        return sinks[0]

    header = crypto.decrypt_into_sink(path, key, make_sink, key_env=key_env)
    assembler = sinks[0]
    X, y = assembler.arrays()
    fp = assembler.hash.hexdigest()
    if fp != header.fingerprint:
        raise InputError(f"{path}: decrypted content does not match the fingerprint in its header")
    if _canonical_labels(y, path, "labels").dtype != y.dtype:
        raise assembler._bad("labels not in canonical form")
    return _finish_encrypted(X, y, fp, path)


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
    path = _resolve(path)
    _check_readable(path, "test set")
    if crypto.is_encrypted(path) and not os.environ.get(key_env, "").strip():
        return crypto.read_header(path).fingerprint, False
    return load_any_testset(path, label_column=label_column, key_env=key_env).fingerprint, True


def load_pool(path, label_column: str | None = "label") -> np.ndarray:
    """Features of an unlabelled pool (``.npz`` with ``X``, or CSV; a ``label_column``, if the
    CSV happens to have one, is ignored), as canonical float32, for the label request."""
    path = _resolve(path)
    _check_readable(path, "pool")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, _ = _read_npz(path, needs_labels=False)
    elif suffix == ".csv":
        X, _ = _read_csv(path, label_column, parse_labels=False)
    else:
        raise InputError(f"pool {path} has extension {path.suffix or '(none)'!r}; allowed: .npz, .csv")
    X = _canonical_features(np.asarray(X), path, "")
    if X.shape[0] == 0:
        raise InputError(f"pool {path} is empty (0 examples)")
    return X


# --- writers (owner-side tools) ----------------------------------------------------------------

def encrypt_testset(ts: TestSet, out_path, key: bytes, *,
                    chunk_bytes: int = crypto.DEFAULT_CHUNK_BYTES) -> crypto.EncryptedHeader:
    """Encrypt a loaded test set; its fingerprint is kept (it depends on the content only)."""
    parts = canonical_parts(ts.X, ts.y)
    return crypto.encrypt_to_file(parts, canonical_size(ts.X, ts.y), ts.fingerprint, key,
                                  _resolve(out_path), chunk_bytes=chunk_bytes)


def _iter_csv_lines(X: np.ndarray, y: np.ndarray | None, label_column: str,
                    rows: int = 65536) -> Iterator[str]:
    names = [f"x{i}" for i in range(X.shape[1])] + ([label_column] if y is not None else [])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(names)
    yield buf.getvalue()
    text_labels = y is not None and y.dtype.kind == "U"
    for start in range(0, X.shape[0], rows):
        # %.9g round-trips float32 exactly, so decrypt -> CSV -> load keeps the fingerprint.
        feats = [",".join(row) for row in np.char.mod("%.9g", X[start:start + rows]).tolist()]
        if y is None:
            yield "".join(f"{f}\n" for f in feats)
            continue
        ys = y[start:start + rows]
        if text_labels:
            yield "".join(f"{f},{_csv_field(label)}\n" for f, label in zip(feats, ys.tolist()))
        else:
            fmt = "%d" if y.dtype.kind == "i" else "%.17g"
            labels = np.char.mod(fmt, ys).tolist()
            yield "".join(f"{f},{label}\n" for f, label in zip(feats, labels))


def _csv_field(value: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([value])
    return buf.getvalue()


def _write_private(out: Path, X: np.ndarray, y: np.ndarray | None, label_column: str,
                   npz_key: str = "y") -> Path:
    """Write features (and labels, or another column: ``npz_key`` names it in an ``.npz``) as
    ``.npz`` or CSV by extension: mode 0600, temporary file then rename, so a failure never
    leaves a partial file under the final name."""
    suffix = out.suffix.lower()
    if suffix not in PLAIN_SUFFIXES:
        raise InputError(f"cannot write {out}: extension {out.suffix or '(none)'!r}; allowed: "
                         f"{', '.join(PLAIN_SUFFIXES)}")
    try:
        if suffix == ".npz":
            arrays = {"X": np.asarray(X)} if y is None else {"X": np.asarray(X), npz_key: np.asarray(y)}
            with atomic_write(out, "wb", perms=0o600) as fh:
                np.savez(fh, **arrays)
        else:
            with atomic_write(out, "w", perms=0o600, newline="") as fh:
                for chunk in _iter_csv_lines(X, y, label_column):
                    fh.write(chunk)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def save_testset(ts: TestSet, out_path, label_column: str = "label") -> Path:
    """Write a plaintext test set as ``.npz`` or CSV (by extension), readable only by its owner."""
    return _write_private(_resolve(out_path), ts.X, ts.y, label_column)


def save_pool(X: np.ndarray, out_path) -> Path:
    """Write an unlabelled pool (what :func:`load_pool` reads): ``.npz`` with ``X`` only, or a
    CSV of feature columns ``x0, x1, ...``; features in canonical float32."""
    out = _resolve(out_path)
    X = _canonical_features(np.asarray(X), out, "")
    if X.shape[0] == 0:
        raise InputError(f"pool {out} would be empty (0 examples)")
    return _write_private(out, X, None, "label")


# --- unlabelled test sets (labels arrive later: see easeml_ci.testsets.labels) ----------------------------
#
# A test set registered before its labels holds features and stable row ids. Its fingerprint is
# a second, versioned kind: the SHA-256 of canonical bytes that start with their own marker
# (``easeml-ci unlabelled testset v1``) and cover X and the ids, never labels, so labels added
# later keep the fingerprint and with it the budget. The marker separates the two kinds: no
# labelled test set's bytes can hash to an unlabelled one's. Labelled fingerprints are unchanged.
# Ids are canonical text (an integer id 7 and the text "7" are the same row), unique, non-empty.

_UNLABELLED_MAGIC = b"easeml-ci unlabelled testset v1 "
UNLABELLED_FINGERPRINT_KIND = "unlabelled-v1"


@dataclass(frozen=True, eq=False)
class UnlabelledTestSet:
    """Features and stable row ids of a test set whose labels arrive later (no labels here)."""

    __test__ = False

    X: np.ndarray
    ids: np.ndarray  # canonical text, one per row, unique
    fingerprint: str
    source: Path

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def row_of(self) -> dict[str, int]:
        """Row position of every id."""
        return {str(i): k for k, i in enumerate(self.ids.tolist())}

    def __repr__(self) -> str:
        return (f"UnlabelledTestSet(source={str(self.source)!r}, rows={len(self)}, "
                f"features={int(self.X.shape[1])}, fingerprint={self.fingerprint[:12]}...)")


def _unlabelled_preamble(X: np.ndarray, ids: np.ndarray) -> bytes:
    meta = json.dumps({"X": [X.dtype.str, list(X.shape)], "ids": [ids.dtype.str, list(ids.shape)]},
                      sort_keys=True, separators=(",", ":")).encode("ascii")
    head = _UNLABELLED_MAGIC + meta
    return head + b" " * _pad(len(head) + 1) + b"\n"


def unlabelled_parts(X: np.ndarray, ids: np.ndarray) -> list:
    return [_unlabelled_preamble(X, ids), memoryview(X).cast("B"), b"\0" * _pad(X.nbytes),
            memoryview(ids).cast("B")]


def fingerprint_unlabelled(X: np.ndarray, ids: np.ndarray) -> str:
    """SHA-256 (hex) of the canonical bytes of an unlabelled test set (features and ids)."""
    h = hashlib.sha256()
    for part in unlabelled_parts(X, ids):
        h.update(part)
    return h.hexdigest()


def canonical_row_ids(ids: np.ndarray, source: Path, row_base: int = 0, row_word: str = "index") -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise InputError(f"{source}: row ids have shape {ids.shape}; expected one id per row (1-D)")
    if ids.dtype.kind == "f":
        raise InputError(f"{source}: row ids are floating-point numbers; use integers or text")
    if ids.dtype.kind not in "iuUSb" or ids.dtype.kind == "b":
        raise InputError(f"{source}: row ids have unsupported dtype {ids.dtype}; use integers or text")
    if ids.dtype.kind == "S":
        try:
            ids = np.char.decode(ids, "utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{source}: row ids are bytes that are not UTF-8") from None
    text = np.char.strip(ids.astype(str)) if ids.size else ids.astype(str)
    empty = np.char.str_len(text) == 0 if text.size else np.zeros(0, bool)
    if empty.any():
        first = int(np.flatnonzero(empty)[0]) + row_base
        raise InputError(f"{source}: empty row id at {row_word} {first}; every row needs a stable id")
    _, first_at, counts = np.unique(text, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = int(np.min(first_at[counts > 1]))
        raise InputError(f"{source}: row id {str(text[dup])!r} appears more than once (first at {row_word} "
                         f"{dup + row_base}); row ids must be unique")
    width = int(np.char.str_len(text).max()) if text.size else 1
    return np.ascontiguousarray(text, dtype=f"<U{max(width, 1)}")


def unlabelled_from_arrays(X, ids, source) -> UnlabelledTestSet:
    source = _resolve(source)
    ids = canonical_row_ids(np.asarray(ids), source)
    X = _canonical_features(np.asarray(X), source, "")
    if len(ids) == 0:
        raise InputError(f"{source}: the test set is empty (0 rows)")
    if X.shape[0] != ids.shape[0]:
        raise InputError(f"{source}: X has {X.shape[0]} rows but there are {ids.shape[0]} row ids")
    return UnlabelledTestSet(X, ids, fingerprint_unlabelled(X, ids), source)


def load_unlabelled_testset(path, id_column: str = "id", key_env: str = crypto.DEFAULT_KEY_ENV,
                            ) -> UnlabelledTestSet:
    """Load a test set registered without labels: ``.npz`` with ``X`` and ``ids``, a CSV with an
    id column and feature columns, or either encrypted (``encrypt_unlabelled_testset``)."""
    path = _resolve(path)
    _check_readable(path, "test set")
    if crypto.is_encrypted(path):
        key = crypto.key_from_env(key_env, purpose=f"needed to decrypt the test set {path}")
        header, plain = crypto.decrypt_file(path, key, key_env=key_env)
        return _parse_unlabelled(bytes(plain), header.fingerprint, path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
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
    if not plain.startswith(_UNLABELLED_MAGIC) or newline < 0:
        raise bad
    try:
        meta = json.loads(plain[len(_UNLABELLED_MAGIC):newline].decode("ascii"))
        xd, xs = np.dtype(meta["X"][0]), tuple(int(v) for v in meta["X"][1])
        idd, ids_shape = np.dtype(meta["ids"][0]), tuple(int(v) for v in meta["ids"][1])
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        raise bad from None
    if xd != np.dtype("<f4") or idd.kind != "U" or len(xs) != 2 or len(ids_shape) != 1:
        raise bad
    start = newline + 1
    x_bytes = xs[0] * xs[1] * 4
    id_at = start + x_bytes + _pad(x_bytes)
    if id_at + ids_shape[0] * idd.itemsize != len(plain):
        raise bad
    X = np.frombuffer(plain, dtype=xd, count=xs[0] * xs[1], offset=start).reshape(xs)
    ids = np.frombuffer(plain, dtype=idd, count=ids_shape[0], offset=id_at)
    ts = unlabelled_from_arrays(X, ids, path)
    if ts.fingerprint != fingerprint:
        raise InputError(f"{path}: decrypted content does not match the fingerprint in its header")
    return ts


def encrypt_unlabelled_testset(ts: UnlabelledTestSet, out_path, key: bytes) -> crypto.EncryptedHeader:
    """Encrypt an unlabelled test set (same file format as a labelled one; its own fingerprint)."""
    parts = unlabelled_parts(ts.X, ts.ids)
    size = sum(len(memoryview(p).cast("B")) for p in parts)
    return crypto.encrypt_to_file(parts, size, ts.fingerprint, key, _resolve(out_path))


class _IsUnlabelled(InputError):
    """Raised while decrypting: the plaintext is an unlabelled test set (see :func:`load_any_testset`)."""


def is_unlabelled_file(path, label_column: str = "label", id_column: str = "id") -> bool:
    """Whether a plaintext test set file holds row ids and no (complete) labels, without loading
    it: an ``.npz`` with ``ids`` and no ``y``, or a CSV with the id column and no label column
    (or a label column with an empty cell: labelled in part). Encrypted files: see
    :func:`load_any_testset`. A file that is neither is left to the labelled loader's messages.
    """
    path = _resolve(path)
    if crypto.is_encrypted(path) or not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix == ".npz":
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
    path = _resolve(path)
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
    path = _resolve(path)
    if not path.is_file():
        raise InputError(f"{flag}: {given} does not exist or is not a file")
    if crypto.is_encrypted(path):
        raise InputError(f"{flag}: {given} is encrypted; the validation set is the team's own, "
                         "plaintext (.npz or .csv, the format of a test set)")
    return load_testset(path, label_column=label_column)


def load_encrypted(path, key_env: str = crypto.DEFAULT_KEY_ENV) -> "TestSet | UnlabelledTestSet":
    """Decrypt an encrypted test set, labelled or unlabelled (the plaintext says which)."""
    path = _resolve(path)
    try:
        return _load_encrypted(path, key_env)
    except _IsUnlabelled:
        key = crypto.key_from_env(key_env, purpose=f"needed to decrypt the test set {path}")
        header, plain = crypto.decrypt_file(path, key, key_env=key_env)
        return _parse_unlabelled(bytes(plain), header.fingerprint, path)


def load_plaintext(path, label_column: str = "label", id_column: str = "id",
                   ) -> "TestSet | UnlabelledTestSet":
    """A plaintext test set file: labelled, or (row ids without all labels) unlabelled."""
    path = _resolve(path)
    _check_readable(path, "test set")
    if is_unlabelled_file(path, label_column, id_column):
        if path.suffix.lower() == ".csv":
            return load_partly_labelled_csv(path, id_column, label_column)[0]
        return load_unlabelled_testset(path, id_column=id_column)
    return load_testset(path, label_column=label_column)


def load_any_testset(path, label_column: str = "label", id_column: str = "id",
                     key_env: str = crypto.DEFAULT_KEY_ENV) -> "TestSet | UnlabelledTestSet":
    """A labelled :class:`TestSet` or, for a file that holds row ids without (all) labels, an
    :class:`UnlabelledTestSet` (labels on demand: :mod:`easeml_ci.testsets.labels`). Plaintext labels
    of a partly labelled CSV are not returned here: ``testset register`` / ``encrypt`` move them
    into the label store."""
    path = _resolve(path)
    _check_readable(path, "test set")
    if crypto.is_encrypted(path):
        return load_encrypted(path, key_env)
    return load_plaintext(path, label_column, id_column)


def save_unlabelled_testset(ts: UnlabelledTestSet, out_path, id_column: str = "id") -> Path:
    """Write an unlabelled test set as ``.npz`` (``X``, ``ids``) or a CSV (the id column, then
    ``x0, x1, ...``), mode 0600; loading it back keeps the fingerprint."""
    # CSV: the ids go in as the "label" column of the labelled writer, under the id column's name
    return _write_private(_resolve(out_path), ts.X, ts.ids, id_column, npz_key="ids")
