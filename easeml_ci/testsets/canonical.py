"""The canonical form of a test set, which its fingerprint hashes.

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

import collections
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import crypto
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

def pad(n: int) -> int:
    return -n % _ALIGN


def _preamble(X: np.ndarray, y: np.ndarray) -> bytes:
    meta = json.dumps(
        {"X": [X.dtype.str, list(X.shape)], "y": [y.dtype.str, list(y.shape)]},
        sort_keys=True, separators=(",", ":"),
    ).encode("ascii")
    head = _PREAMBLE_MAGIC + meta
    return head + b" " * pad(len(head) + 1) + b"\n"


def canonical_parts(X: np.ndarray, y: np.ndarray) -> list:
    """The canonical bytes of (X, y) as a list of buffers (no copy of the arrays)."""
    pre = _preamble(X, y)
    return [pre, memoryview(X).cast("B"), b"\0" * pad(X.nbytes), memoryview(y).cast("B")]


def canonical_size(X: np.ndarray, y: np.ndarray) -> int:
    return len(_preamble(X, y)) + X.nbytes + pad(X.nbytes) + y.nbytes


def fingerprint_arrays(X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 (hex) of the canonical bytes of already-canonical arrays."""
    h = hashlib.sha256()
    for part in canonical_parts(X, y):
        h.update(part)
    return h.hexdigest()


class OrderedHasher:
    """SHA-256 of byte spans handed over in order, hashed on a worker thread of its own.

    hashlib lets go of the GIL while it hashes, but the worker needs the GIL back between two
    calls, and the thread that decrypts holds it most of the time. SHA-256 is the slow part
    (about 1.7 GB/s on the development machine, AES-GCM about 9), so the worker takes every span
    queued since its last call and hashes the spans that follow each other in one buffer as one:
    whenever the decryption runs ahead, several 4 MiB chunks in one call (1M rows, 2026-12-07:
    reading the test set 0.087 s -> 0.077 s median; 0.048 s with no hashing at all).
    """

    def __init__(self):
        self.hash = hashlib.sha256()
        self._spans: collections.deque = collections.deque()  # (buffer view, start, end)
        self._changed = threading.Condition()
        self._busy = self._closed = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def hand_over(self, buffer: memoryview, start: int, end: int) -> None:
        """Hash ``buffer[start:end]`` on the worker, after everything handed over before; those
        bytes must stay unchanged until :meth:`wait` returns."""
        with self._changed:
            self._spans.append((buffer, start, end))
            self._changed.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="easeml-hash", daemon=True)
            self._thread.start()

    def hash_here(self, data) -> None:
        """Hash ``data`` on this thread, after everything handed over before."""
        self.wait()
        self.hash.update(data)

    def wait(self) -> None:
        with self._changed:
            while self._spans or self._busy:
                self._changed.wait()
        if self._failure is not None:
            raise self._failure

    def hexdigest(self) -> str:
        self.close()
        return self.hash.hexdigest()

    def close(self) -> None:
        """Wait for the hashing, then end the worker (after an error too)."""
        try:
            self.wait()
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()
            if self._thread is not None:
                self._thread.join()
                self._thread = None

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._spans and not self._closed:
                    self._changed.wait()
                if not self._spans:
                    return
                view, start, end = self._spans.popleft()
                while self._spans and self._spans[0][0] is view and self._spans[0][1] == end:
                    end = self._spans.popleft()[2]
                self._busy = True
            try:
                if self._failure is None:
                    self.hash.update(view[start:end])
            except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread by wait()
                self._failure = exc
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()


class CanonicalAssembler:
    """Receives the decrypted canonical bytes of an encrypted test set, chunk by chunk.

    Hashes them in order (the fingerprint), parses the preamble, and lays X and y out in two
    buffers of their own: chunks that fall inside one of them are decrypted in place, the rest
    (the preamble and chunks straddling a boundary) are copied from a scratch chunk. Why two
    buffers: the labels never share memory with the features, so a caller that is done with
    the features can drop them and free 80% of the test set while keeping the labels.

    One pass over the bytes: the buffers are not zero-filled first (every byte of them is
    written by a chunk; the total size is checked against the header line), and a chunk
    decrypted in place is hashed on a worker thread while the next one is read and decrypted
    (:class:`OrderedHasher`); :meth:`hexdigest` waits for the hashing to end. ``rehash=False``
    hashes nothing (a registered test set's check: see :func:`.readers.load_encrypted`).
    """

    _MAX_PREAMBLE = 4096

    def __init__(self, header: crypto.EncryptedHeader, source: Path, *, rehash: bool = True):
        self.total = header.plaintext_bytes
        self.source = source
        self.hasher = OrderedHasher() if rehash else None
        self.head = bytearray()
        self.meta: tuple | None = None  # (X dtype, X shape, y dtype, y shape)
        self.buffers: dict[str, np.ndarray] = {}
        self.regions: list[tuple[int, int, memoryview]] = []

    def _bad(self, why: str) -> InputError:
        return InputError(f"{self.source}: decrypted content is not an easeml-ci test set ({why})")

    def target(self, offset: int, size: int) -> memoryview | None:
        region = self._region(offset, size)
        if region is None:
            return None
        start, _, view = region
        return view[offset - start:offset - start + size]

    def _region(self, offset: int, size: int) -> tuple[int, int, memoryview] | None:
        """The region (start, end, view) that holds ``size`` bytes at ``offset`` whole, if any."""
        for start, end, view in self.regions:
            if start <= offset and offset + size <= end:
                return start, end, view
        return None

    def accept(self, offset: int, data: memoryview, in_place: bool) -> None:
        if in_place:  # its bytes stay where they are: hash them beside the next chunk's work
            if self.hasher is not None:
                start, _, view = self._region(offset, len(data))
                self.hasher.hand_over(view, offset - start, offset - start + len(data))
            return
        if self.hasher is not None:  # a scratch chunk is reused: hashed now, after those before
            self.hasher.hash_here(data)
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

    def hexdigest(self) -> str:
        """The fingerprint of every byte accepted so far (waits for the worker's hashing)."""
        return self.hasher.hexdigest()

    def close(self) -> None:
        """End the hashing worker (after an error too: nothing is left running)."""
        if self.hasher is not None:
            self.hasher.close()

    def _lay_out(self) -> None:
        head = bytes(self.head)
        if head.startswith(UNLABELLED_MAGIC):
            raise IsUnlabelled(f"{self.source} is an unlabelled test set")
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
        if start + x_bytes + pad(x_bytes) + y_bytes != self.total:
            raise self._bad("its size does not match its header line")
        self.meta = (xd, xs, yd, ys)
        # Not zero-filled: every byte is written by a chunk (sizes checked just above).
        self.buffers = {"X": np.empty(x_bytes + pad(x_bytes), dtype=np.uint8),
                        "y": np.empty(y_bytes, dtype=np.uint8)}
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
        if bytes(self.head) != _preamble(X, y) or self.buffers["X"][X.nbytes:].any():
            raise self._bad("not in canonical form")
        return X, y


