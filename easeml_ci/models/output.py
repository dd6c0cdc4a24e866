"""How a model's outputs become labels: labels as they are, or declared scores decoded by the
`output` key of .easeml.yml (a threshold on one score column, argmax over one column per class)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

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


class NotLabels(Exception):
    """An output that cannot be read as labels; the text says why (it may quote the output)."""


def decode_predictions(raw: np.ndarray, rule: OutputRule | None, label_kind: str | None,
                       what: str) -> np.ndarray:
    """One label per row from a model's raw output, by ``rule``; ``NotLabels`` otherwise.

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
            raise NotLabels(f"{what} holds bytes that are not UTF-8 text") from None
    argmax = rule is not None and rule.kind == "argmax"
    if arr.ndim == 2 and arr.shape[1] == 1 and not argmax:
        arr = arr[:, 0]
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.dtype.kind == "U"):
        raise NotLabels(f"{what} has shape {arr.shape}; expected one label per example (1-D), "
                         f"or one score column per class (2-D) with `output: argmax`")
    if arr.dtype.kind == "U":
        if label_kind in (None, "text"):
            return np.ascontiguousarray(arr)
        try:  # text that holds numbers ("1", "0"): a CSV export of numeric labels
            arr = arr.astype(np.float64)
        except ValueError:
            raise NotLabels(f"{what} are text but {describe_labels(label_kind)}; the model must predict "
                             f"the same kind of label") from None
    if arr.dtype.kind not in "biuf":
        raise NotLabels(f"{what} has unsupported dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.flatnonzero(bad.reshape(arr.shape[0], -1).any(axis=1))[0])
            raise NotLabels(f"{what} holds {int(bad.sum())} NaN or infinite value(s) (first in "
                             f"row {first}); a prediction must be a label or a finite score")
    preds = _to_labels(arr, rule, label_kind, what)
    if label_kind == "text" and preds.dtype.kind != "U":
        hint = (" name the classes in the output rule (e.g. `output: {argmax: [cat, dog]}` or "
                "`classes: [ham, spam]`), or" if rule is not None or arr.dtype.kind == "f" else "")
        raise NotLabels(f"{what} are numbers but {describe_labels(label_kind)};{hint} the model must "
                         f"predict the same kind of label")
    if label_kind in ("integer", "float") and preds.dtype.kind == "U":
        raise NotLabels(f"{what} are text (output rule {rule}) but {describe_labels(label_kind)}; name "
                         f"numeric classes or none")
    return preds


def describe_labels(label_kind: str | None) -> str:
    return {"text": "the test set has text labels"}.get(label_kind, "the test set has numeric labels")


def _to_labels(arr: np.ndarray, rule: OutputRule | None, label_kind: str | None,
               what: str) -> np.ndarray:
    if arr.ndim == 2:
        if rule is None or rule.kind != "argmax":
            raise NotLabels(
                f"{what} holds {arr.shape[1]} scores per example, not a label; if column i "
                f"scores class i, declare `output: argmax` in .easeml.yml (or `output: {{argmax: "
                f"[class0, class1, ...]}}` to name the class of each column)"
                + ("" if rule is None else f" instead of `output: {rule}`, which reads one score "
                                           f"column"))
        if rule.classes and arr.shape[1] != len(rule.classes):
            raise NotLabels(f"{what} holds {arr.shape[1]} scores per example, but `output: "
                             f"{rule}` names {len(rule.classes)} classes; name one class per "
                             f"column")
        if arr.shape[1] < 2:
            raise NotLabels(f"{what} holds one score per example; `output: argmax` needs one "
                             f"column per class (declare `output: {{threshold: T}}` instead)")
        index = np.argmax(arr, axis=1)
        return np.asarray(rule.classes)[index] if rule.classes else index.astype(np.int64)
    if arr.dtype.kind in "biu":  # integers are labels, whatever rule is declared for scores
        return arr.astype(np.int64, copy=False)
    if rule is not None and rule.kind == "argmax":
        raise NotLabels(f"{what} holds one score per example; `output: {rule}` needs one score "
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
    raise NotLabels(
        f"{what} holds non-integer numbers (such as {example:.4g}): scores, not labels, while "
        f"the test set has integer labels; declare how to read them in .easeml.yml: "
        f"`output: {{threshold: T}}` for one score per example (a score >= T is class 1, else "
        f"0; e.g. 0.5 for a probability, 0 for a logit)")


def rule_of(output) -> OutputRule | None:
    """The rule an `output` setting names (None: labels only); a bad one is an InputError."""
    if output is None:
        return None
    try:
        return OutputRule.parse(output)
    except ValueError as exc:
        raise InputError(f"output rule {output!r}: expected {exc}") from None
