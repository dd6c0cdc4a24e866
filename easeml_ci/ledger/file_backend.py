"""A ledger kept in local files: ``<dir>/<fingerprint>.jsonl`` plus a head sidecar.

Layout, one test set per fingerprint:

* ``<fp>.jsonl`` — append-only JSON lines, one hash-chained entry per line.
* ``<fp>.head`` — ``{"length": n, "hash": h}`` of the last append, replaced atomically. It lets
  every read notice a truncated tail, which a hash chain alone cannot (a prefix of a valid chain
  is a valid chain). It is written before the first line (``{"length": 0, "hash": null}``) and
  after every append, so a deleted ``.jsonl`` reads as truncated, not as a fresh ledger.
* ``<fp>.lock`` — the file whose ``fcntl.flock`` serialises writers (exclusive) against readers
  (shared). A lock held by a killed process is released by the kernel.

Durability: each append is one ``write`` of the whole line, then ``fsync`` of the file (and of
the directory when the file is new) *before* :meth:`FileBackend.append` returns, so the caller
may reveal the verdict only once the step is on disk (commit, then reveal).

Torn lines. A process killed mid-``write`` can leave a fragment without its newline. Readers
take a shared lock, so under it no writer is in flight and any unparseable line is a genuine
tear; it is returned as a ``torn`` entry, which the budget counts as a spent step (never
under-counting). The next writer, under the exclusive lock, terminates the fragment with a
newline and appends after it, so the file stays line-structured and the tear stays on record.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from ..atomic import FULL_DISK, atomic_write, fsync_dir, naming_full_disk, stage
from .chain import canonical, parse_lines
from .errors import LedgerConflict, LedgerCorrupt

_FINGERPRINT = re.compile(r"^[0-9a-f]{16,128}$")


class FileBackend:
    """Hash-chained JSON-lines ledgers in one directory, safe across processes on one machine."""

    name = "file"

    def __init__(self, directory: str | os.PathLike, *,
                 write_line: Callable[[int, bytes], None] | None = None):
        """``write_line(fd, line)`` puts one whole line on the open ledger file (the default
        writes it in one go); a crash test passes its own to stop a writer half-way."""
        self.directory = Path(directory)
        self._write_line = write_line or _write_all

    def __repr__(self) -> str:
        return f"FileBackend({str(self.directory)!r})"

    # --- paths and locking -----------------------------------------------------------------
    def _path(self, fingerprint: str, suffix: str) -> Path:
        if not _FINGERPRINT.match(fingerprint):
            raise LedgerCorrupt(f"ledger: fingerprint {fingerprint!r} is not a lowercase hex digest")
        return self.directory / f"{fingerprint}{suffix}"

    @contextmanager
    def _locked(self, fingerprint: str, exclusive: bool):
        lock_path = self._path(fingerprint, ".lock")
        if exclusive:
            self.directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            if exclusive:
                raise LedgerCorrupt(f"ledger: cannot write {lock_path}: permission denied") from None
            yield False  # a read-only copy of a ledger: no writer can be active in it
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield True
        finally:
            os.close(fd)  # closing releases the flock

    # --- reading -----------------------------------------------------------------------------
    def _read(self, fingerprint: str) -> tuple[list[dict], bytes]:
        path = self._path(fingerprint, ".jsonl")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], b""
        except OSError as exc:
            raise LedgerCorrupt(f"ledger: cannot read {path}: {exc.strerror}") from None
        return parse_lines(data), data

    def load(self, fingerprint: str) -> list[dict]:
        """All entries, oldest first (torn lines as ``{"kind": "torn"}`` entries).

        Read under the shared lock, so a line a writer is still writing is never mistaken for
        a torn one. A ledger that was never written is read without creating anything (writers
        create the lock file before the data file, so "neither exists" is a consistent view).
        """
        if not self._path(fingerprint, ".lock").exists() and \
                not self._path(fingerprint, ".jsonl").exists():
            return []
        with self._locked(fingerprint, exclusive=False):
            return self._read(fingerprint)[0]

    def snapshot(self, fingerprint: str) -> tuple[list[dict], dict | None]:
        """Entries and head read under one shared lock: a consistent view for ``verify``."""
        def untouched() -> bool:
            return not self._path(fingerprint, ".lock").exists() and \
                not self._path(fingerprint, ".jsonl").exists()

        if untouched():
            # The head is read between two looks: a writer creates the lock file before it
            # writes anything, so if nothing exists after the head was read, nothing had been
            # written when it was (a head read after a writer started could be ahead of the
            # empty entries and look like a truncation).
            head = self.head(fingerprint)
            if untouched():
                return [], head
        with self._locked(fingerprint, exclusive=False):
            return self._read(fingerprint)[0], self.head(fingerprint)

    def head(self, fingerprint: str) -> dict | None:
        """The sidecar written after the last append, or None if there is none."""
        path = self._path(fingerprint, ".head")
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"length": None, "hash": None, "unreadable": True}

    # --- writing -----------------------------------------------------------------------------
    def append(self, fingerprint: str, entry: dict, expected_length: int) -> None:
        """Append ``entry`` iff the ledger holds exactly ``expected_length`` entries.

        Durable before returning. Raises :class:`LedgerConflict` when another writer got there
        first; nothing is written then.
        """
        line = canonical(entry) + b"\n"
        with self._locked(fingerprint, exclusive=True):
            entries, data = self._read(fingerprint)
            if len(entries) != expected_length:
                raise LedgerConflict(expected_length, len(entries))
            if data and not data.endswith(b"\n"):
                line = b"\n" + line  # close a torn fragment so it stays a line of its own
            path = self._path(fingerprint, ".jsonl")
            is_new = not path.exists()
            if is_new and self.head(fingerprint) is None:
                # The head exists before the first line does: a crash between that line and
                # its head update then reads as a line past the head (a warning), never as a
                # deleted head (which would refuse the ledger for good).
                self._write_head(fingerprint, expected_length, None)
            # The new head is written (staged) before the line and renamed into place after it:
            # a full disk then fails before anything is appended, or the line is rolled back,
            # and never leaves the head behind its entries.
            head = stage(self._path(fingerprint, ".head"),
                         _head_bytes(expected_length + 1, entry.get("hash")))
            try:
                with naming_full_disk(path):
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    try:
                        size = os.fstat(fd).st_size
                        try:
                            self._write_line(fd, line)
                            os.fsync(fd)
                        except OSError as exc:
                            if exc.errno in FULL_DISK:  # no half line left behind (we hold the lock)
                                os.ftruncate(fd, size)
                                os.fsync(fd)
                            raise
                    finally:
                        os.close(fd)
                if is_new:
                    fsync_dir(self.directory)
            except BaseException:
                head.discard()
                raise
            head.commit()

    def rewrite(self, fingerprint: str, entries: list[dict], expected_length: int) -> None:
        """Replace the whole ledger (``ledger migrate`` only) iff it holds ``expected_length``
        entries; atomic (a reader sees the old or the new file), head updated after."""
        with self._locked(fingerprint, exclusive=True):
            if len(self._read(fingerprint)[0]) != expected_length:
                raise LedgerConflict(expected_length, len(self._read(fingerprint)[0]))
            with atomic_write(self._path(fingerprint, ".jsonl"), "wb") as fh:
                fh.write(b"".join(canonical(entry) + b"\n" for entry in entries))
            self._write_head(fingerprint, len(entries), entries[-1].get("hash") if entries else None)

    def _write_head(self, fingerprint: str, length: int, last_hash: str | None) -> None:
        with atomic_write(self._path(fingerprint, ".head"), "wb") as fh:
            fh.write(_head_bytes(length, last_hash))

    def fingerprints(self) -> list[str]:
        """Fingerprints of all ledgers in the directory (for ``ledger status`` without a test set)."""
        if not self.directory.is_dir():
            return []
        # A head without its lines is listed too: that ledger was deleted, and must say so.
        stems = {p.stem for pattern in ("*.jsonl", "*.head") for p in self.directory.glob(pattern)}
        return sorted(stem for stem in stems if _FINGERPRINT.match(stem))


def _head_bytes(length: int, last_hash: str | None) -> bytes:
    return json.dumps({"length": length, "hash": last_hash}).encode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


