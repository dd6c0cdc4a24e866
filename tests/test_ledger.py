"""The ledger: hash chain, budget semantics per adaptivity, verification of tampering."""
from __future__ import annotations

import json

import pytest

from easeml_ci.errors import ConfigError
from easeml_ci.ledger import (
    FileBackend,
    Ledger,
    LedgerConflict,
    LedgerCorrupt,
    LedgerSpent,
    open_backend,
)
from easeml_ci.ledger.chain import entry_hash

FP = "ab" * 32


def terms(adaptivity="full", steps=4, passes=None):
    return {"condition": "n > 0.5 +/- 0.1", "reliability": 0.99, "mode": "fp-free",
            "adaptivity": adaptivity, "steps": steps, "passes": passes}


@pytest.fixture
def ledger(tmp_path):
    return Ledger(FileBackend(tmp_path / "ledger"), FP)


def lines(ledger):
    return (ledger.backend.directory / f"{FP}.jsonl").read_bytes().splitlines(keepends=True)


def write_lines(ledger, content):
    (ledger.backend.directory / f"{FP}.jsonl").write_bytes(b"".join(content))


# --- backend ------------------------------------------------------------------------------
def test_open_backend_resolves_relative_path_against_base(tmp_path):
    backend = open_backend({"backend": "file", "path": "x/ledger"}, base=tmp_path)
    assert backend.directory == tmp_path / "x/ledger"
    assert open_backend(None, base=tmp_path).directory == tmp_path / ".easeml/ledger"


def test_open_backend_rejects_unknown_backend():
    with pytest.raises(ConfigError, match="unknown backend 'sql'; allowed: file, github"):
        open_backend({"backend": "sql"})


def test_reading_a_missing_ledger_creates_nothing(tmp_path):
    backend = FileBackend(tmp_path / "ledger")
    assert backend.load(FP) == []
    assert not (tmp_path / "ledger").exists()


