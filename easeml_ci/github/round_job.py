"""What the two scheduled jobs of verdicts in rounds share (``command: close-round``,
:mod:`.round_close`, and ``command: round-requests``, :mod:`.round_requests`): both hold the
key, so both mask every secret first, read the repository's settings before anything is opened
(:func:`.action.check_trust`) and, on a user's mistake, show its message (redacted) as an
annotation and in the summary with its exit code, never a traceback.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import IO, Callable

from conditions import ConditionsError

from ..errors import EasemlError, ExitCode
from ..redact import redact
from . import workflow
from .api import GitHubClient

KEY_ENV = "EASEML_TESTSET_KEY"


def job_client(inputs, ctx, out: IO[str], client: GitHubClient | None) -> GitHubClient | None:
    """Mask every secret the job holds in its log, then the API client (``client`` if given)."""
    token = inputs.token or os.environ.get("GITHUB_TOKEN")
    workflow.mask_secrets(out, key=os.environ.get(KEY_ENV), token=token,
                          webhooks=[inputs.alert_webhook])
    workflow.mask_secrets(out, key=os.environ.get("EASEML_ORDER_KEY"))
    workflow.mask_secrets(out, key=os.environ.get("EASEML_LEDGER_KEY"), token=inputs.status_token)
    if client is None and token:
        client = GitHubClient(token, ctx.api_url)
    return client


def run_keyed(inputs, ctx, client: GitHubClient | None, *, out: IO[str], summary_path,
              title: str, job: Callable) -> tuple[object, object] | int:
    """Load the config (the ``alert-webhook`` input in place of its webhook), open its ledger,
    check the repository's settings when the job holds the key, then ``job(cfg, backend)``.
    Returns ``(cfg, result)``, or the exit code of a mistake after reporting it as ``title``."""
    from ..config import load_config
    from ..gate.registration import open_ledger_backend
    from .action import check_trust, holds_a_key

    cfg = None
    try:
        config_path = Path(inputs.config)
        cfg = load_config(config_path if config_path.is_absolute()
                          else ctx.workspace / config_path)
        if inputs.alert_webhook:
            cfg = dataclasses.replace(cfg, webhook=inputs.alert_webhook)
        backend = open_ledger_backend(cfg)
        if holds_a_key():  # the repository's settings, read before anything is opened
            check_trust(client, ctx, inputs)
        return cfg, job(cfg, backend)
    except (EasemlError, ConditionsError) as exc:
        message = redact(getattr(exc, "message", str(exc)),
                         [inputs.alert_webhook, *((cfg.webhook, cfg.private_sink) if cfg else ())])
        workflow.annotate(out, "error", message, title=title)
        workflow.append_summary(f"### {title} could not run\n\n{message}\n", summary_path)
        return getattr(exc, "exit_code", ExitCode.USAGE)


__all__ = ["KEY_ENV", "job_client", "run_keyed"]
