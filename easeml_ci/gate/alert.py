"""The new-test-set alert: raised when a test set is retired or its steps are spent.

An alert is a plain dict (so the GitHub Action can turn it into an issue and the CLI into
text) carrying a *label request*: how many labelled examples the next test set needs for the
configured condition, and, when an unlabelled pool is configured, a CSV ranking which pool
examples to label first. For conditions on ``n - o`` only examples where the two models disagree
move the estimate (docs/design.md §2: ``n_i - o_i`` is 0 wherever ``d_i`` is 0), so those come first.

It is printed by the CLI every time a check is refused, but POSTed to the webhook once per
event: the ledger records the claim and the delivery result (see
:meth:`easeml_ci.ledger.Ledger.claim_alert`); a failed delivery is retried by the next check.
The recorded result never holds the webhook's URL or any part of its path: that is the secret,
and the ledger may sit on a branch anyone with read access can read.

Nothing in an alert is derived from the test set's labels: the budget, the plan's sizes, the
fingerprint and the models' predictions on the (unlabelled) pool.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_write
from ..errors import UsageError
from ..redact import redact

def post_json(url: str, payload: dict, **kwargs) -> tuple[bool, str]:
    """POST ``payload`` under the product's one HTTP policy (:func:`easeml_ci.http.post_json`).

    Returns ``(delivered, detail)`` and never raises, because a lost alert must not turn a
    recorded step into a crash. ``detail`` names the host, never the URL's path (the secret).
    A 5xx or a read timeout is not resent here (the alert may have arrived); the ledger keeps
    the failure and the next check delivers again.
    """
    from ..http import post_json as post  # requests only when something is POSTed

    return post(url, payload, **kwargs)


def rank_pool(new_pred: np.ndarray | None, old_pred: np.ndarray | None, size: int
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Order pool examples for labelling: disagreements first (stable), then the rest.

    Returns ``(order, disagree)``; ``disagree`` is None when it could not be computed (the
    models are prediction files, which say nothing about the pool).
    """
    if new_pred is None or old_pred is None:
        return np.arange(size), None
    disagree = np.asarray(new_pred).reshape(size, -1) != np.asarray(old_pred).reshape(size, -1)
    disagree = disagree.any(axis=1)
    order = np.argsort(~disagree, kind="stable")
    return order, disagree


