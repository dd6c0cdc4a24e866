"""The ledger: hash chain, budget semantics per adaptivity, verification of tampering."""
from __future__ import annotations

import json
import os

import pytest

from easeml_ci.errors import ConfigError
from easeml_ci.ledger import (
    FileBackend,
    Ledger,
    LedgerConflict,
    LedgerCorrupt,
    LedgerSpent,
    LedgerTampered,
    open_backend,
)
from easeml_ci.ledger.chain import entry_hash
from ledger_test_key import KEY as LEDGER_KEY  # noqa: E402

FP = "ab" * 32


def terms(adaptivity="full", steps=4, passes=None):
    return {"condition": "n > 0.5 +/- 0.1", "reliability": 0.99, "mode": "fp-free",
            "adaptivity": adaptivity, "steps": steps, "passes": passes}


@pytest.fixture
def ledger(tmp_path):
    return Ledger(FileBackend(tmp_path / "ledger"), FP, LEDGER_KEY)


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


# --- a backend whose head and entries are two reads (the repository backend) ----------------
class TwoReadBackend:
    """Entries and head read separately, as from a service whose replicas may lag."""

    name = "two-reads"

    def __init__(self, inner: FileBackend, stale_reads: int):
        self.inner, self.stale_reads = inner, stale_reads

    def head(self, fingerprint):
        return self.inner.head(fingerprint)

    def load(self, fingerprint):
        entries = self.inner.load(fingerprint)
        if self.stale_reads:  # a replica one append behind the head
            self.stale_reads -= 1
            return entries[:-1]
        return entries

    def append(self, fingerprint, entry, expected_length):
        self.inner.append(fingerprint, entry, expected_length)


@pytest.mark.parametrize("stale_reads, refused", [(1, False), (2, True)])
def test_a_read_that_lags_its_head_is_read_again_once(ledger, stale_reads, refused):
    spend(ledger, terms(steps=5), [False, True])
    lagging = Ledger(TwoReadBackend(ledger.backend, stale_reads), FP, LEDGER_KEY)
    if refused:  # still short on the second read: a truncation, not a lag
        with pytest.raises(LedgerTampered, match="truncated: 2 entries, but 3 were written"):
            lagging.budget()
    else:
        assert lagging.budget().used == 2


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
    with pytest.raises(LedgerTampered, match="sequence number 3, expected 2"):
        filled.budget()  # a budget is never counted from what is left


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


class KilledMidWrite(BaseException):
    """Stands in for SIGKILL: nothing after it in the writer runs."""


