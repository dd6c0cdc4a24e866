"""The hash chain that makes the ledger tamper-evident.

Each entry carries ``prev_hash`` (the previous entry's ``hash``, or :data:`GENESIS` for the
first) and ``hash`` = SHA-256 of the entry's canonical JSON without its own ``hash`` field.
Editing an entry breaks its own hash; deleting or reordering entries breaks the ``prev_hash``
link of the entry after the gap. Truncating the tail leaves a valid chain, which is why the
file backend also keeps a head sidecar (see :mod:`easeml_ci.ledger.file_backend`).

A torn line (a write cut short by a killed process) cannot be parsed; it is represented by a
synthetic ``{"kind": "torn"}`` entry whose hash is the SHA-256 of its raw bytes, so the entry
written after it can still chain to it.
"""
from __future__ import annotations

import hashlib
import json

GENESIS = "0" * 64


def canonical(entry: dict) -> bytes:
    """The bytes that are hashed and stored: sorted keys, no whitespace, UTF-8."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict) -> str:
    """SHA-256 of the entry's canonical JSON, excluding its own ``hash`` field and its ``mac``
    (format v2, :mod:`.auth`: the MAC is computed over the sealed entry, hash included)."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "mac")}
    return hashlib.sha256(canonical(body)).hexdigest()


def torn_entry(raw: bytes, line: int) -> dict:
    """The stand-in for an unparseable line: counted as a spent step, hashed over its bytes."""
    return {
        "kind": "torn",
        "line": line,
        "raw": raw.decode("utf-8", errors="replace"),
        "hash": hashlib.sha256(raw).hexdigest(),
    }


def parse_lines(data: bytes) -> list[dict]:
    """The entries of a JSON-lines ledger, whichever backend stored it; a line that does not
    parse to an object (a write torn by a killed process) becomes a :func:`torn_entry`."""
    entries = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw:
            continue  # the empty string after the final newline
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError
        except ValueError:
            entry = torn_entry(raw, number)
        entries.append(entry)
    return entries


def seal(entry: dict, seq: int, prev_hash: str) -> dict:
    """Return a copy of ``entry`` placed at ``seq`` after ``prev_hash``, with its hash."""
    sealed = {k: v for k, v in entry.items() if k not in ("hash", "seq", "prev_hash", "mac")}
    sealed["seq"] = seq
    sealed["prev_hash"] = prev_hash
    sealed["hash"] = entry_hash(sealed)
    return sealed
