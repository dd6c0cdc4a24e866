"""`easeml-ci check` end to end: verdicts, exit codes, budget semantics, secrecy, commit-then-reveal."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from easeml_ci.gate.check import run_check
from easeml_ci.cli import main
from easeml_ci.errors import BudgetExhausted, TestSetTooSmall
from easeml_ci.ledger import FileBackend, Ledger
from ledger_test_key import KEY as LEDGER_KEY  # noqa: E402

ROWS = 5000


class Gate:
    """A scratch repository: a test set, prediction files and a config, driven through the CLI."""

    def __init__(self, root: Path, seed: int = 0):
        self.root = root
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(ROWS, 3)).astype(np.float32)
        y = rng.integers(0, 2, ROWS)
        np.savez(root / "ts.npz", X=X, y=y)
        self.accuracy = {}
        for name, error in (("good", 0.08), ("bad", 0.55), ("old", 0.25)):
            pred = y.copy()
            flip = rng.random(ROWS) < error
            pred[flip] = 1 - pred[flip]
            np.save(root / f"{name}.npy", pred)
            self.accuracy[name] = float((pred == y).mean())
        self.config()

    def config(self, **overrides) -> Path:
        cfg = {"condition": "n > 0.6 +/- 0.1", "reliability": 0.9, "adaptivity": "full",
               "steps": 4}
        cfg.update(overrides)
        cfg = {k: v for k, v in cfg.items() if v is not None}
        path = self.root / ".easeml.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def check(self, new="good.npy", *extra, old=None, testset="ts.npz", env=None):
        args = ["check", "--config", ".easeml.yml", "--new", new, "--testset", testset]
        if old:
            args += ["--old", old]
        return CliRunner().invoke(main, args + list(extra), env=env, catch_exceptions=False)

    def entries(self) -> list[dict]:
        directory = self.root / ".easeml" / "ledger"
        if not directory.exists():
            return []
        files = list(directory.glob("*.jsonl"))
        assert len(files) <= 1
        return Ledger(FileBackend(directory), files[0].stem, LEDGER_KEY).entries() if files else []

    def steps(self) -> list[dict]:
        """The spent steps, each with its completion's verdict merged in (count before open)."""
        from easeml_ci.ledger.budget import steps_with_verdicts

        return [e for e in steps_with_verdicts(self.entries()) if e["kind"] == "step"]


@pytest.fixture
def gate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Gate(tmp_path)


# --- verdicts and exit codes --------------------------------------------------------------------
def test_a_better_model_passes_with_exit_0(gate):
    result = gate.check("good.npy")
    assert result.exit_code == 0, result.output
    assert re.search(r"PASS\s+n > 0.6 \+/- 0.1\s+\(.easeml.yml:1\)", result.stdout)
    assert "verdict:  PASS" in result.stdout
    assert "1 of 4 steps used, 3 remaining (active)" in result.stdout


def test_a_worse_model_fails_with_exit_1(gate):
    result = gate.check("bad.npy")
    assert result.exit_code == 1
    assert "verdict:  FAIL" in result.stdout
    assert [s["passed"] for s in gate.steps()] == [False]


def test_json_prints_exactly_one_object(gate):
    result = gate.check("good.npy", "--json")
    assert result.exit_code == 0
    out = json.loads(result.stdout)  # fails if anything else is on stdout
    assert out["verdict"] == "pass"
    assert out["clauses"] == [{"text": "n > 0.6 +/- 0.1", "verdict": "pass", "line": 1}]
    assert {k: out["budget"][k] for k in ("used", "total", "remaining", "status")} == \
        {"used": 1, "total": 4, "remaining": 3, "status": "active"}
    assert out["testset"]["fingerprint"] == gate.entries()[0]["fingerprint"]
    assert out["plan"]["test_examples"] > 0 and out["guarantee"] == "holds"
    assert result.stderr == ""  # no progress under --json


def test_progress_goes_to_stderr(gate):
    result = gate.check("good.npy")
    assert "loading test set" in result.stderr and "loading" not in result.stdout


def test_two_model_condition_uses_old(gate):
    gate.config(condition="n - o > 0.02 +/- 0.05")
    assert gate.check("good.npy", old="old.npy").exit_code == 0
    assert gate.check("bad.npy", old="old.npy").exit_code == 1
    assert gate.steps()[0]["old"] == "old.npy"


