"""Replace a file so that a reader sees the old content or the new, never a part of either.

Every file easeml-ci replaces (encrypted test sets, plaintext copies, label stores, ledger heads,
label requests, model cards, exported models) goes through :func:`atomic_write`. The temporary
file sits in the *same folder* (a rename is atomic only within one file system), has a unique
name (two writers never share one) and the final file's permissions from the start (a private
file is never readable by others, not even half-written). The data is fsynced before the rename
(the rename must not reach the disk before the data does), and the folder after it (so the
rename itself is durable).

A failure at any point removes the temporary file and leaves the final name as it was. A full
disk (``ENOSPC``, ``EDQUOT``) is :class:`~easeml_ci.errors.DiskFull` naming the file (exit 2),
here and wherever a write goes through :func:`naming_full_disk`.

:func:`stage` writes the replacement now and puts it in place later (:meth:`Staged.commit`,
a rename, which takes no space): the ledger stages its head before it appends a line, so a disk
that fills up cannot leave the head behind its entries.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

from .errors import DiskFull

__all__ = ["FULL_DISK", "Staged", "atomic_write", "atomic_write_in", "fsync_dir", "naming_full_disk", "stage",
           "write_bytes"]

#: The errors of a write that found no room: no space left, or the disk quota exceeded.
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def naming_full_disk(path: str | os.PathLike, *, unchanged: bool = True) -> Iterator[None]:
    """Turn a full disk inside the block into :class:`DiskFull` naming ``path`` (an OSError from
    ``write`` does not say which file it was writing)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in FULL_DISK:
            raise
        raise DiskFull(path, exc.strerror or os.strerror(exc.errno), unchanged=unchanged) from None


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
    path = Path(path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with atomic_write_in(folder, path.name, mode, perms=perms, encoding=encoding,
                             newline=newline, shown=path) as fh:
            yield fh
    finally:
        os.close(folder)


@contextlib.contextmanager
def atomic_write_in(dir_fd: int, name: str, mode: str = "wb", *, perms: int = 0o644,
                    encoding: str | None = None, newline: str | None = None,
                    shown: str | os.PathLike | None = None) -> Iterator[IO]:
    """:func:`atomic_write` of the file ``name`` in the open folder ``dir_fd``: every step
    (create, rename, fsync) is relative to that folder, and the temporary file is created
    without following a link (``O_EXCL | O_NOFOLLOW``), so a folder that was checked once stays
    the one written to (:class:`automl_runner.folders.TenantFolder`). ``shown``: the path a
    full disk names (default ``name``)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    with naming_full_disk(shown if shown is not None else name):
        with _replacing(dir_fd, name, mode, perms, encoding, newline) as fh:
            yield fh


def _temporary(dir_fd: int, name: str, perms: int) -> tuple[int, str]:
    """A new file ``.NAME.<random>.tmp`` in ``dir_fd``, open for writing with ``perms``."""
    while True:
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perms,
                         dir_fd=dir_fd)
        except FileExistsError:
            continue
        os.fchmod(fd, perms)  # the umask does not narrow them
        return fd, tmp


@contextlib.contextmanager
def _replacing(dir_fd: int, name: str, mode: str, perms: int, encoding, newline
               ) -> Iterator[IO]:
    fd, tmp = _temporary(dir_fd, name, perms)
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as fh:
            fd = -1  # the file object owns it now
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        tmp = None
        os.fsync(dir_fd)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)


def write_bytes(path: str | os.PathLike, data: bytes, *, perms: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see :func:`atomic_write`)."""
    with atomic_write(path, "wb", perms=perms) as fh:
        fh.write(data)


class Staged:
    """A replacement of ``path`` written and fsynced beside it, put in place by :meth:`commit`
    (a rename: no space needed) or dropped by :meth:`discard`."""

    def __init__(self, path: Path, tmp: str):
        self.path, self._tmp = path, tmp

    def commit(self) -> None:
        os.replace(self._tmp, self.path)
        self._tmp = None
        fsync_dir(self.path.parent)

    def discard(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


def stage(path: str | os.PathLike, data: bytes, *, perms: int = 0o644) -> Staged:
    """Write ``data`` for ``path`` now (a full disk raises :class:`DiskFull` here, with nothing
    changed); :meth:`Staged.commit` puts it in place."""
    path = Path(path)
    with naming_full_disk(path):
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd, name = _temporary(folder, path.name, perms)
        finally:
            os.close(folder)
        tmp = str(path.parent / name)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
    return Staged(path, tmp)
