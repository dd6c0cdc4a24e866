"""`.easeml.yml`: load, validate, and explain every mistake by key, line, value and what is allowed.

Two layouts are accepted: a plain mapping, and ease.ml/ci's own ``ml:`` list of one-key
mappings in any order::

    ml:
      - script: ./test_model.py
      - condition: n - o > 0.02 +/- 0.01
      - reliability: 0.9999
      - mode: fp-free
      - adaptivity: full
      - steps: 32
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

import conditions

from .errors import ConfigError

DEFAULT_LEDGER = {"backend": "file", "path": ".easeml/ledger"}
LEDGER_BACKENDS = ("file", "github")


@dataclass(frozen=True)
class GateConfig:
    """A validated gate configuration (see module docstring for the accepted layouts)."""

    condition: str
    formula: conditions.Formula
    reliability: float
    mode: str = "fp-free"
    adaptivity: str = "full"
    steps: int = 32
    passes: int | None = None
    method: str = "tight"
    name: str = "easeml-ci"
    script: str | None = None
    label_column: str = "label"
    testset: str | None = None
    ledger: dict = field(default_factory=lambda: dict(DEFAULT_LEDGER))
    private_sink: str | None = None
    webhook: str | None = None
    alert_issue: bool = True
    pool: str | None = None
    show_metrics: bool = False
    output: Any = None  # models.OutputRule: how score outputs become labels; None: labels only
    evaluation_time: float | None = None  # seconds the models' run on the test set takes, exactly
    allow_any_old_model: bool = False  # the Action may compare with an old model not on the base
    lines: dict = field(default_factory=dict)
    path: Path | None = None
    # Relative paths in the config (testset, pool, ledger.path) resolve against this folder:
    # the config file's own, so a check run from elsewhere finds the same ledger and test set.
    base: Path | None = None
    ledger_explicit: bool = False  # the file said `ledger:`; else the default location applies
    meter: dict | None = None  # the `meter:` section (ease.ml/meter), validated; None if absent
    pick: dict | None = None  # the `pick:` section (the best of k models), validated; None if absent
    rounds: dict | None = None  # the `rounds:` schedule (every, start, labelling; seconds), pinned

    def meter_plan(self):
        """The meter's plan (:func:`conditions.meter.meter_plan`) from the `meter:` section."""
        from conditions.meter import meter_plan

        m = self.meter or {}
        return meter_plan(m["edges"], m["tolerance"], m.get("reliability", self.reliability),
                          m.get("adaptivity", "full"), m.get("steps", 32))

    def plan(self) -> conditions.Plan:
        return conditions.plan(self.formula, self.reliability, self.mode, self.adaptivity,
                               self.steps, self.passes, self.method)

    def checked_plan(self) -> conditions.Plan:
        """The gate's plan; a condition that cannot be planned is a config error (exit 2)."""
        try:
            return self.plan()
        except conditions.PlanError as exc:
            raise ConfigError(f"{self.display_name}: {exc}") from None

    def checked_sequential_plan(self) -> conditions.SequentialPlan:
        """The plan of a test set labelled on demand (sequential, capped by the fixed size)."""
        try:
            return conditions.sequential_plan(self.formula, self.reliability, self.mode,
                                              self.adaptivity, self.steps, self.passes)
        except conditions.PlanError as exc:
            raise ConfigError(f"{self.display_name}: {exc}") from None

    def checked_pick_plan(self):
        """The plan of a test set serving picks, from the `pick:` section (defaults: the
        config's reliability, tolerance 0, adaptivity none, 32 picks of up to 30 candidates)."""
        from conditions.pick_plan import PickPlan

        if self.pick is None:
            raise ConfigError(f"{self.display_name}: no `pick:` section; add one, e.g.\n"
                              "pick:\n  reliability: 0.95\n  tolerance: 0.01\n  candidates: 10")
        p = self.pick
        try:
            return PickPlan(reliability=p.get("reliability", self.reliability),
                            tolerance=p.get("tolerance", 0.0), adaptivity=p.get("adaptivity", "none"),
                            steps=p.get("steps", 32), candidates=p.get("candidates", 30),
                            rows=p.get("rows", 10_000))
        except conditions.PlanError as exc:
            key = next((f"pick.{k}" for k in p if k in str(exc)), "pick")
            raise ConfigError(f"{self.where(key)}: {exc}") from None

    def checked_meter_plan(self):
        """The meter's plan; a missing or unplannable `meter:` section is a config error."""
        from conditions.meter import MeterError

        if self.meter is None:
            raise ConfigError(f"{self.display_name}: no `meter:` section; add one, e.g.\n"
                              "meter:\n  edges: [0.01, 0.025, 0.05]\n  tolerance: 0.005\n"
                              "  reliability: 0.999\n  steps: 32\n  adaptivity: full")
        try:
            return self.meter_plan()
        except MeterError as exc:
            key = f"meter.{exc.key}" if self.line(f"meter.{exc.key}") else "meter"
            raise ConfigError(f"{self.where(key)}: {exc}") from None

    def resolve(self, value: str | Path) -> Path:
        """A path written in this config, made absolute against the config's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() or self.base is None else self.base / path

    def ledger_base(self) -> Path:
        return self.base if self.base is not None else Path(".")

    @property
    def display_name(self) -> str:
        """The config's file as messages name it."""
        return str(self.path) if self.path else ".easeml.yml"

    @property
    def gate_name(self) -> str:
        return self.name or "default"

    def line(self, key: str) -> int | None:
        """The line of ``key`` (dotted for nested keys) in the config file, if it is there."""
        return (self.lines or {}).get(key)

    def where(self, key: str) -> str:
        """``FILE:LINE: key`` (or ``FILE: key``), the start of a message about ``key``."""
        line = self.line(key)
        return f"{self.display_name}:{line}: {key}" if line else f"{self.display_name}: {key}"