def test_old_is_not_needed_for_a_condition_on_n_only(gate):
    result = gate.check("good.npy", old="missing-but-unused.npy")
    assert result.exit_code == 0
    assert gate.steps()[0]["old"] is None


# --- secrecy ---------------------------------------------------------------------------------------
def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+\.\d+", text))


def test_adaptive_output_reveals_only_the_verdict_bit(gate):
    result = gate.check("good.npy", "--json")
    text = result.stdout + result.stderr
    accuracy = gate.accuracy["good"]
    assert not any(abs(float(x) - accuracy) < 0.01 for x in _numbers(text))
    assert "estimate" not in text and str(ROWS) not in text
    assert "answer" not in text  # the three-valued answer carries more than the bit


def test_a_multi_clause_formula_reveals_one_bit_not_which_clause_failed(gate):
    # good is ~92% right and disagrees with old on ~30%: n passes, d < 0.1 fails.
    gate.config(condition="n > 0.6 +/- 0.1 /\\ d < 0.1 +/- 0.05")
    out = json.loads(gate.check("good.npy", "--json", old="old.npy").stdout)
    assert out["verdict"] == "fail"
    assert [c["verdict"] for c in out["clauses"]] == ["undisclosed", "undisclosed"]
    assert "?  = undisclosed: under adaptivity full only the formula's verdict" in \
        gate.check("good.npy", old="old.npy").stdout
    # show_metrics is pinned at registration: showing more needs a test set registered so
    gate.config(condition="n > 0.6 +/- 0.1 /\\ d < 0.1 +/- 0.05", show_metrics=True,
                ledger={"path": ".easeml/other-ledger"})
    out = json.loads(gate.check("good.npy", "--json", old="old.npy").stdout)
    assert [c["verdict"] for c in out["clauses"]] == ["pass", "fail"]


def test_show_metrics_shows_estimates_and_says_the_guarantee_is_void(gate):
    gate.config(show_metrics=True)
    result = gate.check("good.npy")
    assert "guarantee of this gate is VOID" in result.stdout
    estimate = re.search(r"estimate (\d\.\d+)", result.stdout).group(1)
    assert abs(float(estimate) - gate.accuracy["good"]) < 1e-4
    out = json.loads(gate.check("good.npy", "--json").stdout)
    assert out["guarantee"].startswith("void") and out["metrics"]["test_examples"] == ROWS


# --- budget semantics --------------------------------------------------------------------------------
def test_full_exhausts_after_h_steps_then_exits_3_with_an_alert(gate):
    codes = [gate.check(m).exit_code for m in ("bad.npy", "good.npy", "bad.npy", "bad.npy")]
    assert codes == [1, 0, 1, 1]
    result = gate.check("good.npy")
    assert result.exit_code == 3
    assert "has used all 4 steps; checks no longer certify" in result.stderr
    assert "NEW TEST SET NEEDED" in result.stdout and "Label request:" in result.stdout
    assert "PASS" not in result.stdout  # nothing decided, nothing revealed
    assert len(gate.steps()) == 4


def test_the_step_that_spends_the_budget_carries_the_alert(gate):
    gate.config(steps=1)
    result = gate.check("good.npy", "--json")
    out = json.loads(result.stdout)
    assert out["verdict"] == "pass" and out["budget"]["status"] == "exhausted"
    assert out["alert"]["event"] == "exhausted"
    assert out["alert"]["label_request"]["test_examples"] == out["plan"]["test_examples"]


def test_first_change_retires_at_the_first_pass(gate):
    gate.config(adaptivity="firstChange")
    assert gate.check("bad.npy").exit_code == 1
    first_pass = gate.check("good.npy", "--json")
    assert json.loads(first_pass.stdout)["budget"]["status"] == "retired"
    result = gate.check("good.npy", "--json")
    assert result.exit_code == 3
    out = json.loads(result.stdout)
    assert out["error"] == "exhausted" and out["budget"]["status"] == "retired"
    assert "retired after 1 pass;" in out["message"]


