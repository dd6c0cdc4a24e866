"""Where verdicts go under adaptivity ``none``: a channel the team cannot read.

docs/design.md §2: under ``none`` nobody on the team sees results, which is what lets the planner
split delta over H queries instead of 2^H. The verdict therefore goes to a private sink — a
file outside the repository (appended as JSON lines, mode 0600) or a webhook URL — and the
team-facing output says only that it was withheld.

The sink is validated before anything is evaluated or written to the ledger (bad input, exit
2). Delivery happens after the step is recorded (commit, then reveal); if it then fails, the
step stays spent and :class:`SinkError` says so.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .alert import post_json
from ..errors import EasemlError, UsageError
from ..work_tree import refuse_inside


class SinkError(EasemlError):
    """The verdict was recorded but could not be delivered to the private sink."""


@dataclass(frozen=True)
class PrivateSink:
    """A validated private destination: ``kind`` is "file" or "webhook"."""

    kind: str
    target: str

    def describe(self) -> str:
        if self.kind == "file":
            return f"the private file {self.target}"
        return f"the private webhook at {urlparse(self.target).netloc}"

    def deliver(self, record: dict) -> None:
        if self.kind == "file":
            line = json.dumps(record, sort_keys=True) + "\n"
            try:
                fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise SinkError(f"private_sink: step recorded, but writing {self.target} failed: "
                                f"{exc.strerror}") from None
            return
        delivered, detail = post_json(self.target, record)
        if not delivered:
            raise SinkError(f"private_sink: step recorded, but the webhook did not take the "
                            f"verdict ({detail})")


def validate(spec: str | None, workdir: Path, line: int | None = None) -> PrivateSink:
    """Check the ``private_sink`` setting up front; refuse anything the team could read."""
    where = f"private_sink (line {line})" if line else "private_sink"
    if not spec or not str(spec).strip():
        raise UsageError(
            f"{where}: adaptivity 'none' withholds verdicts from the team, so it needs a private "
            "sink; set private_sink to a file outside the repository or an https:// webhook URL")
    spec = str(spec).strip()
    if "://" in spec:
        url = urlparse(spec)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise UsageError(f"{where}: {spec!r} is not an http(s) URL; allowed: a file path "
                             "outside the repository or an http(s):// webhook URL")
        return PrivateSink("webhook", spec)
    path = Path(spec).expanduser()
    if not path.is_absolute():
        raise UsageError(f"{where}: {spec!r} is a relative path, which would sit inside the "
                         "repository; use an absolute path outside it")
    path = refuse_inside(path, workdir, where, "choose a file outside it")
    if not path.parent.is_dir():
        raise UsageError(f"{where}: directory {path.parent} does not exist")
    if path.is_dir():
        raise UsageError(f"{where}: {path} is a directory; name a file")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise UsageError(f"{where}: {path} is not writable")
    return PrivateSink("file", str(path))
