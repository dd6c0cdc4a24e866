"""`.easeml.yml`: both layouts, and every mistake named by file, line, key, value and allowed values."""
import pytest

from easeml_ci.config import load_config, parse_config
from easeml_ci.errors import ConfigError

EASEML_LAYOUT = """\
ml:
  - script: ./test_model.py
  - condition: n - o > 0.02 +/- 0.01
  - reliability: 0.9999
  - mode: fp-free
  - adaptivity: full
  - steps: 32
"""


def test_easeml_ci_layout_in_any_order(tmp_path):
    shuffled = "ml:\n" + "".join(reversed(EASEML_LAYOUT.splitlines(keepends=True)[1:]))
    for text in (EASEML_LAYOUT, shuffled):
        path = tmp_path / ".easeml.yml"
        path.write_text(text)
        cfg = load_config(path)
        assert (cfg.condition, cfg.reliability, cfg.mode, cfg.adaptivity, cfg.steps) == (
            "n - o > 0.02 +/- 0.01", 0.9999, "fp-free", "full", 32)
        assert cfg.script == "./test_model.py"
        assert cfg.path == path
    assert load_config(tmp_path / ".easeml.yml").lines["condition"] == 6


def test_plain_mapping_with_sections_and_defaults():
    cfg = parse_config("""\
condition: n > 0.8 +/- 0.05
reliability: 0.999
adaptivity: full
passes: 3
name: accuracy-gate
ledger:
  backend: github
  repository: acme/models
alerts:
  webhook: https://hooks.example.test/x
  issue: false
show_metrics: false
""")
    assert cfg.passes == 3 and cfg.name == "accuracy-gate"
    assert cfg.ledger == {"backend": "github", "repository": "acme/models", "branch": "easeml-ledger"}
    assert cfg.webhook == "https://hooks.example.test/x" and cfg.alert_issue is False
    assert cfg.lines["ledger.repository"] == 8
    assert cfg.plan().queries < 2**32 - 1
    defaults = parse_config("condition: n > 0.8 +/- 0.05\nreliability: 0.99\n")
    assert (defaults.mode, defaults.adaptivity, defaults.steps, defaults.method) == ("fp-free", "full", 32, "tight")
    assert defaults.ledger == {"backend": "file", "path": ".easeml/ledger"}


BASE = "condition: n > 0.8 +/- 0.05\nreliability: 0.99\n"


@pytest.mark.parametrize("text, expected", [
    ("condition: [\n", "x.yml:2: malformed YAML"),
    ("", "x.yml: the config is empty"),
    ("- a\n- b\n", "x.yml: expected a mapping"),
    ("reliability: 0.99\n", "x.yml: missing required key 'condition'"),
    ("condition: n > 0.8 +/- 0.05\n", "missing required key 'reliability'"),
    (BASE + "relability: 0.9\n", "x.yml:3: unknown key 'relability'; did you mean 'reliability'?"),
    (BASE + "colour: red\n", "x.yml:3: unknown key 'colour'; known keys: adaptivity"),
    ("condition: n > 0.8 +/- 0.05\nreliability: 1.5\n", "x.yml:2: key 'reliability': expected a number in (0, 1), e.g. 0.9999, got 1.5"),
    ("condition: n > 0.8 +/- 0.05\nreliability: high\n", "x.yml:2: key 'reliability': expected a number in (0, 1), e.g. 0.9999, got 'high'"),
    (BASE + "steps: 0\n", "x.yml:3: key 'steps': expected an integer >= 1, got 0"),
    (BASE + "steps: 2.5\n", "x.yml:3: key 'steps': expected an integer >= 1, got 2.5"),
    (BASE + "mode: fp\n", "x.yml:3: key 'mode': expected one of fp-free, fn-free, got 'fp'"),
    (BASE + "adaptivity: sometimes\n", "x.yml:3: key 'adaptivity': expected one of none, full, firstChange, got 'sometimes'"),
    (BASE + "adaptivity: none\npasses: 2\n", "x.yml:4: passes applies to adaptivity 'full' only"),
    ("condition: n > x +/- 0.05\nreliability: 0.99\n", "x.yml:1: key 'condition': unknown variable 'x' at column 5"),
    (BASE + "ledger:\n  backend: s3\n", "x.yml:4: key 'ledger.backend': expected one of file, github, got 's3'"),
    (BASE + "ledger:\n  pth: x\n", "x.yml:4: unknown key 'ledger.pth'; did you mean 'path'?"),
    (BASE + "alerts:\n  webhook: ftp://x\n", "x.yml:4: key 'alerts.webhook': expected an http:// or https:// URL"),
    (BASE + "reliability: 0.9\n", "x.yml:3: key 'reliability' is given twice (first on line 2)"),
    ("ml: 3\n", "x.yml:1: key 'ml': expected a list of one-key mappings"),
    ("ml:\n  - condition: n > 0.8 +/- 0.05\n    reliability: 0.9\n", "x.yml:2: each item of 'ml' must be a one-key mapping"),
    (BASE + "show_metrics: yes please\n", "x.yml:3: key 'show_metrics': expected true or false"),
])
def test_mistakes_are_named_by_line_key_value_and_allowed_values(text, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(text, where="x.yml")
    assert expected in info.value.message
    assert info.value.exit_code == 2


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.yml does not exist"):
        load_config(tmp_path / "nope.yml")
    (tmp_path / "bin.yml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "bin.yml")


def test_an_impossible_condition_is_refused_when_the_config_loads(tmp_path):
    from easeml_ci.config import load_config
    from easeml_ci.errors import ConfigError

    path = tmp_path / ".easeml.yml"
    path.write_text("reliability: 0.99\ncondition: n > 1.2 +/- 0.03\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:2" in err.value.message and "1.2" in err.value.message
