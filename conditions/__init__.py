"""The condition language and its statistics (no files, models, git or GitHub here).

>>> import conditions
>>> p = conditions.plan("n > 0.8 +/- 0.05", reliability=0.9999, adaptivity="full", steps=32)
>>> p.test_examples, p.clauses[0].method
(2813, 'exact-binomial')
"""
from .ast import VARIABLES, Clause, Formula
from .compiler import CompiledClause, compile_clause
from .errors import ConditionError, ConditionsError, PlanError, SampleTooSmall
from .parser import parse
from .planner import (
    ADAPTIVITIES,
    METHODS,
    MODES,
    ClausePlan,
    ClauseVerdict,
    Outcomes,
    Plan,
    Verdict,
    plan,
    query_count,
    validate_parameters,
)
from .zones import ImpossibleCondition, check_formula

#: Names of the statistics that only some answers use (labels on demand, rounds, the best of k),
#: loaded on first use: a labelled check never imports them (~4 ms of its start).
_LAZY = {
    "PickResult": "best_of_k", "pair_alphas": "best_of_k", "pick": "best_of_k",
    "pick_queries": "best_of_k", "pick_reliability": "best_of_k",
    "RoundVerdict": "rounds", "decide_at_round_end": "rounds",
    "FormulaDecision": "sequential", "SequentialClause": "sequential",
    "SequentialDecision": "sequential", "SequentialPlan": "sequential",
    "sequential_plan": "sequential",
}


def __getattr__(name: str):
    """PEP 562: a name of :data:`_LAZY`, imported from its module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "ADAPTIVITIES", "METHODS", "MODES", "VARIABLES",
    "Clause", "ClausePlan", "ClauseVerdict", "CompiledClause", "ConditionError", "ConditionsError",
    "Formula", "FormulaDecision", "ImpossibleCondition", "Outcomes", "PickResult", "Plan",
    "PlanError", "RoundVerdict", "SampleTooSmall",
    "SequentialClause", "SequentialDecision", "SequentialPlan", "Verdict",
    "check_formula", "compile_clause", "decide_at_round_end", "pair_alphas", "parse", "pick",
    "pick_queries", "pick_reliability", "plan", "query_count", "sequential_plan",
    "validate_parameters",
]
