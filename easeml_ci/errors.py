"""Exception hierarchy of the product layer.

Every error a user can cause is an :class:`EasemlError`; each knows its exit code, so the CLI
prints one line and exits without a traceback. Catch at the level you care about.
"""
from __future__ import annotations


class EasemlError(Exception):
    """Base class: a user-facing failure with a one-line message and an exit code."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class UsageError(EasemlError):
    """Bad input: configuration, files, keys, arguments (exit 2, nothing written anywhere)."""

    exit_code = 2


class ConfigError(UsageError):
    """`.easeml.yml` is malformed, has unknown/missing keys or bad values."""


class InputError(UsageError):
    """A model, prediction file or test set cannot be used as given."""


class BudgetError(EasemlError):
    """The test set cannot certify: it is retired, its steps are spent, or it is too small (exit 3)."""

    exit_code = 3


class TestSetTooSmall(BudgetError):
    __test__ = False  # not a pytest class


class BudgetExhausted(BudgetError):
    pass
