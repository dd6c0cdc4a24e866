"""A clock for the AutoML store that moves only when a test moves it (no sleeping past leases)."""
from __future__ import annotations


class FakeClock:
    """Store time that moves only when the test moves it (shared by all the stores of a test)."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
