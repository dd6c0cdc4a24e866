"""What a check may reveal, as objects until something renders them.

Nothing here is derived from the labels except the released verdict bits, unless
``show_metrics`` put estimates in :attr:`CheckResult.metrics` (and voided the guarantee).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ledger import Budget


@dataclass(frozen=True)
class ShownClause:
    """One clause as the team sees it: ``pass``/``fail``, or ``undisclosed`` (one bit per step
    under the adaptive modes) or ``withheld`` (adaptivity none)."""

    text: str
    verdict: str
    line: int | None
    tolerance: float | None = None             # the widened tolerance of an underpowered check
    configured_tolerance: float | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"text": self.text, "verdict": self.verdict, "line": self.line}
        if self.tolerance is not None:
            out["tolerance"] = self.tolerance
            out["configured_tolerance"] = self.configured_tolerance
        return out


@dataclass
class CheckResult:
    """One check's answer. ``exit_code``: 1 for a fail, 0 otherwise (a pass or withheld)."""

    verdict: str                      # "pass" | "fail" | "withheld"
    clauses: tuple[ShownClause, ...]
    budget: Budget
    fingerprint: str
    plan: Any                         # the configured conditions.Plan
    config_path: str
    gate: str
    step: int                         # the ledger position of this step
    ledger: str                       # where the budget lives (named in every report)
    history: list[str] = field(default_factory=list)  # times of the spent steps (public)
    alert: dict | None = None
    underpowered: bool = False
    private_sink: str | None = None   # where a withheld verdict went
    metrics: dict | None = None       # only with show_metrics: true (guarantee void)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict == "fail" else 0

    def to_dict(self) -> dict:
        out = {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "clauses": [c.to_dict() for c in self.clauses],
            "budget": self.budget.to_dict(),
            "testset": {"fingerprint": self.fingerprint},
            "plan": self.plan.summary(),
            "gate": self.gate,
            "config": self.config_path,
            "step": self.step,
            "underpowered": self.underpowered,
            "alert": self.alert,
            "guarantee": "void: show_metrics is on" if self.metrics is not None else "holds",
            "ledger": self.ledger,
        }
        if self.private_sink:
            out["private_sink"] = self.private_sink
        if self.metrics is not None:
            out["metrics"] = self.metrics
        if self.notes:
            out["notes"] = self.notes
        return out
