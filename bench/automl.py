"""The ease.ml experiment: how soon does each scheduler bring every tenant close to its best model?

For tenants in {8, 16, 32}, devices in {1, 4} and 20 seeds: each seed draws the scheduled
tenants at random from the matrix and gives the schedulers a prior learned only from the
*other* tenants (never from the scheduled ones), then replays the matrix
(``automl_runner.scheduling.simulate.run_once``). It prints a Markdown table of the median time until
the mean regret (global regret / tenants) is <= T, for T in {0.05, 0.02, 0.01}, the
ratio of each baseline's time to multitenant's (round-robin, round-robin in catalogue
order, random, and the paper's round-robin-gp and random-gp), and writes a chart of the median
mean regret over time (SVG, drawn by hand: no plotting library, no network).

On learning curves (the default, ``automl_runner/data/real_curves.csv``: sampled
configurations of each family's search space at fidelities 1/27 .. 1) it adds
``multitenant-hb`` (early stopping at rungs 1/9, 1/3, 1; prior curves from the tenants not
scheduled) and the ratio multitenant / multitenant-hb, and checks the early-stopping
target: at least 1.5x sooner than multitenant at T = 0.01 at the median, and never slower at
the median in any cell.

    python bench/automl.py [--matrix automl_runner/data/real_curves.csv] [--seeds 20]
        [--svg docs/automl_regret.svg] [--json bench/out/automl.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automl_runner.scheduling.matrices import curves_from_matrix, load_any, split_curves, synthetic  # noqa: E402
from automl_runner.scheduling.registry import SCHEDULERS  # noqa: E402

# round-robin-catalogue: round-robin in catalogue order, a second, prior-free baseline;
# round-robin-gp, random-gp: the paper's baselines (tenant by turn / at random, candidate by
# multitenant's per-tenant rule)
BASELINES = ["round-robin", "round-robin-catalogue", "random", "round-robin-gp", "random-gp"]
BENCH = ("multitenant",) + tuple(BASELINES)
assert set(SCHEDULERS) <= set(BENCH)
HB = "multitenant-hb"
SHORT = {"round-robin": "RR", "round-robin-catalogue": "RR-cat", "random": "random",
         "round-robin-gp": "RR-GP", "random-gp": "random-GP", HB: "HB"}
#: early stopping's target: this much sooner than multitenant at T = 0.01 (median)
HB_TARGET, HB_T = 1.5, 0.01
from automl_runner.scheduling.simulate import run_once  # noqa: E402

TENANTS = (8, 16, 32)
DEVICES = (1, 4)
TARGETS = (0.05, 0.02, 0.01)
COLOURS = {HB: "#000000", "multitenant": "#1b7837", "round-robin": "#2166ac", "round-robin-catalogue": "#92c5de",
           "random": "#b2182b", "round-robin-gp": "#e08214", "random-gp": "#8073ac"}


def run(matrix, tenants, devices, seeds, targets, use_prior=True, names=BENCH):
    """{(n, m): {scheduler: [Trace per seed]}}; the split depends on (n, seed) only."""
    out = {}
    for n in tenants:
        for m in devices:
            runs = {s: [] for s in names}
            for seed in range(seeds):
                rng = np.random.default_rng([n, seed])
                sched, prior = split_curves(matrix, n, rng)
                for name in names:
                    runs[name].append(run_once(sched, prior if use_prior else None, name, m, seed))
            out[(n, m)] = runs
    return out


def fmt_time(t: float) -> str:
    if not math.isfinite(t):
        return "never"
    return f"{t:.3g}" if t < 100 else f"{t:.0f}"


def table(results, targets) -> tuple[str, list[str]]:
    heads = {"round-robin-catalogue": "RR catalogue order", "round-robin-gp": "RR-GP", "random-gp": "random-GP"}
    cols = ["multitenant"] + BASELINES
    lines = [
        "| tenants | devices | T | " + " | ".join(heads.get(s, s) for s in cols) + " | "
        + " | ".join(f"{SHORT[s]} / MT" for s in BASELINES) + " |",
        "|" + "---:|" * (3 + len(cols) + len(BASELINES)),
    ]
    problems = []
    for (n, m), runs in results.items():
        for T in targets:
            med = {s: float(np.median([tr.time_to(T) for tr in runs[s]])) for s in BENCH}
            mt = med["multitenant"]
            ratio = {s: med[s] / mt for s in BASELINES}
            lines.append(
                f"| {n} | {m} | {T:g} | " + " | ".join(fmt_time(med[s]) for s in cols) + " | "
                + " | ".join(f"{ratio[s]:.2f}x" if s.endswith("-gp") else f"{ratio[s]:.1f}x" for s in BASELINES) + " |"
            )
            if min(ratio.values()) < 1:
                problems.append(f"{n} tenants, {m} device(s), T={T:g}: multitenant slower ("
                                + ", ".join(f"{SHORT[s]} {ratio[s]:.2f}x" for s in BASELINES) + ")")
    return "\n".join(lines), problems


def per_seed(results, targets) -> str:
    """Over every (tenants, devices, seed) run: how often multitenant was later, and sooner."""
    total = sum(len(runs["multitenant"]) for runs in results.values())
    lines = [
        f"Runs (of {total}: every tenants x devices x seed) in which multitenant reached T later "
        "than / sooner than each baseline (the rest: the same time):",
        "",
        "| T | " + " | ".join(BASELINES) + " |",
        "|---:|" + "---:|" * len(BASELINES),
    ]
    for T in targets:
        cells = []
        for s in BASELINES:
            pairs = [(mt.time_to(T), other.time_to(T))
                     for runs in results.values() for mt, other in zip(runs["multitenant"], runs[s])]
            later = sum(a > b for a, b in pairs)
            sooner = sum(a < b for a, b in pairs)
            cells.append(f"{later} / {sooner}")
        lines.append(f"| {T:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves(runs, points=240):
    """Median mean regret on a log-spaced time grid, from the first results to the last."""
    start = min(float(np.median([tr.times[1] for tr in runs[s]])) for s in runs) / 2
    end = max(float(np.median([tr.times[-1] for tr in runs[s]])) for s in runs)
    grid = np.geomspace(start, end, points)
    return grid, {s: np.median([tr.regret_at(grid) / tr.tenants for tr in runs[s]], axis=0) for s in runs}


def hb_table(results, targets) -> tuple[str, list[str], list[str]]:
    """multitenant-hb against multitenant per cell: median times, ratio, runs sooner / later, stops."""
    lines = [
        "| tenants | devices | T | multitenant | multitenant-hb | MT / HB (median) | MT / HB (geometric mean per run) "
        "| HB sooner / later (runs) | HB trials stopped early |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    slower, missed = [], []
    for (n, m), runs in results.items():
        logs = [entry for tr in runs[HB] for entry in tr.log]
        stopped = sum(1 for e in logs if e[4])
        for T in targets:
            mt = np.array([tr.time_to(T) for tr in runs["multitenant"]])
            hb = np.array([tr.time_to(T) for tr in runs[HB]])
            ratio = float(np.median(mt)) / float(np.median(hb))
            ok = np.isfinite(mt) & np.isfinite(hb) & (hb > 0)
            geo = float(np.exp(np.mean(np.log(mt[ok] / hb[ok])))) if ok.any() else float("nan")
            lines.append(
                f"| {n} | {m} | {T:g} | {fmt_time(float(np.median(mt)))} | {fmt_time(float(np.median(hb)))} | "
                f"{ratio:.2f}x | {geo:.2f}x | {int(np.sum(hb < mt))} / {int(np.sum(hb > mt))} | "
                f"{stopped} of {len(logs)} ({100 * stopped / max(len(logs), 1):.0f}%) |"
            )
            if ratio < 1:
                slower.append(f"{n} tenants, {m} device(s), T={T:g}: {ratio:.2f}x")
            if T == HB_T and ratio < HB_TARGET:
                missed.append(f"{n} x {m}: {ratio:.2f}x")
    return "\n".join(lines), slower, missed


def svg_chart(panels, title: str) -> str:
    """Small multiples: median mean regret against simulated time, both on log scales."""
    W, H, pad_l, pad_r, pad_t, pad_b, gap = 430, 300, 58, 14, 34, 46, 24
    width = len(panels) * (W + gap) - gap + 20
    height = H + 56
    ymin, ymax = 1e-3, 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="18" font-size="14" font-weight="bold">{title}</text>',
    ]
    for k, (label, grid, med, targets) in enumerate(panels):
        x0 = 10 + k * (W + gap)
        y0 = 24
        px0, px1 = x0 + pad_l, x0 + W - pad_r
        py0, py1 = y0 + pad_t, y0 + H - pad_b
        lo, hi = math.floor(math.log10(grid[0])), math.ceil(math.log10(grid[-1]))

        def sx(t):
            return px0 + (px1 - px0) * (math.log10(t) - lo) / (hi - lo)

        def sy(r):
            r = min(max(r, ymin), ymax)
            return py1 - (py1 - py0) * (math.log10(r) - math.log10(ymin)) / (math.log10(ymax) - math.log10(ymin))

        parts.append(f'<text x="{px0}" y="{y0 + 20}" font-weight="bold">{label}</text>')
        parts.append(f'<rect x="{px0}" y="{py0}" width="{px1 - px0}" height="{py1 - py0}" fill="none" stroke="#999"/>')
        for e in range(-3, 1):
            y = sy(10.0**e)
            parts.append(f'<line x1="{px0}" y1="{y:.1f}" x2="{px1}" y2="{y:.1f}" stroke="#eee"/>')
            parts.append(f'<text x="{px0 - 6}" y="{y + 4:.1f}" text-anchor="end">{10.0**e:g}</text>')
        for e in range(lo, hi + 1):
            x = sx(10.0**e)
            parts.append(f'<line x1="{x:.1f}" y1="{py0}" x2="{x:.1f}" y2="{py1}" stroke="#eee"/>')
            parts.append(f'<text x="{x:.1f}" y="{py1 + 16}" text-anchor="middle">{10.0**e:g}</text>')
        for T in targets:
            y = sy(T)
            parts.append(f'<line x1="{px0}" y1="{y:.1f}" x2="{px1}" y2="{y:.1f}" stroke="#888" stroke-dasharray="4 3"/>')
            parts.append(f'<text x="{px1 - 2}" y="{y - 3:.1f}" text-anchor="end" fill="#666" font-size="10">T={T:g}</text>')
        parts.append(f'<text x="{(px0 + px1) / 2}" y="{py1 + 34}" text-anchor="middle">'
                     'simulated time, CPU seconds of training (log scale)</text>')
        parts.append(
            f'<text x="{x0 + 14}" y="{(py0 + py1) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 {x0 + 14} {(py0 + py1) / 2})">mean regret, median over seeds</text>'
        )
        for s, ys in med.items():
            pts, prev = [], None  # a step function: across, then down
            for t, r in zip(grid, ys):
                if prev is not None:
                    pts.append(f"{sx(t):.1f},{sy(prev):.1f}")
                pts.append(f"{sx(t):.1f},{sy(r):.1f}")
                prev = r
            parts.append(f'<polyline fill="none" stroke="{COLOURS[s]}" stroke-width="2" points="{" ".join(pts)}"/>')
    # one legend row under the panels (six curves: inside a panel it covered some of them)
    lx, ly = 10 + pad_l, H + 44
    for s in next(iter(panels))[2]:
        step = 25 + 7 * len(s) + 22
        if lx + step > width:  # wrap the legend onto a second row
            lx, ly = 10 + pad_l, ly + 18
            parts[0] = parts[0].replace(f'height="{height}"', f'height="{height + 18}"').replace(
                f'0 0 {width} {height}"', f'0 0 {width} {height + 18}"')
            height += 18
        parts.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 20}" y2="{ly - 4}" stroke="{COLOURS[s]}" stroke-width="2"/>')
        parts.append(f'<text x="{lx + 25}" y="{ly}">{s}</text>')
        lx += step
    parts.append("</svg>")
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default=str(ROOT / "automl_runner" / "data" / "real_curves.csv"),
                    help="a learning-curve or matrix CSV, or 'synthetic' for matrices.synthetic(tenants=72, candidates=20)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--tenants", type=int, nargs="*", default=list(TENANTS))
    ap.add_argument("--devices", type=int, nargs="*", default=list(DEVICES))
    ap.add_argument("--svg", default=None, help="write the regret-over-time chart here")
    ap.add_argument("--json", default=None, help="write per-seed times to target here")
    ap.add_argument("--no-prior", action="store_true",
                    help="give the schedulers no prior at all (multitenant's fallback mode)")
    args = ap.parse_args()

    matrix = (curves_from_matrix(synthetic(tenants=72, candidates=20, seed=0)) if args.matrix == "synthetic"
              else load_any(args.matrix))
    has_curves = any(f < 1 for _t, _c, f, *_ in matrix.rows)
    names = ((HB,) if has_curves else ()) + BENCH
    t0 = time.time()
    results = run(matrix, args.tenants, args.devices, args.seeds, TARGETS, use_prior=not args.no_prior, names=names)
    md, problems = table(results, TARGETS)
    n_c = len(matrix.candidates)
    prior_note = "no prior" if args.no_prior else "prior from the tenants not scheduled"
    print(f"matrix {args.matrix}: {len(matrix.tenants)} tenants x {n_c} candidates; {args.seeds} seeds; "
          f"{prior_note}; times in simulated seconds (median over seeds)\n")
    print(md)
    print()
    if problems:
        print("multitenant slower than a baseline at: " + "; ".join(problems))
    else:
        print("At the median, multitenant is never slower than any baseline at any T.")
    print()
    print(per_seed(results, TARGETS))
    if has_curves:
        md, slower, missed = hb_table(results, TARGETS)
        print("\nEarly stopping (multitenant-hb) against multitenant, same splits and seeds:\n")
        print(md)
        print()
        print("At the median multitenant-hb is " + ("slower than multitenant at: " + "; ".join(slower)
              if slower else "never slower than multitenant in any cell") + ".")
        print(f"Target {HB_TARGET:g}x sooner at T = {HB_T:g}: " + ("missed at " + "; ".join(missed)
              if missed else "met in every tenants x devices cell") + ".")
    print(f"({time.time() - t0:.0f} s wall)", file=sys.stderr)

    if args.svg:
        panels = []
        for (n, m) in [(max(args.tenants), d) for d in args.devices]:
            grid, med = curves(results[(n, m)])
            panels.append((f"{n} tenants, {m} device{'s' if m > 1 else ''}", grid, med, TARGETS))
        Path(args.svg).parent.mkdir(parents=True, exist_ok=True)
        Path(args.svg).write_text(svg_chart(panels, f"Mean regret over time on {Path(args.matrix).name}"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        obj = {
            f"{n}x{m}": {
                s: {f"{T:g}": [tr.time_to(T) for tr in runs[s]] for T in TARGETS} for s in runs
            }
            for (n, m), runs in results.items()
        }
        Path(args.json).write_text(json.dumps(obj, indent=1))


if __name__ == "__main__":
    main()
