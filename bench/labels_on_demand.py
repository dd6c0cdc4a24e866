"""Labels a decision needs: every row, the disagreeing rows, or a sequential test's stopping time.

For each condition (reliability 0.9999, fp-free), each adaptivity (``none`` at steps 1 and 32;
``firstChange``, ``full`` with ``passes: 2`` and ``full`` at 32 steps: labelled on demand, the
adaptive ones decided at their round's end, docs/statistics.md §6) and each true value mu of the
labelled clause's statistic it simulates test sets in their reading order and reports the labels
spent by three methods:

* ``fixed-all``: the planner's fixed-size test with every row labelled;
* ``fixed-disagreements``: the same test, labels only where the models disagree (``n - o``);
* ``sequential``: :mod:`conditions.sequential` (betting e-processes, the fixed-size plan at
  delta'/2 as cap), labels only where needed: the labels its decision reads when the owner labels
  the requested rows in order before the round ends (the round-end rule of
  :mod:`conditions.rounds` then decides exactly as here; late labels only move the decision to
  the mode default). ``owner_labels_median``/``_p90``: the labels the owner gives who follows
  the requests until the pair is decided (:func:`conditions.label_cost.owner_labels`): under
  none the check's growing requests (64 rows, then half the labels so far), in rounds batches of
  ``conditions.rounds.REQUEST_BATCH`` = 256 rows (the check's first, then ``round requests``).

The adaptivity changes only delta' (the planner's query count: H under none and firstChange,
``sum_{k<H} (1 + k)`` = 528 under ``passes: 2``, ``2^H - 1`` under full), hence ``log(1/alpha)``
and the cap; the transcript stays binary, so no outcome is added.

``where``: ``boundary`` = a zone edge (mu = a must fail, mu = b must pass), ``mid`` = the middle of
the zone (either answer is right), ``clear-pass``/``clear-fail`` = 3 tolerances beyond the edge
(or the farthest feasible value, and for ``n - o`` also the extreme mu = +-d).

"floor" is the exact fixed-size floor for ``n - o`` at the given d: a test that knew d would see
``K`` disagreeing rows whose signs are Binomial(K, q), ``q = (1 + mu / d) / 2`` (no row where both
models are wrong and differ; such rows only add noise), and by Karlin-Rubin the exact binomial
test of ``q_a`` against ``q_b`` at delta' is the best fixed-size test on K labels; not knowing d
cannot help. "oracle" is ``d log(1/alpha) / g*`` with g* the growth rate of the best constant bet
(= KL_inf, Wald's bound for any level-alpha sequential test's expected sample size, up to the
overshoot; :func:`conditions.label_cost.expected_labels`, what ``easeml-ci plan`` prints): no
sequential test that pays alpha = delta'/2 does much better on average.

    python bench/labels_on_demand.py [--runs 200] [--json] [--adaptivity full ...]
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from conditions import sequential_plan
from conditions.bounds import binomial_design
from conditions.label_cost import expected_labels, owner_labels_under

RELIABILITY = 0.9999
PAIRED = "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01"
BERNOULLI = "n > 0.8 +/- 0.05"
STEPS = (1, 32)
#: (adaptivity, passes, steps): none as before, the adaptive modes labelled on demand in rounds
ADAPTIVITIES = (("none", None, STEPS), ("firstChange", None, (32,)), ("full", 2, (32,)),
                ("full", None, (32,)))
SEED = 20261130


def _paired_values(rng, runs: int, rows: int, d: float, mu: float) -> np.ndarray:
    """n - o per row: +1 (new right, old wrong), -1 (the reverse), 0 where the models agree."""
    plus, minus = (d + mu) / 2, (d - mu) / 2
    u = rng.random((runs, rows))
    return np.where(u < plus, 1.0, np.where(u < plus + minus, -1.0, 0.0))


def _bernoulli_values(rng, runs: int, rows: int, mu: float) -> np.ndarray:
    return (rng.random((runs, rows)) < mu).astype(np.float64)


def _wrong(where: str, mu: float, a: float, b: float, passed: np.ndarray) -> float | None:
    if where == "mid":
        return None
    must_pass = mu >= b
    return float(np.mean(~passed if must_pass else passed))


def _label(adaptivity: str, passes: int | None) -> str:
    return adaptivity + (f", passes {passes}" if passes else "")


def _scenarios(adaptivities=ADAPTIVITIES):
    for adaptivity, passes, steps_grid in adaptivities:
        yield from ((adaptivity, passes, *s) for s in _points(steps_grid))


def _points(steps_grid):
    for steps in steps_grid:
        for d in (0.1, 0.05):
            a, b, eps = 0.02, 0.04, 0.01
            points = [("boundary", a), ("boundary", b), ("mid", (a + b) / 2),
                      ("clear-fail", a - 3 * eps), ("clear-fail", -d)]
            points += [("clear-pass", b + 3 * eps)] if b + 3 * eps <= d else []
            points += [("clear-pass", d)]
            for where, mu in points:
                yield PAIRED, d, steps, where, round(mu, 10)
        a, b, eps = 0.8, 0.9, 0.05
        for where, mu in [("boundary", a), ("boundary", b), ("mid", 0.85),
                          ("clear-fail", a - 3 * eps), ("clear-pass", 0.99)]:
            yield BERNOULLI, None, steps, where, mu


def measure(runs: int, adaptivities=ADAPTIVITIES, progress=None) -> dict:
    rows, floors = [], []
    plans = {}
    streams = {}  # one seeded stream per adaptivity (none: SEED alone, as before), whatever is chosen
    for adaptivity, passes, condition, d, steps, where, mu in _scenarios(adaptivities):
        k = [(m[0], m[1]) for m in ADAPTIVITIES].index((adaptivity, passes))
        rng = streams.setdefault(k, np.random.default_rng(SEED if k == 0 else (SEED, k)))
        if progress is not None:
            progress(_label(adaptivity, passes), condition, d, where, mu)
        key = (adaptivity, passes, condition, steps)
        if key not in plans:
            plans[key] = sequential_plan(condition, RELIABILITY, adaptivity=adaptivity,
                                         steps=steps, passes=passes)
        sp = plans[key]
        clause = sp.clauses[0]  # the labelled clause (d < 0.1 needs no labels)
        a, b = clause.edges
        fixed = clause.fixed
        n_fixed = fixed.test_examples
        if condition == PAIRED:
            z = _paired_values(rng, runs, clause.cap_rows, d, mu)
            floor_key = (adaptivity, passes, condition, d, steps)
            if floor_key not in {(f["adaptivity"], f["passes"], f["condition"], f["d"], f["steps"])
                                 for f in floors}:
                q_a, q_b = (1 + a / d) / 2, (1 + b / d) / 2
                floors.append({"adaptivity": adaptivity, "passes": passes, "condition": condition,
                               "d": d, "steps": steps, "delta_clause": fixed.delta,
                               "floor_labels": binomial_design(q_a, q_b, fixed.delta).sample_size,
                               "fixed_rows": n_fixed, "cap_rows": clause.cap_rows})
        else:
            z = _bernoulli_values(rng, runs, clause.cap_rows, mu)
        labelled = z != 0 if condition == PAIRED else np.ones_like(z, dtype=bool)
        base = {"condition": condition, "d": d, "mu": mu, "where": where, "steps": steps, "runs": runs,
                "delta_clause": fixed.delta, "adaptivity": adaptivity, "passes": passes,
                "queries": sp.fixed.queries}
        # fixed-size tests: the planner's test on the first n_fixed rows
        stat = z[:, :n_fixed]  # Z on the test's scale: n - o itself, and n is the Bernoulli u of `n > 0.8`
        fixed_pass = fixed.decide_many(stat.sum(axis=1), n_fixed)
        fixed_err = _wrong(where, mu, a, b, fixed_pass)
        rows.append({**base, "method": "fixed-all", "labels_median": n_fixed, "labels_p90": n_fixed,
                     "error_rate": fixed_err, "oracle_labels": None})
        if condition == PAIRED:
            spent = labelled[:, :n_fixed].sum(axis=1)
            rows.append({**base, "method": "fixed-disagreements", "labels_median": float(np.median(spent)),
                         "labels_p90": float(np.percentile(spent, 90)), "error_rate": fixed_err,
                         "oracle_labels": None})
        passed, read, by_cap = clause.decide_many(z)
        cumulative = np.cumsum(labelled, axis=1)
        spent = cumulative[np.arange(runs), read - 1]
        oracle = expected_labels(clause, mu, d)
        given = owner_labels_under(adaptivity, spent, cumulative[:, -1])
        rows.append({**base, "method": "sequential", "labels_median": float(np.median(spent)),
                     "labels_p90": float(np.percentile(spent, 90)),
                     "owner_labels_median": float(np.median(given)),
                     "owner_labels_p90": float(np.percentile(given, 90)),
                     "error_rate": _wrong(where, mu, a, b, passed),
                     "reached_cap": float(by_cap.mean()),
                     "oracle_labels": None if oracle is None else round(oracle, 1)})
    note = (f"At reliability {RELIABILITY} the per-clause delta' is 1e-6..1e-4: with {runs} runs an "
            "error rate of 0 says only that errors are rarer than ~1/runs. The rates are measured "
            "at delta' = 0.07..0.2 in tests/conditions/test_sequential.py (edges, mid-zone, Ville "
            "tightness) and, for the round-end rule with labels early, late or missing, in "
            "tests/conditions/test_rounds_monte_carlo.py.")
    labels = sorted({_label(a, p) for a, p, _ in adaptivities}, key=[_label(a, p) for a, p, _ in
                                                                     ADAPTIVITIES].index)
    return {"reliability": RELIABILITY, "adaptivity": labels[0] if len(labels) == 1 else labels,
            "mode": "fp-free", "floors": floors, "note": note, "rows": rows}


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:g}" if abs(x) < 1 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def print_table(result: dict, out=sys.stdout) -> None:
    shown = result["adaptivity"]
    shown = shown if isinstance(shown, str) else " / ".join(shown)
    print(f"reliability {result['reliability']}, adaptivity {shown}, {result['mode']}", file=out)
    print("\nExact fixed-size floor for n - o (labels, knowing d):", file=out)
    for f in result["floors"]:
        print(f"  {_label(f['adaptivity'], f['passes'])}, d = {f['d']}, steps {f['steps']}: "
              f"delta' = {f['delta_clause']:.3g}, floor "
              f"{f['floor_labels']:,} labels (fixed plan {f['fixed_rows']:,} rows, cap "
              f"{f['cap_rows']:,} rows)", file=out)
    head = ("adaptivity", "condition", "d", "steps", "where", "mu", "method", "labels_median",
            "labels_p90", "owner_labels_median", "owner_labels_p90", "oracle", "error_rate", "runs")
    print("\n| " + " | ".join(head) + " |", file=out)
    print("|" + "---|" * len(head), file=out)
    for r in result["rows"]:
        cells = (_label(r["adaptivity"], r["passes"]), r["condition"], r["d"], r["steps"],
                 r["where"], f"{r['mu']:g}", r["method"], r["labels_median"], r["labels_p90"],
                 r.get("owner_labels_median"), r.get("owner_labels_p90"), r.get("oracle_labels"), r["error_rate"], r["runs"])
        print("| " + " | ".join(_fmt(c) for c in cells) + " |", file=out)
    print("\n" + result["note"], file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="simulated test sets per row")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--adaptivity", action="append", metavar="MODE",
                        choices=[_label(a, p) for a, p, _ in ADAPTIVITIES],
                        help="only these (repeatable): " + ", ".join(
                            repr(_label(a, p)) for a, p, _ in ADAPTIVITIES) + " (default: all)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    chosen = tuple(m for m in ADAPTIVITIES if not args.adaptivity
                   or _label(m[0], m[1]) in args.adaptivity)

    def progress(*where):
        print("measuring", *where, file=sys.stderr, flush=True)

    result = measure(args.runs, chosen, None if args.json else progress)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
