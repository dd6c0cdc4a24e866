"""Model references of the form ``git:REF:PATH``: a file as it is on a git ref, read with
``git show`` (e.g. the pull request's base commit)."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError

GIT_PREFIX = "git:"


# --- git -----------------------------------------------------------------------------------------

def parse_git_spec(spec: str) -> tuple[str, str]:
    """``git:REF:PATH`` -> (REF, PATH). Refs cannot contain ':', so the first ':' splits."""
    body = spec[len(GIT_PREFIX):]
    ref, sep, path = body.partition(":")
    if not sep or not ref or not path:
        raise InputError(f"model {spec!r} is not of the form git:REF:PATH (for example "
                         f"git:origin/main:models/model.onnx)")
    return ref, path


def run_git(spec: str, repo: Path, *command: str) -> bytes:
    """Run ``git -C repo COMMAND REF:PATH`` for a ``git:REF:PATH`` spec; its stdout, or an
    InputError that names the spec and git's own reason."""
    import subprocess  # here: only a git: model needs it (~3 ms of every check's start)

    ref, path = parse_git_spec(spec)
    if ref.startswith("-"):
        raise InputError(f"model {spec!r}: a git ref cannot start with '-'")
    try:
        done = subprocess.run(["git", "-C", str(repo), *command, f"{ref}:{path}"],
                              capture_output=True, check=False)
    except FileNotFoundError:
        raise InputError(f"model {spec!r}: git is not installed or not on PATH") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = why[-1] if why else f"git exited with {done.returncode}"
        raise InputError(f"model {spec!r}: cannot read {path!r} at ref {ref!r} in {repo}: {reason}")
    return done.stdout


def read_git_blob(spec: str, repo: Path) -> tuple[str, bytes]:
    """The bytes of PATH as it is on REF, via ``git show`` (into memory, nothing on disk)."""
    ref, path = parse_git_spec(spec)
    blob = run_git(spec, repo, "show")
    if blob.startswith(b"version https://git-lfs.github.com/spec/"):
        raise InputError(f"model {spec!r} is a Git LFS pointer on {ref}; fetch the LFS objects "
                         f"(`git lfs fetch origin {ref}`) or name a predictions file instead")
    return path, blob
