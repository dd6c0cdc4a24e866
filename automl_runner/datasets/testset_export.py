"""The bridge from a promoted model to the gate: encode a tenant's raw held-out rows.

A promoted ONNX model takes one float32 matrix ``X`` (numeric columns as they are, categorical
columns as category indices, see :mod:`automl_runner.datasets.schema`), but a team keeps its held-out data
in the dataset's own format: strings for categories, empty cells. ``easeml-automl testset``
rebuilds the tenant's schema from the model card and runs the rows through the very function
the training rows went through (:func:`automl_runner.datasets.schema.encode`), then writes what the gate
reads, with the gate's own writers (:mod:`easeml_ci.testsets`):

* ``OUT.npz`` / ``OUT.csv``: a plaintext test set (features ``X`` + labels ``y``);
* ``OUT.enc``: the same, encrypted with the key in ``--key-env`` (the project's convention for
  encrypted test sets; ``easeml-ci testset encrypt`` writes the same format);
* with ``--pool``: the unlabelled feature pool of the gate's label request (``.npz``/``.csv``).

Labels come out as the model predicts them: string classes as text, integer classes as
integers, so the gate compares like with like. Regression models are refused: the gate counts
an example as correct when the predicted label equals the true one, which a real-valued
prediction almost never does.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CardError, DatasetError
from .schema import (FEATURE_KINDS, TASKS, Feature, Schema, number_text, encode, encode_features, missing_cells,
                     read_columns)

#: Keys of a model card without which the data cannot be encoded for its model.
REQUIRED_KEYS = ("target", "task", "features")
PLAIN_SUFFIXES = (".npz", ".csv")
ENCRYPTED_SUFFIX = ".enc"


@dataclass
class Encoded:
    """Rows encoded for a model: ``X`` float64 (NaN = missing, -1 = unseen/missing category)."""

    schema: Schema
    X: np.ndarray
    y: np.ndarray | None
    #: Per categorical column: {value never seen at submit: cells}; those cells are encoded -1.
    unseen: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per column: empty / NA cells.
    missing: dict[str, int] = field(default_factory=dict)
    #: Labels that are not among the model's classes: {label: rows} (the model never predicts them).
    unknown_labels: dict[str, int] = field(default_factory=dict)
    #: What was assumed about an older card.
    notes: list[str] = field(default_factory=list)

    @property
    def unseen_cells(self) -> int:
        return sum(sum(v.values()) for v in self.unseen.values())


# --------------------------------------------------------------------------------------------
# the card


def load_card(path) -> dict:
    """The card's JSON object; an unreadable or malformed card is a :class:`CardError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CardError(f"card {path} does not exist; give the model-card.json written with the promoted model")
    if os.path.isdir(path):
        raise CardError(f"card {path} is a directory; give the model-card.json file inside it")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise CardError(f"card {path} is not UTF-8 text; expected a model-card.json") from None
    except OSError as exc:
        raise CardError(f"cannot read card {path}: {exc.strerror or exc}") from None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError(f"card {path} is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                        "expected the model-card.json written with the promoted model") from None
    if not isinstance(card, dict):
        raise CardError(f"card {path} holds a JSON {type(card).__name__}, not an object; "
                        "expected the model-card.json written with the promoted model")
    return card


def _int_like(text: str) -> bool:
    try:
        return str(int(text)) == text
    except ValueError:
        return False


def schema_from_card(card: dict, path="card") -> tuple[Schema, list[str]]:
    """The tenant's schema as the card records it, and notes on what an older card lacked.

    A card from before ``label_kind`` was recorded gets it inferred: ``float`` for regression,
    ``int`` when every class is an integer written plainly (exactly when
    :func:`~automl_runner.datasets.schema.infer_schema` would have chosen integer labels), else ``str``.
    ``ignored``, ``validation_fraction`` and ``seed`` take their defaults; the encoding does not
    depend on them.
    """
    path = os.fspath(path)
    for key in REQUIRED_KEYS:
        if key not in card:
            raise CardError(f"card {path}: no key {key!r}; a model card written by easeml-automl has "
                            f"{', '.join(map(repr, REQUIRED_KEYS))}")
    target, task = card["target"], card["task"]
    if not isinstance(target, str) or not target:
        raise CardError(f"card {path}: key 'target' is {target!r}; expected the target column's name")
    if task not in TASKS:
        raise CardError(f"card {path}: key 'task' is {task!r}; allowed: {', '.join(TASKS)}")
    raw_features = card["features"]
    if not isinstance(raw_features, list) or not raw_features:
        raise CardError(f"card {path}: key 'features' is {type(raw_features).__name__} {raw_features!r:.60}; "
                        "expected a non-empty list of {name, kind[, categories]}")
    features = []
    for i, f in enumerate(raw_features):
        where = f"card {path}: features[{i}]"
        if not isinstance(f, dict):
            raise CardError(f"{where} is {f!r:.60}; expected an object with 'name' and 'kind'")
        for key in ("name", "kind"):
            if key not in f:
                raise CardError(f"{where}: no key {key!r}")
        name, kind = f["name"], f["kind"]
        if not isinstance(name, str) or not name:
            raise CardError(f"{where}: key 'name' is {name!r}; expected a column name")
        if kind not in FEATURE_KINDS:
            raise CardError(f"{where} ({name!r}): key 'kind' is {kind!r}; allowed: {', '.join(FEATURE_KINDS)}")
        cats: tuple[str, ...] = ()
        if kind == "categorical":
            if "categories" not in f:
                raise CardError(f"{where} ({name!r}): no key 'categories'; a categorical feature lists its categories")
            if not isinstance(f["categories"], list) or not all(isinstance(c, str) for c in f["categories"]):
                raise CardError(f"{where} ({name!r}): key 'categories' is {f['categories']!r:.60}; "
                                "expected a list of strings")
            cats = tuple(f["categories"])
        features.append(Feature(name, kind, cats))
    names = [f.name for f in features]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CardError(f"card {path}: feature {dup[0]!r} is listed more than once")
    if target in names:
        raise CardError(f"card {path}: the target {target!r} is also listed as a feature")

    classes = card.get("classes", [])
    if task == "classification":
        if "classes" not in card:
            raise CardError(f"card {path}: no key 'classes'; a classification model's card lists its classes")
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise CardError(f"card {path}: key 'classes' is {classes!r:.60}; expected a list of at least 2 strings")
    notes: list[str] = []
    label_kind = card.get("label_kind")
    allowed_kinds = ("int", "str") if task == "classification" else ("float",)
    if label_kind is None:
        if task == "regression":
            label_kind = "float"
        else:
            label_kind = "int" if all(_int_like(c) for c in classes) else "str"
            notes.append(f"card {path} has no 'label_kind' (written by an older easeml-automl); "
                         f"inferred {label_kind!r} from its classes")
    elif label_kind not in allowed_kinds:
        raise CardError(f"card {path}: key 'label_kind' is {label_kind!r}; allowed for {task}: "
                        f"{', '.join(allowed_kinds)}")
    try:
        n_rows = int(card.get("train_rows", 0)) + int(card.get("validation_rows", 0))
        validation_fraction = float(card.get("validation_fraction", 0.2))
        seed = int(card.get("seed", 0))
    except (TypeError, ValueError):
        raise CardError(f"card {path}: train_rows, validation_rows, validation_fraction and seed must be numbers") from None
    ignored = card.get("ignored", [])
    schema = Schema(
        source=str(card.get("dataset", "")), fingerprint=str(card.get("data_fingerprint", "")),
        target=target, task=task, features=tuple(features), n_rows=n_rows,
        classes=tuple(classes) if task == "classification" else (), label_kind=label_kind,
        validation_fraction=validation_fraction, seed=seed,
        ignored=tuple(ignored) if isinstance(ignored, list) else (),
    )
    return schema, notes


# --------------------------------------------------------------------------------------------
# encoding


def encode_rows(card_path, raw_path, *, pool: bool = False) -> Encoded:
    """Read the card and the raw rows; encode them with the training code path."""
    card_path, raw_path = os.fspath(card_path), os.fspath(raw_path)
    schema, notes = schema_from_card(load_card(card_path), card_path)
    if schema.task == "regression":
        raise CardError(
            f"card {card_path}: key 'task' is 'regression'; the gate judges classifiers only (an example "
            "counts as correct when the predicted label equals the true one, so nearly every regression "
            "prediction would count as wrong); allowed: a classification model's card"
        )
    # Category columns (and text classes) are read as text, as the schema knows them: a subset
    # of rows must not turn "01" into the number 1 because no word happens to be among them.
    text = [f.name for f in schema.features if f.kind == "categorical"]
    if schema.task == "classification" and schema.label_kind == "str":
        text.append(schema.target)
    cols = read_columns(raw_path, text=text)
    shown = ", ".join(map(repr, list(cols)[:20])) + (", ..." if len(cols) > 20 else "")
    absent = [f for f in schema.features if f.name not in cols]
    if absent:
        raise DatasetError(
            f"{raw_path}: no column {', '.join(f'{f.name!r} ({f.kind})' for f in absent)}, which the model of card "
            f"{card_path} takes; columns are {shown}"
        )
    if pool:
        X, y = encode_features(cols, schema, path=raw_path), None
    else:
        if schema.target not in cols:
            raise DatasetError(
                f"{raw_path}: no target column {schema.target!r} (the label the model predicts, from card "
                f"{card_path}); columns are {shown}. For rows without labels pass --pool"
            )
        ds = encode(cols, schema, path=raw_path)
        X, y = ds.X, ds.y
    out = Encoded(schema=schema, X=X, y=y, notes=notes)
    for j, f in enumerate(schema.features):
        col = cols[f.name]
        is_missing = missing_cells(col)
        if is_missing.any():
            out.missing[f.name] = int(is_missing.sum())
        if f.kind == "categorical":
            unseen_rows = np.flatnonzero((X[:, j] == -1) & ~is_missing)
            if len(unseen_rows):
                keys = [number_text(v) if isinstance(v, float) else str(v) for v in col[unseen_rows].tolist()]
                values, counts = np.unique(np.array(keys, dtype=str), return_counts=True)
                order = np.argsort(-counts, kind="stable")
                out.unseen[f.name] = {str(values[k]): int(counts[k]) for k in order}
    if y is not None and schema.task == "classification":
        known = set(schema.classes)
        as_text = y.astype(str)
        bad = np.array([v not in known for v in as_text.tolist()], dtype=bool)
        if bad.any():
            values, counts = np.unique(as_text[bad], return_counts=True)
            out.unknown_labels = {str(v): int(c) for v, c in zip(values, counts)}
    return out


# --------------------------------------------------------------------------------------------
# writing


def out_kind(out: Path, pool: bool) -> str:
    """``plain`` or ``encrypted`` by OUT's extension; any other extension is a usage error."""
    suffix = out.suffix.lower()
    if suffix in PLAIN_SUFFIXES:
        return "plain"
    if suffix == ENCRYPTED_SUFFIX and not pool:
        return "encrypted"
    allowed = PLAIN_SUFFIXES if pool else PLAIN_SUFFIXES + (ENCRYPTED_SUFFIX,)
    what = "pool" if pool else "test set"
    hint = " (a pool is not secret and is never encrypted)" if pool and suffix == ENCRYPTED_SUFFIX else \
        (f" ({ENCRYPTED_SUFFIX}: encrypted with the key in --key-env)" if not pool else "")
    raise DatasetError(f"cannot write the {what} {out}: extension {out.suffix or '(none)'!r}; "
                       f"allowed: {', '.join(allowed)}{hint}")


def write(enc: Encoded, out: Path, kind: str, *, key: bytes | None = None, label_column: str = "label") -> str | None:
    """Write OUT with the gate's own writers; the test set's fingerprint (None for a pool)."""
    from easeml_ci.errors import InputError
    from easeml_ci.testsets import encrypt_testset, save_pool, save_testset, testset_from_arrays

    if enc.y is None:
        save_pool(enc.X, out)
        return None
    ts = testset_from_arrays(enc.X, enc.y, out)
    if kind == "encrypted":
        try:
            encrypt_testset(ts, out, key)
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    else:
        save_testset(ts, out, label_column=label_column)
    return ts.fingerprint


def summary(enc: Encoded, raw: str, out: str, kind: str) -> str:
    """The one line for stderr."""
    n, k = enc.X.shape
    what = "pool" if enc.y is None else "test set"
    how = {"plain": "plaintext, keep it out of the repository", "encrypted": "encrypted"}[kind] \
        if enc.y is not None else "features only"
    parts = [f"wrote {n} rows x {k} columns from {raw} to the {what} {out} ({how})"]
    if enc.unseen:
        per = "; ".join(
            f"{col}: " + ", ".join(f"{v!r} x{c}" for v, c in list(vals.items())[:3]) + (", ..." if len(vals) > 3 else "")
            for col, vals in enc.unseen.items()
        )
        parts.append(f"{enc.unseen_cells} cell(s) with a category the card has never seen, encoded -1 ({per})")
    else:
        parts.append("no category the card has never seen")
    if enc.missing:
        parts.append(f"{sum(enc.missing.values())} missing cell(s)")
    if enc.unknown_labels:
        parts.append(f"{sum(enc.unknown_labels.values())} label(s) the model never predicts "
                     f"({', '.join(map(repr, list(enc.unknown_labels)[:3]))})")
    return "; ".join(parts)
