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
:class:`LedgerTampered` (exit 2) instead of returning entries. With the ledger key (format v2,
:mod:`.auth`) every entry's MAC is checked too: an entry the gate did not write (or a ledger
rewritten whole, head included) raises :class:`LedgerTampered` naming the first forged entry,
and a v1 ledger (no MACs) raises :class:`LedgerNeedsMigration` (``easeml-ci ledger migrate``).
A backend may add what only it can see (``history_problems``: the repository ledger's commits
that claim more entries than the file holds, a registration anchor the ledger lacks).

A step is spent in two parts (count before open): :meth:`Ledger.reserve_step` appends the step,
durably, before the test set is opened; :meth:`Ledger.complete_step` appends the verdict bit
for that step once it is decided (possibly from another process, later: rounds). A reserved step
that is never completed (a run killed, cancelled, timed out or out of disk) stays spent and is
no pass. A ledger that lost a step line
would otherwise hand that step back (docs/design.md §6: the gate fails closed, never a fresh or
larger budget). Only :meth:`Ledger.unverified_entries` (for ``ledger log``, which shows a
tampered ledger so a person can see what changed) reads without verifying.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from . import auth
from . import budget as budget_mod
from .budget import Budget
from .chain import GENESIS, entry_hash, seal
from .errors import LedgerConflict, LedgerCorrupt, LedgerNeedsMigration, LedgerSpent

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


