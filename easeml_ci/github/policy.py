"""What the repository's own settings must hold before a run with the key opens anything.

The trust model (docs/threat-model.md): a developer on the team may edit every file of their
branch, workflows included, and push to any branch their token can write. The key is safe only
while GitHub itself keeps it from such code, and the budget only while GitHub keeps the ledger
branch from being rewound. Those are repository settings, so the gate reads them through the API
and refuses (exit 2, nothing opened, nothing decided) while one is missing, naming the setting
and where it is in GitHub's settings:

* :func:`check_ledger_branch_protected` — the ledger branch cannot be force-pushed or deleted:
  the active rules of ``GET /repos/{o}/{r}/rules/branches/{branch}`` (metadata read, which every
  token has) include ``non_fast_forward`` and ``deletion``; or classic branch protection, read
  from ``GET .../branches/{branch}/protection``, has ``allow_force_pushes`` and
  ``allow_deletions`` off. That endpoint needs the Administration permission, which a
  workflow's ``GITHUB_TOKEN`` never has: with that token, use a ruleset.
* :func:`check_run_context` — the run is one of the default branch's own workflow definitions:
  the event is ``workflow_run``, ``push``, ``schedule`` or ``workflow_dispatch`` (never
  ``pull_request`` / ``pull_request_target``, whose workflow or checkout the pull request
  controls), ``GITHUB_REF`` is the default branch and ``GITHUB_WORKFLOW_REF`` names a workflow
  file of this repository at the default branch.
* :func:`check_environment` — the environment that holds the key admits only the default branch:
  ``GET .../environments/{name}`` has a deployment branch policy of custom policies
  (``GET .../environments/{name}/deployment-branch-policies``), each exactly the default
  branch's name (no pattern, no tag). "Protected branches only" is refused: it admits every
  protected branch, the ledger branch included (which has to be protected and which every
  developer may push ordinary commits to), and every branch while no branch is protected.
* :func:`check_default_branch_reviewed` — nobody can put a workflow on the default branch alone:
  its active rules include ``pull_request`` with at least one approval and approvals that do
  not survive a later push (``dismiss_stale_reviews_on_push`` or ``require_last_push_approval``).

What the API cannot show, and docs/action.md asks of the owner: who may bypass a ruleset (that
needs admin to read), and whether the secret is really stored in the environment named here and
nowhere else (repository and organization secrets reach every branch's workflows).
"""
from __future__ import annotations

from ..errors import UsageError
from .api import GitHubClient, GitHubError, GitHubForbidden, GitHubNotFound, repo_path

#: Events whose workflow definition is the default branch's own (with GITHUB_REF checked).
KEYED_EVENTS = ("workflow_run", "push", "schedule", "workflow_dispatch")

RULESETS = "Settings > Rules > Rulesets > New branch ruleset (Enforcement status: Active)"


class UnsafeSetting(UsageError):
    """A repository setting lets code a pull request controls reach the key or the budget."""


def rules_on(client: GitHubClient, repository: str, branch: str,
             what: str = "the default branch") -> list[dict]:
    """The active rules on ``branch`` (from every ruleset: repository and organization)."""
    try:
        rules = list(client.paginate(repo_path(repository, "rules", "branches", branch)))
    except GitHubNotFound:
        return []  # a GitHub (Enterprise Server) without rulesets: classic protection only
    except GitHubError as exc:
        raise UnsafeSetting(f"could not read the rules of branch {branch!r} ({what}) through "
                            f"GET rules/branches: HTTP {exc.status}: {exc.api_message}; "
                            "nothing was opened, run again") from None
    return [r for r in rules if isinstance(r, dict)]


def _classic_protection(client: GitHubClient, repository: str, branch: str) -> dict | None:
    """Classic branch protection of ``branch`` when the token may read it, else None."""
    try:
        got = client.get(repo_path(repository, "branches", branch, "protection"))
    except (GitHubNotFound, GitHubForbidden):
        return None  # not protected, or the token lacks Administration: read (GITHUB_TOKEN)
    except GitHubError as exc:
        raise UnsafeSetting(f"could not read the protection of branch {branch!r}: HTTP "
                            f"{exc.status}: {exc.api_message}; nothing was opened, run again"
                            ) from None
    return got if isinstance(got, dict) else None


def _enabled(protection: dict, key: str) -> bool:
    value = protection.get(key)
    if isinstance(value, dict):
        return bool(value.get("enabled"))
    return bool(value)


