"""Rendering a check for people (terminal, Markdown) and machines (JSON).

Renderers only format what :class:`~easeml_ci.gate.results.CheckResult` already decided may be shown:
under ``full``, ``firstChange`` and ``passes`` that is the verdict bit per clause and the budget;
under ``none`` not even that. Estimates appear only when ``show_metrics`` put them in
``result.metrics``, and then every renderer says in words that the guarantee is void.
"""
from __future__ import annotations

import json

VOID = ("show_metrics is on: the numbers below are derived from the secret test set, so the "
        "statistical guarantee of this gate is VOID")


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def _next_step(result) -> str:
    budget = result.budget
    if result.verdict == "pending":
        return (f"the verdict is released at the end of round {result.round['round']} "
                f"({result.round['ends']}), whatever the labels; {_steps(budget.remaining)} left "
                "on this test set.")
    if result.verdict == "withheld":
        return (f"the verdict went to {result.private_sink}; whoever owns it decides. "
                f"{_steps(budget.remaining)} left on this test set.")
    if not budget.active:
        return "this was the test set's last certified check: label a new one (see the alert)."
    left = f"{_steps(budget.remaining)} left on this test set"
    if budget.passes_total is not None:
        left += f", retired after {budget.passes_total - budget.passes_used} more pass(es)"
    if result.verdict == "pass":
        return f"the model may ship. {left}."
    return f"do not ship this model; every further check spends a step. {left}."


def budget_line(budget: dict) -> str:
    """:meth:`easeml_ci.ledger.Budget.describe` for a budget read back as a dict."""
    text = f"{budget['used']} of {budget['total']} steps used, {budget['remaining']} remaining"
    if budget.get("passes_total") is not None:
        text += f"; {budget['passes_used']} of {budget['passes_total']} passes used"
    return f"{text} ({budget['status']})"


def _clause_label(verdict: str) -> str:
    return {"pass": "PASS", "fail": "FAIL", "withheld": "----", "undisclosed": "  ? ",
            "pending": "WAIT"}[verdict]


def render_terminal(result) -> str:
    plan = result.plan.summary()
    out = [f"easeml-ci check: gate {result.gate!r} ({result.config_path})",
           f"  condition    {plan['condition']}",
           f"  contract     reliability {plan['reliability']}, {plan['mode']}, adaptivity "
           f"{plan['adaptivity']}, {plan['steps']} steps"
           + (f", {plan['passes']} passes" if plan.get("passes") else ""),
           f"  test set     {result.fingerprint[:12]} (step {result.step} of its ledger)", ""]
    if result.metrics is not None:
        out += [f"WARNING: {VOID}.", ""]
    for clause in result.clauses:
        where = f"  ({result.config_path}:{clause.line})" if clause.line else ""
        out.append(f"  {_clause_label(clause.verdict)}  {clause.text}{where}")
        if clause.tolerance is not None:
            out.append(f"        underpowered: decided at +/- {clause.tolerance:.4g} "
                       f"(configured +/- {clause.configured_tolerance:.4g}) at reliability "
                       f"{plan['reliability']}")
    if any(clause.verdict == "undisclosed" for clause in result.clauses):
        out.append("   ?  = undisclosed: under adaptivity "
                   f"{plan['adaptivity']} only the formula's verdict is shown (one bit per step)")
    if result.metrics is not None:
        out.append("")
        for clause in result.metrics["clauses"]:
            out.append(f"  estimate {clause['estimate']:.6g} -> {clause['answer']}  ({clause['text']})")
        out.append(f"  on {result.metrics['test_examples']} test examples")
    verdict = result.verdict.upper()
    if result.verdict == "withheld":
        verdict += " (adaptivity none: the team sees no results)"
    if result.verdict == "pending":
        verdict += f": verdict at the end of round {result.round['round']} ({result.round['ends']})"
    out += ["", f"verdict:  {verdict}", f"budget:   {result.budget.describe()}"]
    if result.ledger:
        out.append(f"ledger:   {result.ledger}")
    out.append(f"next:     {_next_step(result)}")
    if result.underpowered:
        out.append("note:     the test set is smaller than the plan needs; the verdict holds at "
                   "the widened tolerances above, not the configured ones.")
    if result.alert:
        out += ["", render_alert(result.alert)]
    return "\n".join(out)


def render_alert(alert: dict) -> str:
    lines = ["NEW TEST SET NEEDED", *("  " + line for line in alert["text"].splitlines())]
    delivery = alert.get("delivery") or {}
    if delivery.get("webhook"):
        state = "delivered" if delivery.get("delivered") else f"NOT delivered ({delivery['detail']})"
        lines.append(f"  webhook: {state}")
    return "\n".join(lines)


def render_json(result) -> str:
    return json.dumps(result.to_dict(), sort_keys=True)


