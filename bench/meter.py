"""ease.ml/meter: test examples for H answers, against the naive alternative; validation sizes.

For edges (1%, 2.5%, 5%) (m = 5 ranges), tolerance 0.5% and reliability 0.999:

* the meter's test set (conditions.meter.meter_plan: exact binomial, every threshold) under
  `none` (union over H answers) and `full` (over the m-ary transcript tree, sum_{k<H} 5^k);
* the naive alternative: estimate the accuracy within the tolerance at every step by Hoeffding,
  two-sided, with a union bound over H or 2^H (the gate's pass/fail count, which undercounts
  five-valued answers; the last column counts the m-ary tree with Hoeffding);
* the validation-set sizes for 10, 100 and 1,000 looks, fixed in advance or adaptive (one bit a
  look), exact binomial and Hoeffding.

    python bench/meter.py [--json]
"""
from __future__ import annotations

import argparse
import json
import time

from conditions.meter import answer_count, meter_plan, naive_size, validation_size

EDGES = (0.01, 0.025, 0.05)
TOLERANCE = 0.005
RELIABILITY = 0.999
STEPS = (8, 32, 128)
LOOKS = (10, 100, 1000)


def figures() -> dict:
    rows = []
    for h in STEPS:
        t = time.perf_counter()
        none = meter_plan(EDGES, TOLERANCE, RELIABILITY, "none", h)
        full = meter_plan(EDGES, TOLERANCE, RELIABILITY, "full", h)
        rows.append({"H": h, "meter_none": none.test_examples, "meter_full": full.test_examples,
                     "naive_H": naive_size(TOLERANCE, RELIABILITY, h),
                     "naive_2H": naive_size(TOLERANCE, RELIABILITY, 2 ** h),
                     "naive_mary": naive_size(TOLERANCE, RELIABILITY, answer_count("full", h, 5)),
                     "plan_seconds": round(time.perf_counter() - t, 2)})
    looks = [{"looks": n,
              "fixed_exact": validation_size(n, TOLERANCE, RELIABILITY, adaptive=False),
              "fixed_hoeffding": validation_size(n, TOLERANCE, RELIABILITY, adaptive=False,
                                                 method="hoeffding"),
              "adaptive_exact": validation_size(n, TOLERANCE, RELIABILITY, adaptive=True),
              "adaptive_hoeffding": validation_size(n, TOLERANCE, RELIABILITY, adaptive=True,
                                                    method="hoeffding")} for n in LOOKS]
    return {"edges": list(EDGES), "tolerance": TOLERANCE, "reliability": RELIABILITY,
            "test_examples": rows, "validation": looks}


def markdown(f: dict) -> str:
    out = ["| H | meter, none | naive, union over H | meter, full (5-ary tree) | naive, union over 2^H "
           "| naive, 5-ary tree |", "|---:|---:|---:|---:|---:|---:|"]
    for r in f["test_examples"]:
        out.append(f"| {r['H']} | {r['meter_none']:,} | {r['naive_H']:,} | {r['meter_full']:,} | "
                   f"{r['naive_2H']:,} | {r['naive_mary']:,} |")
    out += ["", "| looks | validation set, fixed in advance (exact / Hoeffding) | adaptive, one "
                "bit a look (exact / Hoeffding) |", "|---:|---:|---:|"]
    for r in f["validation"]:
        out.append(f"| {r['looks']:,} | {r['fixed_exact']:,} / {r['fixed_hoeffding']:,} | "
                   f"{r['adaptive_exact']:,} / {r['adaptive_hoeffding']:,} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    f = figures()
    if args.json:
        print(json.dumps(f, indent=2))
        return
    print(f"edges {', '.join(f'{100 * e:g}%' for e in EDGES)}; tolerance {100 * TOLERANCE:g}%; "
          f"reliability {RELIABILITY}\n")
    print(markdown(f))


if __name__ == "__main__":
    main()