# --- validation and normalisation --------------------------------------------------------------

def canonical_features(X: np.ndarray, source: Path, where: str) -> np.ndarray:
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


def canonical_labels(y: np.ndarray, source: Path, what: str, row_base: int = 0,
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
        refuse_missing(missing, source, what, row_base, row_word)
        width = int(np.char.str_len(y).max()) if y.size else 1
        return np.ascontiguousarray(y, dtype=f"<U{max(width, 1)}")
    if kind == "b":
        return np.ascontiguousarray(y, dtype="<i8")
    if kind in "iu":
        if kind == "u" and y.size and int(y.max()) > np.iinfo(np.int64).max:
            raise InputError(f"{source}: {what} do not fit in int64")
        return np.ascontiguousarray(y, dtype="<i8")
    if kind == "f":
        refuse_missing(np.isnan(y), source, what, row_base, row_word)
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


def refuse_missing(missing: np.ndarray, source: Path, what: str, row_base: int, row_word: str) -> None:
    count = int(np.count_nonzero(missing))
    if count:
        first = int(np.flatnonzero(missing)[0]) + row_base
        raise InputError(f"{source}: {count} missing or NaN {what} (first at {row_word} {first}); "
                         f"every test example needs a label")


def finish(X: np.ndarray, y: np.ndarray, source: Path) -> TestSet:
    if len(y) == 0 or X.shape[0] == 0:
        raise InputError(f"{source}: the test set is empty (0 examples)")
    if X.shape[0] != y.shape[0]:
        raise InputError(f"{source}: X has {X.shape[0]} rows but y has {y.shape[0]} labels; "
                         f"they must have one label per row")
    return TestSet(X=X, y=y, fingerprint=fingerprint_arrays(X, y), source=source)


def testset_from_arrays(X, y, source) -> TestSet:
    """A test set made in memory (e.g. by ``easeml-automl testset``), validated and brought to
    canonical form exactly as a loaded one; ``source`` names it in messages."""
    source = resolve(source)
    y = canonical_labels(np.asarray(y), source, "labels")
    X = canonical_features(np.asarray(X), source, "")
    return finish(X, y, source)


# --- unlabelled test sets (labels arrive later: see easeml_ci.testsets.labels) ----------------------------
#
# A test set registered before its labels holds features and stable row ids. Its fingerprint is
# a second, versioned kind: the SHA-256 of canonical bytes that start with their own marker
# (``easeml-ci unlabelled testset v1``) and cover X and the ids, never labels, so labels added
# later keep the fingerprint and with it the budget. The marker separates the two kinds: no
# labelled test set's bytes can hash to an unlabelled one's. Labelled fingerprints are unchanged.
# Ids are canonical text (an integer id 7 and the text "7" are the same row), unique, non-empty.

UNLABELLED_MAGIC = b"easeml-ci unlabelled testset v1 "
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
    head = UNLABELLED_MAGIC + meta
    return head + b" " * pad(len(head) + 1) + b"\n"


def unlabelled_parts(X: np.ndarray, ids: np.ndarray) -> list:
    return [_unlabelled_preamble(X, ids), memoryview(X).cast("B"), b"\0" * pad(X.nbytes),
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
    source = resolve(source)
    ids = canonical_row_ids(np.asarray(ids), source)
    X = canonical_features(np.asarray(X), source, "")
    if len(ids) == 0:
        raise InputError(f"{source}: the test set is empty (0 rows)")
    if X.shape[0] != ids.shape[0]:
        raise InputError(f"{source}: X has {X.shape[0]} rows but there are {ids.shape[0]} row ids")
    return UnlabelledTestSet(X, ids, fingerprint_unlabelled(X, ids), source)


class IsUnlabelled(InputError):
    """Raised while decrypting: the plaintext is an unlabelled test set (see :func:`load_any_testset`)."""


def resolve(path) -> Path:
    return Path(os.fspath(path))
