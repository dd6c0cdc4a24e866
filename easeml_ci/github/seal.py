"""A commit status the gate can tell from a forged one.

Any workflow of the repository whose token has ``statuses: write`` can post a commit status
with any name, ``easeml-ci/<gate>`` included: a developer's branch workflow can mark their own
pull request's head "success" and satisfy a required status check that names only the context.
Two defences, one preventive and one that detects:

* **The source.** A ruleset's required status check can name the GitHub App that must set it.
  The workflow's ``GITHUB_TOKEN`` is the GitHub Actions app for every workflow alike, so that
  helps only when the gate posts with a token of its own App (the Action's ``status-token``
  input, an installation token made in the keyed job from the App's key, which sits in the same
  environment as the test-set key). :func:`status_source_problem` reads the default branch's
  rules and says when the status is not pinned to such an App (the Action warns).
* **The seal.** The gate ends the status description with ``[seal H]``: an HMAC-SHA256 (first
  128 bits) under a key derived from the test-set key (``derive_key(key, "commit-status")``, or
  from ``EASEML_LEDGER_KEY`` where the test set is not encrypted) over the repository, the
  commit, the context, the state and the sentence. Without the key nobody can seal a status;
  copying a seal to another commit, context or state breaks it. :func:`verify_status` (the CLI's
  ``easeml-ci status verify``, run by the owner or a default-branch job in the key's
  environment) tells the latest status of a commit: sealed, forged (no seal, or a wrong one)
  or missing. What a seal does not stop: re-posting an earlier sealed status of the same commit
  and state (it is the gate's own verdict on that commit), and a forged status merged before
  anyone verified it (the verification is an audit; the source pin is the gate).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from ..errors import UsageError
from .api import GitHubClient, GitHubError, repo_path

PURPOSE = "commit-status"
GITHUB_ACTIONS_APP_ID = 15368  # the GitHub Actions app: the source of every GITHUB_TOKEN status
_SEAL = re.compile(r"^(.*) \[seal ([0-9a-f]{32})\]$")
TESTSET_KEY_ENV = "EASEML_TESTSET_KEY"
LEDGER_KEY_ENV = "EASEML_LEDGER_KEY"


def seal_key() -> bytes | None:
    """The sealing key from the test-set key (else the ledger key), or None when neither is set."""
    from ..testsets import crypto

    for name in (TESTSET_KEY_ENV, LEDGER_KEY_ENV):
        if (os.environ.get(name) or "").strip():
            key = crypto.key_from_env(name, purpose="the commit-status seal")
            return crypto.derive_key(key, PURPOSE)
    return None


def _mac(key: bytes, repository: str, sha: str, context: str, state: str, sentence: str) -> str:
    message = "\n".join(("easeml-ci commit status v1", repository.lower(), sha.lower(), context,
                         state, sentence)).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def sealed(key: bytes, repository: str, sha: str, context: str, state: str,
           sentence: str) -> str:
    """The description ``sentence [seal H]``."""
    return f"{sentence} [seal {_mac(key, repository, sha, context, state, sentence)}]"


@dataclass(frozen=True)
class StatusCheck:
    """The latest status ``context`` on a commit: ``sealed``, ``forged`` or ``missing``."""

    verdict: str
    state: str | None = None
    description: str | None = None

    @property
    def line(self) -> str:
        if self.verdict == "missing":
            return "missing: the commit has no such status"
        return f"{self.verdict}: {self.state} \"{self.description}\""


def verify_status(client: GitHubClient, repository: str, sha: str, context: str,
                  key: bytes) -> StatusCheck:
    """Whether the latest ``context`` status on ``sha`` carries the gate's seal."""
    try:
        statuses = list(client.paginate(repo_path(repository, "commits", sha, "statuses")))
    except GitHubError as exc:
        raise UsageError(f"cannot read the statuses of {sha[:12]} in {repository}: HTTP "
                         f"{exc.status}: {exc.api_message}") from None
    latest = next((s for s in statuses if isinstance(s, dict) and s.get("context") == context),
                  None)  # GitHub lists the newest first
    if latest is None:
        return StatusCheck("missing")
    state, description = str(latest.get("state")), str(latest.get("description") or "")
    m = _SEAL.match(description)
    ok = bool(m) and hmac.compare_digest(
        m.group(2), _mac(key, repository, sha, context, state, m.group(1)))
    return StatusCheck("sealed" if ok else "forged", state, description)


def status_source_problem(rules: list[dict], context: str) -> str | None:
    """What lets another workflow post ``context`` in the default branch's ``rules`` (from
    ``GET rules/branches/DEFAULT``), or None when a required check pins it to an App."""
    checks = [c for r in rules if r.get("type") == "required_status_checks"
              for c in ((r.get("parameters") or {}).get("required_status_checks") or [])
              if isinstance(c, dict) and c.get("context") == context]
    if any(c.get("integration_id") not in (None, GITHUB_ACTIONS_APP_ID) for c in checks):
        return None
    how = ("add it to a ruleset's 'Require status checks to pass' with the source set to the "
           "GitHub App whose token the gate posts with (input status-token), not 'any source' "
           "and not GitHub Actions, whose token every workflow holds")
    if not checks:
        return (f"no ruleset on the default branch requires the status {context}, so a merge "
                f"does not wait for the gate; {how}")
    return (f"the status {context} that the default branch requires can be posted by any "
            f"workflow with statuses: write; {how}. Until then `easeml-ci status verify` tells "
            "the gate's sealed statuses from forged ones")
