"""Where the team can read: the repository's work tree.

A private sink (verdicts under ``adaptivity: none``) and a label store (the labels of a test set
labelled on demand, and their count and timing) must sit where the team cannot read them. Both
are refused inside the repository's work tree by :func:`refuse_inside` (docs/threat-model.md).
"""
from __future__ import annotations

from pathlib import Path

from .errors import UsageError


def repository_root(workdir: Path) -> Path:
    """The git work tree enclosing ``workdir``, or ``workdir`` itself outside git."""
    workdir = Path(workdir).resolve()
    return enclosing_work_tree(workdir) or workdir


def enclosing_work_tree(path: Path) -> Path | None:
    """The git work tree (a folder holding ``.git``) that holds ``path``, or None."""
    path = Path(path).resolve()
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def inside(path: Path, root: Path) -> bool:
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def refuse_inside(path: Path, workdir: Path, where: str, advice: str, *,
                  also: Path | None = None) -> Path:
    """``path`` resolved, refused (exit 2) inside the repository of ``workdir`` (the work tree
    enclosing it, or ``workdir`` itself outside git) or inside the git work tree that holds
    ``also`` (the test set a label store belongs to)."""
    resolved = Path(path).expanduser().resolve()
    roots = [repository_root(workdir)]
    if also is not None and enclosing_work_tree(Path(also).parent) is not None:
        roots.append(enclosing_work_tree(Path(also).parent))
    for root in roots:
        if inside(resolved, root):
            raise UsageError(f"{where}: {resolved} is inside the repository {root}, where the "
                             f"team can read it; {advice}")
    return resolved
