"""What identifies a model, and a model pair, by content (not by path).

Labels on demand spends one step per model pair (docs/statistics.md §6): a pair checked again is
the same pair only if every byte that shapes its predictions is the same, including the external
data files an ONNX model keeps its weights in (new weights beside the same graph file are
another model) and the rule that turns outputs into labels.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path

from ..errors import InputError
from .git import GIT_PREFIX, parse_git_spec, read_git_blob
from .onnx import external_data_locations, parse_onnx

__all__ = ["model_digest", "models_digest", "pair_digest"]


def _read(where: str, workdir: Path) -> bytes:
    if where.startswith(GIT_PREFIX):
        return read_git_blob(where, workdir)[1]
    path = Path(where)
    path = path if path.is_absolute() else workdir / path
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read model {where}: {exc.strerror or exc}") from None


def model_digest(spec: str, workdir: Path) -> str:
    """SHA-256 of a model's bytes (a path from ``workdir``, or ``git:REF:PATH``), with the
    external data files of an ONNX model."""
    spec = str(spec)
    blob = _read(spec, workdir)
    digest = hashlib.sha256(blob)
    proto = parse_onnx(blob) if spec.endswith(".onnx") and b"location" in blob else None
    for location in sorted(external_data_locations(proto)) if proto is not None else []:
        if spec.startswith(GIT_PREFIX):
            ref, path = parse_git_spec(spec)
            data = _read(f"{GIT_PREFIX}{ref}:{posixpath.join(posixpath.dirname(path), location)}",
                         workdir)
        else:
            data = _read(str(Path(spec).parent / location), workdir)
        digest.update(b"\0" + location.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def pair_digest(new: str, old: str | None, output, workdir: Path) -> str:
    """What identifies a model pair on one test set: the models' contents and the output rule."""
    parts = {"new": model_digest(new, workdir),
             "old": model_digest(old, workdir) if old else None,
             "output": repr(output)}
    text = json.dumps(parts, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()


def models_digest(specs: list[str], output, workdir: Path) -> str:
    """What identifies an ordered set of candidate models (a pick names one by its place)."""
    parts = {"models": [model_digest(spec, workdir) for spec in specs], "output": repr(output)}
    text = json.dumps(parts, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()
