"""`easeml-ci plan`: how many test examples and labels a condition needs."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

import conditions
from conditions.label_cost import (NONE_FIRST_BATCH, NONE_GROWTH, certified_disagreement,
                                   on_demand_rows, owner_labels_under)
from conditions.rounds import REQUEST_BATCH

from ..config import GateConfig, config_from_options, load_config
from ..errors import ConfigError

DEFAULT_CONFIG = ".easeml.yml"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    right = [False, False, False, True, True, True]
    def fmt(cells):
        return "  ".join(c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def render_plan(plan: conditions.Plan) -> str:
    adaptivity = plan.adaptivity + (f", passes {plan.passes}" if plan.passes else "")
    head = (f"condition    {plan.formula}\n"
            f"reliability  {plan.reliability}  (delta {plan.delta:.3g} for the test set's whole life)\n"
            f"mode         {plan.mode}\n"
            f"adaptivity   {adaptivity}, steps {plan.steps}  ->  {plan.queries:,} queries, "
            f"delta per clause and query {plan.clauses[0].delta:.3g}\n")
    rows = [[c.text, c.statistic, c.method, f"{c.test_examples:,}", f"{c.labels:,}",
             f"{c.easeml_test_examples:,}"] for c in plan.clauses]
    table = _table(rows, ["clause", "statistic", "method", "test examples", "labelled rows needed",
                          "ease.ml/ci"])
    ratio = plan.easeml_test_examples / plan.test_examples
    foot = (f"\nThe check needs {plan.test_examples:,} test examples, every one labelled when "
            f"labelled in advance ({plan.labels:,} labelled rows; ease.ml/ci's released code: "
            f"{plan.easeml_test_examples:,}; {ratio:.1f}x). A test set labelled on demand needs "
            "only the labels its checks' decisions read (below).")
    worst = plan.disagreements_worst_case
    for c in plan.clauses:
        if c.method == "bennett-d":
            bound = c.to_dict()["disagreement_bound"]
            foot += (f"\nClause '{c.text}' relies on d <= {bound:g}, certified by the formula's own "
                     "d clause.")
    if worst is not None:
        foot += (f"\nFor information only: a passing check sees at most {worst:,} disagreements "
                 f"(worst case the d clause allows on {plan.test_examples:,} rows). This is not what "
                 "needs labels: another model pair disagrees on other rows, so a test set labelled in "
                 "advance needs every row labelled.")
    return head + "\n" + table + "\n" + foot


def on_demand(plan: conditions.Plan) -> dict:
    """A test set labelled on demand under each adaptivity: its rows and the labels a decision
    takes (expected: the Wald-type oracle of bench/labels_on_demand.py, conditions.label_cost)."""
    rows = on_demand_rows(plan.formula, plan.reliability, plan.mode, plan.steps, plan.passes)
    first = next((c for r in rows for c in r.clauses if c.disagreement is not None), None)
    bound = certified_disagreement(plan.formula)
    return {"labels_model": "expected labels, Wald-type oracle d log(1/alpha) / KL_inf "
                            "(bench/labels_on_demand.py)",
            "disagreement": None if first is None else first.disagreement,
            "disagreement_from": None if first is None else (
                "the formula's d clause" if bound is not None else "assumed"),
            "rows": [{**_with_owner_labels(r.adaptivity, r.to_dict()),
                      "configured": (r.adaptivity, r.passes) == (plan.adaptivity, plan.passes)}
                     for r in rows]}


def _with_owner_labels(adaptivity: str, row: dict) -> dict:
    """Each clause's labels at the edges as the owner gives them, following the gate's requests
    (whole batches: conditions.label_cost.owner_labels_under), beside the labels a decision reads."""
    for c in row["clauses"]:
        for edge in ("fail", "pass"):
            read = c[f"labels_at_{edge}_edge"]
            c[f"owner_labels_at_{edge}_edge"] = None if read is None else int(owner_labels_under(
                adaptivity, math.ceil(read), math.ceil(c["labels_whole_cap"])))
    return row


def _labels(x) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render_on_demand(plan: conditions.Plan, data: dict) -> str:
    if data["disagreement"] is None:
        at = ""
    else:
        at = f", at d = {data['disagreement']:g} ({data['disagreement_from']})"
    head = ("\nLabelled on demand (a test set registered without its labels; labels only for the "
            "rows a decision reads):\n"
            "rows the test set must hold (the caps) and labels per decision, expected (Wald-type "
            f"oracle d log(1/alpha) / KL_inf{at}):")
    table = []
    for r in data["rows"]:
        label = ("full, passes " + str(r["passes"])) if r["passes"] else r["adaptivity"]
        label += " *" if r["configured"] else ""
        for i, c in enumerate(r["clauses"]):
            if c["labels_whole_cap"] == 0:
                continue  # a clause on d alone: no labels
            clear = f"{_labels(c['labels_clear_fail'])} / {_labels(c['labels_clear_pass'])}"
            table.append([label if i == 0 else "", f"{r['queries']:,}" if i == 0 else "",
                          f"{r['test_set_rows']:,}" if i == 0 else "", c["text"],
                          f"{_labels(c['labels_at_fail_edge'])} / {_labels(c['labels_at_pass_edge'])}",
                          f"{_labels(c['owner_labels_at_fail_edge'])} / "
                          f"{_labels(c['owner_labels_at_pass_edge'])}",
                          clear, _labels(c["labels_whole_cap"])])
    if not table:
        return head + "\n  no clause needs labels (d alone)"
    headers = ["adaptivity", "queries", "test-set rows", "clause", "labels at the edges",
               "owner labels (requests)", "when clear", "mid-zone (the cap)"]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(cells, widths)))
             for cells in [headers, ["-" * w for w in widths], *table]]
    foot = ("* the configured adaptivity. Edges: the truth at the fail edge / the pass edge; "
            "owner labels: what the owner labels following the gate's label requests (whole "
            f"requests: {NONE_FIRST_BATCH} rows, then {NONE_GROWTH:g} times the labels so far under "
            f"none; {REQUEST_BATCH} in rounds); "
            "clear: 3 tolerances beyond them. Under none the team sees 'withheld' and the verdict "
            "goes to the owner; under firstChange, full and passes each check is pending and its "
            "verdict released at the end of its round (`rounds:` in .easeml.yml).")
    return head + "\n\n" + "\n".join(lines) + "\n" + foot


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="A .easeml.yml file (default: ./.easeml.yml when present and no --condition is given).")
@click.option("--condition", help="e.g. 'n - o > 0.02 +/- 0.01' (overrides the config).")
@click.option("--reliability", type=float, help="1 - delta for the test set's whole life, e.g. 0.9999.")
@click.option("--mode", type=click.Choice(conditions.MODES), help="fp-free (default) or fn-free.")
@click.option("--adaptivity", type=click.Choice(conditions.ADAPTIVITIES), help="none, full (default) or firstChange.")
@click.option("--steps", type=int, help="H: evaluations one test set serves (default 32).")
@click.option("--passes", type=int, help="With adaptivity full: retire the test set after B passes.")
@click.option("--method", type=click.Choice(conditions.METHODS),
              help="tight (default): the tightest justified test; easeml: ease.ml/ci's released estimator.")
@click.option("--have", type=click.IntRange(min=1), metavar="N",
              help="Capacity view: with N labelled test examples, the tolerance each adaptivity "
                   "and number of steps can certify.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def plan(config_path, condition, reliability, mode, adaptivity, steps, passes, method, have,
         as_json):
    """Plan how many test examples a condition needs, and how many labels in advance."""
    overrides = {k: v for k, v in dict(condition=condition, reliability=reliability, mode=mode,
                                       adaptivity=adaptivity, steps=steps, passes=passes,
                                       method=method).items() if v is not None}
    if config_path is None and condition is None and Path(DEFAULT_CONFIG).is_file():
        config_path = DEFAULT_CONFIG  # like `check`: the gate's own config when it is here
    if config_path:
        cfg: GateConfig = load_config(config_path)
        fields = {k: getattr(cfg, k) for k in ("condition", "reliability", "mode", "adaptivity",
                                               "steps", "passes", "method")}
        fields.update(overrides)
    elif condition is None:
        raise ConfigError(f"give --config FILE or --condition 'EXPR > CONST +/- TOL' "
                          f"(there is no {DEFAULT_CONFIG} in this directory)")
    else:
        fields = overrides
    cfg = config_from_options(**fields)
    try:
        result = cfg.plan()
    except conditions.ImpossibleCondition as exc:
        where = f"{config_path}: key 'condition'" if config_path and "condition" not in overrides \
            else "--condition"
        raise ConfigError(f"{where}: {exc}") from None
    if have is not None:
        cells = len(CAPACITY_MODES) * len({*CAPACITY_STEPS, cfg.steps})
        if as_json:
            rows = capacity(cfg, have)
        else:
            with click.progressbar(length=cells, label="fitting tolerances", file=sys.stderr) as bar:
                rows = capacity(cfg, have, progress=lambda: bar.update(1))
        click.echo(json.dumps({"have": have, "condition": str(cfg.formula), "rows": rows})
                   if as_json else render_capacity(cfg, have, rows))
        return
    demand = on_demand(result)
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "on_demand": demand}))
    else:
        click.echo(render_plan(result) + "\n" + render_on_demand(result, demand))


CAPACITY_MODES = (("none", None), ("firstChange", None), ("full", None), ("full", 1),
                  ("full", 2), ("full", 3))
CAPACITY_STEPS = (8, 32, 128)


def capacity(cfg: GateConfig, have: int, progress=None) -> list[dict]:
    """For each adaptivity and number of steps: the tolerances ``have`` labelled examples can
    certify for the configured condition (each clause widened as ``--underpowered`` would), or
    None where no tolerance fits (the widened formula could not be passed by any model)."""
    steps_grid = sorted({*CAPACITY_STEPS, cfg.steps})
    rows = []
    for adaptivity, passes in CAPACITY_MODES:
        for steps in steps_grid:
            if progress is not None:
                progress()
            configured = conditions.plan(cfg.formula, cfg.reliability, cfg.mode, adaptivity,
                                         steps, passes, cfg.method)
            try:
                fitted = configured.for_sample_size(have)
                tolerances = [c.tolerance for c in fitted.clauses]
            except conditions.PlanError:
                tolerances = None
            rows.append({"adaptivity": adaptivity, "passes": passes, "steps": steps,
                         "test_examples_configured": configured.test_examples,
                         "tolerances": tolerances,
                         "configured_holds": configured.test_examples <= have})
    return rows


def render_capacity(cfg: GateConfig, have: int, rows: list[dict]) -> str:
    steps_grid = sorted({r["steps"] for r in rows})
    configured = " / ".join(f"{c.tolerance:g}" for c in cfg.formula.clauses)
    lines = [f"With {have:,} labelled test examples, '{cfg.formula}' at reliability "
             f"{cfg.reliability} ({cfg.mode}) can certify these tolerances (configured: "
             f"+/- {configured}; '-' where no tolerance fits):", ""]
    table = []
    for adaptivity, passes in CAPACITY_MODES:
        label = adaptivity + (f", passes {passes}" if passes else "")
        cells = []
        for steps in steps_grid:
            row = next(r for r in rows if r["adaptivity"] == adaptivity
                       and r["passes"] == passes and r["steps"] == steps)
            cells.append("-" if row["tolerances"] is None else
                         " / ".join(f"+/- {t:.3g}" for t in row["tolerances"]))
        table.append([label, *cells])
    headers = ["adaptivity", *(f"{s} steps" for s in steps_grid)]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table]
    return "\n".join(lines)


__all__ = ["capacity", "on_demand", "plan", "render_capacity", "render_on_demand", "render_plan"]
