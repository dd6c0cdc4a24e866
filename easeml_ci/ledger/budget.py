"""Budget semantics per adaptivity mode (docs/design.md §2), computed from ledger entries.

The plan terms that decide the budget (adaptivity, steps, passes, ...) are pinned in the
ledger's ``register`` entry when the test set starts, so that editing ``.easeml.yml`` later
cannot stretch a budget that has already been partly spent.

* ``none``: ``steps`` evaluations, each verdict sent only to a private sink.
* ``firstChange``: retired at the first pass (or exhausted after ``steps``).
* ``full``: ``steps`` evaluations, every verdict public.
* ``full`` + ``passes: B``: retired after B passes (or exhausted after ``steps``).

A torn line (a write interrupted by a killed process) counts as a spent step: the process may
have been about to reveal it, and counting too much is safe where counting too little is not.
A torn line never counts as a pass: it revealed nothing, so it cannot move the transcript.

Count before open: a ``step`` entry is written (reserved) before the test set is opened and a
``complete`` entry (``step``: its seq, ``passed``: the bit) once it is decided. The step is spent
from its reservation; only a completion (or a v1 step entry written whole) can be a pass. A
reserved step that is never completed is spent and no pass: the run died before revealing it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

ACTIVE, RETIRED, EXHAUSTED = "active", "retired", "exhausted"

# The keys of a plan that fix the statistical budget; changing any of them needs a new test set.
PINNED_TERMS = ("condition", "reliability", "mode", "adaptivity", "steps", "passes")


@dataclass(frozen=True)
class Budget:
    """How much of one test set's budget is spent."""

    used: int
    total: int
    passes_used: int
    passes_total: int | None
    status: str
    adaptivity: str

    @property
    def remaining(self) -> int:
        return 0 if self.status != ACTIVE else max(self.total - self.used, 0)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def to_dict(self) -> dict:
        out = asdict(self)
        out["remaining"] = self.remaining
        return out

    def describe(self) -> str:
        """One line for people: ``12 of 32 steps used, 20 remaining (active)``."""
        text = f"{self.used} of {self.total} steps used, {self.remaining} remaining"
        if self.passes_total is not None:
            text += f"; {self.passes_used} of {self.passes_total} passes used"
        return f"{text} ({self.status})"


def pass_limit(adaptivity: str, passes: int | None) -> int | None:
    """The number of passes after which the test set retires, or None when passes never retire it."""
    if adaptivity == "firstChange":
        return 1
    if adaptivity == "full" and passes is not None:
        return int(passes)
    return None


def registration(entries: list[dict]) -> dict | None:
    """The first ``register`` entry (the pinned plan terms), or None for a fresh test set."""
    for entry in entries:
        if entry.get("kind") == "register":
            return entry
    return None


def compute(entries: list[dict], terms: dict) -> Budget:
    """The budget given the ledger's entries and the plan terms (pinned ones win if present)."""
    reg = registration(entries)
    if reg is not None:
        terms = reg["terms"]
    adaptivity = terms["adaptivity"]
    total = int(terms["steps"])
    limit = pass_limit(adaptivity, terms.get("passes"))
    used = sum(1 for e in entries if e.get("kind") in ("step", "torn"))
    passes_used = sum(1 for e in entries if e.get("kind") in ("step", "complete")
                      and e.get("passed") is True)
    if limit is not None and passes_used >= limit:
        status = RETIRED
    elif used >= total:
        status = EXHAUSTED
    else:
        status = ACTIVE
    return Budget(used=used, total=total, passes_used=passes_used, passes_total=limit,
                  status=status, adaptivity=adaptivity)


def completion_problems(entries: list[dict]) -> list[str]:
    """Completions that do not complete a reserved step before them, once (pure)."""
    problems, done = [], set()
    for index, entry in enumerate(entries):
        if entry.get("kind") != "complete":
            continue
        seq = entry.get("step")
        target = entries[seq] if isinstance(seq, int) and 0 <= seq < index else None
        if target is None or target.get("kind") != "step" or not target.get("reserved"):
            problems.append(f"entry {index + 1}: completes {seq!r}, which is no reserved step "
                            "before it")
        elif seq in done:
            problems.append(f"entry {index + 1}: completes step {seq} a second time")
        done.add(seq)
    return problems


def steps_with_verdicts(entries: list[dict]) -> list[dict]:
    """Each spent step (``step`` and ``torn`` entries, oldest first) with its completion's
    fields merged in (``passed`` and what the answer recorded with it) and ``completed``:
    False for a reserved step whose run died before deciding (spent, no pass)."""
    completions = {e.get("step"): e for e in entries if e.get("kind") == "complete"}
    out = []
    for entry in entries:
        if entry.get("kind") not in ("step", "torn"):
            continue
        merged = dict(entry)
        done = completions.get(entry.get("seq")) if entry.get("reserved") else None
        if done is not None:
            merged.update({k: v for k, v in done.items()
                           if k not in ("kind", "seq", "prev_hash", "hash", "mac", "step", "time")})
        merged["completed"] = entry.get("kind") == "step" and (
            not entry.get("reserved") or done is not None)
        out.append(merged)
    return out
