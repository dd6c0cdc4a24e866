"""`easeml-ci plan` through click's CliRunner."""
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from easeml_ci.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_table_shows_statistic_method_sizes_and_easeml_figure():
    result = run("plan", "--condition", "n - o > 0.02 +/- 0.01", "--reliability", "0.9999",
                 "--adaptivity", "full", "--steps", "32")
    assert result.exit_code == 0, result.output
    assert "n - o in [-1, 1]" in result.output
    assert "bennett" in result.output
    assert "641,684" in result.output  # ease.ml/ci's figure beside ours


def test_labels_are_every_test_example_and_disagreements_are_marked_informational():
    result = run("plan", "--condition", "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01", "--adaptivity", "none")
    assert result.exit_code == 0, result.output
    assert "labelled rows needed" in result.output
    assert "The check needs 27,357 test examples, every one labelled" in result.output
    assert "For information only: a passing check sees at most 2,506 disagreements" in result.output
    assert "only examples where the models disagree need labels" not in result.output
    assert "/\\ d < 0.1" in result.output and "/\\\\" not in result.output
    data = json.loads(run("plan", "--condition", "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01",
                          "--adaptivity", "none", "--json").output)
    assert data["labels"] == data["test_examples"] == 27_357
    assert data["disagreements_worst_case"] == 2_506
    assert data["condition"] == "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01"  # one backslash, decoded


def test_plan_reads_the_gate_config_in_the_working_directory_by_default(tmp_path, monkeypatch):
    (tmp_path / ".easeml.yml").write_text("ml:\n  - condition: n > 0.8 +/- 0.05\n  - reliability: 0.9999\n"
                                          "  - adaptivity: none\n  - steps: 32\n")
    monkeypatch.chdir(tmp_path)
    data = json.loads(run("plan", "--json").output)
    assert data["condition"] == "n > 0.8 +/- 0.05" and data["adaptivity"] == "none"
    # an explicit --condition still plans the condition alone, with the defaults
    alone = json.loads(run("plan", "--condition", "n > 0.7 +/- 0.05", "--json").output)
    assert alone["condition"] == "n > 0.7 +/- 0.05" and alone["adaptivity"] == "full"


@pytest.mark.parametrize("condition, message", [
    ("n > 90 +/- 3", "the tolerance must be at most 0.5"),
    ("n < 90 +/- 3", "it would pass without looking"),
    ("n > 1.2 +/- 0.03", "the threshold must lie in [0, 0.94]"),
    ("n - o > 0.1 +/- 0.05 /\\ d < 0.1 +/- 0.02", "cannot be passed by any model"),
])
def test_an_impossible_condition_exits_2_naming_the_clause_and_what_is_allowed(condition, message):
    result = run("plan", "--condition", condition)
    assert result.exit_code == 2
    assert "--condition:" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_an_impossible_condition_in_a_config_names_the_file(tmp_path):
    cfg = tmp_path / ".easeml.yml"
    cfg.write_text("ml:\n  - condition: n > 0.9 +/- 0.5\n  - reliability: 0.99\n")
    result = run("plan", "--config", str(cfg))
    assert result.exit_code == 2
    assert f"{cfg}:2: key 'condition': clause 'n > 0.9 +/- 0.5' cannot be decided" in result.output