def die_half_way(fd, line):
    os.write(fd, line[:len(line) // 2])
    raise KilledMidWrite


def test_a_torn_registration_still_counts_and_the_ledger_recovers(ledger):
    t = terms(steps=3)
    with pytest.raises(KilledMidWrite):
        Ledger(FileBackend(ledger.backend.directory, write_line=die_half_way), FP, LEDGER_KEY).register(t)
    assert lines(ledger)[0].startswith(b'{"') and not lines(ledger)[0].endswith(b"\n")
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
    ledger = Ledger(FileBackend(tmp_path_factory.mktemp("inv")), FP, LEDGER_KEY)
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


# --- a check refuses a ledger that does not verify (through the CLI) ----------------------------
from click.testing import CliRunner  # noqa: E402

from easeml_ci.cli import main  # noqa: E402
from test_check import Gate  # noqa: E402


def tree(root) -> dict:
    """Every file under ``root`` with its bytes: what a refused check must leave as it was."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _swap(lines_, i, j):
    lines_[i], lines_[j] = lines_[j], lines_[i]
    return lines_


def _flip_verdict(line: bytes) -> bytes:
    entry = json.loads(line)
    entry["passed"] = not entry["passed"]
    return json.dumps(entry).encode() + b"\n"


# Each: how the ledger's lines (register, then 3 checks of a reserved step and its completion)
# are changed, and what the refusal must say.
TAMPERING = {
    "last-step-deleted": (lambda ls: ls[:-2], "truncated: 5 entries, but 7 were written"),
    "middle-step-deleted": (lambda ls: ls[:3] + ls[5:], "sequence number 5, expected 3"),
    "steps-reordered": (lambda ls: _swap(ls, 1, 3), "does not chain to the entry before it"),
    "step-edited": (lambda ls: ls[:2] + [_flip_verdict(ls[2])] + ls[3:],
                    "entry 3: contents were edited"),
    "all-lines-deleted": (lambda ls: [], "truncated: 0 entries, but 7 were written"),
}


@pytest.fixture
def spent_gate(tmp_path, monkeypatch):
    """A repository whose ledger holds its registration and three steps (1 of 4 left)."""
    monkeypatch.chdir(tmp_path)
    gate = Gate(tmp_path)
    for model in ("good.npy", "bad.npy", "good.npy"):
        assert gate.check(model).exit_code in (0, 1)
    assert len(gate.steps()) == 3
    return gate


def _ledger_file(gate):
    return next((gate.root / ".easeml" / "ledger").glob("*.jsonl"))


def _assert_refused(result, reason):
    assert result.exit_code == 2, result.output
    assert "does not verify" in result.output and reason in result.output, result.output
    assert "Traceback" not in result.output
    for revealed in ("PASS", "FAIL", "verdict:", "steps used"):
        assert revealed not in result.output  # no verdict, no budget counted from what is left


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_check_refuses_a_tampered_file_ledger_and_writes_nothing(spent_gate, name):
    change, reason = TAMPERING[name]
    path = _ledger_file(spent_gate)
    content = path.read_bytes().splitlines(keepends=True)
    assert len(content) == 7
    path.write_bytes(b"".join(change(content)))
    before = tree(spent_gate.root)
    _assert_refused(spent_gate.check("good.npy"), reason)
    _assert_refused(spent_gate.check("good.npy", "--json"), reason)
    status = CliRunner().invoke(main, ["ledger", "status"])
    assert status.exit_code == 2 and reason in status.output
    register = CliRunner().invoke(main, ["testset", "register", "ts.npz"])
    assert register.exit_code == 2 and reason in register.output
    assert tree(spent_gate.root) == before  # nothing written, no label request, no alert
    assert CliRunner().invoke(main, ["ledger", "verify"]).exit_code == 1
    assert "registered" in CliRunner().invoke(main, ["ledger", "log"]).output or name == "all-lines-deleted"


@pytest.mark.parametrize("head, reason", [
    (None, "head record is missing"),
    ({"length": 7, "hash": "0" * 64}, "entry 7: differs from the one recorded as the head"),
    ({"length": 9, "hash": "0" * 64}, "truncated: 7 entries, but 9 were written"),
])
def test_check_refuses_a_file_ledger_whose_head_disagrees(spent_gate, head, reason):
    head_path = _ledger_file(spent_gate).with_suffix(".head")
    if head is None:
        head_path.unlink()
    else:
        head_path.write_text(json.dumps(head))
    before = tree(spent_gate.root)
    _assert_refused(spent_gate.check("good.npy"), reason)
    assert tree(spent_gate.root) == before


def test_check_refuses_a_file_ledger_whose_lines_file_was_deleted(spent_gate):
    _ledger_file(spent_gate).unlink()  # the head stays: a fresh budget is not on offer
    before = tree(spent_gate.root)
    _assert_refused(spent_gate.check("good.npy"), "truncated: 0 entries, but 7 were written")
    status = CliRunner().invoke(main, ["ledger", "status"])  # listed by its head
    assert status.exit_code == 2 and "truncated: 0 entries" in status.output
    assert tree(spent_gate.root) == before


def test_an_untouched_ledger_still_counts_every_step(spent_gate):
    result = spent_gate.check("good.npy")
    assert result.exit_code == 0 and "4 of 4 steps used" in result.output


# The same through the repository backend: the ledger file on its branch, against the fake API.
GH_REPO = "acme/models"


@pytest.fixture
def gh_gate(tmp_path, monkeypatch, fake_github):
    # A ledger that does not verify is read once more after REREAD_DELAY (0.5 s), in case a
    # replica lagged between its two reads; these forgeries are no lag, and no writer runs
    # concurrently here: the second read happens at once. (Concurrent writers keep the delay.)
    from easeml_ci.ledger import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "REREAD_DELAY", 0.0)
    fake_github.add_repo(GH_REPO).rules["easeml-ledger"] = [{"type": "non_fast_forward"},
                                                           {"type": "deletion"}]
    fake_github.add_token("tok-write")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_TOKEN", "tok-write")
    monkeypatch.setenv("GITHUB_API_URL", fake_github.url)
    gate = Gate(tmp_path)
    cfg = gate.config()
    cfg.write_text(cfg.read_text() + f"ledger:\n  backend: github\n  repository: {GH_REPO}\n")
    for model in ("good.npy", "bad.npy", "good.npy"):
        assert gate.check(model).exit_code in (0, 1)
    (path,) = [p for p in fake_github.repos[GH_REPO].commits[
        fake_github.repos[GH_REPO].refs["heads/easeml-ledger"]]["tree"] if p.endswith(".jsonl")]
    return gate, fake_github, path


def _forged_message(path: str, ls: list[bytes]) -> str:
    """The commit message easeml-ci itself would have written for the shortened ledger."""
    fp = path.rsplit("/", 1)[1][:-6]
    return f"easeml-ci: ledger {fp} entry {len(ls)} hash={json.loads(ls[-1])['hash']} v2"


# A forger who also writes easeml-ci's commit message no longer cuts the tail unseen: the claims
# of the gate's own commits stay in the branch's history (attack 2 of issue 20).
FORGED_REASON = {"last-step-deleted": "rolled back: commit", "all-lines-deleted": "rolled back"}


@pytest.mark.parametrize("forged", [False, True])
@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_check_refuses_a_tampered_repository_ledger(gh_gate, name, forged):
    gate, gh, path = gh_gate
    change, reason = TAMPERING[name]
    content = change(gh.file_on_branch(GH_REPO, "easeml-ledger", path).splitlines(keepends=True))
    if forged:  # a careful forger also writes the head easeml-ci would have written
        message = _forged_message(path, content) if content else "easeml-ci: empty"
        gh.commit_file(GH_REPO, "easeml-ledger", path, b"".join(content), message=message)
        reason = FORGED_REASON.get(name, reason)
    else:  # through the web UI: the head (latest commit) is no longer easeml-ci's
        gh.commit_file(GH_REPO, "easeml-ledger", path, b"".join(content))
        reason = "head record is unreadable"
    puts = len(gh.calls("PUT", r"\.jsonl$"))  # ledger writes (a write probe elsewhere is fine)
    before = tree(gate.root)
    _assert_refused(gate.check("good.npy"), reason)
    assert gh.file_on_branch(GH_REPO, "easeml-ledger", path) == b"".join(content)
    assert len(gh.calls("PUT", r"\.jsonl$")) == puts and tree(gate.root) == before


def test_the_action_refuses_a_tampered_repository_ledger(gh, data, tmp_path):
    from test_action import REPO, harness, inputs, make_workspace

    ws, base, head = make_workspace(tmp_path, data, "new", steps=3,
                                    extra=f"ledger:\n  backend: github\n  repository: {REPO}\n")
    runner = harness(gh, ws, base, head)  # one runner: its owner registers the test set once
    for _ in range(2):
        assert runner.run(inputs(data)).exit_code == 0
    (path,) = [p for p in gh.repos[REPO].commits[gh.repos[REPO].refs["heads/easeml-ledger"]]["tree"]
               if p.endswith(".jsonl")]
    content = gh.file_on_branch(REPO, "easeml-ledger", path).splitlines(keepends=True)
    content = content[:1] + content[2:]  # the first spent step, deleted; the head forged to match
    gh.commit_file(REPO, "easeml-ledger", path, b"".join(content),
                   message=_forged_message(path, content))
    refused = runner.run(inputs(data))
    assert refused.exit_code == 2, refused.log
    assert refused.outputs["verdict"] == "error"
    assert "does not verify" in refused.summary and "sequence number 2, expected 1" in refused.summary
    assert "✅" not in refused.summary and "❌" not in refused.summary
    assert json.loads(refused.outputs["clauses"]) == []
    assert gh.file_on_branch(REPO, "easeml-ledger", path) == b"".join(content)  # nothing written
    assert "Traceback" not in refused.log