def test_passes_b_retires_after_b_passes(gate):
    gate.config(passes=2, steps=10)
    assert [gate.check(m).exit_code for m in ("good.npy", "bad.npy", "good.npy")] == [0, 1, 0]
    assert gate.check("good.npy").exit_code == 3
    assert [s["passed"] for s in gate.steps()] == [True, False, True]


def test_exhausted_api_raises_budget_exhausted_with_the_alert(gate):
    gate.config(steps=1)
    run_check(gate.root / ".easeml.yml", "good.npy", None, "ts.npz", workdir=gate.root)
    with pytest.raises(BudgetExhausted) as info:
        run_check(gate.root / ".easeml.yml", "good.npy", None, "ts.npz", workdir=gate.root)
    assert info.value.exit_code == 3
    assert info.value.alert["label_request"]["labels"] > 0
    assert info.value.alert["delivery"]["detail"] == "already sent for this event"


def test_editing_the_budget_terms_after_registration_is_refused(gate):
    assert gate.check("good.npy").exit_code == 0
    gate.config(steps=5)
    result = gate.check("good.npy")
    assert result.exit_code == 2
    assert ".easeml.yml:4: steps is 5, but test set" in result.stderr
    assert "registered with steps 4" in result.stderr
    assert len(gate.steps()) == 1


