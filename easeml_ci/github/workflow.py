"""The runner's file and stdout protocols: outputs, job summary, annotations, masks.

* Outputs go to the file named by ``$GITHUB_OUTPUT``, always in the multi-line form
  ``name<<DELIM`` … ``DELIM`` with a random delimiter, so no value can forge another output.
* The job summary is appended to ``$GITHUB_STEP_SUMMARY``.
* Annotations are workflow commands on stdout (``::error file=F,line=N,title=T::message``) with
  GitHub's escaping: ``%``, CR and LF in the message; additionally ``:`` and ``,`` in properties.
  Escaping also keeps text from a config (a clause) from smuggling in a command of its own.
* Masks (``::add-mask::``) for the key, the token and the webhook URLs (:func:`mask_secrets`).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO, Iterable, Mapping

from ..atomic import naming_full_disk


def escape_data(text: str) -> str:
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **props: object) -> str:
    """One workflow command line, e.g. ``command("error", "bad", file="a.yml", line=3)``."""
    given = [(k, v) for k, v in props.items() if v is not None and v != ""]
    head = f"::{name}"
    if given:
        head += " " + ",".join(f"{k}={escape_property(str(v))}" for k, v in given)
    return f"{head}::{escape_data(message)}"


def annotate(stream: IO[str], level: str, message: str, *, file: str | None = None,
             line: int | None = None, title: str | None = None) -> None:
    if level not in ("error", "warning", "notice"):
        raise ValueError(f"annotation level must be error, warning or notice, got {level!r}")
    stream.write(command(level, message, file=file, line=line, title=title) + "\n")
    stream.flush()


def mask(stream: IO[str], secret: str | None) -> None:
    """Ask the runner to mask ``secret`` (each line of it) in every later log line."""
    for part in (secret or "").splitlines():
        if part.strip():
            stream.write(f"::add-mask::{escape_data(part)}\n")
    stream.flush()


def mask_secrets(stream: IO[str], *, key: str | None = None, token: str | None = None,
                 webhooks: Iterable[str | None] = ()) -> None:
    """Mask everything secret-derived, before anything else is printed.

    The test-set key first (each line), then the token, then for each webhook URL the pieces
    :func:`easeml_ci.redact.secret_parts` names: the URL, its path and query, and its long path
    segments (Slack's token is the last one). The runner masks secrets passed as
    ``${{ secrets.X }}`` itself, but not a part of one: a log line quoting only the path of the
    webhook would show it.
    """
    from ..redact import secret_parts

    mask(stream, key)
    mask(stream, token)
    seen: set[str] = set()
    for url in webhooks:
        for part in secret_parts(url):
            if part not in seen and "\n" not in part:
                seen.add(part)
                mask(stream, part)


def write_outputs(values: Mapping[str, str], path: str | os.PathLike | None = None) -> bool:
    """Append outputs to ``$GITHUB_OUTPUT`` (or ``path``); False when there is no such file."""
    target = path or os.environ.get("GITHUB_OUTPUT")
    if not target:
        return False
    with naming_full_disk(target, unchanged=False), open(target, "a", encoding="utf-8") as fh:
        for name, value in values.items():
            value = "" if value is None else str(value)
            delim = f"EASEML_{secrets.token_hex(8)}"
            while delim in value:  # astronomically unlikely, but never let a value end the block
                delim = f"EASEML_{secrets.token_hex(8)}"
            fh.write(f"{name}<<{delim}\n{value}\n{delim}\n")
    return True


def append_summary(markdown: str, path: str | os.PathLike | None = None) -> bool:
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    with naming_full_disk(target, unchanged=False), open(target, "a", encoding="utf-8") as fh:
        fh.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return True


def parse_output_file(text: str) -> dict[str, str]:
    """Read a ``$GITHUB_OUTPUT`` file as the runner does (both ``k=v`` and heredoc forms)."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body = []
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"output {name!r}: delimiter {delim!r} never closed")
            i += 1
            out[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        else:
            raise ValueError(f"invalid output line {line!r}")
    return out


def relative_to_workspace(path: str | os.PathLike, workspace: str | None = None) -> str:
    """The path as annotations want it: relative to ``$GITHUB_WORKSPACE`` when inside it."""
    ws = workspace or os.environ.get("GITHUB_WORKSPACE")
    p = Path(path)
    if ws and p.is_absolute():
        try:
            return p.resolve().relative_to(Path(ws).resolve()).as_posix()
        except ValueError:
            return p.as_posix()
    return p.as_posix()
