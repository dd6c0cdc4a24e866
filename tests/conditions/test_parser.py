"""The condition language: accepted forms, canonical text, and errors that point at the column."""
import pytest
from hypothesis import given, strategies as st

import conditions
from conditions import ConditionError, parse


@pytest.mark.parametrize("text, canonical", [
    ("n - o > 0.02 +/- 0.01", "n - o > 0.02 +/- 0.01"),
    ("n > o + 0.02 +/- 0.01", "n - o > 0.02 +/- 0.01"),                 # variables move left
    ("0.02 + o < n +/- 0.01", "-n + o < -0.02 +/- 0.01"),               # constants fold right
    ("d < 0.1 +/- 0.01", "d < 0.1 +/- 0.01"),
    ("n >= 1.1 * o +/- 0.05", "n - 1.1 * o >= 0 +/- 0.05"),
    ("n >= o*1.1 +/- 0.05", "n - 1.1 * o >= 0 +/- 0.05"),               # coefficient on either side
    ("-(n - o) <= -0.02 +/- 0.01", "-n + o <= -0.02 +/- 0.01"),         # unary minus, brackets
    ("n/2 > 0.4 +/- 0.025", "0.5 * n > 0.4 +/- 0.025"),
    ("n > 0.8 ± 0.05 ∧ d ≤ 0.1 ± 0.01", "n > 0.8 +/- 0.05 /\\ d <= 0.1 +/- 0.01"),
    ("n - o > 0.02 +/- 0.01 and d < 0.1 +/- 0.01", "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01"),
    ("n - o > 2e-2 +/- 1E-2 /\\ d < .1 +/- .01", "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01"),
])
def test_accepted_forms_normalise_to_their_canonical_text(text, canonical):
    formula = parse(text)
    assert str(formula) == canonical
    assert parse(canonical) == formula


def test_clause_keeps_its_parts():
    clause = parse("n - o > 0.02 +/- 0.01").clauses[0]
    assert clause.coefficient("n") == 1 and clause.coefficient("o") == -1 and clause.coefficient("d") == 0
    assert (clause.comparison, clause.threshold, clause.tolerance) == (">", 0.02, 0.01)
    assert clause.variables == {"n", "o"}


@pytest.mark.parametrize("text, reason, column", [
    ("n - x > 0.02 +/- 0.01", "unknown variable 'x' at column 5; expected n, o or d", 5),
    ("n > 0.02", "expected '+/-' and a tolerance", 9),
    ("n 0.02 +/- 0.01", "expected a comparison", 3),
    ("n > 0.02 +/- 0", "tolerance must be a positive number, got 0", 14),
    ("n > 0.02 +/- -0.1", "expected a positive number for the tolerance", 14),
    ("n * o > 0.1 +/- 0.1", "not linear", 3),
    ("n / o > 0.1 +/- 0.1", "division by a variable", 5),
    ("n / 0 > 0.1 +/- 0.1", "division by zero", 5),
    ("o - o > 0.1 +/- 0.1", "no variable left", 1),
    ("n > 0.1 +/- 0.1 /\\", "expected a number, n, o, d or '('", 19),
    ("n > 0.1 +/- 0.1 n > 0.2 +/- 0.1", "expected '/\\' or 'and' between clauses", 17),
    ("(n > 0.1 +/- 0.1", "expected ')'", 4),
    ("n > 0.1 +/- 0.1 ; rm -rf /", "unexpected character ';' at column 17", 17),
    ("", "empty condition", 1),
    ("__import__('os') > 1 +/- 1", "unknown variable '__import__'", 1),
])
def test_errors_name_the_column_and_what_was_expected(text, reason, column):
    with pytest.raises(ConditionError) as info:
        parse(text)
    message = str(info.value)
    assert reason in message
    assert info.value.position == column - 1
    quoted, caret = message.splitlines()[1:3]
    assert quoted.strip() == text.strip()
    assert caret.index("^") - 4 == column - 1


@given(st.text(alphabet=st.sampled_from(list("nod x<>=+-*/()\\.0123456789e±∧and")), max_size=40))
def test_random_strings_raise_only_condition_errors(text):
    try:
        formula = parse(text)
    except ConditionError:
        return
    assert parse(str(formula)) == formula


_coef = st.one_of(st.integers(-5, 5).filter(lambda c: c != 0),
                  st.decimals(min_value=-3, max_value=3, places=3).filter(lambda c: c != 0).map(float))
_num = st.decimals(min_value=-2, max_value=2, places=4).map(float)
_tol = st.decimals(min_value="0.0001", max_value=1, places=4).map(float)


@st.composite
def _clause_text(draw):
    variables = draw(st.lists(st.sampled_from(["n", "o", "d"]), min_size=1, max_size=3, unique=True))
    terms = []
    for v in variables:
        c = draw(_coef)
        style = draw(st.sampled_from(["{c} * {v}", "{v}*{c}", "{c}*{v}"]))
        terms.append("(" + style.format(c=c, v=v) + ")")
    cmp = draw(st.sampled_from([">", ">=", "<", "<="]))
    return f"{' + '.join(terms)} {cmp} {draw(_num)} +/- {draw(_tol)}"


@given(st.lists(_clause_text(), min_size=1, max_size=4), st.sampled_from([" /\\ ", " and "]))
def test_valid_formulas_round_trip_through_canonical_text(clauses, joiner):
    text = joiner.join(clauses)
    try:
        formula = parse(text)
    except ConditionError as exc:  # only a clause whose coefficients cancel may be refused
        assert "no variable left" in str(exc)
        return
    assert len(formula) == len(clauses)
    assert parse(str(formula)) == formula
    assert str(parse(str(formula))) == str(formula)


def test_public_surface():
    for name in conditions.__all__:
        assert hasattr(conditions, name)


def test_a_conjunction_is_shown_with_one_backslash_in_str_and_repr():
    formula = parse("n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01")
    for shown in (str(formula), repr(formula), f"{formula!r}", f"{formula}"):
        assert "/\\ d" in shown and "/\\\\" not in shown
