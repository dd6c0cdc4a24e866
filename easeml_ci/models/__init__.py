"""Turning a model reference into one prediction per test example, without leaking the test set.

A model reference (``--new`` / ``--old``) is one of

* an ``.onnx`` file, run with onnxruntime in large batches (weights may sit in external data
  files beside it, as PyTorch exports them);
* a predictions file from any framework: ``.csv`` (one prediction per row, optional header) or
  ``.npy`` (1-D labels, or 2-D scores with ``output: argmax``);
* ``git:REF:PATH`` — either of the above as it is on a git ref (e.g. the pull request's base
  branch), read with ``git show``; an ONNX model with external data is materialised, with its
  data files from the same tree, in a private temporary folder that is gone once it is loaded.

Two phases, because everything a model's run on the test data shows may depend on the secret
features (docs/design.md, §2: every observable is part of the transcript):

1. :func:`preflight` checks all that can be checked *without* the test set: the file, the
   ONNX graph (one 2-D input, its type, a dynamic batch dimension, the feature count), a run on
   synthetic input (rows out == rows in, and the output decodes to labels of the test set's
   kind), and a predictions file's contents. Its errors are :class:`InputError` (exit 2) and
   may say anything: nothing in them comes from the test data.
2. :func:`load_predictions` runs the model on the test set. Any failure there — an exception in
   onnxruntime, an output of the wrong length, NaN, scores where labels were due — raises
   :class:`ModelFailedOnTestSet`, whose message is fixed (the full text is in ``.detail``, for
   the owner's private channel). Prediction files were computed by the team, who had the
   features: their errors stay clear :class:`InputError` messages (row count, kind), and none
   of them echoes a label of the test set.

Outputs are labels, or declared scores (the ``output`` key of ``.easeml.yml``,
:class:`OutputRule`): an integer or text output is a label; a float output whose values are
whole numbers is a label too; any other float output (a logit, a probability, one score per
class) is refused unless ``output`` says how to decode it — ``{threshold: T}`` for one score
column, ``argmax`` for one column per class. Comparing raw scores with labels would fail the
model silently and spend a step.

ONNX conventions (what skl2onnx exports): one 2-D input (``[N, features]``), to which the test
set's float32 features are cast; the output read is the first integer/text tensor whose name
contains ``label``, else the first integer/text tensor, else the first float tensor. A ``ZipMap``
(skl2onnx's list-of-dicts probabilities) is cut out of the graph before the session is built: it
is never needed for a label and costs more than the model itself. Why the care about speed: the
gate's promise is that a check costs little more than running the two models; see
``bench/check_overhead.py``.
"""
from __future__ import annotations

import io
import math
import os
import posixpath
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError, ModelFailedOnTestSet
from ..testsets import TestSet

# Rows per onnxruntime call. Measured on 1M rows x 20 features (bench/check_overhead.py): an MLP
# (128, 128) run on the whole array peaks at +1 GB of activations and is *slower* than batches
# (16,384 rows: +43 MB; 8,192 rows: +27 MB, same speed); a 100-tree ensemble costs the same CPU
# time at any batch size. Per-call overhead is ~0.1 ms, about 1% of an 8k-row batch. Wide
# inputs get fewer rows (at most 32 MiB of input per call).
DEFAULT_BATCH_ROWS = 8_192
_MAX_BATCH_INPUT_BYTES = 32 * 1024 * 1024
GIT_PREFIX = "git:"
PREDICTION_SUFFIXES = (".csv", ".npy")
MODEL_SUFFIXES = (".onnx",) + PREDICTION_SUFFIXES
LABEL_KINDS = ("integer", "float", "text")
SYNTHETIC_ROWS = (2, 5)  # rows of preflight's two synthetic batches (see _synthetic_inputs)

_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_LABEL_TENSORS = ("tensor(int64)", "tensor(int32)", "tensor(int16)", "tensor(int8)",
                  "tensor(uint64)", "tensor(uint32)", "tensor(uint16)", "tensor(uint8)",
                  "tensor(bool)", "tensor(string)")
_SCORE_TENSORS = ("tensor(float)", "tensor(double)", "tensor(float16)")

Progress = Callable[[int, int], None]


# --- what is known about the test set without its data ---------------------------------------

def label_kind_of(y: np.ndarray) -> str:
    """``integer``, ``float`` or ``text``: the kind of a canonical label vector (its dtype only)."""
    kind = np.asarray(y).dtype.kind
    if kind in "biu":
        return "integer"
    if kind == "f":
        return "float"
    if kind in "US":
        return "text"
    raise ValueError(f"labels of dtype {np.asarray(y).dtype} have no label kind")


