"""`easeml-ci meter` (one answer of ease.ml/meter) and `easeml-ci meter plan` (what it needs).

Exit codes: 0 answered (or withheld), 2 bad input (nothing written), 3 test set spent or too
small. Under ``--json`` stdout carries exactly one JSON object.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import BudgetExhausted, ConfigError, TestSetTooSmall, UsageError

DEFAULT_KEY_ENV = "EASEML_TESTSET_KEY"
LOOKS = (10, 100, 1000)


@click.group("meter", invoke_without_command=True)
@click.option("--config", "config_path", default=".easeml.yml", show_default=True,
              help="The .easeml.yml with a `meter:` section.")
@click.option("--model", default=None, help="The model: .onnx, or git:REF:PATH to one.")
@click.option("--validation", default=None,
              help="The team's own validation set (.npz or .csv, plaintext, labelled).")
@click.option("--testset", default=None,
              help="The meter's test set (possibly encrypted); default: `meter.testset:`.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
@click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True,
              help="Environment variable holding the key of an encrypted test set.")
@click.pass_context
def meter(ctx, config_path, model, validation, testset, as_json, key_env):
    """How far the validation accuracy overstates the model's true accuracy, as a range."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [flag for flag, value in (("--model", model), ("--validation", validation))
               if not value]
    if missing:
        raise UsageError(f"{' and '.join(missing)} required: `easeml-ci meter --config FILE "
                         "--model MODEL.onnx --validation VALIDATION.npz` (or `easeml-ci meter "
                         "plan`)")
    from ..gate import meter as meter_mod
    from .render import render_meter

    progress = None if as_json else (lambda m: click.echo(f"... {m}", err=True))
    try:
        result = meter_mod.run_meter(config_path, model, validation, testset, key_env=key_env,
                                     workdir=Path("."), progress=progress)
    except BudgetExhausted as exc:
        if not as_json:
            click.echo(exc.alert["text"])
        raise
    click.echo(json.dumps(result.to_dict(), sort_keys=True) if as_json
               else render_meter(result))
    sys.exit(result.exit_code)


def plan_rows(edges, tolerance, reliability, steps) -> dict:
    """The figures `meter plan` prints: test examples under none / full, validation sizes."""
    from conditions.meter import meter_plan, validation_size

    out = {"edges": list(edges), "tolerance": tolerance, "reliability": reliability,
           "steps": steps, "test_examples": {}, "validation": []}
    for adaptivity in ("none", "full"):
        p = meter_plan(edges, tolerance, reliability, adaptivity, steps)
        out["ranges"] = list(p.ranges.labels)
        out["test_examples"][adaptivity] = {"test_examples": p.test_examples,
                                            "answers_covered": str(p.answers)}
    for looks in LOOKS:
        out["validation"].append({
            "looks": looks,
            "fixed_in_advance": validation_size(looks, tolerance, reliability, adaptive=False),
            "adaptive": validation_size(looks, tolerance, reliability, adaptive=True)})
    return out


def render_plan(rows: dict) -> str:
    lines = [f"ranges       {' | '.join(rows['ranges'])}  (+/- {100 * rows['tolerance']:g}% at each edge)",
             f"reliability  {rows['reliability']} over {rows['steps']} answers", "",
             "adaptivity  test examples  answers the union bound covers"]
    for adaptivity, row in rows["test_examples"].items():
        covered = row["answers_covered"]
        covered = covered if len(covered) < 16 else f"{float(covered):.3g}"
        lines.append(f"{adaptivity:<10}  {row['test_examples']:>13,}  {covered}")
    lines += ["", f"validation set within +/- {100 * rows['tolerance']:g}% for every look, "
                  f"reliability {rows['reliability']}:",
              "looks   fixed in advance   adaptive (one bit a look)"]
    for row in rows["validation"]:
        lines.append(f"{row['looks']:>5}  {row['fixed_in_advance']:>17,}  {row['adaptive']:>26,}")
    lines.append("A team that reads its validation accuracy, not one bit, learns more per look: "
                 "the adaptive figure is then a lower bound.")
    return "\n".join(lines)