@dataclass(frozen=True)
class _Existing:
    """What a writer's body builder returns to write nothing and return ``entry``."""
    entry: dict | None


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
    report.problems.extend(budget_mod.completion_problems(entries))
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
    """The ledger of one test set (identified by its fingerprint) in one backend.

    ``key``: the ledger key (:mod:`.auth`). Without it the ledger can be read and its hash chain
    checked (for showing it), but not authenticated nor written.
    """

    def __init__(self, backend, fingerprint: str, key: bytes | None = None):
        self.backend = backend
        self.fingerprint = fingerprint
        self.key = key

    def __repr__(self) -> str:
        return f"Ledger({self.backend!r}, {self.fingerprint[:12]}…)"

    @property
    def authenticated(self) -> bool:
        return self.key is not None

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
        report = check_chain(entries, head, keeps_head=keeps_head)
        if self.key is not None and not auth.is_v1(entries):
            report.problems.extend(
                f"entry {index + 1} ({entries[index].get('kind')}): forged, its MAC does not "
                "verify under this test set's ledger key (written by someone without the key)"
                for index in auth.forged_entries(self.key, self.fingerprint, entries))
        history = getattr(self.backend, "history_problems", None)
        if history is not None:
            report.problems.extend(history(self.fingerprint, entries))
        return report

    def _migration_needed(self, entries: list[dict]) -> LedgerNeedsMigration:
        return LedgerNeedsMigration(
            f"ledger: test set {self.fingerprint[:12]} in {self.backend!r} is a v1 ledger (its "
            "entries carry no MAC, so anybody who may write it could have rewritten it): the "
            "gate reads only authenticated (v2) ledgers. Its owner, with the key, runs `easeml-ci "
            "ledger migrate` once to re-sign it as v2 (after checking `easeml-ci ledger log`); "
            "nothing was decided, nothing written")

    def entries(self) -> list[dict]:
        """All entries, oldest first, verified: raises :class:`LedgerTampered` if they do not
        verify (an edited, forged, deleted, reordered or truncated entry, or a head that
        disagrees) and, with the key, :class:`LedgerNeedsMigration` for a v1 ledger."""
        entries, head = self._read()
        report = self._check(entries, head)
        if not report.ok and getattr(self.backend, "snapshot", None) is None:
            # Entries and head were two reads: one more, in case a replica lagged in between.
            time.sleep(REREAD_DELAY)
            entries, head = self._read()
            report = self._check(entries, head)
        if not report.ok:
            problems = report.problems[:4]
            if len(report.problems) > 4:
                problems.append(f"and {len(report.problems) - 4} more")
            raise LedgerTampered(
                f"ledger: test set {self.fingerprint[:12]} in {self.backend!r} does not verify "
                f"({'; '.join(problems)}); its budget cannot be trusted, so the gate refuses to "
                "use it: no verdict, nothing written. `easeml-ci ledger verify` lists every "
                "problem; restore the ledger from a trusted copy, or label a new test set.",
                report)
        if self.key is not None and auth.is_v1(entries):
            raise self._migration_needed(entries)
        return entries

    def unverified_entries(self) -> list[dict]:
        """The stored entries as they are, tampered or not (for showing, never for budgeting)."""
        return self.backend.load(self.fingerprint)

    def forged(self, entries: list[dict]) -> set[int]:
        """Indexes of ``entries`` that do not authenticate under the key (empty without a key
        or for a v1 ledger, which has no MACs to check)."""
        if self.key is None or auth.is_v1(entries):
            return set()
        return set(auth.forged_entries(self.key, self.fingerprint, entries))

    def registration(self, entries: list[dict] | None = None) -> dict | None:
        return budget_mod.registration(self.entries() if entries is None else entries)

    def budget(self, terms: dict | None = None, entries: list[dict] | None = None) -> Budget:
        """The budget now. ``terms`` are used only if the test set is not registered yet."""
        entries = self.entries() if entries is None else entries
        if budget_mod.registration(entries) is None and terms is None:
            raise LedgerCorrupt(
                f"ledger: test set {self.fingerprint[:12]} is not registered in {self.backend!r}; "
                "run `easeml-ci testset register`")
        return budget_mod.compute(entries, terms or {})

    # --- writing -----------------------------------------------------------------------------
    def _seal(self, entries: list[dict], body: dict) -> dict:
        if self.key is None:
            raise LedgerCorrupt(
                f"ledger: cannot write test set {self.fingerprint[:12]}'s ledger without its key "
                "(the test-set key of an encrypted test set, else EASEML_LEDGER_KEY)")
        prev = entries[-1]["hash"] if entries else GENESIS
        prev_mac = auth.link(entries[-1]) if entries else GENESIS
        return auth.sign(self.key, self.fingerprint, prev_mac, seal(body, len(entries), prev))

    def _append(self, entries: list[dict], body: dict) -> dict:
        sealed = self._seal(entries, body)
        self.backend.append(self.fingerprint, sealed, len(entries))
        return sealed

    def _retry(self, attempt: int) -> None:
        if attempt + 1 >= MAX_ATTEMPTS:
            raise LedgerCorrupt(
                f"ledger: gave up after {MAX_ATTEMPTS} conflicting appends in {self.backend!r}")
        time.sleep(random.uniform(0, min(0.002 * 2 ** min(attempt, 6), 0.1)))

    def _append_when(self, build: Callable[[list[dict]], "dict | _Existing"]
                     ) -> tuple[dict, list[dict]]:
        """Append the entry ``build`` makes from the current entries; returns it and the entries
        it was appended to.

        ``build`` validates the entries (raising to write nothing) and returns the body to
        append, or :class:`_Existing` to return an entry already there. When another process
        appended first (:class:`LedgerConflict`) the entries are read again and ``build`` runs
        again on them, so each body is decided on the ledger it is appended to.
        """
        for attempt in range(MAX_ATTEMPTS):
            entries = self.entries()
            body = build(entries)
            if isinstance(body, _Existing):
                return body.entry, entries
            try:
                return self._append(entries, body), entries
            except LedgerConflict:
                self._retry(attempt)
        raise AssertionError("unreachable")  # _retry raises on the last attempt

    def _registered(self, entries: list[dict], action: str) -> None:
        if budget_mod.registration(entries) is None:
            raise LedgerCorrupt(f"ledger: test set {self.fingerprint[:12]} is not registered in "
                                f"{self.backend!r}: {action}")

    def register(self, terms: dict, *, by: str = "register", note: dict | None = None) -> dict:
        """Start this test set's ledger with its pinned plan terms; idempotent under races.

        Returns the register entry (the existing one if another process registered first).
        """
        def build(entries):
            existing = budget_mod.registration(entries)
            if existing is not None:
                return _Existing(existing)
            return {"kind": "register", "time": _now(), "fingerprint": self.fingerprint,
                    "terms": dict(terms), "by": by, "format": auth.FORMAT, **(note or {})}

        return self._append_when(build)[0]

    def reserve_step(self, *, terms: dict, details: dict | None = None) -> tuple[dict, Budget]:
        """Spend one step, durably, before the test set is opened; returns the step entry and
        the budget with it spent.

        The step counts from here on whatever happens to the run; :meth:`complete_step` adds
        its verdict bit. Raises :class:`LedgerSpent` (nothing written) when the test set is
        retired or exhausted, and :class:`LedgerCorrupt` when it is not registered.
        """
        def build(entries):
            self._registered(entries, "no step can be reserved")
            before = budget_mod.compute(entries, terms)
            if not before.active:
                raise LedgerSpent(before)
            return {"kind": "step", "time": _now(), "passed": None, "reserved": True,
                    **(details or {})}

        sealed, entries = self._append_when(build)
        return sealed, budget_mod.compute(entries + [sealed], terms)

    def complete_step(self, seq: int, *, passed: bool | None, terms: dict | None = None,
                      details: dict | None = None) -> tuple[dict, Budget]:
        """Record the verdict bit of the reserved step ``seq`` (from any process, any time
        after the reservation); returns the completion entry and the budget after it.

        ``passed`` is None when the bit must not be stored where the team can read it
        (adaptivity ``none``). Raises :class:`LedgerSpent` (nothing written: the verdict must
        not be revealed) when other completions retired the test set since the reservation,
        and :class:`LedgerCorrupt` when ``seq`` is no reserved step or is completed already.
        """
        def build(entries):
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
            return {"kind": "complete", "time": _now(), "step": seq, "passed": passed,
                    **(details or {})}

        sealed, entries = self._append_when(build)
        return sealed, budget_mod.compute(entries + [sealed], terms or {})

    def record_step(self, *, passed: bool | None, terms: dict, details: dict | None = None
                    ) -> tuple[dict, Budget]:
        """Spend one step with its verdict bit in one entry (for callers with nothing to open
        between the two; the gate reserves before it opens the test set and completes after it
        decides). A ledger not registered yet is registered under ``terms`` first. Returns the
        entry and the budget after it; raises :class:`LedgerSpent` when the test set is retired
        or exhausted at the moment of appending (nothing written)."""
        def build(entries):
            if budget_mod.registration(entries) is None:
                return {"kind": "register", "time": _now(), "fingerprint": self.fingerprint,
                        "terms": dict(terms), "by": "check", "format": auth.FORMAT}
            before = budget_mod.compute(entries, terms)
            if not before.active:
                raise LedgerSpent(before)
            return {"kind": "step", "time": _now(), "passed": passed, **(details or {})}

        sealed, entries = self._append_when(build)
        if sealed["kind"] == "register":  # registered here: the step is the next entry
            sealed, entries = self._append_when(build)
        return sealed, budget_mod.compute(entries + [sealed], terms)

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
        def build(entries):
            if self.alert_state(event, entries) in ("claimed", "delivered"):
                return _Existing(None)
            return {"kind": "alert", "time": _now(), "event": event}

        return self._append_when(build)[0] is not None

    def record_alert_result(self, event: str, delivered: bool, detail: str = "") -> None:
        self._append_when(lambda entries: {"kind": "alert-result", "time": _now(),
                                           "event": event, "delivered": bool(delivered),
                                           "detail": detail})

    # --- verification -------------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Check the hash chain, the sequence numbers, the head (if the backend keeps one) and,
        with the key, every entry's MAC.

        Detects: an edited entry (its hash no longer matches), a deleted or reordered entry
        (``seq`` and ``prev_hash`` break), a truncated tail (fewer entries than the head
        records, or the entry at the head's position has another hash) and, with the key, any
        entry written by someone without it (a whole chain rewritten with its head included).
        A local file replaced by an older authentic copy of itself cannot be detected: the file
        ledger must live where the team cannot write (the repository ledger adds the branch's
        history as an outside witness, see :mod:`.github_backend`).
        """
        entries, head = self._read()
        report = self._check(entries, head)
        if self.key is not None and auth.is_v1(entries):
            report.problems.append("a v1 ledger (no MACs): not authenticated; its owner runs "
                                   "`easeml-ci ledger migrate` once")
        elif self.key is None:
            report.warnings.append("not authenticated: no ledger key given (the test-set key "
                                   "of an encrypted test set, else EASEML_LEDGER_KEY)")
        backend_warnings = getattr(self.backend, "integrity_warnings", None)
        if backend_warnings is not None:
            report.warnings.extend(backend_warnings())
        return report

    # --- migration --------------------------------------------------------------------------
    def migrate(self) -> int:
        """Re-sign a v1 ledger as v2 (the owner, with the key, once); returns the entries signed.

        The entries keep their content and order; the register entry gains ``format: 2`` and a
        torn line becomes a spent step that is no pass (what it counted as). Refuses a ledger
        that already carries a MAC or a format (a v2 ledger stripped of them is no v1 ledger),
        or whose hash chain does not verify.
        """
        if self.key is None:
            raise LedgerCorrupt("ledger migrate: needs the ledger key")
        rewrite = getattr(self.backend, "rewrite", None)
        if rewrite is None:
            raise LedgerCorrupt(f"ledger migrate: {self.backend!r} cannot rewrite a ledger")
        entries, head = self._read()
        if not entries:
            raise LedgerCorrupt(f"ledger migrate: test set {self.fingerprint[:12]} has no ledger "
                                f"in {self.backend!r}")
        if not auth.is_v1(entries):
            raise LedgerCorrupt(
                f"ledger migrate: test set {self.fingerprint[:12]}'s ledger is not a v1 ledger "
                "(it carries MACs or a format): nothing to migrate, and a v2 ledger is never "
                "re-signed")
        report = check_chain(entries, head, keeps_head=getattr(self.backend, "head", None)
                             is not None)
        history = getattr(self.backend, "history_problems", None)
        if history is not None:
            report.problems[:0] = history(self.fingerprint, entries)
        if not report.ok:
            raise LedgerTampered(
                f"ledger migrate: test set {self.fingerprint[:12]}'s v1 ledger does not verify "
                f"({'; '.join(report.problems[:3])}); refusing to sign it", report)
        signed: list[dict] = []
        for entry in entries:
            if entry.get("kind") == "torn":
                body = {"kind": "step", "passed": None, "migrated": "torn line",
                        "time": None}
            else:
                body = {k: v for k, v in entry.items()
                        if k not in ("hash", "seq", "prev_hash", "mac")}
                if body.get("kind") == "register":
                    body["format"] = auth.FORMAT
            signed.append(self._seal(signed, body))
        rewrite(self.fingerprint, signed, len(entries))
        return len(signed)
