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
from .best_of_k import PickResult, pair_alphas, pick, pick_queries, pick_reliability
from .rounds import RoundVerdict, decide_at_round_end
from .sequential import (FormulaDecision, SequentialClause, SequentialDecision, SequentialPlan,
                         sequential_plan)
from .zones import ImpossibleCondition, check_formula

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
