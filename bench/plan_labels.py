"""Test examples and labels over ease.ml/ci's use cases: their released code vs ours.

Prints a Markdown table (fp-free, H = 32). "floor" is the exact fixed-size floor for
one-variable clauses: the smallest N for which some threshold test on Binomial(N, mu) errs with
probability at most delta' at both edges of the indifference zone (by Karlin-Rubin no other
non-randomised test does better). It is undefined ("-") for several variables.

    python bench/plan_labels.py [--markdown-out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time

from conditions import plan
from conditions.bounds import binomial_design

CONDITIONS = [
    "n > 0.8 +/- {e}",
    "d < 0.2 +/- {e}",
    "n - o > 0.02 +/- {e}",
    "n - o > 0.02 +/- {e} /\\ d < 0.1 +/- {e}",
]
EPSILONS = (0.1, 0.05, 0.025, 0.01)
RELIABILITIES = (0.99, 0.999, 0.9999)
ADAPTIVITIES = ("none", "full", "firstChange")


def floor_of(p) -> int | None:
    if len(p.clauses) != 1 or p.clauses[0].method != "exact-binomial":
        return None
    cp = p.clauses[0]
    a, b = cp._bernoulli_scale(*cp.compiled.edges(p.mode))
    return binomial_design(a, b, cp.delta).sample_size


def rows():
    for template in CONDITIONS:
        for eps in EPSILONS:
            condition = template.format(e=eps)
            for reliability in RELIABILITIES:
                for adaptivity in ADAPTIVITIES:
                    ours = plan(condition, reliability, adaptivity=adaptivity, steps=32)
                    theirs = plan(condition, reliability, adaptivity=adaptivity, steps=32, method="easeml")
                    yield condition, reliability, adaptivity, theirs, ours, floor_of(ours)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown-out", help="also write the table to this file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    lines = ["| condition | reliability | adaptivity | ease.ml/ci | ours | ours: labels | method | floor "
             "| ease.ml/ci ÷ ours | ours ÷ floor |",
             "|---|---|---|---:|---:|---:|---|---:|---:|---:|"]
    worst_vs_floor, best_gain, min_gain = 0.0, 0.0, float("inf")
    for i, (cond, rel, ada, theirs, ours, floor) in enumerate(rows(), 1):
        gain = theirs.test_examples / ours.test_examples
        best_gain, min_gain = max(best_gain, gain), min(min_gain, gain)
        vs_floor = "-" if floor is None else f"{ours.test_examples / floor:.2f}"
        if floor is not None:
            worst_vs_floor = max(worst_vs_floor, ours.test_examples / floor)
        methods = "+".join(c.method for c in ours.clauses)
        lines.append(f"| `{cond}` | {rel} | {ada} | {theirs.test_examples:,} | {ours.test_examples:,} "
                     f"| {ours.labels:,} | {methods} | {'-' if floor is None else f'{floor:,}'} "
                     f"| {gain:.2f} | {vs_floor} |")
        print(f"\r{i} rows", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    table = "\n".join(lines)
    summary = (f"\nease.ml/ci ÷ ours: between {min_gain:.2f}x and {best_gain:.2f}x; "
               f"ours ÷ exact floor (one-variable clauses): at most {worst_vs_floor:.2f}. "
               f"({time.perf_counter() - start:.1f} s)")
    print(table + "\n" + summary)
    if args.markdown_out:
        with open(args.markdown_out, "w") as fh:
            fh.write(table + "\n" + summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
