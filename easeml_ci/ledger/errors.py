"""Ledger errors."""
from __future__ import annotations

from ..errors import EasemlError


class LedgerConflict(Exception):
    """Another writer appended first: the stored length is not the one the append expected.

    Internal to the ledger layer: :class:`~easeml_ci.ledger.Ledger` reloads and retries.
    """

    def __init__(self, expected: int, actual: int):
        super().__init__(f"ledger length is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


class LedgerCorrupt(EasemlError):
    """The ledger cannot be read or written as it stands (not a budget question; exit 2)."""


class LedgerSpent(Exception):
    """Raised inside :meth:`Ledger.record_step` when the budget ran out before the append.

    Carries the :class:`~easeml_ci.ledger.budget.Budget` seen at that moment; the check turns
    it into :class:`~easeml_ci.errors.BudgetExhausted` with a new-test-set alert.
    """

    def __init__(self, budget):
        super().__init__(f"test set {budget.status}")
        self.budget = budget


class LedgerNeedsMigration(LedgerCorrupt):
    """A v1 ledger (no MACs): the gate reads it only after ``easeml-ci ledger migrate``."""