def write_label_request_csv(path: Path, order: np.ndarray, disagree: np.ndarray | None,
                            labels_needed: int) -> Path:
    """Write ``rank,pool_index,models_disagree,label_now`` rows, most useful first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", newline="") as fh:  # concurrent checks each write their own
        writer = csv.writer(fh)
        writer.writerow(["rank", "pool_index", "models_disagree", "label_now"])
        for rank, index in enumerate(order.tolist(), start=1):
            flag = "" if disagree is None else int(bool(disagree[index]))
            writer.writerow([rank, index, flag, int(rank <= labels_needed)])
    return path


def build_alert(*, event: str, gate: str, fingerprint: str, budget: dict, plan_summary: dict,
                config_path: str, pool_csv: str | None = None, pool_info: str | None = None
                ) -> dict:
    """The alert as a dict: what happened, the label request and the next command to run."""
    why = {"retired": "was retired (its pass budget is used up)",
           "exhausted": "has no steps left"}[event]
    need = plan_summary["test_examples"]
    labels = plan_summary["labels"]
    request = {"test_examples": need, "labels": labels,
               "condition": plan_summary["condition"],
               "reliability": plan_summary["reliability"],
               "pool_csv": pool_csv}
    next_step = (f"label a fresh test set of at least {need:,} examples, then run "
                 f"`easeml-ci testset register NEW_TESTSET --config {config_path}`")
    lines = [f"easeml-ci [{gate}]: test set {fingerprint[:12]} {why} "
             f"({budget['used']} of {budget['total']} steps used).",
             (f"Label request: {need:,} test examples, every one labelled, for "
              if labels >= need else
              f"Label request: {need:,} rows of features (labels only where a decision asks) for ")
             + f"`{plan_summary['condition']}` at reliability {plan_summary['reliability']}."]
    if pool_csv:
        lines.append(f"Which pool examples to label first: {pool_csv}"
                     + (f" ({pool_info})" if pool_info else ""))
    elif pool_info:  # why there is no list of examples (no pool, or a pool that failed)
        lines.append(f"Which examples: {pool_info}.")
    lines.append(f"Next: {next_step}.")
    return {"event": event, "gate": gate, "testset": fingerprint, "budget": budget,
            "label_request": request, "next_step": next_step, "text": "\n".join(lines)}


def slack_payload(alert: dict) -> dict:
    """Slack-compatible body: ``text`` for humans, structured fields for machines."""
    return {"text": alert["text"],
            "easeml_ci": {k: v for k, v in alert.items() if k not in ("text", "delivery")}}


def dispatch(alert: dict, ledger, webhook: str | None, *, post=post_json) -> dict:
    """Send the alert once per event; record the claim and the outcome in ``alert['delivery']``."""
    if not ledger.claim_alert(alert["event"]):
        alert["delivery"] = {"sent": False, "detail": "already sent for this event"}
        return alert
    if webhook:
        delivered, detail = post(webhook, slack_payload(alert))
        detail = redact(detail, [webhook])  # the ledger is readable by anyone with contents: read
    else:
        delivered, detail = True, "printed (no webhook configured)"
    ledger.record_alert_result(alert["event"], delivered, detail)
    alert["delivery"] = {"sent": True, "delivered": delivered, "detail": detail,
                         "webhook": bool(webhook)}
    return alert


# --- raising the alert for a gate ---------------------------------------------------------------

def requests_dir(ledger, workdir: Path) -> Path:
    """Label requests sit beside a file ledger (``.easeml/label-requests``), else in the workdir."""
    directory = getattr(ledger.backend, "directory", None)
    if directory is not None:
        return Path(directory).parent / "label-requests"
    return workdir / ".easeml" / "label-requests"


def pool_ranking(cfg, plan, models: dict, workdir: Path, event: str, fingerprint: str,
                 out_dir: Path, progress: Callable[[str], None]) -> tuple[str | None, str]:
    """Write the label-request CSV for ``cfg.pool`` once per event; returns (path, how)."""
    if not cfg.pool:
        return None, ("no label request: set `pool:` in the config to a file of unlabelled "
                      "examples, and the alert will say which of them to label first")
    from ..models import OnnxModel, locate
    from ..testsets import load_pool

    out = out_dir / f"{fingerprint[:16]}-{event}.csv"
    if out.is_file():  # written when this event first happened; later refused checks keep it
        return str(out), "written when the test set was first found spent"
    pool_path = cfg.resolve(cfg.pool)
    X = load_pool(pool_path, label_column=cfg.label_column)
    new, old = models.get("new"), models.get("old")
    new_pred = old_pred = None
    how = "pool order (the models are prediction files, which say nothing about the pool)"
    compares = bool(plan.variables & {"o", "d"})
    if compares and old and all(str(s).endswith(".onnx") for s in (new, old)):
        progress("ranking the pool by where the two models disagree")
        new_pred, old_pred = (OnnxModel.from_spec(locate(spec, workdir), repo=workdir, output=cfg.output)
                              .predict(X, source=pool_path) for spec in (new, old))
        how = "examples where the old and new model disagree come first"
    elif not compares:
        how = "pool order (the condition does not compare two models)"
    order, disagree = rank_pool(new_pred, old_pred, X.shape[0])
    write_label_request_csv(out, order, disagree, plan.labels)
    if disagree is not None:
        how += f"; {int(disagree.sum())} of {X.shape[0]} pool examples are disagreements"
    return str(out), how


def raise_alert(*, cfg, plan, budget, ledger, workdir: Path, models: dict,
                progress: Callable[[str], None], next_step: str | None = None) -> dict:
    """Build the new-test-set alert, write the pool CSV, and dispatch it once per event."""
    try:
        pool_csv, pool_info = pool_ranking(cfg, plan, models, workdir, budget.status,
                                           ledger.fingerprint, requests_dir(ledger, workdir),
                                           progress)
    except UsageError as exc:  # the alert still goes out; the pool problem is named in it
        pool_csv, pool_info = None, f"POOL NOT RANKED, no label request: {exc.message}"
    alert = build_alert(event=budget.status, gate=cfg.gate_name, fingerprint=ledger.fingerprint,
                        budget=budget.to_dict(), plan_summary=plan.summary(),
                        config_path=cfg.display_name, pool_csv=pool_csv, pool_info=pool_info)
    if next_step:
        alert["text"] = alert["text"].replace(alert["next_step"], next_step)
        alert["next_step"] = next_step
    return dispatch(alert, ledger, cfg.webhook)
