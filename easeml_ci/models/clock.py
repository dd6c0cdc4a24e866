"""A fixed evaluation time: the models' run on the test set takes exactly as long, whatever they do.

How long a model runs on the test set can depend on the secret features (a loop whose length a
feature sets), and the job's log shows how long each step took: a model could spell out the
features in its running time, one run after another (docs/threat-model.md, "Timing"). With
``evaluation_time: T`` in the config, the evaluation of both models on the test set takes T
seconds: a run that ends sooner waits out the rest, a run still going at T is stopped
(onnxruntime's terminate flag, checked between operators and inside loops) and the model fails
the check (a counted step with the fixed text, as any failure on the test data). What the
timing can still show is whether the gate got that far at all, which does not depend on the
models' run.
"""
from __future__ import annotations

import re
import threading
import time

_UNITS = {"s": 1, "m": 60, "h": 3600}


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
    """Started when the evaluation starts; :attr:`run_options` stop onnxruntime at the deadline,
    :meth:`pad` waits out the rest."""

    def __init__(self, seconds: float, *, clock=time.monotonic, sleep=time.sleep):
        import onnxruntime as ort

        self.seconds = float(seconds)
        self._clock, self._sleep = clock, sleep
        self.start = clock()
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4
        self._timer = threading.Timer(self.seconds, self._stop)
        self._timer.daemon = True
        self._timer.start()

    def _stop(self) -> None:
        self.run_options.terminate = True

    @property
    def expired(self) -> bool:
        return bool(self.run_options.terminate) or self._clock() - self.start >= self.seconds

    def pad(self) -> None:
        """Wait until the deadline (at once when it has passed), then release the timer."""
        left = self.seconds - (self._clock() - self.start)
        if left > 0:
            self._sleep(left)
        self._timer.cancel()
