"""Issue 20, the ledger part: nobody without the key can give spent steps back, and a step is
counted before the test set is opened.

Each attack is replayed as the review did it (through the CLI or the Action's harness, against
the fake GitHub API) and must end in exit 2 with nothing decided and nothing written:

* attack 2: a fast-forward commit that keeps only the registration and forges the head message;
* attack 4: the ledger branch deleted (and re-created), then a run on the default branch;
* a ledger rewritten whole (its head included) by someone without the key;
* a run killed right after the test set is opened has spent its step.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from easeml_ci.cli import main
from easeml_ci.ledger import FileBackend, Ledger, auth
from easeml_ci.ledger.chain import GENESIS, canonical, seal
from ledger_test_key import KEY as LEDGER_KEY
from test_action import REPO, harness, inputs, make_workspace
from test_check import Gate

BRANCH = "easeml-ledger"


def api(gh, method: str, path: str, body: dict | None = None):
    """One call as a developer with a write token makes it (no easeml-ci code in between)."""
    import requests

    resp = requests.request(method, gh.url + path, json=body, timeout=30,
                            headers={"Authorization": "Bearer ghs-write"})
    return resp.status_code, (resp.json() if resp.content else None)


def _ledger_path(gh) -> str:
    (path,) = [p for p in gh.repos[REPO].commits[gh.repos[REPO].refs[f"heads/{BRANCH}"]]["tree"]
               if p.endswith(".jsonl")]
    return path


def _lines(gh, path) -> list[bytes]:
    return (gh.file_on_branch(REPO, BRANCH, path) or b"").splitlines(keepends=True)


def _assert_nothing_decided(result):
    assert result.exit_code == 2, result.log
    assert result.outputs["verdict"] == "error"
    assert json.loads(result.outputs["clauses"]) == []
    assert "✅" not in result.summary and "❌" not in result.summary
    assert "Traceback" not in result.log


# --- attack 2: a forged fast-forward commit -----------------------------------------------------

def test_a_fast_forward_commit_keeping_only_the_registration_is_refused(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new", steps=3)
    runner = harness(gh, ws, base, head)
    assert [runner.run(inputs(data)).exit_code for _ in range(4)] == [0, 0, 0, 3]  # spent
    path = _ledger_path(gh)
    kept = _lines(gh, path)[:1]  # the registration only, and the head easeml-ci would write
    fp = path.rsplit("/", 1)[1][:-6]
    gh.commit_file(REPO, BRANCH, path, b"".join(kept), message=(
        f"easeml-ci: ledger {fp} entry 1 hash={json.loads(kept[0])['hash']} v2"))
    refused = runner.run(inputs(data))
    _assert_nothing_decided(refused)
    assert "rolled back: commit" in refused.summary and "the ledger now holds 1" in refused.summary
    assert _lines(gh, path) == kept  # nothing written
    verify = subprocess_verify(gh, ws, data)
    assert verify.returncode == 1 and "rolled back" in verify.stdout


def subprocess_verify(gh, ws: Path, data) -> subprocess.CompletedProcess:
    env = {**os.environ, "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": "ghs-write",
           "GITHUB_API_URL": gh.url, "EASEML_GITHUB_BACKOFF": "0.01", "GITHUB_ACTIONS": "true",
           "GITHUB_WORKSPACE": str(ws)}
    return subprocess.run([sys.executable, "-c", "from easeml_ci.cli import main; main()",
                           "ledger", "verify", "--testset", str(data["testset"])], cwd=ws,
                          env=env, capture_output=True, text=True, timeout=120)


def test_a_ledger_rewritten_whole_without_the_key_is_refused_naming_the_entry(gh, data, tmp_path):
    """A forger who recomputes every hash and writes every head still has no MAC key."""
    ws, base, head = make_workspace(tmp_path, data, "new", steps=3)
    runner = harness(gh, ws, base, head)
    assert [runner.run(inputs(data)).exit_code for _ in range(2)] == [0, 0]
    path = _ledger_path(gh)
    entries = [json.loads(line) for line in _lines(gh, path)]
    forged, prev, prev_mac = [], GENESIS, GENESIS
    fake_key = b"\x07" * 32
    for entry in entries[:1] + entries[3:]:  # the first check's step and completion, gone
        body = {k: v for k, v in entry.items() if k not in ("seq", "prev_hash", "hash", "mac")}
        if body.get("kind") == "complete":
            body["step"] = 1
        sealed = auth.sign(fake_key, entry.get("fingerprint") or path[7:-6], prev_mac,
                           seal(body, len(forged), prev))
        forged.append(sealed)
        prev, prev_mac = sealed["hash"], sealed["mac"]
    fp = path.rsplit("/", 1)[1][:-6]
    gh.commit_file(REPO, BRANCH, path, b"".join(canonical(e) + b"\n" for e in forged),
                   message=f"easeml-ci: ledger {fp} entry {len(forged)} hash={prev} v2")
    refused = runner.run(inputs(data))
    _assert_nothing_decided(refused)
    assert "entry 1 (register): forged" in refused.summary


# --- attack 4: the ledger branch deleted (and re-created), then the default branch --------------

def _push_harness(gh, ws, base, head):
    from action_harness import ActionHarness

    event = {"ref": "refs/heads/main", "after": head, "before": base,
             "repository": {"full_name": REPO, "name": "models", "owner": {"login": "acme"},
                            "default_branch": "main"}}
    return ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO, event=event,
                         event_name="push", sha=head, extra_env={"GITHUB_REF": "refs/heads/main"})


def _spent_then_deleted(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new", steps=2)
    runner = harness(gh, ws, base, head)
    assert [runner.run(inputs(data)).exit_code for _ in range(3)] == [0, 0, 3]
    anchors = [p for p in gh.repos[REPO].commits[gh.repos[REPO].refs["heads/main"]]["tree"]
               if p.startswith(".easeml/registrations/")]
    assert len(anchors) == 1  # `testset register` anchored it on the default branch
    gh.repos[REPO].rules.pop(BRANCH)  # someone who could lift the rules for a moment
    gone, _ = api(gh, "DELETE", f"/repos/{REPO}/git/refs/heads/{BRANCH}")
    assert gone == 204 and f"heads/{BRANCH}" not in gh.repos[REPO].refs
    gh.repos[REPO].rules[BRANCH] = [{"type": "non_fast_forward"}, {"type": "deletion"}]
    return ws, base, head, runner


def test_a_default_branch_push_after_the_ledger_branch_was_deleted_is_ledger_missing(
        gh, data, tmp_path):
    ws, base, head, runner = _spent_then_deleted(gh, data, tmp_path)
    old = {"old-model": f"git:{base}:models/model.npy"}
    push = _push_harness(gh, ws, base, head)
    for given in (old, {**old, "register": "true"}):  # even the owner's register: no fresh budget
        result = push.run(inputs(data, **given))
        _assert_nothing_decided(result)
        assert "ledger missing" in result.summary and "not registered" not in result.summary
    assert f"heads/{BRANCH}" not in gh.repos[REPO].refs  # nothing was written
    pr = runner.run(inputs(data))
    _assert_nothing_decided(pr)
    assert "ledger missing" in pr.summary


def test_a_re_created_ledger_branch_is_refused(gh, data, tmp_path):
    ws, base, head, runner = _spent_then_deleted(gh, data, tmp_path)
    registration = None
    for commit in gh.repos[REPO].commits.values():  # the registration, copied from history
        for path, blob in commit["tree"].items():
            if path.startswith("ledger/") and blob.count(b"\n") == 1:
                registration = (path, blob)
    _, tree = api(gh, "POST", f"/repos/{REPO}/git/trees", {"tree": [
        {"path": "README.md", "mode": "100644", "type": "blob", "content": "# ledger\n"},
        {"path": registration[0], "mode": "100644", "type": "blob",
         "content": registration[1].decode()}]})
    _, commit = api(gh, "POST", f"/repos/{REPO}/git/commits", {
        "message": f"easeml-ci: ledger {registration[0][7:-6]} entry 1 hash="
                   f"{json.loads(registration[1])['hash']} v2", "tree": tree["sha"], "parents": []})
    created, _ = api(gh, "POST", f"/repos/{REPO}/git/refs",
                     {"ref": f"refs/heads/{BRANCH}", "sha": commit["sha"]})
    assert created == 201
    result = runner.run(inputs(data))
    _assert_nothing_decided(result)
    assert "was re-created" in result.summary


def test_the_ledger_branch_rules_are_checked_before_anything_is_opened(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new", steps=3)
    runner = harness(gh, ws, base, head)
    assert runner.run(inputs(data)).exit_code == 0
    for rules, missing in (([], "force-pushed and deleted"), ([{"type": "deletion"}], "force-pushed:"),
                           ([{"type": "non_fast_forward"}], "deleted:")):
        gh.repos[REPO].rules[BRANCH] = rules
        puts = len(gh.calls("PUT"))
        result = runner.run(inputs(data))
        _assert_nothing_decided(result)
        assert f"can be {missing}" in result.summary and "'Restrict deletions'" in result.summary
        assert "loading test set" not in result.log and len(gh.calls("PUT")) == puts
    # with the rules in place the fake API refuses what the attacks above needed
    gh.repos[REPO].rules[BRANCH] = [{"type": "non_fast_forward"}, {"type": "deletion"}]
    assert api(gh, "DELETE", f"/repos/{REPO}/git/refs/heads/{BRANCH}")[0] == 422


def test_register_true_on_a_pull_request_is_refused(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new", steps=3)
    result = harness(gh, ws, base, head, registered=False).run(inputs(data, register="true"))
    _assert_nothing_decided(result)
    assert "register: true is allowed only" in result.summary
    assert f"heads/{BRANCH}" not in gh.repos[REPO].refs


# --- the file ledger, the key, `ledger log` -----------------------------------------------------

@pytest.fixture
def gate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Gate(tmp_path)


def _ledger_file(gate) -> Path:
    return next((gate.root / ".easeml" / "ledger").glob("*.jsonl"))


def test_a_plaintext_test_set_needs_the_ledger_key(gate, monkeypatch):
    monkeypatch.delenv("EASEML_LEDGER_KEY")
    result = gate.check("good.npy")
    assert result.exit_code == 2 and "EASEML_LEDGER_KEY is not set" in result.output
    assert not (gate.root / ".easeml").exists()  # nothing written
    monkeypatch.setenv("EASEML_LEDGER_KEY", "not base64 !!")
    result = gate.check("good.npy")
    assert result.exit_code == 2 and "EASEML_LEDGER_KEY is not URL-safe base64" in result.output


def test_a_wrong_ledger_key_is_refused_as_forged(gate, monkeypatch):
    assert gate.check("good.npy").exit_code == 0
    monkeypatch.setenv("EASEML_LEDGER_KEY", "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXkhISE=")
    before = _ledger_file(gate).read_bytes()
    result = gate.check("good.npy")
    assert result.exit_code == 2 and "entry 1 (register): forged" in result.output
    assert _ledger_file(gate).read_bytes() == before


def test_ledger_log_marks_a_forged_entry_and_verify_names_it(gate):
    assert gate.check("good.npy").exit_code == 0
    assert gate.check("bad.npy").exit_code == 1
    path = _ledger_file(gate)
    lines = path.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[-1])  # the second check's completion: a fail
    assert entry["kind"] == "complete" and entry["passed"] is False
    entry["passed"] = True
    from easeml_ci.ledger.chain import entry_hash

    entry["hash"] = entry_hash(entry)
    path.write_bytes(b"".join(lines[:-1]) + canonical(entry) + b"\n")
    head = path.with_suffix(".head")
    head.write_text(json.dumps({"length": len(lines), "hash": entry["hash"]}))
    log = CliRunner().invoke(main, ["ledger", "log"])
    assert log.exit_code == 1, log.output
    assert "FORGED: 1 entry written without the key" in log.output
    forged_line = [line for line in log.output.splitlines() if "FORGED  complete" in line]
    assert len(forged_line) == 1 and "step 3: pass" in forged_line[0]
    verify = CliRunner().invoke(main, ["ledger", "verify"])
    assert verify.exit_code == 1 and f"entry {len(lines)} (complete): forged" in verify.output
    assert gate.check("good.npy").exit_code == 2


def test_ledger_log_without_a_key_says_it_is_not_authenticated(gate, monkeypatch):
    assert gate.check("good.npy").exit_code == 0
    monkeypatch.delenv("EASEML_LEDGER_KEY")
    log = CliRunner().invoke(main, ["ledger", "log", "--fingerprint", _ledger_file(gate).stem])
    assert log.exit_code == 0 and "NOT AUTHENTICATED" in log.output


# --- count before open ----------------------------------------------------------------------------

KILL_AFTER_OPEN = """
import os, signal, sys
from easeml_ci.testsets import source

