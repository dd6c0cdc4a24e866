"""A test set file, asked once what it is.

The gate needs to know a test set's identity (its fingerprint) before it may open it, and then
open it once. :class:`TestSetSource` reads the file's first bytes once to learn whether it is
encrypted; an encrypted file's fingerprint comes from its clear header (bound into every chunk,
so decryption refuses a header that lies); a plaintext file is read, canonicalised and hashed in
one pass and kept until :meth:`load` hands it over. Decryption happens in :meth:`load` only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from . import crypto
from .readers import TestSet, UnlabelledTestSet, load_encrypted, load_plaintext

__all__ = ["TestSetSource"]


@dataclass(eq=False)
class TestSetSource:
    """The test set at ``path`` (``given`` as the user wrote it, for messages)."""

    path: Path
    given: str
    label_column: str = "label"
    id_column: str = "id"
    key_env: str = crypto.DEFAULT_KEY_ENV
    encrypted: bool = field(init=False)
    header: crypto.EncryptedHeader | None = field(init=False, default=None)
    _plain: "TestSet | UnlabelledTestSet | None" = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.encrypted = crypto.is_encrypted(self.path)
        if self.encrypted:
            self.header = crypto.read_header(self.path)

    @property
    def read(self) -> bool:
        """Whether the content is in memory (a plaintext file is read to fingerprint it)."""
        return self._plain is not None

    def fingerprint(self) -> str:
        """The test set's identity, without decrypting an encrypted file."""
        if self.header is not None:
            return self.header.fingerprint
        return self._read_plain().fingerprint

    def peek(self) -> "TestSet | UnlabelledTestSet | None":
        """The content if it is already in memory (plaintext), else None (never decrypts)."""
        return self._plain

    def key(self) -> bytes | None:
        """The test-set key of an encrypted file (from ``key_env``), None for a plaintext one."""
        if not self.encrypted:
            return None
        return crypto.key_from_env(self.key_env, purpose=f"needed to decrypt the test set {self.given}")

    def load(self, *, trust_header: bool = False) -> "TestSet | UnlabelledTestSet":
        """Decrypt (or hand over) the content; the source keeps no copy afterwards.

        ``trust_header``: an encrypted test set's fingerprint is its authenticated header's,
        not hashed again (a registered test set, whose registration re-hashed it:
        :func:`.readers.load_encrypted`)."""
        if not self.encrypted:  # read (and fingerprinted) once, handed over as it is
            ts, self._plain = self._read_plain(), None
            return ts
        ts = load_encrypted(self.path, self.key_env, rehash=not trust_header)
        if ts.fingerprint != self.header.fingerprint:  # cannot happen for an authentic file
            raise InputError(f"test set {self.given}: its content does not match the "
                             "fingerprint its header claims; refusing it")
        return ts

    def _read_plain(self) -> "TestSet | UnlabelledTestSet":
        if self._plain is None:
            self._plain = load_plaintext(self.path, self.label_column, self.id_column)
        return self._plain
