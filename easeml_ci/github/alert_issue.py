"""New-test-set alerts as GitHub issues: one per test set and event, updated, never repeated.

An alert issue carries a hidden marker ``<!-- easeml-ci:alert fingerprint=FP event=EV -->``
(FP the test set's fingerprint, EV what happened: ``retired`` or ``exhausted``). Before opening
an issue the gate looks for that marker among the issues with the alert label (open and
closed), then among all open issues in case the labels were dropped:

* an open issue with the marker is edited in place when its text changed, else left alone;
* a closed one means the team has seen this event and dealt with it: nothing is reopened or
  repeated (alert once per event);
* otherwise a labelled issue is opened. When that POST fails ambiguously (a 5xx or no answer:
  GitHub may have opened the issue all the same), the marker is searched for again before the
  issue is opened a second time (:func:`~easeml_ci.github.api.write_once`).

The body holds the label request of the gate issue: how many labelled examples the next test set
needs, and which pool examples to label first when a pool is configured. Nothing in it describes
the retired test set's outcomes.
"""
from __future__ import annotations

from dataclasses import dataclass

from .api import GitHubClient, repo_path, write_once

DEFAULT_LABELS = ("easeml-ci", "new-test-set")
RAISED_BY = "\nRaised by "  # the tail naming the first run; kept, and ignored when comparing


def alert_marker(fingerprint: str, event: str) -> str:
    return f"<!-- easeml-ci:alert fingerprint={fingerprint} event={event} -->"


def alert_event(alert: dict) -> str:
    return str(alert.get("event") or alert.get("status") or alert.get("reason") or "retired").split()[0]


@dataclass
class AlertOutcome:
    action: str  # created | updated | unchanged | already-closed
    number: int
    url: str | None = None

    @property
    def ref(self) -> str:
        return f"#{self.number}"


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_alert(alert: dict, *, gate: str, repository: str, fingerprint: str,
                 event: str) -> tuple[str, str]:
    """(title, body) of the alert issue. Deterministic, so a repeated alert changes nothing."""
    title = f"easeml-ci: new test set needed for gate '{gate}'"
    what = {"retired": "was retired", "exhausted": "has spent all its steps"}.get(event, f"is {event}")
    lines = [
        alert_marker(fingerprint, event),
        f"The test set `{fingerprint[:16]}` of gate **{gate}** {what}. The gate cannot certify "
        "new models until a fresh labelled test set is registered.",
        "",
    ]
    text = alert.get("text") or alert.get("message")
    if text:
        lines += ["> " + line for line in str(text).splitlines()] + [""]
    request = alert.get("label_request")
    if isinstance(request, dict) and request:
        lines += ["### Label request", "", "| | |", "|---|---|"]
        names = {"test_examples": "test examples needed", "labels": "labels needed",
                 "pool_csv": "which pool examples to label first"}
        for k, v in request.items():
            if v is not None:
                lines.append(f"| {names.get(k, k.replace('_', ' '))} | `{_cell(v)}` |")
        lines.append("")
    budget = alert.get("budget")
    if isinstance(budget, dict) and "used" in budget:
        lines += [f"Budget: {budget.get('used')} of {budget.get('total')} steps used"
                  + (f", {budget.get('passes_used')} of {budget.get('passes_total')} passes"
                     if budget.get("passes_total") is not None else "") + ".", ""]
    lines += ["### What to do", ""]
    if alert.get("next_step"):
        lines.append(f"1. {str(alert['next_step'])[0].upper()}{str(alert['next_step'])[1:]}.")
    else:
        lines.append("1. Label a fresh test set (never reuse the retired examples) and register it "
                     "with `easeml-ci testset register`.")
    lines += ["2. Point the gate's `testset` at the new (encrypted) file.", "3. Close this issue."]
    return title, "\n".join(lines) + "\n"


def _find(client: GitHubClient, repository: str, mark: str, label: str | None) -> dict | None:
    searches = []
    if label:
        searches.append({"state": "all", "labels": label})
    searches.append({"state": "open"})
    for params in searches:
        for issue in client.paginate(repo_path(repository, "issues"), **params):
            if "pull_request" in issue:
                continue
            if mark in (issue.get("body") or ""):
                return issue
    return None


def _same(issue: dict | None, title: str, body: str) -> dict | None:
    if issue is not None and issue.get("title") == title and issue.get("body") == body:
        return issue
    return None


def upsert_alert_issue(client: GitHubClient, repository: str, alert: dict, *, gate: str,
                       fingerprint: str, labels: tuple[str, ...] | list[str] = DEFAULT_LABELS,
                       run_url: str | None = None) -> AlertOutcome:
    """Open the alert issue for this test set and event, or update the open one.

    Raises :class:`~easeml_ci.github.api.GitHubForbidden` when the token may not write issues.
    """
    event = alert_event(alert)
    mark = alert_marker(fingerprint, event)
    title, body = render_alert(alert, gate=gate, repository=repository, fingerprint=fingerprint,
                               event=event)
    labels = [lab for lab in labels if lab]
    existing = _find(client, repository, mark, labels[0] if labels else None)
    if existing is not None:
        if existing.get("state") == "closed":
            return AlertOutcome("already-closed", existing["number"], existing.get("html_url"))
        old_body, sep, tail = (existing.get("body") or "").partition(RAISED_BY)
        if old_body == body and existing.get("title") == title:
            return AlertOutcome("unchanged", existing["number"], existing.get("html_url"))
        new_body = body + sep + tail
        got = write_once(client,
                         lambda: client.patch(repo_path(repository, "issues", existing["number"]),
                                              {"title": title, "body": new_body}),
                         lambda: _same(_find(client, repository, mark, labels[0] if labels else None),
                                       title, new_body))
        return AlertOutcome("updated", existing["number"], got.get("html_url"))
    if run_url:
        body += f"{RAISED_BY}{run_url}.\n"
    got = write_once(client,
                     lambda: client.post(repo_path(repository, "issues"),
                                         {"title": title, "body": body, "labels": labels}),
                     lambda: _find(client, repository, mark, labels[0] if labels else None))
    return AlertOutcome("created", got["number"], got.get("html_url"))
