"""A fixed evaluation time: the models' run on the test set takes exactly as long, whatever they do.

How long a model runs on the test set can depend on the secret features (a loop whose length a
feature sets, a MatMul sized by a feature), and the job's log shows how long each step took: a
model could spell out the features in its running time, one run after another
(docs/threat-model.md, "Timing"). With ``evaluation_time: T`` (on runners by default
:data:`RUNNER_DEFAULT`, easeml_ci.config) the evaluation of the models on the test set takes T
seconds: they run in a child process (:mod:`.child`) that is killed (SIGKILL) at the deadline, so
no operator can run past it, and a run that ends sooner waits out the rest. A killed run fails
the check (a counted step with the fixed text, as any failure on the test data). What the timing
can still show is whether the gate got that far at all, which does not depend on the models' run.
"""
from __future__ import annotations

import re
import time

_UNITS = {"s": 1, "m": 60, "h": 3600}

#: ``evaluation_time`` where the config sets none, on a runner (``GITHUB_ACTIONS=true``, the
#: Action). Long enough that an honest model is never stopped (a run of 1M rows through an MLP
#: (128, 128) takes a few seconds, docs/benchmarks.md), short enough that a check that waits
#: it out costs minutes, not the job's six hours. docs/inputs.md says how to choose another.
RUNNER_DEFAULT = 300.0

#: Seconds after the deadline at which the gate releases its answer (prints the verdict, writes
#: the Action's outputs, exits): deciding, completing the step and the reveal take a moment that
#: can depend on how the run ended (a failed model's record goes to the private sink, say); up to
#: this margin that moment is hidden too. Measured: well under 0.1 s with a file ledger on 1M
#: rows (docs/benchmarks.md); a slower ledger backend only makes the answer later, by a time
#: that does not depend on the test set.
RELEASE_MARGIN = 1.0


def parse_duration(value) -> float:
    """Seconds from ``600`` (or ``"600"``), ``"90s"``, ``"10m"``, ``"1h"`` or ``"1h30m"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            text += "s"
        parts = re.fullmatch(r"((?:\d+(?:\.\d+)?[hms])+)", text.replace(" ", ""))
        if not parts:
            raise ValueError(value)
        seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", text))
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(value)
    return seconds


class EvaluationClock:
    """Started when the evaluation starts: :meth:`remaining` is what the child may still run,
    :meth:`pad` waits out the rest. :attr:`stopped` is set when the run was killed at the deadline."""

    def __init__(self, seconds: float, *, clock=time.monotonic, sleep=time.sleep):
        self.seconds = float(seconds)
        self._clock, self._sleep = clock, sleep
        self.start = clock()
        self.stopped = False

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it has passed)."""
        return max(0.0, self.seconds - (self._clock() - self.start))

    @property
    def expired(self) -> bool:
        return self.stopped or self.remaining() <= 0

    def pad(self) -> None:
        """Wait until the deadline (at once when it has passed)."""
        left = self.remaining()
        if left > 0:
            self._sleep(left)

    def release(self, margin: float = RELEASE_MARGIN) -> None:
        """Wait until ``margin`` seconds after the deadline: the moment the answer is released,
        fixed whatever happened between the deadline and now (at once when it has passed)."""
        left = self.seconds + margin - (self._clock() - self.start)
        if left > 0:
            self._sleep(left)
