"""Turning a model reference into one prediction per test example, without leaking the test set.

A model reference (``--new`` / ``--old``) is one of

* an ``.onnx`` file, run with onnxruntime in large batches (weights may sit in external data
  files beside it, as PyTorch exports them);
* a predictions file from any framework: ``.csv`` (one prediction per row, optional header) or
  ``.npy`` (1-D labels, or 2-D scores with ``output: argmax``);
* ``git:REF:PATH`` — either of the above as it is on a git ref (e.g. the pull request's base
  branch), read with ``git show``; an ONNX model with external data is materialised, with its
  data files from the same tree, in a private temporary folder removed with the model.

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

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..testsets import TestSet
from .git import GIT_PREFIX, parse_git_spec, read_git_blob, run_git
from .onnx import DEFAULT_BATCH_ROWS, OnnxModel, bare_inference, external_data_locations, parse_onnx
from .output import OutputRule, decode_predictions, rule_of
from .predictions import PREDICTION_SUFFIXES, PredictionFile
from .schema import LABEL_KINDS, Progress, TestSetSchema, label_kind_of

__all__ = [
    "DEFAULT_BATCH_ROWS", "GIT_PREFIX", "LABEL_KINDS", "MODEL_SUFFIXES", "PREDICTION_SUFFIXES",
    "OnnxModel", "OutputRule", "PredictionFile", "Progress", "TestSetSchema", "accuracy",
    "bare_inference", "decode_predictions", "evaluate_on_testset", "external_data_locations",
    "label_kind_of", "load_predictions", "locate", "open_checked", "open_model", "parse_git_spec",
    "parse_onnx", "preflight", "read_git_blob", "rule_of", "runs_on_testset",
    "validate_model_spec",
]

MODEL_SUFFIXES = (".onnx",) + PREDICTION_SUFFIXES


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
                     ) -> np.ndarray:
    """One label per test example for ``model``: a spec (``repo`` and ``output`` apply), or the
    model :func:`preflight` returned (its own repo and output rule apply), run in this process.

    First finishes the checks preflight could not make without the test set's schema
    (:class:`InputError`); then runs the model on the test data, where any failure of an ONNX
    model is a :class:`ModelFailedOnTestSet` with a fixed message. ``progress(done, total)``
    is called after each ONNX batch. The gate runs models on its test set through
    :func:`evaluate_on_testset` instead (a child process, a hard clock).
    """
    return open_checked(model, testset, repo=repo, output=output).predictions(
        testset, batch_size=batch_size, progress=progress)


def open_checked(model, testset: TestSet, *, repo: Path = Path("."),
                 output: OutputRule | str | dict | None = None) -> "OnnxModel | PredictionFile":
    """``model`` (a spec, or what :func:`preflight` returned) checked against the test set's
    schema, the checks preflight could not make without it (:class:`InputError`)."""
    schema = TestSetSchema.of(testset)
    if not isinstance(model, (OnnxModel, PredictionFile)):
        model = open_model(model, repo=repo, output=output)
    model.check(schema)
    return model


def evaluate_on_testset(models: dict, testset: TestSet, *, clock=None) -> dict:
    """Each model's predictions on the gate's test set (role -> array): checked against its
    schema here (:class:`InputError`), then the ONNX models run in a child process killed at
    ``clock``'s deadline or on Ctrl-C (:mod:`.child`); a failure, an overrun or a dead child is
    a :class:`ModelFailedOnTestSet`."""
    from .child import predictions_on_testset

    checked = {role: open_checked(model, testset) for role, model in models.items()}
    return predictions_on_testset(checked, testset, clock=clock)


def runs_on_testset(models) -> bool:
    """Whether any of ``models`` runs code on the test data (an ONNX model; a predictions file
    does not): only then does a clock have anything to hide."""
    return any(isinstance(model, OnnxModel) for model in models)


def open_model(spec, *, repo: Path = Path("."), output: OutputRule | str | dict | None = None,
               ) -> "OnnxModel | PredictionFile":
    """The model or predictions file named by ``spec``, opened but not yet checked or run."""
    spec = str(spec)
    rule = rule_of(output)
    validate_model_spec(spec, repo, check_ref=False)
    name = parse_git_spec(spec)[1] if spec.startswith(GIT_PREFIX) else spec
    if Path(name).suffix.lower() == ".onnx":
        return OnnxModel.from_spec(spec, repo=repo, output=rule)
    return PredictionFile.from_spec(spec, repo=repo, output=rule)


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
        run_git(spec, repo, "cat-file", "-e")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    if path.is_dir():
        raise InputError(f"model {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"model {path} is not readable (permission denied)")