def render_markdown(result) -> str:
    """A Markdown block (job summary, PR comment) with the same content as the terminal report."""
    icon = {"pass": "✅", "fail": "❌", "withheld": "🔒", "pending": "⏳"}[result.verdict]
    plan = result.plan.summary()
    out = [f"### {icon} easeml-ci `{result.gate}`: **{result.verdict}**", ""]
    if result.metrics is not None:
        out += [f"> ⚠️ {VOID}.", ""]
    out += ["| clause | verdict |", "|---|---|"]
    for clause in result.clauses:
        text = clause.text
        if clause.tolerance is not None:
            text += f" (underpowered: +/- {clause.tolerance:.4g})"
        out.append(f"| `{text}` | {clause.verdict} |")
    out += ["", f"**Budget:** {result.budget.describe()}  ",
            *([f"**Ledger:** {result.ledger}  "] if result.ledger else []),
            f"**Contract:** reliability {plan['reliability']}, {plan['mode']}, adaptivity "
            f"{plan['adaptivity']}, test set `{result.fingerprint[:12]}`  ",
            f"**Next:** {_next_step(result)}"]
    if result.metrics is not None:
        out += ["", "| clause | estimate | answer |", "|---|---|---|"]
        out += [f"| `{c['text']}` | {c['estimate']:.6g} | {c['answer']} |"
                for c in result.metrics["clauses"]]
    if result.alert:
        out += ["", "#### New test set needed", "", result.alert["text"]]
    return "\n".join(out)


def render_round_close(result) -> str:
    """`round close` for people: each released verdict, the budget (no label counts, ever)."""
    out = [f"easeml-ci round close: gate {result.gate!r} ({result.config_path}), test set "
           f"{result.fingerprint[:12]}"]
    for r in result.released:
        pr = f" (pull request #{r.pr})" if r.pr is not None else ""
        out.append(f"  step {r.step}, round {r.round}{pr}: {r.verdict.upper()}")
    if not result.released:
        out.append("  no round has ended with a pending check")
    out += [f"still pending: {result.pending}", f"budget:   {result.budget.describe()}",
            f"ledger:   {result.ledger}", *[f"note:     {n}" for n in result.notes]]
    if result.alert:
        out += ["", render_alert(result.alert)]
    return "\n".join(out)


def render_round_requests(result) -> str:
    """`round requests` for people: how many pending steps got a message (never what it said)."""
    n = len(result.steps)
    out = [f"easeml-ci round requests: gate {result.gate!r} ({result.config_path}), test set "
           f"{result.fingerprint[:12]}"]
    if n:
        where = result.private_sink or "the private sink"
        out.append(f"label requests for {n} pending step{'s' if n != 1 else ''} "
                   f"({', '.join(str(s) for s in result.steps)}) sent to {where}")
    else:
        out.append("no pending step in a round that has not ended: nothing sent")
    out += [f"ledger:   {result.ledger}", *[f"note:     {n}" for n in result.notes]]
    return "\n".join(out)


def render_meter(result) -> str:
    """The meter's terminal text: the range among the ranges, and the budget."""
    lines = [f"easeml-meter: validation accuracy {result.validation_accuracy:.4f}"]
    if result.answer == "withheld":
        lines.append(f"overfitting: withheld (adaptivity none: the answer went to "
                     f"{result.private_sink})")
    else:
        gauge = "  ".join(f"[{r}]" if r == result.answer else r for r in result.ranges)
        lines.append(f"overfitting (validation minus true accuracy): {result.answer}")
        lines.append(f"  {gauge}")
        lines.append(f"  guaranteed up to +/- {100 * result.plan.ranges.tolerance:g}% at each edge, "
                     f"reliability {result.plan.reliability} over the test set's life")
    b = result.budget.to_dict()
    lines.append(f"test set {result.fingerprint[:12]}: {b['used']} of {b['total']} answers used, "
                 f"{b['remaining']} remaining ({b['status']}); ledger: {result.ledger}")
    if result.alert:
        lines.append(result.alert["text"])
    return "\n".join(lines)


def render_pick(result) -> str:
    """A pick's terminal text: the candidates, the answer, the budget."""
    plan = result.plan
    lines = [f"easeml-ci pick: {plan.description} at reliability {plan.reliability} over the "
             f"test set's life (one pick wrong with probability at most {plan.pick_delta:.3g})"]
    for index, spec in enumerate(result.candidates, 1):
        mark = "->" if spec == result.answer else "  "
        lines.append(f"  {mark} {index}. {spec}")
    if result.answer == "withheld":
        lines.append(f"pick: withheld (adaptivity none: the answer went to {result.private_sink})")
    elif result.picked:
        lines.append(f"pick: {result.answer}")
    else:
        lines.append(f"pick: {result.answer} (the test set's owner has the label request; run "
                     "the same pick again once the labels are in)")
    lines.append(f"test set {result.fingerprint[:12]}: {result.budget.describe()}; "
                 f"ledger: {result.ledger}")
    lines += [f"note: {note}" for note in result.notes]
    if result.alert:
        lines += ["", render_alert(result.alert)]
    return "\n".join(lines)
