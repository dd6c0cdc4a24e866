"""Errors of the AutoML queue.

They extend :class:`easeml_ci.errors.EasemlError`, so the `easeml-automl` CLI turns each into one
line on stderr and its exit code (2 for bad input), never a traceback.
"""
from __future__ import annotations

from easeml_ci.errors import EasemlError, UsageError


class AutomlError(EasemlError):
    """Base class of every AutoML failure a user can see."""

    exit_code = 2


class DatasetError(AutomlError, UsageError):
    """A dataset that cannot be read or whose schema cannot be used as given."""


class CardError(AutomlError, UsageError):
    """A model card that cannot be read, or lacks what is needed to encode data for its model."""


class StoreError(AutomlError):
    """The store URL is malformed or the database cannot be reached (exit 2)."""


class TenantError(AutomlError, UsageError):
    """A tenant that does not exist, already exists, or is registered with bad options."""


class ExportError(AutomlError):
    """A trained candidate whose ONNX export does not reproduce its predictions."""

    exit_code = 1


class PromotionError(AutomlError):
    """Writing a promoted model or opening its pull request failed."""

    exit_code = 1


class SchedulerError(AutomlError, ValueError):
    """A scheduler asked for something it cannot do: an unknown name, nothing pending (exit 2).

    Also a :class:`ValueError`, as it was before it joined this hierarchy.
    """


class SearchSpaceError(AutomlError, ValueError):
    """A configuration or candidate name does not fit its family's space (exit 2; a ValueError too)."""


class MatrixError(AutomlError, ValueError):
    """A quality/cost matrix or learning-curve file is malformed (exit 2; a ValueError too).

    ``path`` and ``line`` (1 for the header, None for the whole file) say where; the message reads
    ``path:line: problem``, the problem naming the column and the value found.
    """

    def __init__(self, path, problem: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem
