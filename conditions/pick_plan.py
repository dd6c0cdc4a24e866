"""The plan of a test set that serves picks: how the reliability of its life is shared.

One pick names one of the k candidates or says "no pick yet" (:func:`conditions.pick` found no
certificate on the labels it has). Under ``adaptivity: none`` the team sees no answer, so a test
set serving ``steps`` picks splits delta over those ``steps`` (a union bound over the picks).
Under ``full`` every answer is released, and a team's next set of candidates may depend on every
answer so far: the union bound runs over the reachable nodes of the transcript tree, which is
``(candidates + 1)``-ary (:func:`conditions.best_of_k.pick_queries`), so ``candidates`` is the most
models any one pick may compare and is fixed at registration.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import PlanError
from .best_of_k import pick_queries

ADAPTIVITIES = ("none", "full")
MIN_DELTA = 1e-15  # below this, 1 - delta rounds to 1 in double precision: no pick could certify


@dataclass(frozen=True)
class PickPlan:
    """``reliability`` over the test set's life; ``tolerance`` the indifference of one pick."""

    reliability: float
    tolerance: float
    adaptivity: str
    steps: int
    candidates: int
    rows: int  # rows of fresh unlabelled data a pick test set should hold (the alert's request)

    def __post_init__(self) -> None:
        if isinstance(self.reliability, bool) or not 0 < self.reliability < 1:
            raise PlanError(f"reliability must be in (0, 1), got {self.reliability!r}")
        if isinstance(self.tolerance, bool) or not 0 <= self.tolerance < 1:
            raise PlanError(f"tolerance must be in [0, 1), got {self.tolerance!r}")
        if self.adaptivity not in ADAPTIVITIES:
            raise PlanError(f"adaptivity for picks must be one of {', '.join(ADAPTIVITIES)}, "
                            f"got {self.adaptivity!r}")
        if self.candidates < 2:
            raise PlanError(f"candidates must be at least 2, got {self.candidates!r}")
        if self.steps < 1:
            raise PlanError(f"steps must be at least 1, got {self.steps!r}")
        if self.pick_delta < MIN_DELTA:
            raise PlanError(
                f"adaptivity {self.adaptivity} with {self.candidates} candidates and {self.steps} "
                f"steps counts {self.queries:.3g} picks, so one pick would have to be right with "
                f"probability 1 - {self.pick_delta:.3g}, beyond what can be certified; use fewer "
                "steps or candidates, or adaptivity none")

    @property
    def queries(self) -> int:
        """Picks the union bound covers (nodes of the transcript tree under ``full``)."""
        return pick_queries(self.adaptivity, self.steps, self.candidates)

    @property
    def pick_delta(self) -> float:
        """The error probability one pick may have: the life's delta over the picks counted."""
        return (1.0 - self.reliability) / self.queries

    @property
    def pick_reliability(self) -> float:
        """The reliability one pick is certified at."""
        return 1.0 - self.pick_delta

    variables = frozenset()  # a pick compares no old model (the alert ranks no pool by it)
    labels = 0               # labels are asked for only where candidates disagree

    @property
    def test_examples(self) -> int:
        return self.rows

    @property
    def description(self) -> str:
        tolerance = f" to within {self.tolerance:g}" if self.tolerance else ""
        return f"pick the best of up to {self.candidates} models{tolerance}"

    @property
    def next_step(self) -> str:
        return (f"collect at least {self.rows:,} rows of fresh unlabelled data (features and row "
                "ids), point `pick.testset:` (or --testset) at it; its first `easeml-ci pick` "
                "registers it")

    def summary(self) -> dict:
        return {"condition": self.description, "reliability": self.reliability, "mode": "pick",
                "adaptivity": self.adaptivity, "steps": self.steps, "passes": None,
                "method": "e-process elimination", "test_examples": self.rows, "labels": 0}

    def to_dict(self) -> dict:
        return {**self.summary(), "tolerance": self.tolerance, "candidates": self.candidates,
                "queries": self.queries, "pick_reliability": self.pick_reliability}