def test_append_is_compare_and_swap_on_length(ledger):
    ledger.register(terms())
    with pytest.raises(LedgerConflict) as info:
        ledger.backend.append(FP, {"kind": "step"}, expected_length=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert len(ledger.entries()) == 1


def test_fingerprint_must_be_hex_so_it_cannot_escape_the_directory(tmp_path):
    with pytest.raises(LedgerCorrupt, match="not a lowercase hex digest"):
        FileBackend(tmp_path).load("../../etc/passwd")


def test_entries_are_hash_chained(ledger):
    ledger.register(terms())
    ledger.record_step(passed=False, terms=terms())
    first, second = ledger.entries()
    assert first["seq"] == 0 and second["seq"] == 1
    assert second["prev_hash"] == first["hash"] == entry_hash(first)
    assert second["hash"] == entry_hash(second)


def test_unregistered_ledger_needs_terms_for_a_budget(ledger):
    with pytest.raises(LedgerCorrupt, match="not registered"):
        ledger.budget()
    assert ledger.budget(terms(steps=7)).remaining == 7


def test_register_is_idempotent(ledger):
    a = ledger.register(terms(steps=4))
    b = ledger.register(terms(steps=99))
    assert a == b and len(ledger.entries()) == 1


# --- budget semantics ------------------------------------------------------------------------
def spend(ledger, t, verdicts):
    out = []
    for passed in verdicts:
        out.append(ledger.record_step(passed=passed, terms=t)[1])
    return out


def test_full_counts_steps_until_exhausted(ledger):
    t = terms("full", steps=3)
    budgets = spend(ledger, t, [True, False, True])
    assert [b.used for b in budgets] == [1, 2, 3]
    assert [b.remaining for b in budgets] == [2, 1, 0]
    assert budgets[-1].status == "exhausted"
    with pytest.raises(LedgerSpent) as info:
        ledger.record_step(passed=True, terms=t)
    assert info.value.budget.status == "exhausted"
    assert sum(e["kind"] == "step" for e in ledger.entries()) == 3


def test_first_change_retires_at_first_pass(ledger):
    t = terms("firstChange", steps=10)
    budgets = spend(ledger, t, [False, False, True])
    assert [b.status for b in budgets] == ["active", "active", "retired"]
    assert budgets[-1].remaining == 0
    with pytest.raises(LedgerSpent) as info:
        ledger.record_step(passed=False, terms=t)
    assert info.value.budget.status == "retired"


def test_full_with_passes_retires_after_b_passes(ledger):
    t = terms("full", steps=10, passes=2)
    budgets = spend(ledger, t, [True, False, False, True])
    assert [b.status for b in budgets] == ["active"] * 3 + ["retired"]
    assert budgets[-1].passes_used == 2 and budgets[-1].passes_total == 2


def test_full_with_passes_also_exhausts_on_steps(ledger):
    budgets = spend(ledger, terms("full", steps=2, passes=5), [False, False])
    assert budgets[-1].status == "exhausted"


def test_none_stores_no_verdict_and_never_retires_on_passes(ledger):
    t = terms("none", steps=2)
    entry, after = ledger.record_step(passed=None, terms=t)
    assert entry["passed"] is None and after.passes_used == 0 and after.status == "active"
    assert spend(ledger, t, [None])[-1].status == "exhausted"


def test_pinned_terms_win_over_an_edited_config(ledger):
    ledger.register(terms(steps=2))
    spend(ledger, terms(steps=2), [False, False])
    with pytest.raises(LedgerSpent):
        ledger.record_step(passed=False, terms=terms(steps=1000))
    assert ledger.budget(terms(steps=1000)).total == 2


def test_torn_line_counts_as_a_step_but_not_a_pass(ledger):
    t = terms("firstChange", steps=5)
    spend(ledger, t, [False])
    with open(ledger.backend.directory / f"{FP}.jsonl", "ab") as fh:
        fh.write(b'{"kind":"step","passed":tr')
    b = ledger.budget()
    assert (b.used, b.passes_used, b.status) == (2, 0, "active")
    entry, after = ledger.record_step(passed=False, terms=t)
    assert entry["seq"] == 3 and after.used == 3
    assert ledger.verify().ok
    assert len(lines(ledger)) == 4  # the fragment stays on record as its own line


# --- alerts once per event ---------------------------------------------------------------------
def test_alert_is_claimed_once_and_retried_after_a_failed_delivery(ledger):
    ledger.register(terms())
    assert ledger.claim_alert("exhausted") is True
    assert ledger.claim_alert("exhausted") is False
    ledger.record_alert_result("exhausted", delivered=False, detail="HTTP 503")
    assert ledger.alert_state("exhausted") == "failed"
    assert ledger.claim_alert("exhausted") is True
    ledger.record_alert_result("exhausted", delivered=True)
    assert ledger.claim_alert("exhausted") is False
    assert ledger.budget().used == 0  # alert entries spend no steps


# --- verify ---------------------------------------------------------------------------------------
@pytest.fixture
def filled(ledger):
    spend(ledger, terms(steps=10), [False, True, False, True])
    assert ledger.verify().ok
    return ledger


def test_verify_detects_an_edited_entry(filled):
    content = lines(filled)
    entry = json.loads(content[2])
    entry["passed"] = not entry["passed"]
    content[2] = json.dumps(entry).encode() + b"\n"
    write_lines(filled, content)
    report = filled.verify()
    assert not report.ok and any("entry 3: contents were edited" in p for p in report.problems)


def test_verify_detects_reordered_entries(filled):
    content = lines(filled)
    content[2], content[3] = content[3], content[2]
    write_lines(filled, content)
    report = filled.verify()
    assert not report.ok and any("does not chain" in p for p in report.problems)


def test_verify_detects_a_deleted_middle_entry(filled):
    content = lines(filled)
    del content[2]
    write_lines(filled, content)
    report = filled.verify()
    assert not report.ok and any("sequence number 3, expected 2" in p for p in report.problems)
    assert filled.budget().used == 3  # what the ledger can still see


def test_verify_detects_truncation(filled):
    write_lines(filled, lines(filled)[:-2])
    report = filled.verify()
    assert not report.ok
    assert any("truncated: 3 entries, but 5 were written" in p for p in report.problems)


def test_verify_detects_a_rewritten_tail(filled):
    content = lines(filled)
    entry = json.loads(content[-1])
    entry["passed"] = False
    entry["hash"] = entry_hash(entry)  # a careful forger recomputes the hash
    content[-1] = json.dumps(entry).encode() + b"\n"
    write_lines(filled, content)
    report = filled.verify()
    assert any("differs from the one recorded as the head" in p for p in report.problems)


def test_verify_reports_a_missing_head(filled):
    (filled.backend.directory / f"{FP}.head").unlink()
    assert "head record is missing (deleted?)" in filled.verify().problems


def test_verify_accepts_a_torn_tail_with_a_warning(filled):
    with open(filled.backend.directory / f"{FP}.jsonl", "ab") as fh:
        fh.write(b'{"kind":"st')
    report = filled.verify()
    assert report.ok
    assert any("torn write" in w for w in report.warnings)
    assert any("after the recorded head" in w for w in report.warnings)


def test_a_torn_registration_still_counts_and_the_ledger_recovers(ledger):
    (ledger.backend.directory).mkdir(parents=True)
    (ledger.backend.directory / f"{FP}.jsonl").write_bytes(b'{"kind":"regis')
    t = terms(steps=3)
    assert ledger.budget(t).used == 1  # unknown line: assume a step was spent
    entry, after = ledger.record_step(passed=True, terms=t)
    assert [e["kind"] for e in ledger.entries()] == ["torn", "register", "step"]
    assert entry["seq"] == 2 and after.used == 2 and after.remaining == 1
    report = ledger.verify()
    assert report.ok, report.problems


# --- invariants over random histories ---------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(adaptivity=st.sampled_from(["none", "firstChange", "full"]),
       steps=st.integers(1, 6), passes=st.one_of(st.none(), st.integers(1, 3)),
       verdicts=st.lists(st.booleans(), max_size=10))
def test_no_history_spends_more_than_its_budget(tmp_path_factory, adaptivity, steps, passes, verdicts):
    if adaptivity != "full":
        passes = None
    ledger = Ledger(FileBackend(tmp_path_factory.mktemp("inv")), FP)
    t = terms(adaptivity, steps=steps, passes=passes)
    revealed = []
    for verdict in verdicts:
        try:
            ledger.record_step(passed=None if adaptivity == "none" else verdict, terms=t)
        except LedgerSpent as spent:
            assert spent.budget.status in ("retired", "exhausted")
            assert ledger.budget().used == len(revealed)  # a refusal writes nothing
            continue
        revealed.append(verdict)
    final = ledger.budget(t)
    assert final.used == len(revealed) <= steps
    limit = {"firstChange": 1, "full": passes}.get(adaptivity)
    if adaptivity != "none" and limit is not None:
        assert sum(revealed) <= limit
        # the test set retires exactly when the limit is reached, and nothing follows
        if sum(revealed) == limit:
            assert final.status == "retired" and revealed[-1] is True
    if final.status == "exhausted":
        assert final.used == steps
    if final.status == "active":
        assert len(revealed) == len(verdicts) and final.remaining == steps - final.used
