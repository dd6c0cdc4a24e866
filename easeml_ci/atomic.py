"""Replace a file so that a reader sees the old content or the new, never a part of either.

Every file easeml-ci replaces (encrypted test sets, plaintext copies, label stores, ledger heads,
label requests, model cards, exported models) goes through :func:`atomic_write`. The temporary
file sits in the *same folder* (a rename is atomic only within one file system), has a unique
name (two writers never share one) and the final file's permissions from the start (a private
file is never readable by others, not even half-written). The data is fsynced before the rename
(the rename must not reach the disk before the data does), and the folder after it (so the
rename itself is durable).

A failure at any point removes the temporary file and leaves the final name as it was.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write", "write_bytes", "fsync_dir"]


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, perms: int = 0o644,
                 encoding: str | None = None, newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` durably.

    ``mode`` is ``"wb"`` or ``"w"`` (text, with ``encoding`` and ``newline`` as for ``open``).
    ``perms`` are the final file's permission bits (``0o600`` for anything private).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    folder = path.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, perms)
        kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as fh:
            fd = -1  # the file object owns it now
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(folder)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes, *, perms: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see :func:`atomic_write`)."""
    with atomic_write(path, "wb", perms=perms) as fh:
        fh.write(data)
