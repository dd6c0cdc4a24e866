"""The syntax tree of a condition: a conjunction of linear clauses over n, o and d.

A clause is kept in one normal form, ``sum_v c_v * v  OP  threshold +/- tolerance``: every
variable on the left, every constant folded into the threshold. Two texts that mean the same
clause (``n > o + 0.02`` and ``n - o > 0.02``) give equal clauses, and the canonical text of a
clause parses back to an equal clause.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

VARIABLES = ("n", "o", "d")
VARIABLE_MEANING = {
    "n": "the new model is right",
    "o": "the old model is right",
    "d": "the two models' predictions differ",
}
COMPARISONS = (">", ">=", "<", "<=")


def format_number(x: float) -> str:
    """Shortest text that parses back to exactly ``x`` (``repr`` of a float, ints without .0)."""
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


@dataclass(frozen=True)
class Clause:
    """``sum_v coefficients[v] * v  comparison  threshold +/- tolerance``."""

    coefficients: tuple[tuple[str, float], ...]  # sorted by VARIABLES order, no zeros
    comparison: str
    threshold: float
    tolerance: float
    span: tuple[int, int] = field(default=(0, 0), compare=False)  # where it stood in the text

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(v for v, _ in self.coefficients)

    def coefficient(self, variable: str) -> float:
        return dict(self.coefficients).get(variable, 0.0)

    @property
    def is_upper_bound(self) -> bool:
        """True for ``<``/``<=``: the clause asks the expression to be small."""
        return self.comparison in ("<", "<=")

    def expression_text(self) -> str:
        parts: list[str] = []
        for i, (var, coef) in enumerate(self.coefficients):
            sign = "-" if coef < 0 else "+"
            mag = abs(coef)
            term = var if mag == 1 else f"{format_number(mag)} * {var}"
            if i == 0:
                parts.append(term if sign == "+" else f"-{term}")
            else:
                parts.append(f"{sign} {term}")
        return " ".join(parts)

    def __str__(self) -> str:
        return (f"{self.expression_text()} {self.comparison} {format_number(self.threshold)}"
                f" +/- {format_number(self.tolerance)}")


@dataclass(frozen=True, repr=False)
class Formula:
    """A conjunction of clauses: it passes when every clause does.

    Its repr shows the canonical text as written, ``<Formula n > 0.8 +/- 0.05 /\\ d < 0.1 +/- 0.01>``:
    the dataclass default quoted the source with ``repr``, doubling the backslash of ``/\\``.
    """

    clauses: tuple[Clause, ...]
    source: str = field(default="", compare=False)

    @property
    def variables(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for c in self.clauses:
            out |= c.variables
        return out

    def __str__(self) -> str:
        return " /\\ ".join(str(c) for c in self.clauses)

    def __repr__(self) -> str:
        return f"<Formula {self}>"

    def __iter__(self):
        return iter(self.clauses)

    def __len__(self) -> int:
        return len(self.clauses)


def is_finite(x: float) -> bool:
    return math.isfinite(x)