def _values(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _values(value)
    else:
        yield node


# --- adaptivity none: private sink ------------------------------------------------------------------
def test_none_withholds_the_verdict_and_sends_it_to_the_private_sink(gate, tmp_path_factory):
    sink = tmp_path_factory.mktemp("private") / "verdicts.jsonl"
    gate.config(adaptivity="none", private_sink=str(sink))
    for model in ("good.npy", "bad.npy"):
        result = gate.check(model, "--json")
        assert result.exit_code == 0
        out = json.loads(result.stdout)
        assert out["verdict"] == "withheld"
        assert [c["verdict"] for c in out["clauses"]] == ["withheld"]
        assert not {"pass", "fail"} & {v for v in _values(out) if isinstance(v, str)}
        assert out["budget"]["passes_used"] == 0
    records = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [r["verdict"] for r in records] == ["pass", "fail"]
    assert [r["step"] for r in records] == [1, 3]  # each check: its step, then its completion
    assert [s["passed"] for s in gate.steps()] == [None, None]  # the ledger is team-readable


def test_none_without_a_private_sink_is_refused(gate):
    gate.config(adaptivity="none")
    result = gate.check("good.npy")
    assert result.exit_code == 2
    assert "private_sink: adaptivity 'none' withholds verdicts" in result.stderr
    assert gate.entries() == []


def test_a_private_sink_inside_the_repository_is_refused(gate):
    (gate.root / ".git").mkdir()
    gate.config(adaptivity="none", private_sink=str(gate.root / "sink.jsonl"))
    result = gate.check("good.npy")
    assert result.exit_code == 2 and "is inside the repository" in result.stderr
    assert gate.entries() == []


# --- size of the test set ---------------------------------------------------------------------------
def test_a_test_set_smaller_than_the_plan_is_refused_with_exit_3(gate):
    gate.config(condition="n > 0.6 +/- 0.01")
    result = gate.check("good.npy")
    assert result.exit_code == 3
    assert re.search(rf"need \d+ labelled examples, have {ROWS}", result.stderr)
    assert gate.entries() == []


def test_underpowered_decides_at_the_tolerance_the_data_supports(gate):
    gate.config(condition="n > 0.6 +/- 0.01")
    result = gate.check("good.npy", "--underpowered", "--json")
    assert result.exit_code == 0
    clause = json.loads(result.stdout)["clauses"][0]
    assert clause["configured_tolerance"] == 0.01 and 0.01 < clause["tolerance"] < 0.1
    assert gate.steps()[0]["underpowered"] is True
    text = gate.check("bad.npy", "--underpowered").stdout
    assert "underpowered: decided at +/- " in text and "configured +/- 0.01" in text


def test_too_small_from_the_api(gate):
    gate.config(condition="n > 0.6 +/- 0.01")
    with pytest.raises(TestSetTooSmall, match="need"):
        run_check(gate.root / ".easeml.yml", "good.npy", None, "ts.npz", workdir=gate.root)


# --- commit, then reveal ---------------------------------------------------------------------------
def test_the_step_is_on_disk_before_the_report_is_rendered(gate, monkeypatch):
    import easeml_ci.cli.render as report

    seen = []
    original = report.render_terminal

    def spy(result):
        seen.append(len(gate.steps()))
        return original(result)

    monkeypatch.setattr(report, "render_terminal", spy)
    assert gate.check("good.npy").exit_code == 0
    assert seen == [1]


def test_a_failed_append_reveals_nothing(gate, monkeypatch):
    def crash(self, fingerprint, entry, expected_length):
        if entry["kind"] == "step":
            raise OSError("disk full")
        return original(self, fingerprint, entry, expected_length)

    original = FileBackend.append
    monkeypatch.setattr(FileBackend, "append", crash)
    r = gate.check("good.npy")  # no verdict: exit 2 (never 1, a fail), one line, no traceback
    assert r.exit_code == 2 and "internal error: OSError" in r.output, r.output
    assert "pass" not in r.output.lower() and "Traceback" not in r.output
    assert gate.steps() == []


# --- register -----------------------------------------------------------------------------------------
def test_register_starts_a_ledger_and_refuses_a_spent_test_set(gate):
    gate.config(steps=1)
    runner = CliRunner()

    def register(args):
        return runner.invoke(main, ["testset", "register", *args])

    first = register(["ts.npz", "--config", ".easeml.yml"])
    assert first.exit_code == 0 and first.stdout.startswith("registered: test set")
    assert [e["kind"] for e in gate.entries()] == ["register"]
    again = register(["ts.npz", "--config", ".easeml.yml", "--json"])
    assert json.loads(again.stdout)["status"] == "already registered"
    gate.check("good.npy")
    spent = runner.invoke(main, ["check", "--new", "good.npy", "--testset", "ts.npz"])
    assert spent.exit_code == 3
    refused = register(["ts.npz", "--config", ".easeml.yml"])
    assert refused.exit_code == 2 and "already exhausted" in refused.output
    assert "Traceback" not in refused.output
    # the next test set starts fresh
    (gate.root / "next").mkdir()
    other = Gate(gate.root / "next", seed=1)
    fresh = register([str(other.root / "ts.npz"), "--config", ".easeml.yml"])
    assert fresh.exit_code == 0
    assert gate.check(str(other.root / "good.npy"), testset=str(other.root / "ts.npz")).exit_code == 0


def test_ledger_status_log_and_verify(gate):
    gate.check("good.npy")
    gate.check("bad.npy")
    runner = CliRunner()
    status = json.loads(runner.invoke(main, ["ledger", "status", "--json"]).stdout)
    assert [(t["used"], t["total"], t["remaining"], t["status"]) for t in status["testsets"]] == \
        [(2, 4, 2, "active")]
    log = runner.invoke(main, ["ledger", "log", "--testset", "ts.npz"]).stdout
    assert "registered" in log and "step        pass" in log and "step        fail" in log
    assert runner.invoke(main, ["ledger", "verify"]).exit_code == 0
    ledger_file = next((gate.root / ".easeml" / "ledger").glob("*.jsonl"))
    lines = ledger_file.read_text().splitlines(keepends=True)
    ledger_file.write_text("".join(lines[:1] + lines[2:]))
    verify = runner.invoke(main, ["ledger", "verify"])
    assert verify.exit_code == 1 and "TAMPERED" in verify.stdout


def test_too_small_under_json_is_still_one_object(gate):
    gate.config(condition="n > 0.6 +/- 0.01")
    result = gate.check("good.npy", "--json")
    assert result.exit_code == 3
    out = json.loads(result.stdout)
    assert out["error"] == "too_small" and "labelled examples, have" in out["message"]


def test_ledger_status_works_without_a_config(gate):
    gate.check("good.npy")
    (gate.root / ".easeml.yml").unlink()
    result = CliRunner().invoke(main, ["ledger", "status"])
    assert result.exit_code == 0
    assert "1 of 4 steps used, 3 remaining (active)" in result.stdout


def test_run_check_accepts_a_loaded_config(gate):
    from easeml_ci.config import load_config

    cfg = load_config(gate.root / ".easeml.yml")
    result = run_check(cfg, "bad.npy", None, "ts.npz", workdir=gate.root)
    assert (result.verdict, result.exit_code) == ("fail", 1)
    assert result.to_dict()["budget"]["used"] == 1


class MemoryBackend:
    """The backend protocol in memory, as a stand-in for the GitHub backend the Action injects."""

    name = "memory"

    def __init__(self):
        self.store: dict[str, list[dict]] = {}

    def load(self, fingerprint):
        return [dict(e) for e in self.store.get(fingerprint, [])]

    def append(self, fingerprint, entry, expected_length):
        from easeml_ci.ledger import LedgerConflict

        entries = self.store.setdefault(fingerprint, [])
        if len(entries) != expected_length:
            raise LedgerConflict(expected_length, len(entries))
        entries.append(dict(entry))


def test_run_check_with_an_injected_backend(gate):
    backend = MemoryBackend()
    gate.config(steps=2, pool="pool.npz")
    np.savez(gate.root / "pool.npz", X=np.zeros((5, 3), dtype=np.float32))
    first = run_check(gate.root / ".easeml.yml", "good.npy", None, "ts.npz", workdir=gate.root,
                      backend=backend)
    second = run_check(gate.root / ".easeml.yml", "bad.npy", None, "ts.npz", workdir=gate.root,
                       backend=backend)
    assert (first.verdict, second.verdict) == ("pass", "fail")
    assert second.alert is not None and second.budget.status == "exhausted"
    pool_csv = second.alert["label_request"]["pool_csv"]
    assert pool_csv == str(gate.root / ".easeml" / "label-requests" / f"{first.fingerprint[:16]}-exhausted.csv")
    assert "the condition does not compare two models" in second.alert["text"]
    [entries] = backend.store.values()
    assert [e["kind"] for e in entries] == ["register", "step", "complete", "step", "complete",
                                            "alert", "alert-result"]
    assert not (gate.root / ".easeml" / "ledger").exists()  # the file backend was not used


# --- paths in a config are the config's, not the working directory's ----------------------------
def test_a_check_run_from_another_folder_uses_the_projects_ledger_and_test_set(gate, tmp_path,
                                                                                monkeypatch):
    gate.config(testset="ts.npz")
    assert gate.check("good.npy").exit_code == 0
    assert gate.check("good.npy").exit_code == 0
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(main, ["check", "--config", str(gate.root / ".easeml.yml"),
                                       "--new", str(gate.root / "good.npy")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "3 of 4 steps used" in result.stdout  # the project's budget, not a fresh one
    assert f"ledger:   the file ledger {gate.root / '.easeml' / 'ledger'}" in result.stdout
    assert not (elsewhere / ".easeml").exists()


def test_a_model_failing_on_the_test_set_is_a_counted_fail_and_the_owner_gets_the_details(
        tmp_path, monkeypatch):
    from test_preflight import _length_attack

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 6)).astype(np.float32)
    X[0, 0] = 101257.3
    np.savez(tmp_path / "ts.npz", X=X, y=rng.integers(0, 2, 2000))
    _length_attack(tmp_path / "attack.onnx")
    sink = tmp_path.parent / f"{tmp_path.name}-owner.jsonl"
    (tmp_path / ".easeml.yml").write_text(
        f"condition: n > 0.6 +/- 0.1\nreliability: 0.9\nsteps: 4\nprivate_sink: {sink}\n")
    result = run_check(tmp_path / ".easeml.yml", "attack.onnx", None, "ts.npz",
                       workdir=tmp_path)
    assert result.verdict == "fail" and result.exit_code == 1
    assert result.budget.used == 1
    shown = json.dumps(result.to_dict())
    assert "101257" not in shown and "2101" not in shown  # the secret, and the length spelling it
    record = json.loads(sink.read_text().splitlines()[-1])
    assert "2101" in record["model_failed"]["detail"]  # the owner sees what happened


def test_ledger_status_reads_the_ledger_beside_the_config_from_anywhere(gate, tmp_path,
                                                                        monkeypatch):
    assert gate.check("good.npy").exit_code == 0
    elsewhere = tmp_path.parent / f"{tmp_path.name}-status"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(main, ["ledger", "status", "--config",
                                       str(gate.root / ".easeml.yml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 of 4 steps used" in result.stdout
