"""easeml-ci: gate pull requests on model quality with a statistical guarantee.

The statistics live in the sibling package :mod:`conditions`; this package holds the product
around them: configuration, test sets, model evaluation, the budget ledger, reports, GitHub.
"""
from .errors import (
    BudgetError,
    BudgetExhausted,
    ConfigError,
    EasemlError,
    InputError,
    ModelFailedOnTestSet,
    TestSetTooSmall,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "BudgetExhausted",
    "ConfigError",
    "EasemlError",
    "InputError",
    "ModelFailedOnTestSet",
    "TestSetTooSmall",
    "UsageError",
    "__version__",
]
