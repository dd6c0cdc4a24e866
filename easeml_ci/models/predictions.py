"""Prediction files from any framework: ``.csv`` (one prediction per row) or ``.npy``."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..testsets import TestSet
from .git import GIT_PREFIX, read_git_blob
from .onnx import DEFAULT_BATCH_ROWS
from .output import NotLabels, OutputRule, decode_predictions
from .schema import Progress, TestSetSchema

PREDICTION_SUFFIXES = (".csv", ".npy")


# --- prediction files ------------------------------------------------------------------------------

class PredictionFile:
    """A predictions file (``.npy`` / ``.csv``), read whole at once: the team computed it from
    the features, so its problems are named plainly; none of them needs the labels."""

    def __init__(self, source: Path | bytes, name: str, label: str, *,
                 output: OutputRule | None = None):
        self.label = label
        self.output = output
        self.suffix = Path(name).suffix.lower()
        if self.suffix == ".npy":
            self._npy = _read_npy(source, label)
        else:
            self._npy = None
            self._lines = _read_csv_lines(source, label)
        self._decoded: np.ndarray | None = None

    @classmethod
    def from_spec(cls, spec: str, *, repo: Path = Path("."), output: OutputRule | None = None,
                  ) -> "PredictionFile":
        if spec.startswith(GIT_PREFIX):
            name, blob = read_git_blob(spec, repo)
            return cls(blob, name, spec, output=output)
        return cls(Path(spec), Path(spec).name, spec, output=output)

    def _raw(self, n_examples: int | None) -> np.ndarray:
        if self._npy is not None:
            return self._npy
        return _csv_values(self._lines, self.label, n_examples)

    def check(self, schema: TestSetSchema) -> None:
        """Read and decode the predictions; count them when the test set's size is known."""
        raw = self._raw(schema.n_examples)
        try:
            self._decoded = decode_predictions(raw, self.output, schema.label_kind,
                                               f"predictions {self.label}")
        except NotLabels as exc:
            raise InputError(str(exc)) from None
        if schema.n_examples is not None:
            self._check_rows(schema.n_examples, schema.where)

    def _check_rows(self, n: int, where: str) -> None:
        rows = self._decoded.shape[0]
        if rows != n:
            raise InputError(f"predictions from {self.label} have {rows} rows but {where} has "
                             f"{n} examples; one prediction per test example is needed")

    def predictions(self, testset: TestSet, *, batch_size: int = DEFAULT_BATCH_ROWS,
                    progress: Progress | None = None) -> np.ndarray:
        """The file's predictions, checked against the test set (nothing runs on the test data:
        no clock, no child process)."""
        if self._decoded is None:
            self.check(TestSetSchema.of(testset))
        self._check_rows(len(testset), f"the test set {testset.source}")
        return self._decoded


def _read_npy(source: Path | bytes, label: str) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(source) if isinstance(source, bytes) else source, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputError(f"predictions {label} store Python objects (pickled); save a plain "
                             f"numeric or text array") from None
        raise InputError(f"predictions {label} are not a readable .npy file: {exc}") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"predictions {label} are not a readable .npy file: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"predictions {label} hold an .npz archive; save one array with np.save")
    return arr


def _read_csv_lines(source: Path | bytes, label: str) -> np.ndarray:
    """The file's lines, stripped, without trailing blank lines; one column only."""
    try:
        raw = source if isinstance(source, bytes) else Path(source).read_bytes()
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"predictions {label} are not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"cannot read predictions {label}: {exc.strerror or exc}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    values = np.array([ln.strip() for ln in lines], dtype=str) if lines else np.array([], dtype=str)
    if values.size and np.char.find(values, ",").max() >= 0:
        first = int(np.flatnonzero(np.char.find(values, ",") >= 0)[0])
        raise InputError(f"predictions {label}: line {first + 1} has more than one column; "
                         f"write one prediction per line")
    return values


def _csv_values(values: np.ndarray, label: str, expected: int | None) -> np.ndarray:
    """One prediction per row; the first row is a header when it is not a value like the rest,
    or, for text predictions, when the file has exactly one row more than the test set."""
    offset = 1
    if values.size:
        numeric_head = _is_number(values[0])
        rest_numeric = _all_numbers(values[1:])
        if (not numeric_head and rest_numeric and values.size > 1) or (
                not numeric_head and expected is not None and values.size == expected + 1):
            values, offset = values[1:], 2
    empty = np.char.str_len(values) == 0
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        raise InputError(f"predictions {label}: {int(empty.sum())} empty line(s) among the "
                         f"predictions (first at line {first + offset})")
    for dtype in (np.int64, np.float64):
        try:
            return values.astype(dtype)
        except (ValueError, OverflowError):
            continue
    return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _all_numbers(values: np.ndarray) -> bool:
    try:
        values.astype(np.float64)
    except ValueError:
        return False
    return True
