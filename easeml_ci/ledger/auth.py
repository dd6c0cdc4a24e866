"""Ledger format v2: every entry carries a MAC, chained to the MAC of the entry before it.

Why. A hash chain (:mod:`.chain`) shows an edit only to someone who trusts the last hash; anybody
who may write the ledger (a developer with ``contents: write`` on the ledger branch) can rewrite
the whole chain and its head. A MAC under a key only the test-set owner and the gate hold cannot
be recomputed: an entry the gate did not write does not authenticate, and the gate refuses the
ledger (exit 2, nothing decided, nothing written).

The key. ``derive_key(testset_key, "ledger")`` (:func:`easeml_ci.testsets.crypto.derive_key`)
when the test set is encrypted; otherwise ``EASEML_LEDGER_KEY`` (URL-safe base64, 32 bytes, as
``easeml-ci testset keygen`` makes them). The gate resolves it (:mod:`easeml_ci.gate.registration`);
this module only computes and checks MACs.

The MAC input (pinned by tests/easeml_ci/golden/ledger-v2/):

    HMAC-SHA256(key, b"easeml-ci ledger v2" 0x00 fingerprint 0x00 prev_mac 0x00 canonical(entry))

where ``canonical(entry)`` is the entry's canonical JSON without its ``mac`` field (so it covers
``seq``, ``prev_hash`` and ``hash``), ``prev_mac`` is the hex MAC of the entry before it (its
``hash`` for a torn line, which has no MAC; :data:`~.chain.GENESIS` for the first entry). An
entry is bound to its test set (the fingerprint), to its position and to every entry before it.
The ``register`` entry of a v2 ledger carries ``"format": 2``; a ledger whose entries carry no
MAC is a v1 ledger, which the gate reads only after ``easeml-ci ledger migrate``.
"""
from __future__ import annotations

import hashlib
import hmac

from .chain import GENESIS, canonical

FORMAT = 2
DOMAIN = b"easeml-ci ledger v2"


def mac_input(fingerprint: str, prev_mac: str, entry: dict) -> bytes:
    """The bytes an entry's MAC is computed over (see the module docstring)."""
    body = {k: v for k, v in entry.items() if k != "mac"}
    return b"\x00".join([DOMAIN, fingerprint.encode("ascii"), prev_mac.encode("ascii"),
                         canonical(body)])


def entry_mac(key: bytes, fingerprint: str, prev_mac: str, entry: dict) -> str:
    return hmac.new(key, mac_input(fingerprint, prev_mac, entry), hashlib.sha256).hexdigest()


def link(entry: dict) -> str:
    """What the next entry's MAC is chained to: this entry's MAC (a torn line's hash)."""
    return str(entry.get("mac") or entry.get("hash") or "")


def sign(key: bytes, fingerprint: str, prev_mac: str, entry: dict) -> dict:
    """``entry`` (sealed: seq, prev_hash, hash) with its MAC."""
    signed = {k: v for k, v in entry.items() if k != "mac"}
    signed["mac"] = entry_mac(key, fingerprint, prev_mac, signed)
    return signed


def is_v1(entries: list[dict]) -> bool:
    """A ledger written before v2: entries, none of them with a MAC or a format."""
    real = [e for e in entries if e.get("kind") != "torn"]
    return bool(real) and not any("mac" in e or "format" in e for e in real)


def forged_entries(key: bytes, fingerprint: str, entries: list[dict]) -> list[int]:
    """The indexes of the entries whose MAC does not verify (torn lines are not MAC'd)."""
    bad, prev = [], GENESIS
    for index, entry in enumerate(entries):
        if entry.get("kind") != "torn":
            given = entry.get("mac")
            if not isinstance(given, str) or not hmac.compare_digest(
                    given, entry_mac(key, fingerprint, prev, entry)):
                bad.append(index)
        prev = link(entry)
    return bad


def key_id(key: bytes) -> str:
    """A public name for a key (to say which key a ledger needs, never the key itself)."""
    return hmac.new(key, b"easeml-ci ledger key id", hashlib.sha256).hexdigest()[:12]


__all__ = ["DOMAIN", "FORMAT", "entry_mac", "forged_entries", "is_v1", "key_id", "link",
           "mac_input", "sign"]