@dataclass(frozen=True)
class TestSetSchema:
    """The shape of a test set, not its data: what :func:`preflight` checks a model against.

    Any field may be ``None`` (not known yet); the checks that need it then wait for
    :func:`load_predictions`. The encrypted format's clear-text header does not carry these
    (only the fingerprint and sizes), so before decryption they must come from elsewhere, for
    example the test set's registration entry (:meth:`to_dict` / :meth:`from_dict`).
    """

    __test__ = False  # not a pytest class

    n_features: int | None = None
    label_kind: str | None = None
    n_examples: int | None = None
    feature_dtype: Any = np.float32
    source: str | None = None  # names the test set in messages

    def __post_init__(self):
        if self.label_kind is not None and self.label_kind not in LABEL_KINDS:
            raise ValueError(f"label_kind must be one of {', '.join(LABEL_KINDS)} or None, "
                             f"got {self.label_kind!r}")

    @classmethod
    def of(cls, testset: TestSet) -> "TestSetSchema":
        """The schema of a test set; of one labelled on demand (no ``y``), no label kind yet."""
        y = getattr(testset, "y", None)
        return cls(n_features=int(testset.X.shape[1]),
                   label_kind=label_kind_of(y) if y is not None else None,
                   n_examples=len(testset), feature_dtype=testset.X.dtype,
                   source=str(testset.source))

    def to_dict(self) -> dict:
        return {"n_features": self.n_features, "label_kind": self.label_kind,
                "n_examples": self.n_examples, "feature_dtype": np.dtype(self.feature_dtype).str}

    @classmethod
    def from_dict(cls, data: dict) -> "TestSetSchema":
        return cls(n_features=data.get("n_features"), label_kind=data.get("label_kind"),
                   n_examples=data.get("n_examples"),
                   feature_dtype=np.dtype(data.get("feature_dtype", "<f4")))

    @property
    def where(self) -> str:
        return f"the test set {self.source}" if self.source else "the test set"


# --- how scores become labels: the `output` key -------------------------------------------

OUTPUT_ALLOWED = ("`argmax` (one score column per class; column i is class i), "
                  "`{argmax: [class0, class1, ...]}` (column i is the i-th class named), or "
                  "`{threshold: NUMBER}` with optional `classes: [negative, positive]` (one score "
                  "column; a score >= NUMBER is the positive class, by default 1, else 0)")