def check_ledger_branch_protected(client: GitHubClient, repository: str, branch: str) -> None:
    """Refuse (:class:`UnsafeSetting`, exit 2) unless ``branch`` can be neither force-pushed nor
    deleted. A force-push back to an older state, or a deletion and re-creation, would otherwise
    bring spent budget back; nothing in the ledger could show it.

    Enough: an active ruleset on the branch with both "Restrict deletions" (``deletion``) and
    "Block force pushes" (``non_fast_forward``), or classic protection with "Allow force
    pushes" and "Allow deletions" off, read with a token that has Administration: read.
    """
    types = {str(r.get("type")) for r in rules_on(client, repository, branch, "the ledger branch")}
    missing = [t for t in ("non_fast_forward", "deletion") if t not in types]
    if not missing:
        return
    classic = _classic_protection(client, repository, branch)
    if classic is not None:
        allowed = [k for k in ("allow_force_pushes", "allow_deletions") if _enabled(classic, k)]
        if not allowed:
            return
        raise UnsafeSetting(
            f"the ledger branch {branch!r} of {repository} allows "
            f"{' and '.join(a[len('allow_'):].replace('_', ' ') for a in allowed)} in its "
            "branch protection: a force-push back, or a deletion and re-creation, would give "
            "spent budget back. Untick 'Allow force pushes' and 'Allow deletions' (Settings > "
            f"Branches > the rule for {branch}), or add a ruleset (below); nothing was opened")
    names = {"non_fast_forward": "Block force pushes", "deletion": "Restrict deletions"}
    raise UnsafeSetting(
        f"the ledger branch {branch!r} of {repository} can be "
        f"{' and '.join({'non_fast_forward': 'force-pushed', 'deletion': 'deleted'}[m] for m in missing)}"
        ": a force-push back, or a deletion and re-creation, would give spent budget back. Add a "
        f"ruleset ({RULESETS}) targeting the branch {branch} with "
        f"{' and '.join(repr(names[m]) for m in ('deletion', 'non_fast_forward'))}, and no bypass "
        "for roles developers hold (classic branch protection counts only where the token may "
        "read it: Administration: read, which a workflow's GITHUB_TOKEN never has); nothing was "
        "opened")


def default_branch(client: GitHubClient, repository: str) -> str:
    """The repository's default branch, as the API says (not the event payload)."""
    try:
        got = client.get(repo_path(repository))
    except GitHubError as exc:
        raise UnsafeSetting(f"could not read the default branch of {repository}: HTTP "
                            f"{exc.status}: {exc.api_message}; nothing was opened") from None
    name = got.get("default_branch") if isinstance(got, dict) else None
    if not name:
        raise UnsafeSetting(f"GET repos/{repository} did not name a default branch; nothing "
                            "was opened")
    return str(name)


def check_run_context(*, event_name: str | None, ref: str | None, workflow_ref: str | None,
                      repository: str, default: str) -> None:
    """Refuse unless this run is a workflow definition of the default branch, on it."""
    where = f"refs/heads/{default}"
    if event_name in ("pull_request", "pull_request_target"):
        raise UnsafeSetting(
            f"this job holds the test-set key on a {event_name} event: a pull request runs its "
            "own version of the workflow (pull_request) or can steer what the job checks out and "
            "runs (pull_request_target), so one step it adds can print the key. Gate from the "
            "default branch's workflow instead: the workflow_run split of examples/workflows/ "
            "(easeml-model.yml without secrets on pull_request, easeml-gate-fork-safe.yml with "
            "the key on workflow_run); docs/action.md, 'Migrating from easeml-gate.yml'. Nothing "
            "was opened")
    if event_name not in KEYED_EVENTS:
        raise UnsafeSetting(
            f"this job holds the test-set key on a {event_name or 'unknown'} event; the key may "
            f"only meet the default branch's own workflows, on {', '.join(KEYED_EVENTS)}. "
            "Nothing was opened")
    if ref != where:
        raise UnsafeSetting(
            f"this job holds the test-set key on {ref or 'no ref'} (GITHUB_REF), not on the "
            f"default branch {where}: a branch's workflow is whatever its author wrote. Run the "
            f"keyed job only on {default} (restrict the environment to it: Settings > "
            "Environments > Deployment branches and tags). Nothing was opened")
    if not workflow_ref:
        raise UnsafeSetting(
            "GITHUB_WORKFLOW_REF is not set, so the gate cannot tell which branch's workflow "
            "definition runs this job; use a runner that sets it (GitHub.com, or GitHub "
            "Enterprise Server 3.9 or later). Nothing was opened")
    path, _, at = workflow_ref.rpartition("@")
    if not path.lower().startswith(f"{repository}/.github/workflows/".lower()) or at != where:
        raise UnsafeSetting(
            f"this job's workflow definition is {workflow_ref} (GITHUB_WORKFLOW_REF), not a "
            f"workflow file of {repository} at {where}: only the default branch's own "
            "workflows may hold the key (a reusable workflow called from elsewhere, or a "
            "branch's version, may not). Nothing was opened")


def _deployment_policies(client: GitHubClient, repository: str, environment: str) -> list[dict]:
    out: list[dict] = []
    endpoint = repo_path(repository, "environments", environment, "deployment-branch-policies")
    page = 1
    while True:
        got = client.get(endpoint, per_page=100, page=page)
        items = got.get("branch_policies") if isinstance(got, dict) else None
        if not isinstance(items, list):
            raise UnsafeSetting(f"GET {endpoint} gave no branch_policies list; nothing was opened")
        out += [p for p in items if isinstance(p, dict)]
        total = int(got.get("total_count") or 0)
        if not items or len(out) >= total:
            return out
        page += 1


