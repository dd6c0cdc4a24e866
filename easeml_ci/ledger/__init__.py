"""The budget ledger: one append-only, hash-chained record per test set.

Public surface::

    backend = open_backend({"backend": "file", "path": ".easeml/ledger"}, base=Path("."))
    ledger = Ledger(backend, fingerprint, key)   # key: the ledger key (ledger.auth), MACs
    ledger.budget(terms)                          # Budget(used, total, remaining, status, ...)
    step, _ = ledger.reserve_step(terms=terms)    # durable before the test set is opened
    done, after = ledger.complete_step(step["seq"], passed=True, terms=terms)
    ledger.verify()                               # VerifyReport(ok, problems, warnings)

Every read a budget is computed from verifies the ledger first (chain, order, head) and raises
:class:`LedgerTampered` (a :class:`LedgerCorrupt`, exit 2) when it does not verify.

A backend implements :class:`LedgerBackend`: ``load`` returns every entry, oldest first;
``append`` stores one entry iff the stored length equals ``expected_length`` (else raises
:class:`LedgerConflict`), durably before it returns. It may also offer ``head(fingerprint)``
(for truncation checks), ``snapshot(fingerprint) -> (entries, head)`` (both as of one moment)
and ``fingerprints()`` (to list its ledgers).

Backends: ``file`` (built in) and ``github`` (loaded lazily from
``easeml_ci.ledger.github_backend``, which provides ``open_backend(spec, base)``).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import ConfigError
from .budget import ACTIVE, EXHAUSTED, PINNED_TERMS, RETIRED, Budget
from .errors import LedgerConflict, LedgerCorrupt, LedgerNeedsMigration, LedgerSpent
from .file_backend import FileBackend
from .ledger import Ledger, LedgerTampered, VerifyReport, check_chain

DEFAULT_PATH = ".easeml/ledger"


@runtime_checkable
class LedgerBackend(Protocol):
    name: str

    def load(self, fingerprint: str) -> list[dict]: ...

    def append(self, fingerprint: str, entry: dict, expected_length: int) -> None: ...


def open_backend(spec: dict | None = None, *, base: Path | str = ".") -> LedgerBackend:
    """The backend a config's ``ledger:`` mapping names; relative paths resolve against ``base``."""
    spec = dict(spec or {})
    kind = spec.get("backend", "file")
    if kind == "file":
        path = Path(spec.get("path") or DEFAULT_PATH).expanduser()
        if not path.is_absolute():
            path = Path(base) / path
        return FileBackend(path)
    if kind == "github":
        module = importlib.import_module(".github_backend", __name__)
        return module.open_backend(spec, base=Path(base))
    raise ConfigError(f"ledger.backend: unknown backend {kind!r}; allowed: file, github")


__all__ = [
    "ACTIVE", "EXHAUSTED", "PINNED_TERMS", "RETIRED", "Budget", "DEFAULT_PATH", "FileBackend",
    "Ledger", "LedgerBackend", "LedgerConflict", "LedgerCorrupt", "LedgerNeedsMigration", "LedgerSpent", "LedgerTampered",
    "VerifyReport", "check_chain", "open_backend",
]
