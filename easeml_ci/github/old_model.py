"""The old model a check compares with: the base commit's file, unless the registration allows
another (issue 20, attack 5).

A condition on ``n - o`` is as strong as its baseline: a pull request that could name its own
old model (a crafted, bad one) would pass any model. So the Action's ``old-model`` input is
accepted only where it names the base commit's file:

* on a pull request's event, ``git:REF:PATH`` with REF the pull request's base commit (the
  default, ``git:BASE:PATH`` with the new model's path, is one): a file that is already on the
  base commit was reviewed and merged, the pull request cannot have crafted it (the path may
  differ: a pull request may move its model; a weak model still kept on the base commit
  elsewhere is the one thing this allows, docs/threat-model.md row 2k);
* on a push, ``git:REF:PATH`` with REF the push's previous commit (where the default comes from);
* in a job that runs the default branch's workflow on the default branch's checkout (a
  ``workflow_run`` job, a push to the default branch), also ``git:REF:PATH`` with REF that
  commit, or a file of that checkout: the definitions and the files are the reviewed ones;
* anywhere else nothing but the default.

``allow_any_old_model: true`` in the config lifts the rule; it is pinned at registration
(term ``old_model``), so a pull request cannot set it for itself.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import UsageError
from ..models import GIT_PREFIX

PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target")


def _commit(workspace: Path, ref: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(workspace), "rev-parse", "--verify", "--quiet",
                               f"{ref}^{{commit}}"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _on_default_branch(ctx) -> bool:
    if ctx.event_name == "workflow_run":  # GitHub runs only the default branch's definition
        return True
    default = (ctx.event.get("repository") or {}).get("default_branch")
    return (ctx.event_name not in PULL_REQUEST_EVENTS and bool(default)
            and ctx.ref == f"refs/heads/{default}")


def trusted_commits(ctx) -> list[str]:
    """The commits whose files the old model may come from: the one the default old model is
    taken from (a pull request's base, a push's previous commit) and, in a job on the default
    branch, its own commit."""
    pr = ctx.pull_request
    if pr is not None or ctx.event_name in PULL_REQUEST_EVENTS:
        base = ((pr or {}).get("base") or {}).get("sha")
        return [base] if base else []
    before = str(ctx.event.get("before") or "")
    out = [before] if before and set(before) != {"0"} else []
    return out + ([ctx.sha] if ctx.sha and _on_default_branch(ctx) else [])


def _path_of(spec: str, workspace: Path) -> str | None:
    """A model's path inside the repository (``git:REF:PATH``'s PATH, or a workspace file's)."""
    if spec.startswith(GIT_PREFIX):
        parts = spec.split(":", 2)
        return parts[2] if len(parts) == 3 else None
    path = Path(spec)
    path = (path if path.is_absolute() else workspace / path).resolve()
    try:
        return path.relative_to(Path(workspace).resolve()).as_posix()
    except ValueError:
        return None  # outside the workspace (a workflow_run job's downloaded artifact)


def check_old_model(given: str | None, new_model: str, ctx, workspace: Path, cfg) -> None:
    """Refuse (exit 2) an ``old-model`` input that is not the base commit's model file, unless
    the config allows any (``allow_any_old_model: true``, pinned at registration)."""
    if not given or cfg.allow_any_old_model:
        return
    trusted = trusted_commits(ctx)
    new_path = _path_of(new_model, workspace)
    if given.startswith(GIT_PREFIX):
        parts = given.split(":", 2)
        if len(parts) == 3 and _commit(workspace, parts[1]) in trusted:
            return
    elif _on_default_branch(ctx) and _path_of(given, workspace) is not None:
        return  # a file of the default branch's own checkout
    base = trusted[0][:12] if trusted else None
    expected = (f"git:{base}:{new_path or 'PATH'}" if base else
                "nothing but the default here")
    raise UsageError(
        f"input old-model: {given!r} is not the base commit's model ({expected}): the old model "
        "is the baseline every condition on o or d compares with, and a pull request could name "
        "a crafted one. Leave old-model empty (the default is the base commit's file), or set "
        "`allow_any_old_model: true` in the config (pinned when the test set is registered)")
