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
