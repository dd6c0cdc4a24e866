"""Writing test sets (the owner's tools): plaintext copies (mode 0600) and encrypted files."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator

import numpy as np

from . import crypto
from ..atomic import atomic_write
from ..errors import InputError
from .canonical import PLAIN_SUFFIXES, resolve, TestSet, UnlabelledTestSet, canonical_features, canonical_parts, canonical_size, unlabelled_parts


# --- writers (owner-side tools) ----------------------------------------------------------------

def encrypt_testset(ts: TestSet, out_path, key: bytes, *,
                    chunk_bytes: int = crypto.DEFAULT_CHUNK_BYTES) -> crypto.EncryptedHeader:
    """Encrypt a loaded test set; its fingerprint is kept (it depends on the content only)."""
    parts = canonical_parts(ts.X, ts.y)
    return crypto.encrypt_to_file(parts, canonical_size(ts.X, ts.y), ts.fingerprint, key,
                                  resolve(out_path), chunk_bytes=chunk_bytes)


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
    return _write_private(resolve(out_path), ts.X, ts.y, label_column)


def save_pool(X: np.ndarray, out_path) -> Path:
    """Write an unlabelled pool (what :func:`load_pool` reads): ``.npz`` with ``X`` only, or a
    CSV of feature columns ``x0, x1, ...``; features in canonical float32."""
    out = resolve(out_path)
    X = canonical_features(np.asarray(X), out, "")
    if X.shape[0] == 0:
        raise InputError(f"pool {out} would be empty (0 examples)")
    return _write_private(out, X, None, "label")


def encrypt_unlabelled_testset(ts: UnlabelledTestSet, out_path, key: bytes) -> crypto.EncryptedHeader:
    """Encrypt an unlabelled test set (same file format as a labelled one; its own fingerprint)."""
    parts = unlabelled_parts(ts.X, ts.ids)
    size = sum(len(memoryview(p).cast("B")) for p in parts)
    return crypto.encrypt_to_file(parts, size, ts.fingerprint, key, resolve(out_path))


def save_unlabelled_testset(ts: UnlabelledTestSet, out_path, id_column: str = "id") -> Path:
    """Write an unlabelled test set as ``.npz`` (``X``, ``ids``) or a CSV (the id column, then
    ``x0, x1, ...``), mode 0600; loading it back keeps the fingerprint."""
    # CSV: the ids go in as the "label" column of the labelled writer, under the id column's name
    return _write_private(resolve(out_path), ts.X, ts.ids, id_column, npz_key="ids")
