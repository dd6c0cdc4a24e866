"""Test examples over ease.ml/ci's use cases: their released code vs ours, and plan times.

Prints a Markdown table (fp-free, H = 32). "floor" is the exact fixed-size floor for
one-variable clauses: the smallest N for which some threshold test on Binomial(N, mu) errs with
probability at most delta' at both edges of the indifference zone (by Karlin-Rubin no other
non-randomised test does better). It is found here independently of the planner, by a scan over
every N from 1 with scipy.stats' binomial quantiles, and is undefined ("-") for several
variables. "labelled rows" is what the check needs today: every test example. "disagreements
(info)" is, for formulas with a d clause, the most disagreements a passing check can see (the
d clause's cutoff): information only, not a number of labels. Then a second table times plans
with tiny tolerances.

    python bench/plan_labels.py [--markdown-out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy import stats

from conditions import ImpossibleCondition, plan

CONDITIONS = [
    "n > 0.8 +/- {e}",
    "d < 0.2 +/- {e}",
    "n - o > 0.02 +/- {e}",
    "n - o > 0.02 +/- {e} /\\ d < 0.1 +/- {e}",
]
EPSILONS = (0.1, 0.05, 0.025, 0.01)
RELIABILITIES = (0.99, 0.999, 0.9999)
ADAPTIVITIES = ("none", "full", "firstChange")
TINY = ["n > 0.8 +/- {e}", "d < 0.1 +/- {e}", "n >= 0.5 +/- {e}", "n - o > 0.02 +/- {e} /\\ d < 0.1 +/- {e}"]
TINY_EPSILONS = (0.001, 0.0001, 0.00001, 0.000001)


def brute_force_floor(a: float, b: float, delta: float, top: int) -> int | None:
    """Smallest n in 1..top with a valid threshold test, by scipy.stats quantiles at every n."""
    n = np.arange(1, top + 1)
    k_a = stats.binom.isf(delta, n, a) + 1  # smallest k with sf(k - 1) <= delta, up to rounding
    k_a = np.where(stats.binom.sf(k_a - 2, n, a) <= delta, k_a - 1, k_a)
    k_a = np.where(stats.binom.sf(k_a - 1, n, a) <= delta, k_a, k_a + 1)
    j = stats.binom.ppf(delta, n, b)  # smallest j with cdf(j) >= delta
    k_b = np.where(stats.binom.cdf(j, n, b) <= delta, j, j - 1) + 1  # largest k, cdf(k - 1) <= delta
    feasible = n[k_a <= k_b]
    return int(feasible[0]) if len(feasible) else None


def floor_of(p) -> int | None:
    if len(p.clauses) != 1 or p.clauses[0].method != "exact-binomial":
        return None
    cp = p.clauses[0]
    a, b = cp._bernoulli_scale(*cp.compiled.edges(p.mode))
    return brute_force_floor(a, b, cp.delta, p.test_examples)


def rows():
    for template in CONDITIONS:
        for eps in EPSILONS:
            condition = template.format(e=eps)
            for reliability in RELIABILITIES:
                for adaptivity in ADAPTIVITIES:
                    start = time.perf_counter()
                    try:
                        ours = plan(condition, reliability, adaptivity=adaptivity, steps=32)
                    except ImpossibleCondition as exc:  # the old grid held formulas no model passes
                        yield condition, reliability, adaptivity, None, exc, None, 0.0
                        continue
                    took = time.perf_counter() - start
                    theirs = plan(condition, reliability, adaptivity=adaptivity, steps=32, method="easeml")
                    yield condition, reliability, adaptivity, theirs, ours, floor_of(ours), took


def timing_table() -> tuple[list[str], float]:
    lines = ["| condition | test examples (0.9999, full, H = 32) | plan time |", "|---|---:|---:|"]
    slowest = 0.0
    for template in TINY:
        for eps in TINY_EPSILONS:
            condition = template.format(e=f"{eps:f}".rstrip("0"))
            start = time.perf_counter()
            p = plan(condition, 0.9999, adaptivity="full", steps=32)
            took = time.perf_counter() - start
            slowest = max(slowest, took)
            lines.append(f"| `{condition}` | {p.test_examples:,} | {took * 1000:.0f} ms |")
    return lines, slowest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown-out", help="also write the tables to this file")
    args = parser.parse_args(argv)
    plan("n > 0.8 +/- 0.05")  # pay scipy's import before timing anything
    start = time.perf_counter()
    lines = ["| condition | reliability | adaptivity | ease.ml/ci | ours | labelled rows | "
             "disagreements (info) | method | floor | ease.ml/ci ÷ ours | ours ÷ floor | plan time |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    worst_vs_floor, best_gain, min_gain, slowest = 0.0, 0.0, float("inf"), 0.0
    refused = 0
    for i, (cond, rel, ada, theirs, ours, floor, took) in enumerate(rows(), 1):
        if theirs is None:
            refused += 1
            why = "zone outside d's range" if "range of" in str(ours) else "no model can pass"
            lines.append(f"| `{cond}` | {rel} | {ada} | refused: {why} | | | | | | | | |")
            continue
        gain = theirs.test_examples / ours.test_examples
        best_gain, min_gain = max(best_gain, gain), min(min_gain, gain)
        slowest = max(slowest, took)
        vs_floor = "-" if floor is None else f"{ours.test_examples / floor:.2f}"
        if floor is not None:
            worst_vs_floor = max(worst_vs_floor, ours.test_examples / floor)
        methods = "+".join(c.method for c in ours.clauses)
        worst = ours.disagreements_worst_case
        lines.append(f"| `{cond}` | {rel} | {ada} | {theirs.test_examples:,} | {ours.test_examples:,} "
                     f"| {ours.labels:,} | {'-' if worst is None else f'{worst:,}'} | {methods} "
                     f"| {'-' if floor is None else f'{floor:,}'} | {gain:.2f} | {vs_floor} "
                     f"| {took * 1000:.0f} ms |")
        print(f"\r{i} rows", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    timing, slowest_tiny = timing_table()
    summary = (f"\nease.ml/ci ÷ ours: between {min_gain:.2f}x and {best_gain:.2f}x; "
               f"ours ÷ exact floor (one-variable clauses, floor by an independent scan): at most "
               f"{worst_vs_floor:.2f}; slowest plan {slowest * 1000:.0f} ms; {refused} rows refused "
               f"as impossible conditions. "
               f"({time.perf_counter() - start:.1f} s)")
    tiny = (f"\nPlan times with tiny tolerances (one plan each, after scipy's import): slowest "
            f"{slowest_tiny * 1000:.0f} ms.")
    text = "\n".join(lines) + "\n" + summary + "\n\n" + "\n".join(timing) + "\n" + tiny
    print(text)
    if args.markdown_out:
        with open(args.markdown_out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