real = source.TestSetSource.load
def load_then_die(self, **kwargs):
    ts = real(self, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the runner's timeout, a cancel, an OOM kill
source.TestSetSource.load = load_then_die
from easeml_ci.cli import main
main(args=sys.argv[1:], prog_name="easeml-ci")
"""


def _killed_after_open(root: Path, *args: str) -> int:
    done = subprocess.run([sys.executable, "-c", KILL_AFTER_OPEN, *args], cwd=root,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)
    return done.returncode


def test_a_check_killed_right_after_the_open_has_spent_its_step(gate):
    args = ("check", "--config", ".easeml.yml", "--new", "good.npy", "--testset", "ts.npz")
    assert CliRunner().invoke(main, ["testset", "register", "ts.npz"]).exit_code == 0
    assert _killed_after_open(gate.root, *args) == -signal.SIGKILL
    status = json.loads(CliRunner().invoke(main, ["ledger", "status", "--json"]).output)
    assert [(t["used"], t["remaining"]) for t in status["testsets"]] == [(1, 3)]
    log = CliRunner().invoke(main, ["ledger", "log"]).output
    assert "reserved, never completed: spent, no pass" in log
    result = gate.check("good.npy")  # the team sees the same count either way
    assert result.exit_code == 0 and "2 of 4 steps used" in result.output
    kinds = [e["kind"] for e in gate.entries()]
    assert kinds == ["register", "step", "step", "complete"]


def test_an_exception_after_the_open_has_spent_its_step_too(gate, monkeypatch):
    from easeml_ci.gate import steps

    assert gate.check("good.npy").exit_code == 0

    def disk_full(*_args, **_kw):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(steps, "evaluate", disk_full)
        full = gate.check("good.npy")  # a full disk: exit 2, never a verdict
        assert full.exit_code == 2 and "PASS" not in full.output
    assert "3 of 4 steps used" in gate.check("good.npy").output


def test_reserve_then_complete_in_the_ledger(tmp_path):
    """Reservations count at once; a completion may come later (rounds: from another process),
    is refused once other completions retired the test set, and completes a reserved step once."""
    ledger = Ledger(FileBackend(tmp_path), "ab" * 32, LEDGER_KEY)
    terms = {"condition": "n > 0.5 +/- 0.1", "reliability": 0.99, "mode": "fp-free",
             "adaptivity": "firstChange", "steps": 5, "passes": None}
    ledger.register(terms)
    first, during = ledger.reserve_step(terms=terms, details={"new": "a.onnx"})
    second, _ = ledger.reserve_step(terms=terms, details={"new": "b.onnx"})
    assert during.used == 1 and first["passed"] is None and first["reserved"] is True
    _, after = ledger.complete_step(second["seq"], passed=True, terms=terms)
    assert after.status == "retired" and after.used == 2
    from easeml_ci.ledger import LedgerCorrupt, LedgerSpent

    with pytest.raises(LedgerSpent):  # retired by the other one meanwhile: this bit stays unsaid
        ledger.complete_step(first["seq"], passed=True, terms=terms)
    with pytest.raises(LedgerCorrupt, match="completed already"):
        ledger.complete_step(second["seq"], passed=False, terms=terms)
    with pytest.raises(LedgerCorrupt, match="not a reserved step"):
        ledger.complete_step(0, passed=False, terms=terms)
    assert ledger.budget().passes_used == 1 and ledger.verify().ok
