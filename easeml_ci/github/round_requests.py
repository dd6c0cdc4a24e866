"""The Action's ``command: round-requests``: a scheduled workflow of the default branch (the
trusted job, with the key) sends the test-set owner, through the private sink, the next batch of
rows to label for every pair pending in a round that has not ended, or "decided, no more labels"
(:func:`easeml_ci.gate.rounds.requests`). Run it more often than the rounds (e.g. every 30
minutes): each run moves every open pair one batch on.

What the job shows (its log, its summary, its exit code) is the same whatever the labels: the
number of pending steps and their numbers, which the ledger lists anyway. It posts nothing on a
pull request: a status or a comment that moved with the requests would tell the team how the
labelled rows stand.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from conditions import ConditionsError

from ..errors import EasemlError, ExitCode
from ..redact import redact
from . import workflow
from .api import GitHubClient

KEY_ENV = "EASEML_TESTSET_KEY"


def run_round_requests(inputs, ctx, *, out: IO[str], client: GitHubClient | None = None,
                       summary_path: str | None = None) -> int:
    """Send the next label requests of the config's test set (the summary_path default: the
    runner's $GITHUB_STEP_SUMMARY). It holds the key, so it reads the repository's settings
    first, as a keyed check and the close do (:func:`.action.check_trust`)."""
    from ..config import load_config
    from ..gate.registration import open_ledger_backend
    from ..gate.rounds import requests
    from .action import check_trust, holds_a_key

    token = inputs.token or os.environ.get("GITHUB_TOKEN")
    workflow.mask_secrets(out, key=os.environ.get(KEY_ENV), token=token,
                          webhooks=[inputs.alert_webhook])
    workflow.mask_secrets(out, key=os.environ.get("EASEML_ORDER_KEY"))
    workflow.mask_secrets(out, key=os.environ.get("EASEML_LEDGER_KEY"))
    if client is None and token:
        client = GitHubClient(token, ctx.api_url)
    workspace = ctx.workspace
    cfg = None
    try:
        config_path = Path(inputs.config)
        cfg = load_config(config_path if config_path.is_absolute() else workspace / config_path)
        backend = open_ledger_backend(cfg)
        if holds_a_key():  # the repository's settings, read before anything is opened
            check_trust(client, ctx, inputs)
        result = requests(cfg, inputs.testset, key_env=KEY_ENV, workdir=workspace,
                          backend=backend,
                          label_store=getattr(inputs, "label_store", None),
                          progress=lambda m: print(f"... {m}", file=out))
    except (EasemlError, ConditionsError) as exc:
        message = redact(getattr(exc, "message", str(exc)),
                         [inputs.alert_webhook, *((cfg.webhook, cfg.private_sink) if cfg else ())])
        workflow.annotate(out, "error", message, title="easeml-ci round requests")
        workflow.append_summary(f"### easeml-ci round requests could not run\n\n{message}\n",
                                summary_path)
        return getattr(exc, "exit_code", ExitCode.USAGE)
    n = len(result.steps)
    line = (f"Label requests for {n} pending step{'s' if n != 1 else ''} "
            f"({', '.join(str(s) for s in result.steps)}) sent to the private sink."
            if n else "No pending step in a round that has not ended: nothing sent.")
    print(f"easeml-ci: {line}", file=out)
    rows = ["### easeml-ci round requests", "", line]
    if result.awaiting_close:
        rows.append(f"Awaiting the round close: {result.awaiting_close}.")
    workflow.append_summary("\n".join(rows) + "\n", summary_path)
    return ExitCode.PASS


__all__ = ["run_round_requests"]