# --- validators: each returns the clean value or raises _Bad(what is allowed) -----------------

class _Bad(Exception):
    pass


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad("a non-empty string")
    return v


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in allowed:
            raise _Bad("one of " + ", ".join(allowed))
        return v
    return check


def _int_at_least(lo: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise _Bad(f"an integer >= {lo}")
        return v
    return check


def _reliability(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1:
        raise _Bad("a number in (0, 1), e.g. 0.9999")
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad("true or false")
    return v


def _url_or_path(v: Any) -> str:
    return _str(v)


def _url(v: Any) -> str:
    v = _str(v)
    if not v.startswith(("http://", "https://")):
        raise _Bad("an http:// or https:// URL")
    return v


def _output(v: Any):
    from .models import OutputRule

    try:
        return OutputRule.parse(v)
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Bad("a number")
    return float(v)


def _duration(v: Any) -> float:
    from .models.clock import parse_duration

    try:
        return parse_duration(v)
    except ValueError:
        raise _Bad("a positive duration: seconds (600) or a string such as '90s', '10m', '1h30m'") from None


def _round_length(v: Any) -> int:
    from .gate.schedule import parse_every

    try:
        seconds = parse_every(v)
    except ValueError:
        raise _Bad("a whole number of hours or days, e.g. '24h' or '7d'") from None
    if seconds < 1:
        raise _Bad("at least '1h'")
    return seconds


def _labelling(v: Any) -> int:
    from .gate.schedule import parse_every

    try:
        return parse_every(v)
    except ValueError:
        raise _Bad("a whole number of hours or days, e.g. '12h' (or '0h')") from None


def _utc_time(v: Any) -> str:
    from .gate.schedule import parse_start

    try:
        return parse_start(v)
    except ValueError:
        raise _Bad("a UTC time in quotes, e.g. \"2026-12-07T18:00:00Z\"") from None


def _number_list(v: Any) -> list:
    if not isinstance(v, list) or not v:
        raise _Bad("a non-empty list of numbers, e.g. [0.01, 0.025, 0.05]")
    return [_number(x) for x in v]


TOP_LEVEL: dict[str, Callable[[Any], Any]] = {
    "condition": _str,
    "reliability": _reliability,
    "mode": _choice(*conditions.MODES),
    "adaptivity": _choice(*conditions.ADAPTIVITIES),
    "steps": _int_at_least(1),
    "passes": _int_at_least(1),
    "method": _choice(*conditions.METHODS),
    "name": _str,
    "script": _str,
    "label_column": _str,
    "testset": _str,
    "ledger": dict,  # checked by SECTIONS
    "private_sink": _url_or_path,
    "alerts": dict,
    "pool": _str,
    "show_metrics": _bool,
    "output": _output,
    "evaluation_time": _duration,
    "allow_any_old_model": _bool,
    "meter": dict,  # checked by SECTIONS and _check_meter
    "pick": dict,  # checked by SECTIONS and GateConfig.checked_pick_plan
    "rounds": dict,  # checked by SECTIONS and _check_rounds
}
REQUIRED = ("condition", "reliability")
SECTIONS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "ledger": {"backend": _choice(*LEDGER_BACKENDS), "path": _str, "repository": _str, "branch": _str},
    "alerts": {"webhook": _url, "issue": _bool},
    "meter": {"edges": _number_list, "tolerance": _number, "reliability": _reliability,
              "adaptivity": _choice("none", "full"), "steps": _int_at_least(1), "testset": _str},
    "pick": {"reliability": _reliability, "tolerance": _number, "adaptivity": _choice("none", "full"),
             "steps": _int_at_least(1), "candidates": _int_at_least(2), "rows": _int_at_least(1),
             "testset": _str},
    "rounds": {"every": _round_length, "start": _utc_time, "labelling": _labelling},
}


def _suggest(key: str, known) -> str:
    import difflib  # here: only a mistake needs it

    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint}; known keys: {', '.join(sorted(known))}"


