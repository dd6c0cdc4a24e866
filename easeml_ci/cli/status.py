"""`easeml-ci status verify SHA --gate NAME`: is the commit status ``easeml-ci/<gate>`` on a
commit the gate's own, or did another workflow post it?

Any workflow with ``statuses: write`` can post a status of that name; the gate seals its own
(:mod:`easeml_ci.github.seal`). This reads the latest one on the commit and checks the seal with
the key (``EASEML_TESTSET_KEY``, else ``EASEML_LEDGER_KEY``; from the environment only). Run it
as the owner, or in a default-branch job in the key's environment. Exit 0 sealed by the gate,
1 forged (no seal or a wrong one: also under another key), 2 no such status or bad input.
"""
from __future__ import annotations

import os
import sys

import click

from ..errors import UsageError


@click.group("status")
def status() -> None:
    """The gate's commit status easeml-ci/<gate> on a commit."""


@status.command("verify")
@click.argument("sha")
@click.option("--gate", required=True, help="The gate's name (the config's `name:`): the status "
              "is easeml-ci/<gate>.")
@click.option("--repository", envvar="GITHUB_REPOSITORY", show_envvar=True,
              help="OWNER/NAME (default: $GITHUB_REPOSITORY).")
def verify(sha: str, gate: str, repository: str | None) -> None:
    """Check that the latest easeml-ci/<gate> status on SHA carries the gate's seal."""
    from ..github.api import GitHubClient
    from ..github.provenance import check_sha, status_context
    from ..github.seal import seal_key, verify_status

    sha = check_sha(sha, "SHA")
    if not repository or "/" not in repository:
        raise UsageError("--repository: expected OWNER/NAME (or set GITHUB_REPOSITORY), got "
                         f"{repository!r}")
    token = os.environ.get("GITHUB_TOKEN")
    if not token:
        raise UsageError("GITHUB_TOKEN is not set: reading a commit's statuses needs a token "
                         "with statuses: read (or contents: read)")
    key = seal_key()
    if key is None:
        raise UsageError("neither EASEML_TESTSET_KEY nor EASEML_LEDGER_KEY is set: only the key "
                         "the gate sealed with can tell its statuses from forged ones")
    context = status_context(gate)
    found = verify_status(GitHubClient(token), repository, sha, context, key)
    if found.verdict == "missing":
        raise UsageError(f"commit {sha[:12]} of {repository} has no status {context}")
    click.echo(f"{found.line} ({context} on {sha[:12]})")
    if found.verdict != "sealed":
        click.echo(f"{context} on {sha[:12]} was not posted by the gate (or not under this key): "
                   "another workflow with statuses: write posted it", err=True)
        sys.exit(1)
