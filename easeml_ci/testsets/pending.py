"""The pending store: what a check in rounds keeps until its round is closed (issue 17).

A check of a new pair under ``rounds:`` reserves its step, evaluates both models on every row and
seals their predictions here; ``easeml-ci round close`` reads them back, decides on the labels
present at the round's end and completes the step. The store sits beside the label store
(``LABELSTORE.pending/``, one file per step), wherever the owner keeps that (outside the work
tree), so the team neither reads nor swaps what the close decides on.

Format (version 1), one file ``step-SEQ.sealed`` per reserved step::

    magic "EASEMLPD" | 12-byte random nonce | AES-256-GCM(ciphertext + tag)

under ``derive_key(owner key, "pending")`` (the test-set key, or the reading-order secret of a
plaintext test set), with the associated data ``easeml-ci-pending/v1/FINGERPRINT/SEQ/PAIR``: a
record moved to another step, pair or test set fails authentication. The plaintext is a JSON
header line (format, version, fingerprint, step, pair, round, rows, model_failed, and each
array's dtype and length) followed by the arrays' raw bytes, zero-padded to a size that depends
on the row count only (:func:`padded_size`): the store's size and growth say how many checks are
pending (public anyway: the ledger lists the steps), never anything about the labels.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_bytes
from ..errors import InputError
from . import crypto

FORMAT = "easeml-ci-pending"
VERSION = 1
MAGIC = b"EASEMLPD"
PURPOSE = "pending"
SUFFIX = ".pending"
_BLOCK = 64 * 1024


def default_pending_path(label_store_path) -> Path:
    p = Path(label_store_path)
    return p.with_name(p.name + SUFFIX)


def padded_size(rows: int, length: int) -> int:
    """The plaintext size of a record for ``rows`` rows: room for two 8-byte predictions per
    row and a header, in 64 KiB blocks; a larger record (long text labels) rounds up to the
    next power of two of that (a function of its predictions, which the team knows, not of
    the labels)."""
    size = -(-(16 * rows + 4096) // _BLOCK) * _BLOCK
    while size < length:
        size *= 2
    return size


@dataclass(frozen=True)
class PendingRecord:
    """A pair's predictions on every row, kept for its round's close (SECRET to the gate)."""

    fingerprint: str
    step: int
    pair: str
    round: int
    new: np.ndarray | None
    old: np.ndarray | None
    model_failed: bool = False


def _arrays(record: PendingRecord) -> list[tuple[str, np.ndarray]]:
    out = []
    for name in ("new", "old"):
        value = getattr(record, name)
        if value is None:
            continue
        arr = np.asarray(value)
        if arr.dtype == object:
            arr = arr.astype(str)
        out.append((name, np.ascontiguousarray(arr)))
    return out


def _associated(fingerprint: str, step: int, pair: str) -> bytes:
    return f"{FORMAT}/v{VERSION}/{fingerprint}/{step}/{pair}".encode()


class PendingStore:
    """The pending records of one test set, sealed under ``derive_key(key, "pending")``."""

    def __init__(self, path, key: bytes):
        self.path = Path(path)
        self._key = crypto.derive_key(key, PURPOSE)

    def file(self, step: int) -> Path:
        return self.path / f"step-{step:06d}.sealed"

    def seal(self, record: PendingRecord, rows: int) -> Path:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        arrays = _arrays(record)
        header = {"format": FORMAT, "version": VERSION, "fingerprint": record.fingerprint,
                  "step": record.step, "pair": record.pair, "round": record.round, "rows": rows,
                  "model_failed": bool(record.model_failed),
                  "arrays": [[name, a.dtype.str, len(a)] for name, a in arrays]}
        body = json.dumps(header, sort_keys=True).encode() + b"\n" + b"".join(
            a.tobytes() for _, a in arrays)
        body += b"\0" * (padded_size(rows, len(body)) - len(body))
        nonce = os.urandom(12)
        sealed = AESGCM(self._key).encrypt(nonce, body, _associated(record.fingerprint,
                                                                     record.step, record.pair))
        target = self.file(record.step)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(target, MAGIC + nonce + sealed, perms=0o600)
        except OSError as exc:
            raise InputError(f"cannot write the pending store {self.path}: "
                             f"{exc.strerror or exc}") from None
        return target

    def open(self, fingerprint: str, step: int, pair: str) -> PendingRecord | None:
        """The record of ``step`` (None when its check died before sealing it)."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        target = self.file(step)
        if not target.exists():
            return None
        raw = target.read_bytes()
        try:
            if not raw.startswith(MAGIC):
                raise InvalidTag
            body = AESGCM(self._key).decrypt(raw[8:20], raw[20:], _associated(fingerprint, step, pair))
        except InvalidTag:
            raise InputError(f"{target}: not the sealed pending record of step {step} of test set "
                             f"{fingerprint[:12]} (wrong key, or the file was edited or moved); "
                             "restore it from the owner's copy") from None
        line, _, rest = body.partition(b"\n")
        header = json.loads(line)
        arrays, offset = {}, 0
        for name, dtype, length in header["arrays"]:
            dt = np.dtype(dtype)
            arrays[name] = np.frombuffer(rest, dtype=dt, count=length, offset=offset).copy()
            offset += dt.itemsize * length
        return PendingRecord(fingerprint, step, pair, int(header["round"]), arrays.get("new"),
                             arrays.get("old"), bool(header["model_failed"]))


__all__ = ["PendingRecord", "PendingStore", "default_pending_path", "padded_size"]