@meter.command("register")
@click.option("--config", "config_path", default=".easeml.yml", show_default=True)
@click.option("--testset", default=None, help="The meter's test set; default: `meter.testset:`.")
@click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True)
@click.option("--repository-ledger", is_flag=True,
              help="Register in the repository ledger the GitHub Action uses by default.")
@click.option("--json", "as_json", is_flag=True)
def register(config_path, testset, key_env, repository_ledger, as_json):
    """Start the meter test set's budget under the `meter:` terms (its owner, once), so that
    pull requests (which may not register) can be metered."""
    from ..config import load_config
    from ..gate import registration, steps
    from ..testsets import load_testset

    # --repository-ledger: the ledger the Action uses, under the clock a runner keeps
    cfg = load_config(config_path, runner=True if repository_ledger else None)
    plan = cfg.checked_meter_plan()
    source = steps.testset_source(cfg, testset, Path("."), configured=(cfg.meter or {}).get("testset"),
                                  key_env=key_env, missing="no test set for the meter: pass "
                                  "--testset PATH or set `meter.testset:`")
    ts = load_testset(source.path, label_column=cfg.label_column, key_env=key_env)
    key = registration.ledger_key(source)
    if len(ts) < plan.test_examples:
        raise TestSetTooSmall(f"test set {source.given}: the meter needs {plan.test_examples:,} "
                              f"labelled examples for {plan.steps} answers, have {len(ts):,}")
    backend = registration.open_ledger_backend(cfg, repository=repository_ledger)
    state, budget = registration.register(cfg, backend, ts.fingerprint,
                                          registration.meter_terms(cfg, plan),
                                          {"schema": registration.testset_schema(ts)},
                                          given=source.given, key=key)
    where = registration.ledger_name(backend)
    click.echo(json.dumps({"status": state, "ledger": where, "budget": budget.to_dict()}, sort_keys=True)
               if as_json else f"{state}: the meter's test set in {where}\nbudget: "
               f"{budget.describe()}")


@meter.command("plan")
@click.option("--config", "config_path", default=None,
              help="A .easeml.yml with a `meter:` section (default: ./.easeml.yml when present).")
@click.option("--edges", default=None, help="Comma-separated edges, e.g. 0.01,0.025,0.05.")
@click.option("--tolerance", type=float, default=None, help="Edge tolerance, e.g. 0.005.")
@click.option("--reliability", type=float, default=None, help="e.g. 0.999.")
@click.option("--steps", type=int, default=None, help="H: answers one test set serves.")
@click.option("--json", "as_json", is_flag=True)
def plan(config_path, edges, tolerance, reliability, steps, as_json):
    """Test examples the meter needs for H answers, and validation-set sizes for 10/100/1,000 looks."""
    from conditions.meter import MeterError

    from ..config import load_config

    values = {}
    if config_path is None and Path(".easeml.yml").is_file() and edges is None:
        config_path = ".easeml.yml"
    if config_path:
        cfg = load_config(config_path)
        if cfg.meter is None:
            raise ConfigError(f"{config_path}: no `meter:` section (or give --edges and --tolerance)")
        values = {"edges": cfg.meter["edges"], "tolerance": cfg.meter["tolerance"],
                  "reliability": cfg.meter.get("reliability", cfg.reliability),
                  "steps": cfg.meter.get("steps", 32)}
    if edges is not None:
        try:
            values["edges"] = [float(e) for e in edges.split(",")]
        except ValueError:
            raise UsageError(f"--edges: expected comma-separated numbers such as "
                             f"0.01,0.025,0.05, got {edges!r}") from None
    for key, value in (("tolerance", tolerance), ("reliability", reliability), ("steps", steps)):
        if value is not None:
            values[key] = value
    values.setdefault("reliability", 0.999)
    values.setdefault("steps", 32)
    for key in ("edges", "tolerance"):
        if key not in values:
            raise UsageError(f"--{key} is required without a config that has a `meter:` section")
    try:
        rows = plan_rows(values["edges"], values["tolerance"], values["reliability"],
                         values["steps"])
    except MeterError as exc:
        raise UsageError(f"--{exc.key}: {exc}") from None
    click.echo(json.dumps(rows, sort_keys=True) if as_json else render_plan(rows))
