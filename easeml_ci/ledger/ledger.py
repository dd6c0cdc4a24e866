"""The budget ledger of one test set: hash chain, budget, compare-and-swap retries.

A :class:`Ledger` wraps a backend (anything with ``load`` and ``append`` as in
:class:`~easeml_ci.ledger.LedgerBackend`) and one test-set fingerprint. Backends only store
entries; this class seals them into the hash chain, decides whether a step may still be spent,
and retries when another process appended first (:class:`LedgerConflict`). Because every
append is conditional on the length the decision was based on, two concurrent checks can never
spend the same step: the loser reloads, re-reads the budget and either appends at the next
position or finds the budget gone.

Every read that a budget is computed from is verified (:meth:`Ledger.entries`): an entry that
was edited, deleted, reordered or cut off the tail, or a head that disagrees, raises
:class:`LedgerTampered` (exit 2) instead of returning entries. A ledger that lost a step line
would otherwise hand that step back (docs/design.md §6: the gate fails closed, never a fresh or
larger budget). Only :meth:`Ledger.unverified_entries` (for ``ledger log``, which shows a
tampered ledger so a person can see what changed) reads without verifying.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import budget as budget_mod
from .budget import Budget
from .chain import GENESIS, entry_hash, seal
from .errors import LedgerConflict, LedgerCorrupt, LedgerSpent

MAX_ATTEMPTS = 200
REREAD_DELAY = 0.5  # seconds before a two-read backend's ledger is read again


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class VerifyReport:
    """What ``verify`` found: ``ok`` is False when any problem (tampering, truncation) was seen."""

    entries: int
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "problems": self.problems,
                "warnings": self.warnings}


class LedgerTampered(LedgerCorrupt):
    """The ledger does not verify: its budget cannot be trusted, so nothing may be decided.

    ``report`` is the :class:`VerifyReport` that found it.
    """

    def __init__(self, message: str, report: VerifyReport):
        super().__init__(message)
        self.report = report


def check_chain(entries: list[dict], head: dict | None, *, keeps_head: bool) -> VerifyReport:
    """What is wrong with ``entries`` as a hash chain ending at ``head`` (pure: no I/O).

    ``keeps_head``: the backend records a head, so a missing one is a problem (deleted).
    """
    report = VerifyReport(entries=len(entries))
    prev = GENESIS
    for index, entry in enumerate(entries):
        where = f"entry {index + 1}"
        if entry.get("kind") == "torn":
            report.warnings.append(
                f"{where} (line {entry['line']}) is a torn write from an interrupted process; "
                "counted as a spent step")
            prev = entry["hash"]
            continue
        if entry.get("hash") != entry_hash(entry):
            report.problems.append(f"{where}: contents were edited (hash mismatch)")
        if entry.get("seq") != index:
            report.problems.append(
                f"{where}: sequence number {entry.get('seq')!r}, expected {index} "
                "(an entry was deleted, inserted or moved)")
        if entry.get("prev_hash") != prev:
            report.problems.append(
                f"{where}: does not chain to the entry before it "
                "(an entry was deleted, inserted or moved)")
        prev = entry.get("hash")
    # Steps count against the terms pinned by the registration, so none may come before it
    # (a torn line may: it is a registration whose writer crashed).
    for index, entry in enumerate(entries):
        if entry.get("kind") == "register":
            break
        if entry.get("kind") == "step":
            report.problems.append(f"entry {index + 1}: a step before the test set's registration")
            break
    head_problems: list[str] = []  # listed first: they sum up what the chain shows entry by entry
    if head is not None:
        length = head.get("length")
        if not isinstance(length, int):
            head_problems.append("head record is unreadable")
        elif len(entries) < length:
            head_problems.append(
                f"truncated: {len(entries)} entries, but {length} were written "
                f"({length - len(entries)} missing from the end)")
        elif length and entries[length - 1].get("hash") != head.get("hash"):
            head_problems.append(
                f"entry {length}: differs from the one recorded as the head (rewritten tail)")
        elif len(entries) > length:
            report.warnings.append(
                f"{len(entries) - length} entries after the recorded head "
                "(a writer stopped between its append and the head update)")
    elif entries and keeps_head:
        head_problems.append("head record is missing (deleted?)")
    report.problems[:0] = head_problems
    return report


class Ledger:
    """The ledger of one test set (identified by its fingerprint) in one backend."""

    def __init__(self, backend, fingerprint: str):
        self.backend = backend
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"Ledger({self.backend!r}, {self.fingerprint[:12]}…)"

    # --- reading -----------------------------------------------------------------------------
    def _read(self) -> tuple[list[dict], dict | None]:
        """Entries and head as of one moment (as far as the backend allows)."""
        snapshot = getattr(self.backend, "snapshot", None)
        if snapshot is not None:
            return snapshot(self.fingerprint)
        head_fn = getattr(self.backend, "head", None)
        # The head first: it is written after each append, so entries read after it can only
        # be longer, and a concurrent writer cannot fake a truncation.
        head = head_fn(self.fingerprint) if head_fn else None
        return self.backend.load(self.fingerprint), head

    def _check(self, entries: list[dict], head: dict | None) -> VerifyReport:
        keeps_head = getattr(self.backend, "head", None) is not None
        return check_chain(entries, head, keeps_head=keeps_head)

    def entries(self) -> list[dict]:
        """All entries, oldest first, verified: raises :class:`LedgerTampered` if they do not
        verify (an edited, deleted, reordered or truncated entry, or a head that disagrees)."""
        entries, head = self._read()
        report = self._check(entries, head)
        if not report.ok and getattr(self.backend, "snapshot", None) is None:
            # Entries and head were two reads: one more, in case a replica lagged in between.
            time.sleep(REREAD_DELAY)
            entries, head = self._read()
            report = self._check(entries, head)
        if not report.ok:
            problems = report.problems[:3]
            if len(report.problems) > 3:
                problems.append(f"and {len(report.problems) - 3} more")
            raise LedgerTampered(
                f"ledger: test set {self.fingerprint[:12]} in {self.backend!r} does not verify "
                f"({'; '.join(problems)}); its budget cannot be trusted, so the gate refuses to "
                "use it: no verdict, nothing written. `easeml-ci ledger verify` lists every "
                "problem; restore the ledger from a trusted copy, or label a new test set.",
                report)
        return entries

    def unverified_entries(self) -> list[dict]:
        """The stored entries as they are, tampered or not (for showing, never for budgeting)."""
        return self.backend.load(self.fingerprint)

    def registration(self, entries: list[dict] | None = None) -> dict | None:
        return budget_mod.registration(self.entries() if entries is None else entries)

    def budget(self, terms: dict | None = None, entries: list[dict] | None = None) -> Budget:
        """The budget now. ``terms`` are used only if the test set is not registered yet."""
        entries = self.entries() if entries is None else entries
        if budget_mod.registration(entries) is None and terms is None:
            raise LedgerCorrupt(
                f"ledger: test set {self.fingerprint[:12]} is not registered in {self.backend!r}; "
                "run `easeml-ci testset register` or a first `easeml-ci check`")
        return budget_mod.compute(entries, terms or {})

    # --- writing -----------------------------------------------------------------------------
    def _append(self, entries: list[dict], body: dict) -> dict:
        prev = entries[-1]["hash"] if entries else GENESIS
        sealed = seal(body, len(entries), prev)
        self.backend.append(self.fingerprint, sealed, len(entries))
        return sealed

    def _retry(self, attempt: int) -> None:
        if attempt + 1 >= MAX_ATTEMPTS:
            raise LedgerCorrupt(
                f"ledger: gave up after {MAX_ATTEMPTS} conflicting appends in {self.backend!r}")
        time.sleep(random.uniform(0, min(0.002 * 2 ** min(attempt, 6), 0.1)))

    def register(self, terms: dict, *, by: str = "register", note: dict | None = None) -> dict:
        """Start this test set's ledger with its pinned plan terms; idempotent under races.

        Returns the register entry (the existing one if another process registered first).
        """
        for attempt in range(MAX_ATTEMPTS):
            entries = self.entries()
            existing = budget_mod.registration(entries)
            if existing is not None:
                return existing
            body = {"kind": "register", "time": _now(), "fingerprint": self.fingerprint,
                    "terms": dict(terms), "by": by}
            if note:
                body.update(note)
            try:
                return self._append(entries, body)
            except LedgerConflict:
                self._retry(attempt)
        raise AssertionError("unreachable")

    def record_step(self, *, passed: bool | None, terms: dict, details: dict | None = None
                    ) -> tuple[dict, Budget]:
        """Spend one step, durably, and return the entry and the budget after it.

        ``passed`` is the verdict bit, or None when it must not be stored where the team can
        read it (adaptivity ``none``). Raises :class:`LedgerSpent` when the test set is retired
        or exhausted at the moment of appending; then nothing is written and the verdict must
        not be revealed.
        """
        for attempt in range(MAX_ATTEMPTS):
            entries = self.entries()
            if budget_mod.registration(entries) is None:
                try:
                    self._append(entries, {"kind": "register", "time": _now(),
                                           "fingerprint": self.fingerprint,
                                           "terms": dict(terms), "by": "check"})
                except LedgerConflict:
                    self._retry(attempt)
                continue
            before = budget_mod.compute(entries, terms)
            if not before.active:
                raise LedgerSpent(before)
            body = {"kind": "step", "time": _now(), "passed": passed}
            if details:
                body.update(details)
            try:
                sealed = self._append(entries, body)
            except LedgerConflict:
                self._retry(attempt)
                continue
            return sealed, budget_mod.compute(entries + [sealed], terms)
        raise AssertionError("unreachable")

    def complete_step(self, seq: int, *, passed: bool | None, terms: dict | None = None,
                      details: dict | None = None) -> tuple[dict, Budget]:
        """Record the verdict bit of the reserved step ``seq`` (from any process, any time
        after the reservation); returns the completion entry and the budget after it.

        ``passed`` is None when the bit must not be stored where the team can read it
        (adaptivity ``none``). Raises :class:`LedgerSpent` (nothing written: the verdict must
        not be revealed) when other completions retired the test set since the reservation,
        and :class:`LedgerCorrupt` when ``seq`` is no reserved step or is completed already.
        """
        for attempt in range(MAX_ATTEMPTS):
            entries = self.entries()
            if not (0 <= seq < len(entries)) or entries[seq].get("kind") != "step" \
                    or not entries[seq].get("reserved"):
                raise LedgerCorrupt(f"ledger: entry {seq} of test set {self.fingerprint[:12]} "
                                    "is not a reserved step; nothing to complete")
            if any(e.get("kind") == "complete" and e.get("step") == seq for e in entries):
                raise LedgerCorrupt(f"ledger: step {seq} of test set {self.fingerprint[:12]} "
                                    "is completed already")
            before = budget_mod.compute(entries, terms or {})
            if before.status == budget_mod.RETIRED:
                raise LedgerSpent(before)
            body = {"kind": "complete", "time": _now(), "step": seq, "passed": passed}
            if details:
                body.update(details)
            try:
                sealed = self._append(entries, body)
            except LedgerConflict:
                self._retry(attempt)
                continue
            return sealed, budget_mod.compute(entries + [sealed], terms or {})
        raise AssertionError("unreachable")

    # --- alerts: once per event ----------------------------------------------------------------
    def alert_state(self, event: str, entries: list[dict] | None = None) -> str | None:
        """None (never claimed), "claimed", "delivered" or "failed" for the latest claim."""
        state = None
        for entry in self.entries() if entries is None else entries:
            if entry.get("event") != event:
                continue
            if entry.get("kind") == "alert":
                state = "claimed"
            elif entry.get("kind") == "alert-result":
                state = "delivered" if entry.get("delivered") else "failed"
        return state

    def claim_alert(self, event: str) -> bool:
        """Record that this process sends the alert for ``event``; False if it was already sent.

        A claim whose delivery failed may be claimed again by a later check; a claim whose
        process died before reporting a result counts as sent (at most once beats twice).
        """
        for attempt in range(MAX_ATTEMPTS):
            entries = self.entries()
            if self.alert_state(event, entries) in ("claimed", "delivered"):
                return False
            try:
                self._append(entries, {"kind": "alert", "time": _now(), "event": event})
                return True
            except LedgerConflict:
                self._retry(attempt)
        raise AssertionError("unreachable")

    def record_alert_result(self, event: str, delivered: bool, detail: str = "") -> None:
        for attempt in range(MAX_ATTEMPTS):
            entries = self.entries()
            try:
                self._append(entries, {"kind": "alert-result", "time": _now(), "event": event,
                                       "delivered": bool(delivered), "detail": detail})
                return
            except LedgerConflict:
                self._retry(attempt)

    # --- verification -------------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Check the hash chain, the sequence numbers and (if the backend keeps one) the head.

        Detects: an edited entry (its hash no longer matches), a deleted or reordered entry
        (``seq`` and ``prev_hash`` break), and a truncated tail (fewer entries than the head
        records, or the entry at the head's position has another hash). It cannot detect a
        rewrite of the whole chain together with the head, nor the removal of every file: a
        local file is only as trustworthy as the people who can write it (the GitHub backend
        adds the repository's history as an outside witness).
        """
        entries, head = self._read()
        report = self._check(entries, head)
        backend_warnings = getattr(self.backend, "integrity_warnings", None)
        if backend_warnings is not None:
            report.warnings.extend(backend_warnings())
        return report
