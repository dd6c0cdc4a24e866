"""What the team sees on a pull request: the job summary and the sticky comment, in Markdown.

Secrecy (docs/design.md §2). Under ``full``, ``firstChange`` and ``passes`` the only thing about the
test set that may reach the team is the verdict bit of each clause. So a :class:`GateReport`
keeps, per clause, only its text, its config line and its verdict; every other key a result may
carry (estimates, margins, sample sizes, timings) is dropped here, at the one place all
team-facing output is built from, unless the config opts into ``show_metrics`` — and then every
rendering says the guarantee is void. Under ``none`` the verdicts are replaced by ``withheld``
whatever the result says (defence in depth: the real verdict goes to the private sink).

The budget (steps used of the total) and the times at which steps were spent are public: they
count queries, not answers, and the ledger branch shows them anyway.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from ..errors import ExitCode
from ..gate.results import METER_NAME


PUBLIC_CLAUSE_KEYS = ("text", "verdict", "line")
# An underpowered run states the tolerance the test set's *size* supports: a function of the
# plan and the number of examples, not of any label, so it may be shown.
SIZE_ONLY_KEYS = ("tolerance", "configured_tolerance")
VERDICT_ICON = {"pass": "✅", "fail": "❌", "withheld": "🔒", "error": "⚠️", "exhausted": "⛔",
                "undisclosed": "🔒", "pending": "⏳", "not released": "⛔"}


@dataclass
class GateReport:
    """Everything a rendering may show, already filtered for secrecy."""

    gate: str
    config_path: str
    verdict: str  # pass | fail | withheld | exhausted | error
    exit_code: int
    adaptivity: str | None = None
    clauses: list[dict] = field(default_factory=list)
    budget: dict | None = None
    message: str | None = None  # the error or exhaustion message
    alert: dict | None = None
    alert_issue: str | None = None  # "#12" or a URL once an alert issue exists
    show_metrics: bool = False
    metrics: dict | None = None  # only filled when show_metrics
    history: list[str] = field(default_factory=list)  # ISO times of spent steps, oldest first
    commit: str | None = None
    ledger: str | None = None  # where the budget lives ("the repository ledger o/r@branch")
    round: dict | None = None  # rounds: {"round", "ends", "status"}, a function of time only

    @classmethod
    def build(cls, *, gate: str, config_path: str, verdict: str, exit_code: int,
              adaptivity: str | None, clauses: list[dict] | None, budget: dict | None,
              show_metrics: bool = False, metrics: dict | None = None, **kw) -> "GateReport":
        withhold = adaptivity == "none"
        public = []
        for c in clauses or []:
            row = {k: c.get(k) for k in PUBLIC_CLAUSE_KEYS}
            row.update({k: c[k] for k in SIZE_ONLY_KEYS if c.get(k) is not None})
            if withhold:
                row["verdict"] = "withheld"
            if show_metrics and not withhold:
                row["metrics"] = {k: v for k, v in c.items()
                              if k not in PUBLIC_CLAUSE_KEYS + SIZE_ONLY_KEYS}
            public.append(row)
        if withhold and verdict in ("pass", "fail"):
            verdict = "withheld"
        if withhold and exit_code == ExitCode.FAIL:
            exit_code = ExitCode.PASS
        return cls(gate=gate, config_path=config_path, verdict=verdict, exit_code=exit_code,
                   adaptivity=adaptivity, clauses=public, budget=_public_budget(budget),
                   show_metrics=bool(show_metrics and not withhold),
                   metrics=metrics if (show_metrics and not withhold) else None, **kw)

    # -- machine outputs ------------------------------------------------------------------------
    def outputs(self) -> dict[str, str]:
        budget = self.budget or {}
        remaining = budget.get("remaining")
        return {
            "verdict": self.verdict,
            "clauses": json.dumps([{k: c[k] for k in PUBLIC_CLAUSE_KEYS + SIZE_ONLY_KEYS if k in c}
                                   for c in self.clauses], separators=(",", ":")),
            "budget-remaining": "" if remaining is None else str(remaining),
            "testset-status": str(budget.get("status") or "unknown"),
            "alert-issue": self.alert_issue or "",
        }


def _public_budget(budget: dict | None) -> dict | None:
    if not budget:
        return None
    keys = ("used", "total", "remaining", "status", "passes_used", "passes_total")
    return {k: budget.get(k) for k in keys if k in budget}


# -- pieces ----------------------------------------------------------------------------------
def gauge(used: int, total: int, width: int = 20) -> str:
    """A text gauge, e.g. ``▰▰▰▰▱▱▱▱`` — one cell per 1/width of the budget."""
    if total <= 0:
        return ""
    filled = min(width, round(width * used / total))
    return "▰" * filled + "▱" * (width - filled)


def steps_chart(history: list[str], total: int | None) -> str | None:
    """A mermaid ``xychart-beta`` of cumulative steps used over time, or None with no history.

    One point per day that spent steps; within a single day, one point per step (HH:MM).
    """
    times = []
    for t in history:
        try:
            times.append(datetime.fromisoformat(str(t).replace("Z", "+00:00")))
        except ValueError:
            continue
    if not times:
        return None
    times.sort()
    if len({t.date() for t in times}) == 1:
        labels = [t.strftime("%H:%M") for t in times]
        values = list(range(1, len(times) + 1))
        x_title = times[0].strftime("%Y-%m-%d")
    else:
        days: dict[str, int] = {}
        for i, t in enumerate(times, start=1):
            days[t.strftime("%m-%d")] = i
        labels, values = list(days), list(days.values())
        x_title = "day"
    top = max(total or 0, values[-1])
    quoted = ", ".join(f'"{lab}"' for lab in labels)
    return "\n".join([
        "```mermaid",
        "xychart-beta",
        '    title "Test-set steps used over time"',
        f'    x-axis "{x_title}" [{quoted}]',
        f'    y-axis "steps used" 0 --> {top}',
        f"    line [{', '.join(str(v) for v in values)}]",
        "```",
    ])


def _headline(r: GateReport) -> str:
    icon = VERDICT_ICON.get(r.verdict, "")
    words = {
        "pass": "passed", "fail": "failed", "withheld": "ran — verdict withheld",
        "exhausted": "cannot certify — the test set is spent", "error": "could not run",
        "pending": "pending — verdict at the end of round "
                   f"{(r.round or {}).get('round')} ({(r.round or {}).get('ends')})",
        "not released": "gets no verdict — the test set retired before this round's close",
    }.get(r.verdict, r.verdict)
    return f"{icon} **easeml-ci gate `{r.gate}` {words}**"


def _clause_table(r: GateReport) -> list[str]:
    if not r.clauses:
        return []
    head = "| clause | verdict |" + (" metrics |" if r.show_metrics else "")
    rule = "|---|---|" + ("---|" if r.show_metrics else "")
    rows = [head, rule]
    for c in r.clauses:
        text = str(c.get("text") or "").replace("|", "\\|")
        v = str(c.get("verdict") or "")
        cell = f"{VERDICT_ICON.get(v, '')} {v}".strip()
        row = f"| `{text}` | {cell} |"
        if r.show_metrics:
            m = c.get("metrics") or {}
            row += " " + ", ".join(f"{k}={v}" for k, v in m.items()).replace("|", "\\|") + " |"
        rows.append(row)
    for c in r.clauses:
        if c.get("tolerance") is not None:
            rows.append("")
            rows.append(f"Underpowered: `{c.get('text')}` was decided at +/- {c['tolerance']:.4g} "
                        f"(configured +/- {c.get('configured_tolerance', float('nan')):.4g}), the "
                        "tolerance this test set's size supports at the stated reliability.")
    return rows


def _budget_lines(r: GateReport) -> list[str]:
    b = r.budget
    if not b or b.get("total") is None:
        return []
    used, total = int(b.get("used") or 0), int(b.get("total") or 0)
    line = (f"**Test-set budget:** `{gauge(used, total)}` {used} of {total} steps used, "
            f"{b.get('remaining', max(total - used, 0))} left — status **{b.get('status', '?')}**")
    if b.get("passes_total") is not None:
        line += f"; {b.get('passes_used', 0)} of {b['passes_total']} passes used"
    if r.ledger:
        line += f"  \n**Ledger:** {r.ledger}"
    return [line]


def _next_steps(r: GateReport) -> list[str]:
    b = r.budget or {}
    left = b.get("remaining")
    left_txt = f" ({left} step{'s' if left != 1 else ''} left)" if left is not None else ""
    if r.verdict == "pass":
        text = "The new model meets the condition. Merge when the review is done."
        if b.get("status") == "retired":
            text += " This pass retired the test set: collect a new one before the next gate."
    elif r.verdict == "fail":
        text = ("The new model does not meet the condition. Improve it and push again; every "
                f"evaluation spends one step of the test set's budget{left_txt}. Only the verdict is "
                "shown, so that the guarantee holds for every later step.")
    elif r.verdict == "pending":
        text = ("The verdict is released when the round closes, at the time above, whatever "
                "the labels: nothing to do until then. The step is spent" + left_txt + ".")
    elif r.verdict == "not released":
        text = ("An earlier pass retired the test set before this round closed; this step is "
                "spent. Label a new test set before the next gate.")
    elif r.verdict == "withheld":
        text = ("Adaptivity is `none`: the verdict went to the private channel only, and this job "
                "does not fail. Ask the test set's owner for the result.")
    elif r.verdict == "exhausted":
        text = ("The test set's budget is spent, so no verdict can be certified. Label a new test set "
                "(see the alert" + (f" {r.alert_issue}" if r.alert_issue else "") +
                ") and start it with `easeml-ci testset register`.")
    else:
        text = "Fix the problem above and re-run the job; nothing about the test set was revealed."
    return [f"**Next:** {text}"]


def _alert_lines(r: GateReport) -> list[str]:
    if not r.alert:
        return []
    request = r.alert.get("label_request") or {}
    need = request.get("test_examples")
    line = "**New test set needed.**"
    if need:
        line += f" The next test set needs {need} labelled examples."
    if r.alert_issue:
        line += f" Tracked in {r.alert_issue}."
    return [line]


def _metrics_warning(r: GateReport) -> list[str]:
    if not r.show_metrics:
        return []
    out = ["> [!WARNING]\n> `show_metrics: true`: this report shows test-set metrics. The "
           "statistical guarantee is **void** for this test set: later verdicts can be overfitted "
           "to what is shown here."]
    if r.metrics:
        out += ["", "<details><summary>Test-set metrics</summary>", "", "```json",
                json.dumps(r.metrics, indent=2, sort_keys=True, default=str), "```", "",
                "</details>"]
    return out


def _body(r: GateReport, *, with_chart: bool) -> list[str]:
    """What the summary and the comment share: message, clauses, budget, alert, next steps."""
    parts: list[str] = []
    if r.message:
        parts += [f"> {r.message}", ""]
    parts += _metrics_warning(r) + ([""] if r.show_metrics else [])
    sections = [_clause_table(r), _budget_lines(r)]
    if with_chart:
        chart = steps_chart(r.history, (r.budget or {}).get("total"))
        sections.append([chart] if chart else [])
    sections.append(_alert_lines(r))
    for section in sections:
        if section:
            parts += section + [""]
    return parts + _next_steps(r)


def render_summary(r: GateReport) -> str:
    """The job summary: verdict, clauses, budget gauge, steps chart, what to do next."""
    parts: list[str] = [f"## {_headline(r)}", ""]
    meta = f"Config `{r.config_path}`"
    if r.adaptivity:
        meta += f" · adaptivity `{r.adaptivity}`"
    if r.commit:
        meta += f" · commit `{r.commit[:12]}`"
    parts += [meta, ""] + _body(r, with_chart=True)
    return "\n".join(parts).rstrip() + "\n"


def render_comment(r: GateReport, marker: str) -> str:
    """The sticky PR comment: the summary without the chart, plus the hidden marker.

    Deterministic for the same report, so an unchanged gate leaves the comment alone.
    """
    parts = [marker, f"### {_headline(r)}", ""] + _body(r, with_chart=False)
    foot = f"<sub>config `{r.config_path}`"
    if r.commit:
        foot += f" · commit `{r.commit[:12]}`"
    parts += ["", foot + " · easeml-ci</sub>"]
    return "\n".join(parts).rstrip() + "\n"


def render_meter_gauge(result) -> str:
    """Markdown for a job summary or a pull-request comment: the ranges as a gauge, the answer
    marked, and the budget. Shows nothing about the test set beyond the answer."""
    if result.answer == "withheld":
        head = "**Overfitting:** withheld (adaptivity `none`: the answer went to a private sink)"
        gauge = " · ".join(result.ranges)
    else:
        head = f"**Overfitting** (validation minus true accuracy): **{result.answer}**"
        gauge = " · ".join(f"**[ {r} ]**" if r == result.answer else r for r in result.ranges)
    b = result.budget.to_dict()
    return "\n".join([
        f"### {METER_NAME}", "", head, "", gauge, "",
        f"Validation accuracy (your own set): {result.validation_accuracy:.4f}. Guaranteed up to "
        f"±{100 * result.plan.ranges.tolerance:g}% at each edge, reliability "
        f"{result.plan.reliability} for every answer of the test set's life.",
        f"Test set `{result.fingerprint[:12]}`: {b['used']} of {b['total']} answers used "
        f"({b['status']})."])
