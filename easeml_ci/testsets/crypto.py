"""Authenticated encryption of test sets (AES-256-GCM from ``cryptography``).

Why: the test set is the gate's secret. It may live in the repository (or a CI cache) only as
ciphertext; a check decrypts it in memory with a key taken from an environment variable (a CI
secret), never from the command line where it would land in shell history and process lists.

File layout (all integers little-endian)::

    magic            8 bytes   b"EASEMLTS"
    header length    4 bytes   uint32
    header           JSON      format, version, cipher, fingerprint, key_id, chunk_bytes,
                               plaintext_bytes, chunks
    chunk 0..k-1     12-byte random nonce, then ciphertext + 16-byte GCM tag

The plaintext is cut into chunks (4 MiB by default) so that a test set of any size can be
decrypted chunk by chunk straight into the memory where it will live (a sink decides where):
peak memory is the plaintext plus one chunk, not ciphertext plus plaintext. Every chunk is authenticated together with the
whole header (which carries the test set's fingerprint), its index and whether it is the last
one, so a swapped or edited header, reordered, dropped or appended chunks all fail
authentication. The header's ``key_id`` (an HMAC of a constant under the key; it reveals nothing
about the key) lets us tell "wrong key" apart from "tampered file".

The header is readable without the key, so a check (or ``easeml-ci testset fingerprint``) can
know which ledger a test set belongs to before anyone decrypts it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Protocol

from ..atomic import atomic_write
from ..errors import InputError

MAGIC = b"EASEMLTS"
FORMAT = "easeml-ci-testset"
VERSION = 1
CIPHER = "AES-256-GCM"
DEFAULT_KEY_ENV = "EASEML_TESTSET_KEY"
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
_MAX_HEADER_BYTES = 64 * 1024
_KEY_ID_CONTEXT = b"easeml-ci/testset-key-id/v1"
_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]+={0,2}")


@dataclass(frozen=True)
class EncryptedHeader:
    """The clear-text header of an encrypted test set (authenticated, not secret)."""

    fingerprint: str
    key_id: str
    chunk_bytes: int
    plaintext_bytes: int
    chunks: int
    raw: bytes  # the exact header bytes, bound into every chunk's associated data
    data_offset: int  # where chunk 0 starts in the file


def generate_key() -> str:
    """A fresh 256-bit key as URL-safe base64 (what goes into the CI secret)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    """A public 64-bit tag of the key: lets us say "wrong key" without revealing the key."""
    return hmac.new(key, _KEY_ID_CONTEXT, hashlib.sha256).hexdigest()[:16]


def derive_key(key: bytes, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose`` (HKDF-SHA256 from ``cryptography``), derived from the
    test-set key: the ledger's MAC key, the secret reading order. Keys for different purposes are
    independent, and none of them tells anything about the test-set key or the others."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if not purpose:
        raise ValueError("derive_key needs a purpose")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=b"easeml-ci/" + purpose.encode("utf-8")).derive(key)


def key_from_env(env_name: str = DEFAULT_KEY_ENV, *, purpose: str = "") -> bytes:
    """Read and decode the key from ``env_name``; a missing or malformed key is an InputError.

    The message names the variable, never its value.
    """
    value = os.environ.get(env_name)
    why = f" ({purpose})" if purpose else ""
    if value is None or not value.strip():
        raise InputError(
            f"the environment variable {env_name} is not set{why}; set it to the test-set key "
            f"(create one with `easeml-ci testset keygen` and store it as a CI secret)"
        )
    text = value.strip()
    try:
        if not _URLSAFE_B64.fullmatch(text):
            raise ValueError("alphabet")
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InputError(
            f"the environment variable {env_name} is not URL-safe base64; it must hold a key "
            f"made by `easeml-ci testset keygen` (32 random bytes)"
        ) from None
    if len(key) != KEY_BYTES:
        raise InputError(
            f"the environment variable {env_name} decodes to {len(key)} bytes; a test-set key is "
            f"{KEY_BYTES} bytes (make one with `easeml-ci testset keygen`)"
        )
    return key


