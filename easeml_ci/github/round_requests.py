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

from typing import IO

from ..errors import ExitCode
from . import workflow
from .api import GitHubClient
from .round_job import KEY_ENV, job_client, run_keyed


def run_round_requests(inputs, ctx, *, out: IO[str], client: GitHubClient | None = None,
                       summary_path: str | None = None) -> int:
    """Send the next label requests of the config's test set (the summary_path default: the
    runner's $GITHUB_STEP_SUMMARY). It holds the key, so it reads the repository's settings
    first, as a keyed check and the close do (:func:`.action.check_trust`)."""
    from ..gate.rounds import requests

    client = job_client(inputs, ctx, out, client)
    done = run_keyed(inputs, ctx, client, out=out, summary_path=summary_path,
                     title="easeml-ci round requests", job=lambda cfg, backend: requests(
                         cfg, inputs.testset, key_env=KEY_ENV, workdir=ctx.workspace,
                         backend=backend, label_store=getattr(inputs, "label_store", None),
                         progress=lambda m: print(f"... {m}", file=out)))
    if isinstance(done, int):
        return done
    _, result = done
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
