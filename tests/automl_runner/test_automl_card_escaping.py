"""Text from a tenant's data cannot break out of the model card (MODEL_CARD.md), the pull
request's title and body: no link, mention, issue reference, closing keyword, HTML or new line.

Markdown is read here as GitHub reads it (CommonMark with GFM tables): a table row is split into
cells at every ``|`` not escaped by a backslash, then each cell's code spans (a run of n backticks
up to the next run of exactly n) are taken out; what is left is where links, mentions and issue
references live, and must hold nothing of the tenant's.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from automl_runner.candidates.catalogue import default_catalogue
from automl_runner.datasets.schema import infer_schema, load_dataset
from automl_runner.datasets.testset_export import schema_from_card
from automl_runner.store import open_store
from automl_runner.worker.promote import CARD_FORMAT, ModelCard, maybe_promote, md_code
from test_automl_cli import _fit, github  # noqa: F401  (the fake GitHub fixture)

GOLDEN = Path(__file__).parents[1] / "easeml_ci" / "golden"


def _card_fields() -> dict:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.CARD)


_RUN = re.compile(r"`+")


def code_spans(md: str) -> tuple[str, list[str]]:
    """(the text outside code spans, the spans' raw contents) of one line or table cell."""
    out, spans, i = [], [], 0
    while i < len(md):
        m = _RUN.search(md, i)
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
        spans.append(md[m.end():close.start()])
        i = close.end()
    return "".join(out), spans


def outside_code(md: str) -> str:
    return code_spans(md)[0]


def cells(row: str) -> list[str]:
    """A GFM table row's cells (split at unescaped pipes; the leading and trailing pipe dropped)."""
    parts = re.split(r"(?<!\\)\|", row.strip())
    return parts[1:-1]


def decoded(span_md: str) -> str:
    """What GitHub shows for one code span written as markdown (inside a table cell)."""
    free, (inner,) = code_spans(span_md)
    assert free == ""
    if inner.startswith(" ") and inner.endswith(" ") and inner.strip(" "):
        inner = inner[1:-1]
    return inner.replace("\\|", "|")


def free_text(md: str) -> str:
    """Everything of ``md`` outside code spans, table rows cell by cell."""
    out = []
    for line in md.splitlines():
        if line.startswith("|"):
            out.extend(outside_code(c) for c in cells(line))
        else:
            out.append(outside_code(line))
    return "\n".join(out)


HOSTILE_COLUMN = "x` Fixes #1 | **bold** @org/team <img src=x> `"
HOSTILE_CATEGORIES = ["Fixes #3", "``a`` | b", "@team", "<img src=x onerror=alert(1)>", "www.evil.example",
                      "line\nbreak", "rtl\u202eevil", "deadbeefcafe", "JIRA-12", "_em_"]
#: What none of the tenant's text may leave outside a code span.
DANGERS = ("Fixes", "fixes", "closes", "#1", "#2", "#3", "#4", "@org", "@team", "<img", "bold", "www.evil",
           "\u202e", "deadbeef", "JIRA", "_em_", "break")


def test_hostile_column_names_and_categories_stay_inside_code_spans():
    fields = _card_fields()
    fields["features"] = [
        {"name": HOSTILE_COLUMN, "kind": "numeric"},
        {"name": "colour", "kind": "categorical", "categories": HOSTILE_CATEGORIES[:8]},
        {"name": "line\nbreak\r\u2028sep", "kind": "numeric"},
    ]
    fields["target"] = "closes #2`"
    fields["dataset"] = "data/``x``|.csv"
    md = ModelCard(**fields).to_markdown()
    free = free_text(md)
    for danger in DANGERS:
        assert danger not in free, (danger, free)
    # no name added or split a line or a cell: the card has the lines and cells of a plain one
    plain = dict(_card_fields(), features=[{"name": "a", "kind": "numeric"},
                                           {"name": "b", "kind": "categorical", "categories": list("cdefghij")},
                                           {"name": "c", "kind": "numeric"}])
    plain_md = ModelCard(**plain).to_markdown()
    assert len(md.splitlines()) == len(plain_md.splitlines())
    assert [len(cells(r)) for r in md.splitlines() if r.startswith("|")] == \
        [len(cells(r)) for r in plain_md.splitlines() if r.startswith("|")]
    # and each shows as the tenant wrote it (controls as escapes)
    rows = {cells(r)[0].strip(): cells(r) for r in md.splitlines() if r.startswith("| `")}
    assert decoded(list(rows)[0]) == HOSTILE_COLUMN
    encoding = rows["`colour`"][2]
    shown = [decoded(s.strip()) for s in re.findall(r"(`+ ?.*? ?`+)(?:, |\s\()", encoding)]
    assert shown == [c.replace("\n", "\\n").replace("\u202e", "\\u202e") for c in HOSTILE_CATEGORIES[:8]]


def test_a_hostile_tenant_dataset_reaches_the_pull_request_only_inside_code_spans(tmp_path, github):
    """End to end: a CSV whose header and categories are hostile, submitted, trained, promoted into
    a pull request: its title, body and card file carry them only as code spans."""
    data = tmp_path / "hostile.csv"
    target = "fixes #4`"
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["f1", HOSTILE_COLUMN, "colour\nClose #2", target])
        for i in range(80):
            w.writerow([i % 7, (i * 3) % 5, HOSTILE_CATEGORIES[i % len(HOSTILE_CATEGORIES)], "yes" if i % 3 else "no"])
    schema = infer_schema(str(data), target)
    ds = load_dataset(str(data), schema)
    with open_store(tmp_path / "q.db") as s:
        s.add_tenant("acme", str(data), schema, default_catalogue(), output=str(tmp_path / "out"),
                     repository="acme/models", only=["gaussian-nb"])
        cand, blob = _fit(schema, ds, "gaussian-nb")
        c = s.try_claim("acme", "gaussian-nb", "w", "cpu")
        s.complete(c, "w", 0.7, 0.1, None, None)
        p = maybe_promote(s, s.tenant("acme"), c.trial_id, cand, blob, 0.7)
    assert p.status == "pr-opened", p.message
    (pr,) = github.pulls
    card_md = github.files[("easeml-automl/acme", "models/acme.card.md")].decode()
    local_md = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    for md in (pr["title"], pr["body"], card_md, local_md):
        free = free_text(md)
        for danger in DANGERS + ("Close",):
            assert danger not in free, (danger, free)
    assert "`gaussian-nb`" in pr["title"] and "`acme`" in pr["title"]
    assert json.loads(github.files[("easeml-automl/acme", "models/acme.card.json")])["card_format"] == CARD_FORMAT


