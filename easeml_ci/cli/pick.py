"""`easeml-ci pick`: the best of k models on fresh data, certified at a stated reliability.

Exit codes: 0 answered (a pick, "no pick yet", or withheld), 2 bad input (nothing written), 3
test set spent. Under ``--json`` stdout carries exactly one JSON object and progress is silent.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import BudgetExhausted, UsageError

DEFAULT_KEY_ENV = "EASEML_TESTSET_KEY"


@click.command("pick")
@click.option("--config", "config_path", default=".easeml.yml", show_default=True,
              help="The .easeml.yml with a `pick:` section.")
@click.option("--models", "models", multiple=True,
              help="The candidates: .onnx, .csv/.npy predictions or git:REF:PATH, in order "
                   "(--models A B C, or --models A --models B).")
@click.argument("more_models", nargs=-1, metavar="[MODEL]...")
@click.option("--testset", default=None,
              help="The pick's test set (usually labelled on demand); default: `pick.testset:`.")
@click.option("--labels", "label_store", default=None,
              help="Label store of the test set [default: TESTSET.labels].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
@click.option("--key-env", default=DEFAULT_KEY_ENV, show_default=True,
              help="Environment variable holding the key of an encrypted test set.")
@click.option("--plan", "show_plan", is_flag=True,
              help="Print what the `pick:` section costs (picks counted, reliability per pick) "
                   "under none and full, and run nothing.")
def pick(config_path, models, more_models, testset, label_store, as_json, key_env, show_plan):
    """Which of the models is best on the pick's test set, with the configured confidence."""
    from ..gate.pick import run_pick
    from .render import render_pick

    if show_plan:
        click.echo(_plan(config_path, as_json))
        return
    candidates = [*models, *more_models]
    if not candidates:
        raise UsageError("--models required: `easeml-ci pick --models A.onnx B.onnx ... "
                         "--testset TESTSET`")
    progress = None if as_json else (lambda m: click.echo(f"... {m}", err=True))
    try:
        result = run_pick(config_path, candidates, testset, key_env=key_env, workdir=Path("."),
                          progress=progress, label_store=label_store)
    except BudgetExhausted as exc:
        if not as_json:
            click.echo(exc.alert["text"])
        raise
    click.echo(json.dumps(result.to_dict(), sort_keys=True) if as_json else render_pick(result))
    sys.exit(result.exit_code)


def _plan(config_path: str, as_json: bool) -> str:
    """The pick plan under both adaptivities: how the test set's reliability is shared."""
    import dataclasses

    from conditions import PlanError
    from conditions.best_of_k import pair_alphas

    from ..config import load_config

    configured = load_config(config_path).checked_pick_plan()
    rows = []
    for adaptivity in ("none", "full"):
        row = {"adaptivity": adaptivity, "configured": adaptivity == configured.adaptivity}
        try:
            plan = dataclasses.replace(configured, adaptivity=adaptivity)
        except PlanError as exc:
            rows.append({**row, "queries": None, "pick_reliability": None,
                         "alpha_per_pair": None, "refused": str(exc)})
            continue
        alpha, _ = pair_alphas(plan.candidates, plan.pick_reliability, plan.tolerance)
        rows.append({**row, "queries": plan.queries, "pick_reliability": plan.pick_reliability,
                     "alpha_per_pair": alpha})
    if as_json:
        return json.dumps({"plan": configured.to_dict(), "rows": rows}, sort_keys=True)
    lines = [f"pick: {configured.description}, reliability {configured.reliability} over "
             f"{configured.steps} picks of one test set",
             "  adaptivity  picks counted            reliability per pick   alpha per pair"]
    for row in rows:
        mark = "*" if row["configured"] else " "
        if row["queries"] is None:
            lines.append(f"{mark} {row['adaptivity']:<10} refused: {row['refused']}")
            continue
        lines.append(f"{mark} {row['adaptivity']:<10} {row['queries']:<24,} "
                     f"{row['pick_reliability']:<22.12g} {row['alpha_per_pair']:.3g}")
    lines.append("  (* configured; under full each answer is one of k + 1 symbols: the (k+1)-ary "
                 "transcript tree; labels are asked for only where candidates disagree)")
    return "\n".join(lines)