def test_json_has_the_documented_fields():
    result = run("plan", "--condition", "n > 0.8 +/- 0.05", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert isinstance(data["test_examples"], int) and isinstance(data["labels"], int)
    assert data["method"] == "tight" and data["clauses"][0]["method"] == "exact-binomial"
    assert data["easeml_test_examples"] == 6279


def test_config_file_and_option_overrides(tmp_path):
    cfg = tmp_path / ".easeml.yml"
    cfg.write_text("ml:\n  - condition: n > 0.8 +/- 0.05\n  - reliability: 0.9999\n  - adaptivity: full\n  - steps: 32\n")
    base = json.loads(run("plan", "--config", str(cfg), "--json").output)
    easeml = json.loads(run("plan", "--config", str(cfg), "--method", "easeml", "--json").output)
    none = json.loads(run("plan", "--config", str(cfg), "--adaptivity", "none", "--json").output)
    assert easeml["test_examples"] == 6279 > base["test_examples"] > none["test_examples"]
    passes = json.loads(run("plan", "--config", str(cfg), "--passes", "2", "--json").output)
    assert passes["test_examples"] < base["test_examples"]


@pytest.mark.parametrize("args, message", [
    (["--condition", "n > x +/- 0.1"], "--condition: unknown variable 'x' at column 5; expected n, o or d"),
    (["--condition", "n > 0.8 +/- 0.05", "--reliability", "1.5"], "--reliability: expected a number in (0, 1)"),
    (["--condition", "n > 0.8 +/- 0.05", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["--condition", "n > 0.8 +/- 0.05", "--adaptivity", "none", "--passes", "2"], "passes applies to adaptivity 'full' only"),
    (["--condition", "n > 0.8 +/- 0.05", "--mode", "both"], "Invalid value for '--mode'"),
    ([], "give --config FILE or --condition"),  # (run where there is no .easeml.yml)
    (["--config", "/nonexistent/.easeml.yml"], "config file /nonexistent/.easeml.yml does not exist"),
])
def test_bad_input_exits_2_with_a_clear_error(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .easeml.yml to fall back on
    result = run("plan", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_start_up_imports_neither_requests_nor_scipy():
    """Every check pays its imports before any model runs (bench/check_overhead.py): the HTTP
    client and scipy.special load only when an alert is sent or an exact test is planned."""
    import subprocess
    import sys

    code = ("import sys, easeml_ci.cli; "
            "print(sorted(m for m in ('requests', 'scipy.special', 'scipy.stats') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_console_script_keeps_main_s_output_and_exit_code_and_skips_the_last_gc_pass(tmp_path):
    """`easeml-ci` is cli.run: main's answer and exit code, then the objects left frozen (out of
    the interpreter's last collection at exit, bench/check_overhead.py); atexit handlers still run."""
    import subprocess
    import sys

    from easeml_ci.cli import run as console

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 (the test extra installs tomli there)
        import tomli as tomllib

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["easeml-ci"] == f"{console.__module__}:{console.__name__}"
    marker = tmp_path / "atexit-ran"
    code = ("import atexit, gc, sys, pathlib; from easeml_ci.cli import run\n"
            f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text(str(gc.get_freeze_count())))\n"
            "sys.argv = ['easeml-ci', 'plan', '--condition', 'n > 0.8 +/- 0.05', '--reliability', '0.99']\n"
            "run()")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # this tree's code, whatever is installed
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    direct = run("plan", "--condition", "n > 0.8 +/- 0.05", "--reliability", "0.99")
    assert (out.returncode, out.stdout) == (direct.exit_code, direct.output), out.stderr
    assert int(marker.read_text()) > 10_000  # frozen before the atexit handlers ran
    bad = subprocess.run([sys.executable, "-c", code.replace("0.99", "1.5")], capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr


def test_a_check_imports_only_its_own_command_and_not_the_on_demand_path():
    """A check pays for the imports of what it runs (bench/check_overhead.py): the other
    commands' modules and the labels-on-demand answer load when they are the ones needed."""
    import subprocess
    import sys

    # Nor the modules only a rarer path needs (git: models, a mistake's suggestion, .npz files,
    # preflight's old generator, the private sink, the new-test-set alert and its redaction,
    # the statistics of labels on demand, rounds and the best of k; a few ms each of every
    # check's start). numpy before 2.0 loads numpy.random itself, so only
    # what the gate adds counts.
    code = ("import sys, numpy; rare = ('subprocess', 'difflib', 'zipfile', 'numpy.random', "
            "'easeml_ci.gate.private_sink', 'easeml_ci.gate.alert', 'easeml_ci.redact', "
            "'conditions.sequential', 'conditions.rounds', 'conditions.best_of_k'); "
            "before = set(sys.modules); from easeml_ci.cli import main; "
            "cmd = main.get_command(None, 'check'); import easeml_ci.gate.check, easeml_ci.models.child; "
            "print(sorted(m for m in sys.modules if m.startswith('easeml_ci.cli.') "
            "or m in ('easeml_ci.gate.on_demand', 'easeml_ci.testsets.labels'))); "
            "print(sorted(m for m in rare if m in sys.modules and m not in before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "['easeml_ci.cli.check', 'easeml_ci.cli.group', 'easeml_ci.cli.render']", "[]"]
    listed = run("--help")
    for name in ("action", "check", "ledger", "meter", "pick", "plan", "round", "status", "testset"):
        assert f"  {name} " in listed.output, listed.output


def test_action_alert_labels_default_matches_the_alert_module():
    from easeml_ci.cli.action import DEFAULT_LABELS
    from easeml_ci.github.alert_issue import DEFAULT_LABELS as ALERT_LABELS

    assert DEFAULT_LABELS == ALERT_LABELS


def _have_rows() -> dict:
    import json as _json

    result = run("plan", "--condition", "n > 0.8 +/- 0.02", "--reliability", "0.999",
                 "--have", "900", "--json")
    assert result.exit_code == 0, result.output
    rows = _json.loads(result.stdout)["rows"]
    return {(r["adaptivity"], r["passes"], r["steps"]): r["tolerances"] for r in rows}


def _assert_have_certifies(by: dict) -> None:
    # more steps, or full adaptivity, cost tolerance; none and firstChange share delta / H
    assert by[("none", None, 8)] < by[("none", None, 32)] < by[("none", None, 128)]
    assert by[("none", None, 32)] == by[("firstChange", None, 32)]
    assert by[("full", None, 32)] > by[("full", 3, 32)] > by[("full", 1, 32)]
    # each tolerance really is one 900 examples support, and a little less is not
    import conditions

    formula = conditions.parse(f"n > 0.8 +/- {by[('full', None, 32)]}")
    assert conditions.plan(formula, 0.999, "fp-free", "full", 32).test_examples <= 900
    tighter = conditions.parse(f"n > 0.8 +/- {by[('full', None, 32)] * 0.97}")
    assert conditions.plan(tighter, 0.999, "fp-free", "full", 32).test_examples > 900


def test_have_shows_the_tolerance_each_adaptivity_can_certify(monkeypatch):
    """The cells the assertions compare, each widened by the CLI (the whole table takes ~13 s of
    CPU: test_have_fills_the_whole_table, slow): two runs of `plan --have` on a smaller grid."""
    import importlib

    plan_cli = importlib.import_module("easeml_ci.cli.plan")  # the module (cli.plan: the command)

    by = {}
    for modes, steps in (([("none", None)], (8, 32, 128)),
                         ([("firstChange", None), ("full", None), ("full", 1), ("full", 3)], (32,))):
        monkeypatch.setattr(plan_cli, "CAPACITY_MODES", tuple(modes))
        monkeypatch.setattr(plan_cli, "CAPACITY_STEPS", steps)
        rows = _have_rows()
        assert set(rows) == {(a, p, k) for a, p in modes for k in steps}  # the grid asked for
        by.update(rows)
    _assert_have_certifies({k: v[0] for k, v in by.items()})


@pytest.mark.slow  # the same assertions on a smaller grid: test_have_shows_the_tolerance_each_adaptivity_can_certify
def test_have_fills_the_whole_table():
    """Every adaptivity (and pass count) by 8, 32 and 128 steps: a tolerance in each cell."""
    by = _have_rows()
    assert len(by) == 18 and all(v is not None and len(v) == 1 for v in by.values())
    _assert_have_certifies({k: v[0] for k, v in by.items()})


def test_plan_shows_a_test_set_labelled_on_demand_under_each_adaptivity():
    """Next to the fully labelled plan: the rows an on-demand test set must hold (the caps) and
    the labels a decision takes at the edges, when clear and mid-zone (the oracle's expectation)."""
    import conditions
    from conditions.label_cost import on_demand_rows

    condition = "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01"
    result = run("plan", "--condition", condition, "--adaptivity", "full", "--steps", "32")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "The check needs 65,652 test examples" in text  # the fully labelled plan, unchanged
    assert "Labelled on demand" in text and "Wald-type oracle" in text and "d = 0.1" in text
    expected = {r.label: r for r in on_demand_rows(condition, 0.9999, "fp-free", 32)}
    for label, row in expected.items():
        costs = row.clauses[0]
        line = next(x for x in text.splitlines() if x.startswith(label + (" *" if label == "full" else " ")))
        assert f"{row.rows:,}" in line and f"{row.queries:,}" in line
        assert f"{costs.at_fail_edge:,.0f} / {costs.at_pass_edge:,.0f}" in line, line
        assert f"{costs.whole_cap:,.0f}" in line
    assert "d < 0.1 +/- 0.01" not in text.split("Labelled on demand")[1]  # no labels: not a row
    assert f"{conditions.sequential_plan(condition, 0.9999, adaptivity='full', steps=32).rows:,}" in text


def test_plan_json_keeps_its_fields_and_adds_the_on_demand_plan():
    condition = "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01"
    data = json.loads(run("plan", "--condition", condition, "--adaptivity", "firstChange",
                          "--json").output)
    for key in ("condition", "reliability", "mode", "adaptivity", "steps", "passes", "method",
                "queries", "test_examples", "labels", "disagreements_worst_case",
                "easeml_test_examples", "clauses"):
        assert key in data
    demand = data["on_demand"]
    assert demand["disagreement"] == 0.1 and demand["disagreement_from"] == "the formula's d clause"
    rows = demand["rows"]
    assert [(r["adaptivity"], r["passes"], r["configured"]) for r in rows] == [
        ("none", None, False), ("firstChange", None, True), ("full", 2, False), ("full", None, False)]
    full = rows[-1]["clauses"][0]
    assert full["labels_at_fail_edge"] <= 2000 and full["labels_at_pass_edge"] <= 2000
    assert rows[1]["clauses"][0]["labels_at_fail_edge"] <= 1600
    assert rows[-1]["test_set_rows"] == 67_070 and rows[-1]["clauses"][1]["labels_whole_cap"] == 0
    # what the owner labels following the requests: whole batches of 256 in rounds, at least the
    # labels the decision reads, within the issue's figures (full <= 2,000, firstChange <= 1,600)
    for row in rows[1:]:
        c = row["clauses"][0]
        for edge in ("fail", "pass"):
            owner, read = c[f"owner_labels_at_{edge}_edge"], c[f"labels_at_{edge}_edge"]
            assert owner % 256 == 0 and read <= owner < read + 256, (row["adaptivity"], c)
    assert full["owner_labels_at_fail_edge"] <= 2000 and full["owner_labels_at_pass_edge"] <= 2000
    assert rows[1]["clauses"][0]["owner_labels_at_fail_edge"] <= 1600
