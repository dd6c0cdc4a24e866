"""Charts drawn on the server as inline SVG: no JavaScript library, nothing fetched at run time.

Every text that could come from a tenant (a candidate's name) is escaped by ``markupsafe``.
"""
from __future__ import annotations

from markupsafe import Markup, escape

W, H, PAD = 520, 220, 54


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _frame(title: str, x_label: str, y_label: str, xlo, xhi, ylo, yhi, body: list[str], kind: str) -> Markup:
    ticks = []
    for i in range(5):
        yv = ylo + (yhi - ylo) * i / 4
        y = H - PAD - (H - 2 * PAD) * i / 4
        ticks.append(f'<line x1="{PAD}" x2="{W - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{PAD - 4}" y="{y + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
    for i in range(5):
        xv = xlo + (xhi - xlo) * i / 4
        x = PAD + (W - 10 - PAD) * i / 4
        ticks.append(f'<text x="{x:.1f}" y="{H - PAD + 14}" text-anchor="middle">{xv:.3g}</text>')
    return Markup(
        f'<svg class="chart" data-chart="{escape(kind)}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        + "".join(ticks)
        + f'<text x="{(W + PAD) / 2:.0f}" y="{H - 6}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="12" y="{H / 2:.0f}" transform="rotate(-90 12 {H / 2:.0f})" text-anchor="middle">{escape(y_label)}</text>'
        + "".join(body) + "</svg>")


def _empty(title: str, why: str, kind: str) -> Markup:
    return Markup(f'<svg class="chart empty" data-chart="{escape(kind)}" viewBox="0 0 {W} 60" width="{W}" height="60" '
                  f'role="img" aria-label="{escape(title)}"><text x="10" y="34">{escape(why)}</text></svg>')


def best_so_far(progress: list[dict]) -> tuple[Markup, Markup]:
    """(best validation score so far, regret) against minutes since the first trial finished.

    Regret at t is the best score any trial reached by the end minus the best reached by t: it
    falls to 0 when the tenant's current best model was found."""
    if not progress:
        why = "no trial has finished yet"
        return _empty("best so far", why, "best"), _empty("regret", why, "regret")
    t0 = progress[0]["at"]
    xs, best, ys = [], float("-inf"), []
    for p in progress:
        best = max(best, p["score"])
        xs.append((p["at"] - t0) / 60.0)
        ys.append(best)
    final = ys[-1]
    regret = [final - y for y in ys]
    return (_steps("best validation score so far", xs, ys, progress, "best", "validation score"),
            _steps("regret (final best minus best so far)", xs, regret, progress, "regret", "regret"))


def _steps(title: str, xs: list[float], ys: list[float], progress: list[dict], kind: str, y_label: str) -> Markup:
    xlo, xhi = 0.0, max(xs[-1], 1e-9)
    ylo, yhi = min(ys), max(ys)
    if yhi - ylo < 1e-12:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    sx, sy = _scale(xlo, xhi, PAD, W - 10), _scale(ylo, yhi, H - PAD, PAD)
    pts = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        if i:
            pts.append(f"{sx(x):.1f},{sy(ys[i - 1]):.1f}")
        pts.append(f"{sx(x):.1f},{sy(y):.1f}")
    body = [f'<polyline class="line" fill="none" points="{" ".join(pts)}"/>']
    for x, y, p in zip(xs, ys, progress):
        body.append(f'<circle class="dot" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5"><title>trial {int(p["trial"])} '
                    f'{escape(p["candidate"])}: {p["score"]:.4f}</title></circle>')
    return _frame(title, "minutes since the first trial finished", y_label, xlo, xhi, ylo, yhi, body, kind)


def stopped_curves(stopped: list[dict], progress: list[dict]) -> Markup:
    """Trials stopped early: the score at the rung where each was stopped (its fidelity), beside
    the scores of the tenant's trials trained to the full budget (at fidelity 1)."""
    early = [s for s in stopped if s["fidelity"] is not None and s["score"] is not None]
    if not stopped:
        return _empty("trials stopped early", "no trial of this tenant was stopped early", "stopped")
    full = [p["score"] for p in progress]
    ys = [s["score"] for s in early] + full
    if not ys:
        return _empty("trials stopped early", "stopped trials have no score yet", "stopped")
    ylo, yhi = min(ys), max(ys)
    if yhi - ylo < 1e-12:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    sx, sy = _scale(0.0, 1.0, PAD, W - 10), _scale(ylo, yhi, H - PAD, PAD)
    body = []
    for y in full:
        body.append(f'<circle class="dot full" cx="{sx(1.0):.1f}" cy="{sy(y):.1f}" r="2"/>')
    for s in early:
        y = sy(s["score"])
        body.append(f'<circle class="dot stopped" cx="{sx(s["fidelity"]):.1f}" cy="{y:.1f}" r="3">'
                    f'<title>trial {int(s["trial"])} {escape(s["candidate"])} stopped at '
                    f'{s["fidelity"]:.0%}: {s["score"]:.4f}</title></circle>')
    return _frame("trials stopped early: score at the rung they stopped", "share of the full budget trained",
                  "validation score", 0.0, 1.0, ylo, yhi, body, "stopped")


def learning_curves(curves: list[dict], stopped: list[dict], progress: list[dict]) -> Markup:
    """Each trial's learning curve: its validation score at every rung it reached (share of the
    full budget), the trials stopped early beside those trained to the full budget.

    ``curves``: the store's rungs per trial (``trial_rungs``); a stopped trial of an older store
    without rungs is drawn as the one point it kept (``stopped``). Without any rung (a store from
    before rungs were kept) this is :func:`stopped_curves`."""
    if not curves:
        return stopped_curves(stopped, progress)
    have = {c["trial"] for c in curves}
    lines = [(c, c["stopped_at"] is not None) for c in curves]
    lines += [({"trial": s["trial"], "candidate": s["candidate"], "rungs": [[s["fidelity"], s["score"]]]}, True)
              for s in stopped if s["trial"] not in have and s["fidelity"] is not None and s["score"] is not None]
    ys = [sc for c, _ in lines for _f, sc in c["rungs"]]
    ylo, yhi = min(ys), max(ys)
    if yhi - ylo < 1e-12:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    sx, sy = _scale(0.0, 1.0, PAD, W - 10), _scale(ylo, yhi, H - PAD, PAD)
    body = []
    # full-budget curves first, so the stopped ones are drawn on top
    for c, early in sorted(lines, key=lambda item: item[1]):
        kind = "stopped" if early else "full"
        label = str(escape(f"trial {int(c['trial'])} {c['candidate']}" + (" (stopped early)" if early else "")))
        pts = " ".join(f"{sx(f):.1f},{sy(sc):.1f}" for f, sc in c["rungs"])
        body.append(f'<g class="curve {kind}" data-trial="{int(c["trial"])}"><title>{label}: '
                    + str(escape(", ".join(f"{f:.0%} {sc:.4f}" for f, sc in c["rungs"]))) + "</title>"
                    + (f'<polyline class="line {kind}" fill="none" points="{pts}"/>' if len(c["rungs"]) > 1 else "")
                    + "".join(f'<circle class="dot {kind}" cx="{sx(f):.1f}" cy="{sy(sc):.1f}" r="{3 if early else 2}"/>'
                              for f, sc in c["rungs"]) + "</g>")
    n_stopped = sum(1 for _c, early in lines if early)
    return _frame(f"learning curves: {n_stopped} stopped early, {len(lines) - n_stopped} to the full budget",
                  "share of the full budget trained", "validation score", 0.0, 1.0, ylo, yhi, body, "stopped")