@dataclass(frozen=True)
class OutputRule:
    """How a model's float scores become labels (``output:`` in ``.easeml.yml``).

    ``argmax``: one score column per class; the label is the column with the highest score,
    column i standing for ``classes[i]`` (default: the integer i). ``threshold``: one score
    column; a score ``>= threshold`` is ``classes[1]`` (default 1), else ``classes[0]`` (0).
    The classes are never taken from the test set's labels: a decoding that depended on which
    classes the test set happens to hold would shift every column when one is missing, and an
    error about it would reveal the labels.
    """

    kind: str                               # "argmax" | "threshold"
    threshold: float | None = None
    classes: tuple | None = None

    @classmethod
    def parse(cls, value: Any) -> "OutputRule":
        """From the YAML value; a ValueError says what is allowed."""
        if isinstance(value, OutputRule):
            return value
        if value == "argmax":
            return cls("argmax")
        if isinstance(value, dict) and set(value) == {"argmax"}:
            return cls("argmax", classes=_classes(value["argmax"], "output.argmax", None))
        if isinstance(value, dict) and "threshold" in value and set(value) <= {"threshold", "classes"}:
            t = value["threshold"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                raise ValueError(f"output.threshold to be a finite number (e.g. 0.5 for a "
                                 f"probability, 0 for a logit), got {t!r}")
            classes = _classes(value["classes"], "output.classes", 2) if "classes" in value else None
            return cls("threshold", threshold=float(t), classes=classes)
        raise ValueError(OUTPUT_ALLOWED)

    def as_config(self) -> Any:
        """The value as it is written in ``.easeml.yml`` (for records and messages)."""
        if self.kind == "argmax":
            return {"argmax": list(self.classes)} if self.classes else "argmax"
        out: dict = {"threshold": self.threshold}
        if self.classes:
            out["classes"] = list(self.classes)
        return out

    def __str__(self) -> str:
        value = self.as_config()
        if isinstance(value, str):
            return value
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"

    @property
    def label_kind(self) -> str:
        """The kind of label this rule produces."""
        if self.classes and isinstance(self.classes[0], str):
            return "text"
        return "integer"


def _classes(value: Any, key: str, count: int | None) -> tuple:
    want = f"exactly {count}" if count else "at least 2"
    if not isinstance(value, list) or len(value) < 2 or (count and len(value) != count):
        raise ValueError(f"{key} to be a list of {want} class labels, e.g. "
                         f"{'[ham, spam]' if count == 2 else '[cat, dog, bird]'}, got {value!r}")
    if any(isinstance(v, bool) for v in value):
        raise ValueError(f"{key} to hold numbers or text, got {value!r} (YAML reads yes/no/"
                         f"true/false as booleans: quote them, e.g. ['no', 'yes'])")
    if not (all(isinstance(v, int) for v in value) or all(isinstance(v, str) for v in value)):
        raise ValueError(f"{key} to be all integers or all text, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{key} to name each class once, got {value!r}")
    return tuple(value)


class _NotLabels(Exception):
    """An output that cannot be read as labels; the text says why (it may quote the output)."""


def decode_predictions(raw: np.ndarray, rule: OutputRule | None, label_kind: str | None,
                       what: str) -> np.ndarray:
    """One label per row from a model's raw output, by ``rule``; ``_NotLabels`` otherwise.

    Labels come out in the conventions of :mod:`easeml_ci.testsets` (int64 or text). Never reads
    the test set's labels: ``label_kind`` is their dtype's kind only (``None``: not known yet,
    and the checks that need it wait).
    """
    arr = np.asarray(raw)
    if arr.dtype.kind == "O":
        arr = arr.astype(str)
    if arr.dtype.kind == "S":
        try:
            arr = np.char.decode(arr, "utf-8")
        except UnicodeDecodeError:
            raise _NotLabels(f"{what} holds bytes that are not UTF-8 text") from None
    argmax = rule is not None and rule.kind == "argmax"
    if arr.ndim == 2 and arr.shape[1] == 1 and not argmax:
        arr = arr[:, 0]
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.dtype.kind == "U"):
        raise _NotLabels(f"{what} has shape {arr.shape}; expected one label per example (1-D), "
                         f"or one score column per class (2-D) with `output: argmax`")
    if arr.dtype.kind == "U":
        if label_kind in (None, "text"):
            return np.ascontiguousarray(arr)
        try:  # text that holds numbers ("1", "0"): a CSV export of numeric labels
            arr = arr.astype(np.float64)
        except ValueError:
            raise _NotLabels(f"{what} are text but {_labels(label_kind)}; the model must predict "
                             f"the same kind of label") from None
    if arr.dtype.kind not in "biuf":
        raise _NotLabels(f"{what} has unsupported dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.flatnonzero(bad.reshape(arr.shape[0], -1).any(axis=1))[0])
            raise _NotLabels(f"{what} holds {int(bad.sum())} NaN or infinite value(s) (first in "
                             f"row {first}); a prediction must be a label or a finite score")
    preds = _to_labels(arr, rule, label_kind, what)
    if label_kind == "text" and preds.dtype.kind != "U":
        hint = (" name the classes in the output rule (e.g. `output: {argmax: [cat, dog]}` or "
                "`classes: [ham, spam]`), or" if rule is not None or arr.dtype.kind == "f" else "")
        raise _NotLabels(f"{what} are numbers but {_labels(label_kind)};{hint} the model must "
                         f"predict the same kind of label")
    if label_kind in ("integer", "float") and preds.dtype.kind == "U":
        raise _NotLabels(f"{what} are text (output rule {rule}) but {_labels(label_kind)}; name "
                         f"numeric classes or none")
    return preds


def _labels(label_kind: str | None) -> str:
    return {"text": "the test set has text labels"}.get(label_kind, "the test set has numeric labels")


def _to_labels(arr: np.ndarray, rule: OutputRule | None, label_kind: str | None,
               what: str) -> np.ndarray:
    if arr.ndim == 2:
        if rule is None or rule.kind != "argmax":
            raise _NotLabels(
                f"{what} holds {arr.shape[1]} scores per example, not a label; if column i "
                f"scores class i, declare `output: argmax` in .easeml.yml (or `output: {{argmax: "
                f"[class0, class1, ...]}}` to name the class of each column)"
                + ("" if rule is None else f" instead of `output: {rule}`, which reads one score "
                                           f"column"))
        if rule.classes and arr.shape[1] != len(rule.classes):
            raise _NotLabels(f"{what} holds {arr.shape[1]} scores per example, but `output: "
                             f"{rule}` names {len(rule.classes)} classes; name one class per "
                             f"column")
        if arr.shape[1] < 2:
            raise _NotLabels(f"{what} holds one score per example; `output: argmax` needs one "
                             f"column per class (declare `output: {{threshold: T}}` instead)")
        index = np.argmax(arr, axis=1)
        return np.asarray(rule.classes)[index] if rule.classes else index.astype(np.int64)
    if arr.dtype.kind in "biu":  # integers are labels, whatever rule is declared for scores
        return arr.astype(np.int64, copy=False)
    if rule is not None and rule.kind == "argmax":
        raise _NotLabels(f"{what} holds one score per example; `output: {rule}` needs one score "
                         f"column per class (declare `output: {{threshold: T}}` for one column)")
    if rule is not None:  # threshold
        classes = np.asarray(rule.classes if rule.classes else (0, 1))
        return classes[(arr >= rule.threshold).astype(np.intp)]
    with np.errstate(invalid="ignore"):
        as_int = arr.astype(np.int64)
    whole = as_int == arr
    if whole.all():
        return as_int
    if label_kind in (None, "float", "text"):  # undecided, float labels, or refused by the caller
        return arr.astype(np.float64, copy=False)
    example = float(arr[np.flatnonzero(~whole)[0]])
    raise _NotLabels(
        f"{what} holds non-integer numbers (such as {example:.4g}): scores, not labels, while "
        f"the test set has integer labels; declare how to read them in .easeml.yml: "
        f"`output: {{threshold: T}}` for one score per example (a score >= T is class 1, else "
        f"0; e.g. 0.5 for a probability, 0 for a logit)")


# --- entry points ----------------------------------------------------------------------------

def accuracy(model, data: TestSet, *, what: str) -> float:
    """The model's accuracy on a labelled set the team holds itself (``what`` names it in
    errors, which may say anything: the set is the team's own)."""
    try:
        pred = load_predictions(model, data)
    except InputError as exc:  # the messages say "the test set"; here it is the team's set
        raise InputError(exc.message.replace("the test set", what)) from None
    return float(np.mean(pred == data.y))


def locate(spec: str, workdir: Path) -> str:
    """A model reference as given on the command line: a path from ``workdir``, or git:REF:PATH."""
    spec = str(spec)
    if spec.startswith(GIT_PREFIX) or Path(spec).is_absolute():
        return spec
    return str(Path(workdir) / spec)


def preflight(spec, *, n_features: int | None = None, label_kind: str | None = None,
              n_examples: int | None = None, feature_dtype: Any = np.float32,
              repo: Path = Path("."), output: OutputRule | str | dict | None = None,
              source: str | None = None) -> "OnnxModel | PredictionFile":
    """Open the model named by ``spec`` and check all that can be checked without the test set.

    Call it before the test set is decrypted, with what is known of its schema (``None`` for
    the unknown: those checks wait for :func:`load_predictions`). Every problem is an
    :class:`InputError` (exit 2) whose text comes from the model and synthetic input only.
    Returns the opened model; hand it to :func:`load_predictions` to evaluate it without
    loading it again.
    """
    schema = TestSetSchema(n_features=n_features, label_kind=label_kind, n_examples=n_examples,
                           feature_dtype=feature_dtype, source=source)
    model = open_model(spec, repo=repo, output=output)
    model.check(schema)
    return model


def load_predictions(model, testset: TestSet, *, repo: Path = Path("."),
                     output: OutputRule | str | dict | None = None,
                     batch_size: int = DEFAULT_BATCH_ROWS, progress: Progress | None = None,
                     clock=None) -> np.ndarray:
    """One label per test example for ``model``: a spec (``repo`` and ``output`` apply), or the
    model :func:`preflight` returned (its own repo and output rule apply).

    First finishes the checks preflight could not make without the test set's schema
    (:class:`InputError`); then runs the model on the test data, where any failure of an ONNX
    model is a :class:`ModelFailedOnTestSet` with a fixed message. ``progress(done, total)``
    is called after each ONNX batch. ``clock``: an :class:`~easeml_ci.models.clock.EvaluationClock`
    whose deadline stops an ONNX model's run (a failure on the test set).
    """
    schema = TestSetSchema.of(testset)
    if isinstance(model, (OnnxModel, PredictionFile)):
        model.check(schema)
    else:
        model = open_model(model, repo=repo, output=output)
        model.check(schema)
    return model.predictions(testset, batch_size=batch_size, progress=progress, clock=clock)


def open_model(spec, *, repo: Path = Path("."), output: OutputRule | str | dict | None = None,
               ) -> "OnnxModel | PredictionFile":
    """The model or predictions file named by ``spec``, opened but not yet checked or run."""
    spec = str(spec)
    rule = _rule(output)
    validate_model_spec(spec, repo, check_ref=False)
    name = parse_git_spec(spec)[1] if spec.startswith(GIT_PREFIX) else spec
    if Path(name).suffix.lower() == ".onnx":
        return OnnxModel.from_spec(spec, repo=repo, output=rule)
    return PredictionFile.from_spec(spec, repo=repo, output=rule)


def _rule(output) -> OutputRule | None:
    if output is None:
        return None
    try:
        return OutputRule.parse(output)
    except ValueError as exc:
        raise InputError(f"output rule {output!r}: expected {exc}") from None


def validate_model_spec(spec: str, repo: Path = Path("."), *, check_ref: bool = True) -> None:
    """Cheap up-front check of a model reference (extension, file, git ref and path) without
    reading or running the model, so a check can refuse a typo before decrypting anything."""
    spec = str(spec)
    if spec.startswith(GIT_PREFIX):
        _, path = parse_git_spec(spec)
        name, label = path, spec
    else:
        _check_file(Path(spec))
        name, label = Path(spec).name, spec
    if Path(name).suffix.lower() not in MODEL_SUFFIXES:
        raise InputError(f"model {label} has extension {Path(name).suffix or '(none)'!r}; allowed: "
                         f"{', '.join(MODEL_SUFFIXES)} or git:REF:PATH to one of those")
    if spec.startswith(GIT_PREFIX) and check_ref:
        _git(spec, repo, "cat-file", "-e")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    if path.is_dir():
        raise InputError(f"model {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"model {path} is not readable (permission denied)")


# --- git -----------------------------------------------------------------------------------------

def parse_git_spec(spec: str) -> tuple[str, str]:
    """``git:REF:PATH`` -> (REF, PATH). Refs cannot contain ':', so the first ':' splits."""
    body = spec[len(GIT_PREFIX):]
    ref, sep, path = body.partition(":")
    if not sep or not ref or not path:
        raise InputError(f"model {spec!r} is not of the form git:REF:PATH (for example "
                         f"git:origin/main:models/model.onnx)")
    return ref, path


def _git(spec: str, repo: Path, *command: str) -> bytes:
    """Run ``git -C repo COMMAND REF:PATH`` for a ``git:REF:PATH`` spec; its stdout, or an
    InputError that names the spec and git's own reason."""
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
    blob = _git(spec, repo, "show")
    if blob.startswith(b"version https://git-lfs.github.com/spec/"):
        raise InputError(f"model {spec!r} is a Git LFS pointer on {ref}; fetch the LFS objects "
                         f"(`git lfs fetch origin {ref}`) or name a predictions file instead")
    return path, blob


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
        except _NotLabels as exc:
            raise InputError(str(exc)) from None
        if schema.n_examples is not None:
            self._check_rows(schema.n_examples, schema.where)

    def _check_rows(self, n: int, where: str) -> None:
        rows = self._decoded.shape[0]
        if rows != n:
            raise InputError(f"predictions from {self.label} have {rows} rows but {where} has "
                             f"{n} examples; one prediction per test example is needed")

    def predictions(self, testset: TestSet, *, batch_size: int = DEFAULT_BATCH_ROWS,
                    progress: Progress | None = None, clock=None) -> np.ndarray:
        """The file's predictions, checked against the test set (``clock`` is not needed:
        nothing runs on the test data)."""
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


# --- ONNX ----------------------------------------------------------------------------------------

def _whole(exc: BaseException) -> str:
    """An exception's whole text on one line (onnxruntime's span several)."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return text or type(exc).__name__


def parse_onnx(blob: bytes):
    """The ModelProto of ``blob`` without loading external data; None if it does not parse
    (onnxruntime then says why, in its own words)."""
    import onnx

    try:
        return onnx.load_from_string(blob)
    except Exception:  # noqa: BLE001 - protobuf raises its own types; reported by onnxruntime
        return None


def _all_tensors(graph):
    """Every TensorProto in a graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def external_data_locations(model_proto) -> list[str]:
    """The external data files a model's tensors point to (relative to the model's folder)."""
    from onnx import TensorProto

    seen: list[str] = []
    for tensor in _all_tensors(model_proto.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((kv.value for kv in tensor.external_data if kv.key == "location"), "")
        if location not in seen:
            seen.append(location)
    return seen


def _check_location(location: str, label: str) -> None:
    """External data must lie beside the model: a path out of its folder could make the model's
    weights (and so its outputs, and the messages about them) out of any file on the runner."""
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if not location or location.startswith(("/", "\\")) or ".." in parts or (
            len(location) > 1 and location[1] == ":"):
        raise InputError(f"ONNX model {label} keeps weights in external data {location!r}, "
                         f"outside its own folder; easeml-ci reads external data only from files "
                         f"in the model's folder (export with a relative location such as "
                         f"'model.onnx.data')")


def _check_local_external(path: Path, locations: list[str], label: str) -> None:
    folder = path.parent.resolve()
    for location in locations:
        _check_location(location, label)
        data = path.parent / location
        if data.is_symlink() or not data.resolve().is_relative_to(folder):
            raise InputError(f"ONNX model {label} keeps weights in {data}, a symbolic link; "
                             f"easeml-ci reads external data only from plain files in the "
                             f"model's folder")
        if not data.is_file():
            raise InputError(f"ONNX model {label} keeps its weights in the external data file "
                             f"{data}, which does not exist; put it beside the model (PyTorch "
                             f"writes it next to the .onnx file: commit both)")


def _strip_zipmap(model) -> bytes:
    """Remove skl2onnx's ZipMap nodes (probabilities as a list of dicts): we never need them,
    and building millions of Python-visible maps dominates the run time when they are present."""
    import onnx
    from onnx import helper

    graph = model.graph
    zipmaps = [n for n in graph.node if n.op_type == "ZipMap"]
    dropped = {n.output[0]: n.input[0] for n in zipmaps}
    for node in zipmaps:
        graph.node.remove(node)
    kept = [o for o in graph.output if o.name not in dropped]
    del graph.output[:]
    graph.output.extend(kept)
    if not any(o.type.HasField("tensor_type") for o in kept):
        for src in dropped.values():  # keep the probabilities tensor for an argmax
            graph.output.append(helper.make_tensor_value_info(src, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


def _synthetic_inputs(width: int, feature_dtype, input_dtype: np.dtype):
    """Made-up feature rows for preflight: zeros, then standard normal values (small
    non-negative integers for an integer input, which may index a table). Two batch sizes, so
    an output that does not follow the batch is seen; neither is 1, which some exports squeeze
    to a scalar."""
    rng = np.random.default_rng(0)
    zeros_rows, random_rows = SYNTHETIC_ROWS
    yield "zeros", np.zeros((zeros_rows, width), dtype=feature_dtype)
    if input_dtype.kind in "iu":
        yield "small integers", rng.integers(0, 4, size=(random_rows, width)).astype(feature_dtype)
    else:
        yield "standard normal values", rng.normal(size=(random_rows, width)).astype(feature_dtype)


class _RunFailed(Exception):
    """onnxruntime failed while running the model; the text is onnxruntime's, whole."""


class OnnxModel:
    """An onnxruntime session plus the conventions to get labels out of it.

    ``source`` is the model's path (external data files are read from its folder) or its bytes
    (a model with external data cannot be built from bytes: use :meth:`from_spec`).
    """

    def __init__(self, source: Path | bytes, label: str, *, output: OutputRule | None = None,
                 session_options=None):
        import onnxruntime as ort

        self.label = label
        self.output = _rule(output)
        path = None if isinstance(source, (bytes, bytearray)) else Path(source)
        try:
            blob = bytes(source) if path is None else path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read model {label}: {exc.strerror or exc}") from None
        self.size_bytes = len(blob)
        target: str | bytes = blob
        if b"ZipMap" in blob or b"location" in blob:  # cheap screens before parsing the graph
            proto = parse_onnx(blob)
            external = external_data_locations(proto) if proto is not None else []
            if external:
                if path is None:
                    raise InputError(f"ONNX model {label} keeps its weights in external data "
                                     f"({', '.join(map(repr, external))}), which cannot be read "
                                     f"from memory; load it from its path")
                _check_local_external(path, external, label)
                # ZipMap stays: cutting it out would need the weights in memory. It costs time,
                # not correctness (the label output is read, never the maps).
                target = str(path)
            elif proto is not None and any(n.op_type == "ZipMap" for n in proto.graph.node):
                target = _strip_zipmap(proto)
        if session_options is None:
            session_options = ort.SessionOptions()
            # Batches all have one shape, so the memory-pattern plan buys no measurable speed,
            # but it holds a second block for the intermediates (+17 MB vs +9 MB for an MLP
            # (128, 128) on 8k-row batches).
            session_options.enable_mem_pattern = False
        # onnxruntime logs a failed run's error to the process's stderr itself, before raising:
        # shapes and sizes computed from the secret features, in the job's public log. Only
        # fatal messages; the error still reaches us as the exception (the private detail).
        session_options.log_severity_level = 4
        try:
            self.session = ort.InferenceSession(target, sess_options=session_options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise InputError(f"cannot load ONNX model {label}: {_whole(exc)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputError(f"ONNX model {label} has {len(inputs)} inputs "
                             f"({', '.join(i.name for i in inputs)}); easeml-ci feeds one 2-D "
                             f"feature tensor (export with a single input)")
        self.input = inputs[0]
        if self.input.type not in _ONNX_DTYPES:
            raise InputError(f"ONNX model {label} takes {self.input.type}; easeml-ci can feed "
                             f"{', '.join(sorted(_ONNX_DTYPES))}")
        self.input_dtype = np.dtype(_ONNX_DTYPES[self.input.type])
        self.output_name, self.output_rule = self._choose_output(self.session.get_outputs())

    @classmethod
    def from_spec(cls, spec: str, *, repo: Path = Path("."), output: OutputRule | None = None,
                  ) -> "OnnxModel":
        """A path, or ``git:REF:PATH``: with external data, the model and its data files are
        written from that tree to a private temporary folder, loaded, and the folder removed."""
        spec = str(spec)
        if not spec.startswith(GIT_PREFIX):
            return cls(Path(spec), spec, output=output)
        ref, path = parse_git_spec(spec)
        _, blob = read_git_blob(spec, repo)
        proto = parse_onnx(blob) if b"location" in blob else None
        external = external_data_locations(proto) if proto is not None else []
        if not external:
            return cls(blob, spec, output=output)
        with tempfile.TemporaryDirectory(prefix="easeml-model-") as tmp:  # mode 0700
            folder = Path(tmp)
            for location in external:
                _check_location(location, spec)
                data_path = posixpath.join(posixpath.dirname(path), location)
                try:
                    _, data = read_git_blob(f"{GIT_PREFIX}{ref}:{data_path}", repo)
                except InputError as exc:
                    raise InputError(f"ONNX model {spec} keeps its weights in the external data "
                                     f"file {location!r}, which is not readable on {ref}: "
                                     f"{exc.message}") from None
                target = folder / location
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            model_file = folder / posixpath.basename(path)
            model_file.write_bytes(blob)
            return cls(model_file, spec, output=output)

    @property
    def n_features(self) -> int | None:
        shape = self.input.shape
        if len(shape) == 2 and isinstance(shape[1], int):
            return shape[1]
        return None

    def _choose_output(self, outputs: Sequence) -> tuple[str, str]:
        tensors = [o for o in outputs if str(o.type).startswith("tensor(")]
        for o in tensors:
            if "label" in o.name.lower() and o.type in _LABEL_TENSORS:
                return o.name, "label"
        for o in tensors:
            if o.type in _LABEL_TENSORS:
                return o.name, "label"
        for o in tensors:
            if o.type in _SCORE_TENSORS:
                return o.name, "scores"
        raise InputError(f"ONNX model {self.label} has no tensor output to read predictions from "
                         f"(outputs: {', '.join(f'{o.name} {o.type}' for o in outputs)})")

    # --- checks without the test set ----------------------------------------------------------

    def check(self, schema: TestSetSchema) -> None:
        """Everything checkable without the test data: the input's rank, batch dimension and
        width, and a run on synthetic rows whose output must decode to labels of the test set's
        kind. InputError on any problem (its text comes from the model and synthetic input)."""
        shape = list(self.input.shape or [])
        name = self.input.name
        if shape and len(shape) != 2:
            raise InputError(f"ONNX model {self.label} takes input {name!r} of shape {shape}; "
                             f"easeml-ci feeds a 2-D [examples, features] tensor")
        if shape and isinstance(shape[0], int):
            raise InputError(
                f"ONNX model {self.label} takes a fixed batch of {shape[0]} row"
                f"{'s' if shape[0] != 1 else ''} (input {name!r} has shape {shape}); easeml-ci "
                f"feeds the test set in batches of thousands of rows, so the batch dimension "
                f"must be dynamic. Export it with one: torch.onnx.export(..., input_names="
                f"[{name!r}], output_names=[{self.output_name!r}], dynamic_axes={{{name!r}: "
                f"{{0: 'batch'}}, {self.output_name!r}: {{0: 'batch'}}}}) (with dynamo=True: "
                f"dynamic_shapes), or in skl2onnx initial_types=[({name!r}, FloatTensorType("
                f"[None, {shape[1]}]))]")
        want = self.n_features
        if want is not None and schema.n_features is not None and want != schema.n_features:
            raise InputError(f"ONNX model {self.label} expects {want} features but "
                             f"{schema.where} has {schema.n_features}")
        if self.output is not None and schema.label_kind is not None and (
                (self.output.label_kind == "text") != (schema.label_kind == "text")
                and self.output_rule == "scores"):
            raise InputError(f"ONNX model {self.label}: `output: {self.output}` gives "
                             f"{self.output.label_kind} labels but {_labels(schema.label_kind)}; "
                             f"name classes of the same kind")
        width = schema.n_features if schema.n_features is not None else want
        if width is None:
            return  # the width is learnt from the test set's schema; load_predictions runs this
        for kind, X in _synthetic_inputs(width, schema.feature_dtype, self.input_dtype):
            rows = X.shape[0]
            what = (f"ONNX model {self.label}, on synthetic input ({rows} rows x {width} "
                    f"features of {kind}; no test data involved)")
            try:
                res = self._run_batch(X)
                if res.dtype.kind == "f":  # values on made-up rows say nothing: NaN is no fault
                    res = np.nan_to_num(res, nan=0.0, posinf=0.0, neginf=0.0)
                self._decode_batch(res, rows, schema.label_kind)
            except _RunFailed as exc:
                raise InputError(f"{what}, fails: {exc}") from None
            except _NotLabels as exc:
                raise InputError(f"{what}: {exc}") from None

    # --- running ---------------------------------------------------------------------------

    def _run_batch(self, batch: np.ndarray, run_options=None) -> np.ndarray:
        if batch.dtype != self.input_dtype or not batch.flags.c_contiguous:
            batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        try:
            (res,) = self.session.run([self.output_name], {self.input.name: batch}, run_options)
        except Exception as exc:  # onnxruntime's own error types
            raise _RunFailed(_whole(exc)) from None
        return np.asarray(res)

    def _decode_batch(self, res: np.ndarray, rows: int, label_kind: str | None) -> np.ndarray:
        if res.ndim == 0 or res.shape[0] != rows:
            raise _NotLabels(f"output {self.output_name!r} has shape {res.shape} for {rows} "
                             f"examples; expected one prediction per example (the batch "
                             f"dimension must run through the model)")
        return decode_predictions(res, self.output, label_kind, f"output {self.output_name!r}")

    def _predict(self, X: np.ndarray, label_kind: str | None, batch_size: int,
                 progress: Progress | None, run_options=None) -> np.ndarray:
        n = X.shape[0]
        row_bytes = max(1, X.shape[1] * self.input_dtype.itemsize)
        batch_size = max(1, min(batch_size, _MAX_BATCH_INPUT_BYTES // row_bytes))
        pieces = []
        for start in range(0, n, batch_size):
            batch = X[start:start + batch_size]
            pieces.append(self._decode_batch(self._run_batch(batch, run_options), batch.shape[0],
                                             label_kind))
            if progress is not None:
                progress(min(start + batch_size, n), n)
        if not pieces:
            return np.empty(0, dtype=np.int64)
        out = np.concatenate(pieces)  # batches may differ in text width or int/float
        if out.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                as_int = out.astype(np.int64)
            if np.array_equal(as_int, out):
                return as_int
        return out

    def predictions(self, testset: TestSet, *, batch_size: int = DEFAULT_BATCH_ROWS,
                    progress: Progress | None = None, clock=None) -> np.ndarray:
        """Labels for the test set. Whatever goes wrong here happened on the secret features:
        :class:`ModelFailedOnTestSet`, whose message is fixed (details in ``.detail``). Runs
        under the memory ceiling (:mod:`.memory_ceiling`) and, with ``clock``, until its
        deadline (:mod:`.evaluation_clock`)."""
        from .memory import memory_ceiling

        run_options = clock.run_options if clock is not None else None
        try:
            with memory_ceiling():  # running out of memory fails the model, not the job
                return self._predict(testset.X, TestSetSchema.of(testset).label_kind, batch_size,
                                     progress, run_options)
        except (_RunFailed, _NotLabels) as exc:
            detail = f"ONNX model {self.label} on the test set {testset.source}: {exc}"
        except Exception as exc:  # noqa: BLE001 - anything else is still the model on test data
            detail = (f"ONNX model {self.label} on the test set {testset.source}: "
                      f"{type(exc).__name__}: {_whole(exc)}")
        if clock is not None and clock.expired:
            detail = (f"ONNX model {self.label} on the test set {testset.source}: stopped at the "
                      f"end of evaluation_time ({clock.seconds:g} s) before it finished")
        raise ModelFailedOnTestSet(self.label, detail)

    def predict(self, X: np.ndarray, *, batch_size: int = DEFAULT_BATCH_ROWS,
                progress: Progress | None = None, source="(in memory)") -> np.ndarray:
        """Labels for every row of ``X`` (not the test set: a pool, a validation split). Checks
        the model against X's width first; any failure is an InputError."""
        self.check(TestSetSchema(n_features=int(X.shape[1]), source=str(source)))
        try:
            return self._predict(X, None, batch_size, progress)
        except (_RunFailed, _NotLabels) as exc:
            raise InputError(f"ONNX model {self.label} failed on {source}: {exc}") from None


def bare_inference(onnx_path, X: np.ndarray, output: str | None = None) -> np.ndarray:
    """The baseline of ``bench/check_overhead.py``: a default onnxruntime session, one call on
    the whole array, the first (label) output — what a user would write by hand."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = output or session.get_outputs()[0].name
    return session.run([out], {name: X})[0]
