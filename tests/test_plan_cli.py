"""`easeml-ci plan` through click's CliRunner."""
import json

import pytest
from click.testing import CliRunner

from easeml_ci.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_table_shows_statistic_method_sizes_and_easeml_figure():
    result = run("plan", "--condition", "n - o > 0.02 +/- 0.01", "--reliability", "0.9999",
                 "--adaptivity", "full", "--steps", "32")
    assert result.exit_code == 0, result.output
    assert "n - o in [-1, 1]" in result.output
    assert "bennett" in result.output
    assert "641,684" in result.output  # ease.ml/ci's figure beside ours


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
    ([], "give --config FILE or --condition"),
    (["--config", "/nonexistent/.easeml.yml"], "config file /nonexistent/.easeml.yml does not exist"),
])
def test_bad_input_exits_2_with_a_clear_error(args, message):
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


def test_action_alert_labels_default_matches_the_alert_module():
    from easeml_ci.action_cmd import DEFAULT_LABELS
    from easeml_ci.github.alerts import DEFAULT_LABELS as ALERT_LABELS

    assert DEFAULT_LABELS == ALERT_LABELS
