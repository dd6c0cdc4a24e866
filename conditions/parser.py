"""Parse condition text into a :class:`~conditions.ast.Formula` (a hand-written recursive descent
parser: no ``eval``, ever).

Grammar (ease.ml/ci's, extended)::

    formula    := clause (('/\\' | 'and') clause)*
    clause     := expr COMPARISON expr TOLERANCE NUMBER
    COMPARISON := '>' | '>=' | '<' | '<='
    TOLERANCE  := '+/-' | '±'
    expr       := term (('+' | '-') term)*
    term       := unary (('*' | '/') unary)*
    unary      := ('-' | '+') unary | primary
    primary    := NUMBER | 'n' | 'o' | 'd' | '(' expr ')'

Expressions must stay linear in n, o, d (a product needs a constant side, a divisor must be a
non-zero constant). Variables may stand on both sides; constants on the left are folded into the
threshold: ``n > o + 0.02`` is the clause ``n - o > 0.02``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .ast import COMPARISONS, VARIABLES, Clause, Formula
from .errors import ConditionError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<tol>\+/-|±)
  | (?P<and>/\\|∧)
  | (?P<cmp>>=|<=|>|<|≥|≤)
  | (?P<op>[-+*/()])
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
    """,
    re.VERBOSE,
)
_UNICODE_CMP = {"≥": ">=", "≤": "<="}


