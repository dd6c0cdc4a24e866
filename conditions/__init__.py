"""The condition language and its statistics (no files, models, git or GitHub here)."""
from .errors import ConditionError, PlanError, SampleTooSmall

__all__ = ["ConditionError", "PlanError", "SampleTooSmall"]
