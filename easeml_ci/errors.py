"""Exception hierarchy of the product layer.

Every error a user can cause is an :class:`EasemlError`; each knows its exit code, so the CLI
prints one line and exits without a traceback. Catch at the level you care about.
"""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What `easeml-ci` and the Action exit with; each error class carries its own."""

    PASS = 0          # a pass, a withheld verdict, or an answer that does not gate
    FAIL = 1          # a fail (a model that failed on the test data is a fail)
    USAGE = 2         # bad input, or no verdict the gate can stand behind; nothing decided
    NO_BUDGET = 3     # the test set is retired, spent or too small for its plan


class EasemlError(Exception):
    """Base class: a user-facing failure with a one-line message and an exit code."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class UsageError(EasemlError):
    """Bad input: configuration, files, keys, arguments (exit 2, nothing written anywhere)."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """`.easeml.yml` is malformed, has unknown/missing keys or bad values."""


class InputError(UsageError):
    """A model, prediction file or test set cannot be used as given."""


class DiskFull(EasemlError):
    """A write failed for want of space (``ENOSPC``) or quota (``EDQUOT``) (exit 2, never 1,
    which is a fail). ``path`` is the file; ``unchanged`` says that it is as it was before (an
    atomic replace, a ledger append rolled back), so running again once there is room is safe."""

    exit_code = ExitCode.USAGE

    def __init__(self, path, reason: str, *, unchanged: bool = True):
        state = (f"{path} is as it was" if unchanged else
                 f"{path} may hold part of what was being written")
        super().__init__(f"cannot write {path}: {reason}; {state}. Free some space (or raise the "
                         "quota) and run the command again")
        self.path = str(path)
        self.unchanged = unchanged


class Interrupted(EasemlError):
    """Ctrl-C (SIGINT) or SIGTERM stopped the command (exit 130, as a shell reports an
    interrupted command; never 1, which is a fail)."""

    exit_code = 130

    def __init__(self, message: str = "interrupted: the command was stopped (Ctrl-C) before it "
                                      "gave an answer"):
        super().__init__(message)


class ModelFailedOnTestSet(EasemlError):
    """A model failed on the test data itself, after the test set was opened (exit 1).

    Whatever the model did there (an exception, an output of the wrong length, NaN, scores where
    labels were due) may depend on the secret features, so the message is fixed: it names the
    model and nothing from the run. The full text is in :attr:`detail`, for the test-set owner's
    private channel only; never show it to the team. Everything that could be checked without
    the test set was checked before it was opened (:func:`easeml_ci.models.preflight`).
    """

    exit_code = ExitCode.FAIL

    def __init__(self, spec: str, detail: str):
        super().__init__(f"model {spec} could not be evaluated on the test set")
        self.spec = spec
        self.detail = detail


class BudgetError(EasemlError):
    """The test set cannot certify: it is retired, its steps are spent, or it is too small (exit 3)."""

    exit_code = ExitCode.NO_BUDGET


class TestSetTooSmall(BudgetError):
    """The test set holds fewer examples (or rows) than the plan needs (exit 3)."""

    __test__ = False  # not a pytest class


class BudgetExhausted(BudgetError):
    """The test set is retired or its steps are spent: no verdict, and the new-test-set alert.

    ``budget`` is the ledger's :class:`~easeml_ci.ledger.Budget`; ``alert`` the alert raised for
    this event (its ``next_step`` says what to do)."""

    def __init__(self, budget, alert: dict, fingerprint: str):
        if budget.status == "retired":
            what = f"was retired after {budget.passes_used} pass{'es' if budget.passes_used != 1 else ''}"
        else:
            what = ("has used its only step" if budget.total == 1 else
                    f"has used all {budget.total} steps")
        step = alert["next_step"]
        super().__init__(f"test set {fingerprint[:12]} {what}; checks no longer certify. "
                         f"{step[0].upper()}{step[1:]}")
        self.budget = budget
        self.alert = alert
        self.fingerprint = fingerprint