@dataclass(frozen=True)
class Token:
    kind: str  # number, tol, and, cmp, op, name, var, end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConditionError(f"unexpected character {text[pos]!r} at column {pos + 1}; expected a "
                                 "number, n, o, d, an operator (+ - * / > < >= <=), '+/-' or '/\\'",
                                 text, pos)
        kind = m.lastgroup
        value = m.group()
        if kind == "name":
            if value == "and":
                kind = "and"
            elif value in VARIABLES:
                kind = "var"
            else:
                raise ConditionError(f"unknown variable {value!r} at column {pos + 1}; expected n, o or d",
                                     text, pos)
        if kind == "cmp":
            value = _UNICODE_CMP.get(value, value)
        if kind != "ws":
            tokens.append(Token(kind, value, pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


class _Linear:
    """A linear form ``const + sum coef[v] * v`` built while parsing."""

    __slots__ = ("coefs", "const")

    def __init__(self, coefs: dict[str, float] | None = None, const: float = 0.0):
        self.coefs = dict(coefs or {})
        self.const = const

    @property
    def is_constant(self) -> bool:
        return all(c == 0 for c in self.coefs.values())

    def scaled(self, k: float) -> "_Linear":
        return _Linear({v: c * k for v, c in self.coefs.items()}, self.const * k)

    def plus(self, other: "_Linear", sign: float = 1.0) -> "_Linear":
        coefs = dict(self.coefs)
        for v, c in other.coefs.items():
            coefs[v] = coefs.get(v, 0.0) + sign * c
        return _Linear(coefs, self.const + sign * other.const)


def _describe(tok: Token) -> str:
    return "end of the condition" if tok.kind == "end" else repr(tok.text)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, expected: str, tok: Token | None = None):
        tok = tok or self.tok
        raise ConditionError(f"unexpected {_describe(tok)} at column {tok.pos + 1}; expected {expected}",
                             self.text, tok.pos)

    # formula := clause (AND clause)*
    def formula(self) -> Formula:
        if self.tok.kind == "end":
            raise ConditionError("empty condition; expected a clause such as 'n - o > 0.02 +/- 0.01'",
                                 self.text, 0)
        clauses = [self.clause()]
        while self.tok.kind == "and":
            self.advance()
            clauses.append(self.clause())
        if self.tok.kind != "end":
            self.fail("'/\\' or 'and' between clauses")
        return Formula(tuple(clauses), source=self.text)

    def clause(self) -> Clause:
        start = self.tok.pos
        left = self.expr()
        if self.tok.kind != "cmp":
            self.fail("a comparison (>, >=, <, <=)")
        cmp_tok = self.advance()
        right = self.expr()
        if self.tok.kind != "tol":
            self.fail("'+/-' and a tolerance (ease.ml/ci clauses read 'EXPR > CONST +/- TOL')")
        self.advance()
        tol_tok = self.tok
        if tol_tok.kind != "number":
            self.fail("a positive number for the tolerance")
        self.advance()
        tolerance = float(tol_tok.text)
        if not (tolerance > 0 and math.isfinite(tolerance)):
            raise ConditionError(f"tolerance must be a positive number, got {tol_tok.text} at column "
                                 f"{tol_tok.pos + 1}", self.text, tol_tok.pos)
        end = tol_tok.pos + len(tol_tok.text)
        form = left.plus(right, -1.0)
        coefs = tuple((v, form.coefs[v]) for v in VARIABLES if form.coefs.get(v, 0.0) != 0.0)
        if not coefs:
            raise ConditionError(f"clause at column {start + 1} has no variable left after folding "
                                 "constants; expected an expression in n, o or d", self.text, start)
        threshold = -form.const
        if not all(math.isfinite(c) for _, c in coefs) or not math.isfinite(threshold):
            raise ConditionError(f"clause at column {start + 1} has a coefficient or threshold that is "
                                 "not a finite number", self.text, start)
        assert cmp_tok.text in COMPARISONS
        return Clause(coefs, cmp_tok.text, threshold, tolerance, span=(start, end))

    def expr(self) -> _Linear:
        first = self.tok
        value = self.term()
        zero = self._bare_zero(first)
        while self.tok.kind == "op" and self.tok.text in "+-":
            if zero is not None:
                self._refuse_zero(zero)
            sign = 1.0 if self.advance().text == "+" else -1.0
            operand = self.tok
            value = value.plus(self.term(), sign)
            zero = self._bare_zero(operand)
            if zero is not None:
                self._refuse_zero(zero)
        return value

    def _bare_zero(self, tok: Token) -> Token | None:
        """``tok`` when the term just read was that one token, a literal zero."""
        if tok.kind == "number" and float(tok.text) == 0 and self.tokens[self.i - 1] is tok:
            return tok
        return None

    def _refuse_zero(self, tok: Token):
        """A zero added or subtracted changes nothing, so it is almost surely the letter o typed
        as a zero (``n - 0 > 0.02`` would silently gate ``n > 0.02``)."""
        raise ConditionError(f"'{tok.text}' at column {tok.pos + 1} adds or subtracts zero, which "
                             "changes nothing; did you mean o (the old model's accuracy, the "
                             "letter)?", self.text, tok.pos)

    def term(self) -> _Linear:
        value = self.unary()
        while self.tok.kind == "op" and self.tok.text in "*/":
            op = self.advance()
            rhs_tok = self.tok
            rhs = self.unary()
            if op.text == "*":
                if value.is_constant:
                    value = rhs.scaled(value.const)
                elif rhs.is_constant:
                    value = value.scaled(rhs.const)
                else:
                    raise ConditionError(f"product of two variables at column {op.pos + 1} is not "
                                         "linear; expected a number on one side of '*'", self.text, op.pos)
            else:
                if not rhs.is_constant:
                    raise ConditionError(f"division by a variable at column {op.pos + 1}; expected a "
                                         "number after '/'", self.text, rhs_tok.pos)
                if rhs.const == 0:
                    raise ConditionError(f"division by zero at column {op.pos + 1}", self.text, rhs_tok.pos)
                value = value.scaled(1.0 / rhs.const)
        return value

    def unary(self) -> _Linear:
        if self.tok.kind == "op" and self.tok.text in "+-":
            sign = -1.0 if self.advance().text == "-" else 1.0
            return self.unary().scaled(sign)
        return self.primary()

    def primary(self) -> _Linear:
        tok = self.tok
        if tok.kind == "number":
            self.advance()
            value = float(tok.text)
            if not math.isfinite(value):
                raise ConditionError(f"number {tok.text} at column {tok.pos + 1} is too large",
                                     self.text, tok.pos)
            return _Linear(const=value)
        if tok.kind == "var":
            self.advance()
            return _Linear({tok.text: 1.0})
        if tok.kind == "op" and tok.text == "(":
            self.advance()
            value = self.expr()
            if not (self.tok.kind == "op" and self.tok.text == ")"):
                self.fail("')'")
            self.advance()
            return value
        self.fail("a number, n, o, d or '('")
        raise AssertionError  # pragma: no cover


def parse(text: str) -> Formula:
    """Parse a condition such as ``n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01``.

    Raises :class:`ConditionError` quoting the text with a caret under the offending column.
    """
    if not isinstance(text, str):
        raise ConditionError(f"condition must be text, got {type(text).__name__}")
    return _Parser(text).formula()