class _Source:
    """Where things are in the YAML text: for messages that name the line."""

    def __init__(self, where: str):
        self.where = where
        self.lines: dict[str, int] = {}

    def error(self, key: str | None, message: str) -> ConfigError:
        line = self.lines.get(key) if key else None
        at = f"{self.where}:{line}" if line else self.where
        return ConfigError(f"{at}: {message}")


def _flatten(node: yaml.Node, src: _Source) -> dict[str, tuple[Any, yaml.Node]]:
    """Top-level key -> (value node, key node), from either layout; duplicates are errors."""
    if not isinstance(node, yaml.MappingNode):
        raise src.error(None, "expected a mapping of keys (condition, reliability, ...) or ease.ml/ci's "
                              f"'ml:' list, got {node.tag.rsplit(':', 1)[-1]}")
    pairs = list(node.value)
    if len(pairs) == 1 and isinstance(pairs[0][0], yaml.ScalarNode) and pairs[0][0].value == "ml":
        seq = pairs[0][1]
        if not isinstance(seq, yaml.SequenceNode):
            line = seq.start_mark.line + 1
            raise ConfigError(f"{src.where}:{line}: key 'ml': expected a list of one-key mappings "
                              "(- condition: ...), got a " + seq.tag.rsplit(":", 1)[-1])
        pairs = []
        for item in seq.value:
            if not isinstance(item, yaml.MappingNode) or len(item.value) != 1:
                line = item.start_mark.line + 1
                raise ConfigError(f"{src.where}:{line}: each item of 'ml' must be a one-key mapping "
                                  "such as '- reliability: 0.9999'")
            pairs.append(item.value[0])
    out: dict[str, tuple[Any, yaml.Node]] = {}
    for key_node, value_node in pairs:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in out:
            raise ConfigError(f"{src.where}:{line}: key '{key}' is given twice (first on line "
                              f"{src.lines[key]})")
        src.lines[key] = line
        out[key] = (value_node, key_node)
    return out