def check_environment(client: GitHubClient, repository: str, environment: str,
                      default: str) -> None:
    """Refuse unless the environment ``environment`` admits only the default branch."""
    settings = (f"Settings > Environments > {environment} > Deployment branches and tags: "
                f"'Selected branches and tags' with the one rule '{default}' (a branch, no "
                "pattern)")
    if not environment:
        raise UnsafeSetting("input environment is empty: name the environment that holds "
                            f"EASEML_TESTSET_KEY (the job's `environment:`); {settings}. "
                            "Nothing was opened")
    try:
        env = client.get(repo_path(repository, "environments", environment))
    except GitHubNotFound:
        raise UnsafeSetting(
            f"the environment {environment!r} does not exist in {repository} (input "
            "environment names the one the job's `environment:` uses and that holds "
            f"EASEML_TESTSET_KEY): create it, store the key there, and set {settings}. Nothing "
            "was opened") from None
    except GitHubForbidden as exc:
        raise UnsafeSetting(
            f"could not read the environment {environment!r} (HTTP {exc.status}: "
            f"{exc.api_message}): give the job `permissions: actions: read`. Nothing was "
            "opened") from None
    except GitHubError as exc:
        raise UnsafeSetting(f"could not read the environment {environment!r}: HTTP "
                            f"{exc.status}: {exc.api_message}; nothing was opened") from None
    policy = env.get("deployment_branch_policy") if isinstance(env, dict) else None
    if not isinstance(policy, dict):
        raise UnsafeSetting(
            f"the environment {environment!r} admits every branch (no deployment branch "
            "policy): a workflow on any branch can name it and read the key. Set "
            f"{settings}. Nothing was opened")
    if policy.get("protected_branches"):
        raise UnsafeSetting(
            f"the environment {environment!r} admits 'Protected branches only': that is every "
            "protected branch (the ledger branch too, which must be protected and takes "
            "ordinary pushes from every developer), and every branch while none is protected. "
            f"Set {settings}. Nothing was opened")
    if not policy.get("custom_branch_policies"):
        raise UnsafeSetting(f"the environment {environment!r} has a deployment branch policy "
                            f"the gate does not know ({policy}); set {settings}. Nothing was "
                            "opened")
    try:
        rules = _deployment_policies(client, repository, environment)
    except GitHubError as exc:
        raise UnsafeSetting(f"could not read the deployment branch policies of {environment!r}:"
                            f" HTTP {exc.status}: {exc.api_message}; nothing was opened") from None
    extra = [f"{p.get('type', 'branch')} {p.get('name')!r}" for p in rules
             if p.get("type", "branch") != "branch" or p.get("name") != default]
    if extra or not rules:
        what = ", ".join(extra) if extra else "no rule at all"
        raise UnsafeSetting(
            f"the environment {environment!r} admits more than the default branch {default!r} "
            f"({what}): whoever can push such a branch or tag can run a workflow of their own "
            f"there with the key. Set {settings}. Nothing was opened")


def check_default_branch_reviewed(client: GitHubClient, repository: str, default: str) -> None:
    """Refuse unless a commit reaches the default branch only through a reviewed pull request
    (else one developer can push a workflow of their own onto it and read the key)."""
    rules = rules_on(client, repository, default, "the default branch")
    reviewed = [r for r in rules if r.get("type") == "pull_request"
                and int((r.get("parameters") or {}).get("required_approving_review_count") or 0) >= 1
                and ((r.get("parameters") or {}).get("dismiss_stale_reviews_on_push")
                     or (r.get("parameters") or {}).get("require_last_push_approval"))]
    if reviewed:
        return
    raise UnsafeSetting(
        f"the default branch {default!r} of {repository} takes commits no second person "
        "approved: a developer could push a workflow of their own onto it and read the key. Add "
        f"a ruleset ({RULESETS}) targeting {default} with 'Require a pull request before "
        "merging', at least 1 required approval, and 'Dismiss stale pull request approvals when "
        "new commits are pushed' (or 'Require approval of the most recent reviewable push'); "
        "no bypass for roles developers hold. Nothing was opened")


def check_keyed_run(client: GitHubClient | None, *, repository: str | None,
                    event_name: str | None, ref: str | None, workflow_ref: str | None,
                    environment: str, ledger_branch: str | None) -> None:
    """Every check above for a run that holds the key, before anything is opened.

    ``ledger_branch`` is the repository ledger's branch (None for a file ledger)."""
    if client is None or not repository:
        raise UnsafeSetting("a job that holds the test-set key needs github-token (metadata and "
                            "actions: read) and GITHUB_REPOSITORY: the gate reads the "
                            "repository's settings before it opens anything. Nothing was opened")
    default = default_branch(client, repository)
    check_run_context(event_name=event_name, ref=ref, workflow_ref=workflow_ref,
                      repository=repository, default=default)
    check_environment(client, repository, environment, default)
    check_default_branch_reviewed(client, repository, default)
    if ledger_branch:
        check_ledger_branch_protected(client, repository, ledger_branch)
