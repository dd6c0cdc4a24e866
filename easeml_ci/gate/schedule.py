"""The round schedule of a test set labelled on demand under an adaptive mode (issue 17).

``.easeml.yml``::

    rounds:
      every: 24h                     # round length: "Nh" or "Nd"
      start: "2026-12-07T18:00:00Z"  # the end of round 0; round r ends at start + r * every
      labelling: 12h                 # a check submitted at t is in the first round r (r >= 0)
                                     # whose end is >= t + labelling

The round of a check and the time its verdict is released are functions of the submission time
and the registered schedule only (pinned at registration), never of the labels: that is what
lets the team see "pending: verdict at the end of round r (time)" whatever the labels are.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

_UNIT = {"h": 3600, "d": 86400}


def now() -> datetime:
    """The time the gate reads (tests move it)."""
    return datetime.now(timezone.utc)


def parse_every(value) -> int:
    """Seconds from ``"Nh"`` or ``"Nd"`` (N a whole number >= 1 for ``every``, >= 0 for
    ``labelling``); ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([hd])\s*", str(value)) if isinstance(value, str) else None
    if not match:
        raise ValueError(value)
    return int(match.group(1)) * _UNIT[match.group(2)]


def parse_start(value) -> str:
    """A UTC time ``YYYY-MM-DDTHH:MM:SSZ`` (as pinned); ValueError otherwise."""
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?Z", value.strip()):
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    else:
        raise ValueError(value)
    if stamp.tzinfo is None or stamp.utcoffset() != timedelta(0):
        raise ValueError(value)
    return stamp.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def show(time: datetime) -> str:
    """A round's end as the team reads it: ``2026-12-07 18:00 UTC``."""
    return time.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class RoundSchedule:
    """Rounds of ``every`` seconds; round 0 ends at ``start``; ``labelling`` seconds at least
    between a check and the end of its round."""

    every: int
    start: datetime
    labelling: int

    @classmethod
    def from_terms(cls, terms: dict) -> "RoundSchedule":
        """From the pinned ``rounds`` term (``every`` and ``labelling`` in seconds)."""
        start = datetime.fromisoformat(terms["start"].replace("Z", "+00:00"))
        return cls(int(terms["every"]), start, int(terms["labelling"]))

    def round_of(self, submitted: datetime) -> int:
        """The round a check submitted at ``submitted`` belongs to."""
        ready = (submitted - self.start).total_seconds() + self.labelling
        return max(0, math.ceil(ready / self.every))

    def end(self, r: int) -> datetime:
        return self.start + timedelta(seconds=r * self.every)

    def ended(self, r: int, at: datetime) -> bool:
        return at >= self.end(r)

    def describe(self, r: int) -> str:
        """What the team sees about a pending check: the same whatever the labels."""
        return f"pending: verdict at the end of round {r} ({show(self.end(r))})"


__all__ = ["RoundSchedule", "now", "parse_every", "parse_start", "show"]
