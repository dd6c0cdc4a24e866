"""What a check may reveal, as objects until something renders them.

Nothing here is derived from the labels except the released verdict bits, unless
``show_metrics`` put estimates in :attr:`CheckResult.metrics` (and voided the guarantee).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExitCode, UsageError
from ..ledger import Budget

METER_NAME = "easeml-meter"  # the meter's gate name in reports, comments and records


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


def shown_clauses(configured, decided=None, verdict=None, *, line: int | None, withheld: bool,
                  one_bit: bool) -> tuple[ShownClause, ...]:
    """The clauses of ``configured`` (a plan) as the team may see them. ``decided`` is the plan
    the verdict was decided under (an underpowered check's widened one), ``verdict`` its
    :class:`conditions.Verdict` (None when nothing is decided in public)."""
    decided = configured if decided is None else decided
    widened = decided is not configured
    rows = []
    for i, clause in enumerate(configured.clauses):
        if withheld or verdict is None:
            shown = "withheld"
        else:
            shown = "undisclosed" if one_bit else ("pass" if verdict.clauses[i].passed else "fail")
        rows.append(ShownClause(
            text=clause.text, verdict=shown, line=line,
            tolerance=decided.clauses[i].tolerance if widened else None,
            configured_tolerance=clause.tolerance if widened else None))
    return tuple(rows)


@dataclass(kw_only=True)
class Answer:
    """What every answer of the gate carries: the budget after its step, where that step was
    written, and what it sends elsewhere (the alert, the private sink)."""

    budget: Budget
    fingerprint: str
    plan: Any
    config_path: str
    step: int                         # the ledger position of this step
    ledger: str                       # where the budget lives (named in every report)
    alert: dict | None = None
    private_sink: str | None = None   # where a withheld answer went
    notes: list[str] = field(default_factory=list)

    def answer_dict(self, plan: dict) -> dict:
        """The JSON fields every answer shares (``plan``: the plan as the answer shows it)."""
        out = {"budget": self.budget.to_dict(), "testset": {"fingerprint": self.fingerprint},
               "plan": plan, "config": self.config_path, "step": self.step,
               "ledger": self.ledger, "alert": self.alert, "exit_code": self.exit_code}
        if self.private_sink:
            out["private_sink"] = self.private_sink
        if self.notes:
            out["notes"] = self.notes
        return out


@dataclass(kw_only=True)
class CheckResult(Answer):
    """One check's answer. ``exit_code``: 1 for a fail, 0 otherwise (a pass or withheld)."""

    verdict: str                      # "pass" | "fail" | "withheld" | "pending" (rounds)
    clauses: tuple[ShownClause, ...]
    gate: str
    history: list[str] = field(default_factory=list)  # times of the spent steps (public)
    underpowered: bool = False
    metrics: dict | None = None       # only with show_metrics: true (guarantee void)
    round: dict | None = None         # rounds: {"round", "ends", "status"} (a function of time)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAIL if self.verdict == "fail" else ExitCode.PASS

    def to_dict(self) -> dict:
        out = {**self.answer_dict(self.plan.summary()), "verdict": self.verdict,
               "clauses": [c.to_dict() for c in self.clauses], "gate": self.gate,
               "underpowered": self.underpowered,
               "guarantee": "void: show_metrics is on" if self.metrics is not None else "holds"}
        if self.metrics is not None:
            out["metrics"] = self.metrics
        if self.round is not None:
            out["round"] = self.round
        return out


@dataclass(kw_only=True)
class MeterResult(Answer):
    """What a meter run may reveal."""

    answer: str                    # a range label, or "withheld" under adaptivity none
    ranges: list[str]
    validation_accuracy: float     # the team's own data

    exit_code = ExitCode.PASS  # the meter informs; a job fails on it only by meter-fail-above

    @property
    def adaptivity(self) -> str:
        return self.plan.adaptivity

    def fails_above(self, threshold: float | None) -> bool:
        """Whether a run should fail its job: the reported range lies at or above ``threshold``,
        which must be one of the edges (the guarantee is stated at the edges). A withheld answer
        (adaptivity none) never fails; ``threshold`` None never fails.

        Since an answer may be the neighbour of the true range within the tolerance, a model
        whose overfitting is at least ``threshold + tolerance`` fails with probability at least
        the reliability, and one below ``threshold - tolerance`` passes with it.
        """
        edges = list(self.plan.ranges.edges)
        if threshold is None or self.answer == "withheld":
            return False
        if not any(abs(threshold - e) < 1e-12 for e in edges):
            raise UsageError(f"meter-fail-above: {threshold!r} is not one of the meter's edges "
                             f"{edges!r}; the guarantee is stated at the edges")
        index = self.ranges.index(self.answer)
        lower = 0.0 if index == 1 else (-math.inf if index == 0 else edges[index - 2])
        return lower >= threshold - 1e-12

    def to_dict(self) -> dict:
        return {**self.answer_dict(self.plan.to_dict()), "answer": self.answer,
                "ranges": self.ranges, "validation_accuracy": self.validation_accuracy,
                "adaptivity": self.adaptivity, "guarantee": "holds"}


@dataclass(kw_only=True)
class PickAnswer(Answer):
    """What one pick may reveal: a candidate, "no pick yet", or "withheld" (adaptivity none)."""

    answer: str
    candidates: list[str]

    exit_code = ExitCode.PASS  # a pick informs; it gates nothing

    @property
    def picked(self) -> bool:
        return self.answer in self.candidates

    def to_dict(self) -> dict:
        return {**self.answer_dict(self.plan.to_dict()), "answer": self.answer,
                "picked": self.picked, "candidates": self.candidates, "guarantee": "holds"}