def test_md_code_cannot_be_closed_from_inside():
    for text in ["a`b", "``", "`", "a ``` b", "x|y", "end`", " ", "`a`"]:
        span = md_code(text)
        assert outside_code(span) == "", (text, span)
        assert decoded(span) == text, (text, span)
    assert md_code("") == "` `"  # an empty name still shows as a (blank) span, never as a lone fence
    assert md_code("a\nb") == "`a\\nb`"
    assert md_code("a\u202eb\u200bc") == "`a\\u202eb\\u200bc`"


@given(st.text(alphabet="`| \\#@<>*_[]()!a\n\r\t\u202e", max_size=30))
def test_md_code_shows_any_text_as_one_span_on_one_line(text):
    span = md_code(text)
    assert "\n" not in span and "\r" not in span
    assert len(cells(f"| {span} |")) == 1
    assert outside_code(span) == ""
    visible = "".join(ch.encode("unicode_escape").decode("ascii") if ch in "\n\r\t\u202e" else ch for ch in text)
    assert decoded(span) == (visible or " "), (text, span)


def test_plain_text_is_a_code_span_and_the_card_is_the_golden_one():
    assert md_code("x0") == "`x0`"
    assert md_code("größe 2.5") == "`größe 2.5`"
    assert ModelCard(**_card_fields()).to_markdown() == (GOLDEN / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_a_card_of_format_1_still_loads_into_the_same_schema():
    """Cards written before `card_format` (format 1: categories shown as plain text) load as before."""
    new = json.loads((GOLDEN / "model-card.json").read_text(encoding="utf-8"))
    assert new["card_format"] == 2
    old = {k: v for k, v in new.items() if k != "card_format"}
    assert schema_from_card(old, "old.json") == schema_from_card(new, "new.json")