def is_encrypted(path: Path) -> bool:
    """True when the file starts with our magic bytes (whatever its name)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _aad(header_raw: bytes, index: int, last: bool) -> bytes:
    return header_raw + struct.pack("<QB", index, 1 if last else 0)


def encrypt_to_file(
    parts: Iterable[memoryview | bytes],
    total_bytes: int,
    fingerprint: str,
    key: bytes,
    out_path: Path,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> EncryptedHeader:
    """Encrypt the concatenation of ``parts`` (``total_bytes`` long) into ``out_path``.

    The file is written next to its destination and renamed into place, so a crash never
    leaves a half-written test set under the final name.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    chunks = max(1, -(-total_bytes // chunk_bytes))
    header = {
        "format": FORMAT,
        "version": VERSION,
        "cipher": CIPHER,
        "fingerprint": fingerprint,
        "key_id": key_id(key),
        "chunk_bytes": chunk_bytes,
        "plaintext_bytes": total_bytes,
        "chunks": chunks,
    }
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    aead = AESGCM(key)
    out_path = Path(out_path)
    with atomic_write(out_path, "wb", perms=0o644) as fh:
        fh.write(MAGIC + struct.pack("<I", len(raw)) + raw)
        index = 0
        for chunk in _rechunk(parts, chunk_bytes, total_bytes):
            nonce = os.urandom(NONCE_BYTES)
            fh.write(nonce)
            fh.write(aead.encrypt(nonce, chunk, _aad(raw, index, index == chunks - 1)))
            index += 1
        if index != chunks:  # pragma: no cover - guards a caller passing a wrong total
            raise ValueError(f"expected {chunks} chunks, produced {index}")
    return EncryptedHeader(fingerprint, header["key_id"], chunk_bytes, total_bytes, chunks, raw,
                           len(MAGIC) + 4 + len(raw))


def _rechunk(parts: Iterable[memoryview | bytes], chunk_bytes: int, total: int):
    """Yield ``total`` bytes from ``parts`` in pieces of exactly ``chunk_bytes`` (last: rest)."""
    pending = bytearray()
    produced = 0
    for part in parts:
        view = memoryview(part).cast("B")
        while len(view):
            if not pending and len(view) >= chunk_bytes:
                yield view[:chunk_bytes]
                produced += chunk_bytes
                view = view[chunk_bytes:]
                continue
            take = min(chunk_bytes - len(pending), len(view))
            pending += view[:take]
            view = view[take:]
            if len(pending) == chunk_bytes:
                yield bytes(pending)
                produced += chunk_bytes
                pending.clear()
    if pending or produced == 0:
        yield bytes(pending)
        produced += len(pending)
    if produced != total:  # pragma: no cover - guards a caller passing a wrong total
        raise ValueError(f"parts hold {produced} bytes, expected {total}")


def read_header(path: Path) -> EncryptedHeader:
    """Parse the clear-text header (no key needed); InputError if it is not our format."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _read_header(fh, path)
    except OSError as exc:
        raise InputError(f"cannot read encrypted test set {path}: {exc.strerror or exc}") from None


def _read_header(fh: BinaryIO, path: Path) -> EncryptedHeader:
    start = fh.read(len(MAGIC) + 4)
    if len(start) < len(MAGIC) + 4 or start[: len(MAGIC)] != MAGIC:
        raise InputError(
            f"{path} is not an easeml-ci encrypted test set (it does not start with the "
            f"{MAGIC.decode()} marker); encrypt one with `easeml-ci testset encrypt`"
        )
    (length,) = struct.unpack("<I", start[len(MAGIC):])
    if length > _MAX_HEADER_BYTES:
        raise InputError(f"{path}: encrypted test set header is corrupt (claims {length} bytes)")
    raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
        if header.get("format") != FORMAT:
            raise ValueError("format")
        if header.get("version") != VERSION or header.get("cipher") != CIPHER:
            raise InputError(
                f"{path}: encrypted with format version {header.get('version')!r} / cipher "
                f"{header.get('cipher')!r}; this easeml-ci reads version {VERSION} / {CIPHER}"
            )
        parsed = EncryptedHeader(
            fingerprint=str(header["fingerprint"]),
            key_id=str(header["key_id"]),
            chunk_bytes=int(header["chunk_bytes"]),
            plaintext_bytes=int(header["plaintext_bytes"]),
            chunks=int(header["chunks"]),
            raw=raw,
            data_offset=len(MAGIC) + 4 + length,
        )
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InputError(f"{path}: encrypted test set header is corrupt or was edited") from None
    if (parsed.chunk_bytes <= 0 or parsed.plaintext_bytes < 0
            or parsed.chunks != max(1, -(-parsed.plaintext_bytes // parsed.chunk_bytes))):
        raise InputError(f"{path}: encrypted test set header is corrupt or was edited")
    return parsed


class PlaintextSink(Protocol):
    """Where :func:`decrypt_into_sink` puts the plaintext, chunk by chunk, in order.

    ``target`` may hand out a writable view for a whole chunk (it is then decrypted in place,
    no copy); otherwise the chunk is decrypted into a scratch buffer. Either way ``accept`` is
    called once per chunk, after it has been authenticated, with ``in_place`` telling which.
    """

    def target(self, offset: int, size: int) -> memoryview | None: ...

    def accept(self, offset: int, data: memoryview, in_place: bool) -> None: ...


class _ContiguousSink:
    def __init__(self, size: int):
        self.buffer = bytearray(size)
        self._view = memoryview(self.buffer)

    def target(self, offset: int, size: int) -> memoryview:
        return self._view[offset:offset + size]

    def accept(self, offset: int, data: memoryview, in_place: bool) -> None:
        pass


def decrypt_file(path: Path, key: bytes, *, key_env: str = DEFAULT_KEY_ENV) -> tuple[EncryptedHeader, bytearray]:
    """Decrypt ``path`` into one fresh in-memory buffer (never to disk)."""
    holder: list[_ContiguousSink] = []

    def make(header: EncryptedHeader) -> _ContiguousSink:
        holder.append(_ContiguousSink(header.plaintext_bytes))
        return holder[0]

    header = decrypt_into_sink(path, key, make, key_env=key_env)
    return header, holder[0].buffer


def decrypt_into_sink(path: Path, key: bytes, make_sink, *, key_env: str = DEFAULT_KEY_ENV
                      ) -> EncryptedHeader:
    """Decrypt ``path`` chunk by chunk into ``make_sink(header)`` (a :class:`PlaintextSink`).

    Reads one chunk at a time, so the ciphertext is never held whole, and checks the file size
    against the header before the sink allocates anything. Any authentication failure is an
    InputError that says whether the key is wrong or the file was changed.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read encrypted test set {path}: {exc.strerror or exc}") from None
    with fh:
        header = _read_header(fh, path)
        if header.key_id != key_id(key):
            raise InputError(
                f"wrong key for encrypted test set {path}: the key in {key_env} (key id "
                f"{key_id(key)}) is not the one it was encrypted with (key id {header.key_id})"
            )
        tampered = InputError(
            f"encrypted test set {path} failed authentication: the file was modified or is "
            f"truncated (the key is right); restore it from the owner's copy"
        )
        expected = header.data_offset + header.chunks * (NONCE_BYTES + TAG_BYTES) + header.plaintext_bytes
        if os.fstat(fh.fileno()).st_size != expected:
            raise tampered  # checked before allocating: a forged size cannot make us allocate it
        aead = AESGCM(key)
        sink = make_sink(header)
        scratch: memoryview | None = None
        # one buffer the sealed chunks are read into, in turn (the file's size was checked)
        sealed_buffer = memoryview(bytearray(NONCE_BYTES + min(header.chunk_bytes, header.plaintext_bytes)
                                             + TAG_BYTES))
        for index in range(header.chunks):
            offset = index * header.chunk_bytes
            size = min(header.chunk_bytes, header.plaintext_bytes - offset)
            blob = sealed_buffer[:NONCE_BYTES + size + TAG_BYTES]
            if fh.readinto(blob) != len(blob):
                raise tampered
            nonce, sealed = bytes(blob[:NONCE_BYTES]), blob[NONCE_BYTES:]
            aad = _aad(header.raw, index, index == header.chunks - 1)
            out = sink.target(offset, size)
            in_place = out is not None
            if out is None:
                if scratch is None:
                    scratch = memoryview(bytearray(min(header.chunk_bytes, header.plaintext_bytes)))
                out = scratch[:size]
            try:
                aead.decrypt_into(nonce, sealed, aad, out)
            except InvalidTag:
                raise tampered from None
            del blob, sealed
            sink.accept(offset, out, in_place)
        if fh.read(1):
            raise tampered
    return header
