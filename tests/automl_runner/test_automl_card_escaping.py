"""Text from a tenant's data cannot break out of the model card (MODEL_CARD.md, the PR body)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from automl_runner.worker.promote import ModelCard, md_code, md_text

GOLDEN = Path(__file__).parents[1] / "easeml_ci" / "golden"


def _card_fields() -> dict:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.CARD)


def outside_code(md: str) -> str:
    """The markdown with every code span taken out (CommonMark: a run of n backticks up to the
    next run of exactly n); what is left is where links, mentions and issue references live."""
    out, i = [], 0
    while i < len(md):
        m = re.compile(r"`+").search(md, i)
        if not m:
            out.append(md[i:])
            break
        out.append(md[i:m.start()])
        n = len(m.group())
        close = re.compile(r"(?<!`)`{%d}(?!`)" % n).search(md, m.end())
        if close is None:  # an unmatched run is literal text
            out.append(m.group())
            i = m.end()
            continue
        i = close.end()
    return "".join(out)


def _cells(row: str) -> int:
    return len(re.findall(r"(?<!\\)\|", row)) - 1


HOSTILE = "x` Fixes #1 | **bold** @team <img src=x> `"


def test_hostile_column_names_and_categories_stay_inside_code_spans():
    fields = _card_fields()
    fields["features"] = [
        {"name": HOSTILE, "kind": "numeric"},
        {"name": "colour", "kind": "categorical", "categories": ["Fixes #1", "``a`` | b", "plain", "line\nbreak"]},
    ]
    fields["target"] = "closes #2`"
    fields["dataset"] = "data/``x``|.csv"
    md = ModelCard(**fields).to_markdown()
    free = outside_code(md)
    for danger in ("#1", "#2", "@team", "<img", "**bold**", "Fixes", "closes"):
        assert danger not in free, (danger, free)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    table1 = [r for r in rows if _cells(r) == 2]
    table2 = [r for r in rows if _cells(r) == 3]
    assert len(table1) + len(table2) == len(rows), rows  # no row gained or lost a cell
    assert len(table2) == 1 + 2  # the header and the two columns
    assert "plain" in free  # ordinary categories are shown as they were


def test_md_code_cannot_be_closed_from_inside():
    for text in ["a`b", "``", "`", "a ``` b", "x|y", "end`"]:
        span = md_code(text)
        assert outside_code(span) == "", (text, span)
        assert "\n" not in md_code("a\nb")


def test_plain_text_is_unchanged():
    assert md_code("x0") == "`x0`"
    assert md_text("größe 2.5") == "größe 2.5"
    assert md_text("Fixes #1") == "`Fixes #1`"
    assert ModelCard(**_card_fields()).to_markdown() == (GOLDEN / "MODEL_CARD.md").read_text(encoding="utf-8")