def on_runner(env=None) -> bool:
    """Whether this runs on a GitHub Actions runner (``GITHUB_ACTIONS=true``)."""
    env = os.environ if env is None else env
    return env.get("GITHUB_ACTIONS") == "true"


def with_runner_defaults(cfg: GateConfig) -> GateConfig:
    """``cfg`` as a runner uses it: ``evaluation_time`` defaults to the hard clock's
    :data:`~easeml_ci.models.clock.RUNNER_DEFAULT` where the config sets none (on a runner the
    job's log shows how long each step took, so a model's run time must not depend on the test
    set). Registration pins it like a value the config sets."""
    if cfg.evaluation_time is not None:
        return cfg
    from .models.clock import RUNNER_DEFAULT

    return dataclasses.replace(cfg, evaluation_time=RUNNER_DEFAULT)


def load_config(path: str | Path, *, base: str | Path | None = None,
                runner: bool | None = None) -> GateConfig:
    """Load and validate a config file; every mistake is a :class:`ConfigError` (exit 2).

    Relative paths inside it resolve against ``base``, by default the file's own folder (a
    config read from the base commit into a scratch file passes the workspace folder it came
    from). ``runner`` (default: :func:`on_runner`) applies the runner's defaults
    (:func:`with_runner_defaults`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    cfg = parse_config(text, where=str(path), path=path)
    cfg = dataclasses.replace(cfg, base=Path(base) if base is not None else
                              path.parent.absolute())
    return with_runner_defaults(cfg) if (on_runner() if runner is None else runner) else cfg


def parse_config(text: str, where: str = "<config>", path: Path | None = None) -> GateConfig:
    src = _Source(where)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{at}: malformed YAML: {problem}") from None
    if node is None:
        raise ConfigError(f"{where}: the config is empty; it needs at least: {', '.join(REQUIRED)}")
    entries = _flatten(node, src)
    loader = yaml.SafeLoader("")
    values: dict[str, Any] = {}
    for key, (value_node, _) in entries.items():
        if key not in TOP_LEVEL:
            raise src.error(key, f"unknown key '{key}'{_suggest(key, TOP_LEVEL)}")
        raw = loader.construct_object(value_node, deep=True)
        if key in SECTIONS:
            values[key] = _section(key, raw, value_node, src)
            continue
        try:
            values[key] = TOP_LEVEL[key](raw)
        except _Bad as bad:
            raise src.error(key, f"key '{key}': expected {bad}, got {raw!r}") from None
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise ConfigError(f"{where}: missing required key{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(repr(k) for k in missing)}")
    return _build(values, src, path)


def _section(key: str, raw: Any, node: yaml.Node, src: _Source) -> dict:
    allowed = SECTIONS[key]
    if not isinstance(raw, dict):
        raise src.error(key, f"key '{key}': expected a mapping with keys {', '.join(allowed)}, got {raw!r}")
    out = {}
    for k_node, v_node in node.value:
        sub = f"{key}.{k_node.value}"
        src.lines[sub] = k_node.start_mark.line + 1
    for k, v in raw.items():
        sub = f"{key}.{k}"
        if k not in allowed:
            raise src.error(sub, f"unknown key '{sub}'{_suggest(k, allowed)}")
        try:
            out[k] = allowed[k](v)
        except _Bad as bad:
            raise src.error(sub, f"key '{sub}': expected {bad}, got {v!r}") from None
    return out


def _build(values: dict, src: _Source, path: Path | None) -> GateConfig:
    try:
        formula = conditions.parse(values["condition"])
    except conditions.ConditionError as exc:
        raise src.error("condition", f"key 'condition': {exc}") from None
    ledger = dict(DEFAULT_LEDGER)
    ledger.update(values.get("ledger", {}))
    if ledger["backend"] == "github":
        if "path" not in values.get("ledger", {}):
            del ledger["path"]  # the file backend's default means nothing to the repository backend
        ledger.setdefault("branch", "easeml-ledger")
    alerts = values.get("alerts", {})
    fields = {k: v for k, v in values.items() if k not in ("ledger", "alerts")}
    cfg = GateConfig(formula=formula, ledger=ledger, webhook=alerts.get("webhook"),
                     alert_issue=alerts.get("issue", True), lines=dict(src.lines), path=path,
                     ledger_explicit="ledger" in values, **fields)
    try:
        conditions.validate_parameters(cfg.reliability, cfg.mode, cfg.adaptivity, cfg.steps, cfg.passes,
                                     cfg.method)
    except conditions.PlanError as exc:
        raise src.error("passes" if "passes" in str(exc) else None, str(exc)) from None
    try:  # a zone outside the statistic's range, or a formula no model can pass
        conditions.check_formula(formula, cfg.mode)
    except conditions.ConditionError as exc:
        raise src.error("condition", f"key 'condition': {exc}") from None
    if cfg.meter is not None:
        _check_meter(cfg.meter, src)
    if cfg.rounds is not None:
        cfg = dataclasses.replace(cfg, rounds=_check_rounds(cfg, src))
    return cfg


def _check_rounds(cfg: GateConfig, src: _Source) -> dict:
    """The `rounds:` schedule, canonical (seconds, a UTC time): pinned at registration."""
    section = cfg.rounds
    for key in ("every", "start"):
        if key not in section:
            raise src.error("rounds", f"key 'rounds': missing 'rounds.{key}' (e.g. every: 24h, "
                                      "start: \"2026-12-07T18:00:00Z\", labelling: 12h)")
    if cfg.adaptivity == "none":
        raise src.error("rounds", "key 'rounds': rounds release verdicts to the team at each "
                                  "round's end, but `adaptivity: none` shows the team nothing "
                                  "(\"withheld\", the verdict goes to the private sink): drop "
                                  "`rounds:`, or choose adaptivity full, firstChange or passes")
    return {"every": section["every"], "start": section["start"],
            "labelling": section.get("labelling", 0)}


def _check_meter(section: dict, src: _Source) -> None:
    """The `meter:` ranges and tolerance (conditions.meter.ranges), named by key and line."""
    from conditions.meter import MAX_STEPS, MeterError, ranges

    for key in ("edges", "tolerance"):
        if key not in section:
            raise src.error("meter", f"key 'meter': missing 'meter.{key}' (e.g. edges: [0.01, "
                                     "0.025, 0.05] and tolerance: 0.005)")
    try:
        ranges(section["edges"], section["tolerance"])
    except MeterError as exc:
        raise src.error(f"meter.{exc.key}", f"key 'meter.{exc.key}': {exc}") from None
    if section.get("steps", 32) > MAX_STEPS:
        raise src.error("meter.steps", f"key 'meter.steps': expected an integer in [1, "
                                       f"{MAX_STEPS}], got {section['steps']!r}")


def config_from_options(condition: str, reliability: float = 0.9999, mode: str = "fp-free",
                        adaptivity: str = "full", steps: int = 32, passes: int | None = None,
                        method: str = "tight") -> GateConfig:
    """A config from command-line options, validated like a file (errors name the option)."""
    values = {"condition": condition, "reliability": reliability, "mode": mode,
              "adaptivity": adaptivity, "steps": steps, "method": method}
    if passes is not None:
        values["passes"] = passes
    for key, value in values.items():
        try:
            TOP_LEVEL[key](value)
        except _Bad as bad:
            raise ConfigError(f"--{key}: expected {bad}, got {value!r}") from None
    try:
        formula = conditions.parse(condition)
    except conditions.ConditionError as exc:
        raise ConfigError(f"--condition: {exc}") from None
    try:
        conditions.validate_parameters(reliability, mode, adaptivity, steps, passes, method)
    except conditions.PlanError as exc:
        raise ConfigError(str(exc)) from None
    return GateConfig(formula=formula, lines={}, path=None, **values)
