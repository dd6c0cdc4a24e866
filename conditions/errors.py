"""Errors of the condition language and the statistics."""
from __future__ import annotations


class ConditionsError(ValueError):
    """The root of every error this package raises: catch it to catch them all.

    ``exit_code`` is what a command line exits with when one reaches it (a user's mistake)."""

    exit_code = 2


class ConditionError(ConditionsError):
    """A condition text that does not parse or compile.

    The message quotes the text with a caret under the offending column and says what was
    expected, e.g. ``unknown variable 'x' at column 5; expected n, o or d``.
    """

    def __init__(self, message: str, text: str | None = None, position: int | None = None):
        self.reason = message
        self.text = text
        self.position = position
        if text is not None and position is not None:
            caret = " " * position + "^"
            message = f"{message}\n    {text}\n    {caret}"
        super().__init__(message)


class PlanError(ConditionsError):
    """Parameters of a plan that are out of their allowed range (reliability, steps, ...)."""


class SampleTooSmall(ConditionsError):
    """A test set smaller than the plan needs was given to a decision."""

    exit_code = 3  # as a test set too small for its plan (easeml_ci.errors.TestSetTooSmall)

    def __init__(self, needed: int, have: int):
        self.needed = needed
        self.have = have
        super().__init__(f"need {needed} labelled examples, have {have}")
