"""What a tenant's dataset looks like: features and their types, task, classes, validation split.

A dataset is a CSV file with a header row, or a ``.npz`` archive (either one 1-D array per column,
or a 2-D ``X`` plus a 1-D target array). :func:`infer_schema` guesses the schema and every guess
can be corrected by the tenant (``--task``, ``--categorical``, ``--numeric``, ``--ignore``).

Models see one float matrix: numeric columns as they are (empty cells become NaN and are imputed
inside the model pipeline), categorical columns as the index of their value in the schema's
sorted category list (-1 for a value the schema has never seen). The exported ONNX model takes
that matrix as its single input ``X``; the model card lists the encoding.

The validation split is fixed by the schema's seed, so every worker, on every machine, scores a
tenant's candidates on the same rows.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

from ..errors import DatasetError

TASKS = ("classification", "regression")
FEATURE_KINDS = ("numeric", "categorical")
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
#: A numeric, integer-valued target with at most this many distinct values is a class label.
MAX_INFERRED_CLASSES = 20


@dataclass(frozen=True)
class Feature:
    """One input column: ``numeric`` or ``categorical`` (then with its sorted categories)."""

    name: str
    kind: str
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    """The inferred (and possibly corrected) description of one tenant's dataset."""

    source: str
    fingerprint: str
    target: str
    task: str
    features: tuple[Feature, ...]
    n_rows: int
    classes: tuple[str, ...] = ()
    #: How class labels are given to the estimators: ``int`` (int64) or ``str``.
    label_kind: str = "str"
    validation_fraction: float = 0.2
    seed: int = 0
    ignored: tuple[str, ...] = field(default=())

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def numeric_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.features) if f.kind == "numeric"]

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.features) if f.kind == "categorical"]

    @property
    def n_validation(self) -> int:
        return max(1, int(round(self.n_rows * self.validation_fraction)))

    @property
    def n_train(self) -> int:
        return self.n_rows - self.n_validation

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = [
            {"name": f.name, "kind": f.kind, **({"categories": list(f.categories)} if f.kind == "categorical" else {})}
            for f in self.features
        ]
        d["classes"] = list(self.classes)
        d["ignored"] = list(self.ignored)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Schema":
        feats = tuple(Feature(f["name"], f["kind"], tuple(f.get("categories", ()))) for f in d["features"])
        return cls(
            source=d["source"], fingerprint=d["fingerprint"], target=d["target"], task=d["task"],
            features=feats, n_rows=int(d["n_rows"]), classes=tuple(d.get("classes", ())),
            label_kind=d.get("label_kind", "str"), validation_fraction=float(d.get("validation_fraction", 0.2)),
            seed=int(d.get("seed", 0)), ignored=tuple(d.get("ignored", ())),
        )

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        return cls.from_dict(json.loads(text))

    def describe(self) -> str:
        """A short human-readable summary, shown on submit so the tenant can correct it."""
        lines = [
            f"dataset   {self.source}  ({self.n_rows} rows, sha256 {self.fingerprint[:12]})",
            f"target    {self.target}",
        ]
        if self.task == "classification":
            shown = ", ".join(self.classes[:10]) + (", ..." if self.n_classes > 10 else "")
            lines.append(f"task      classification, {self.n_classes} classes: {shown}")
        else:
            lines.append("task      regression")
        lines.append(
            f"split     {self.n_train} train / {self.n_validation} validation (seed {self.seed})"
        )
        lines.append(f"features  {self.n_features}")
        for f in self.features:
            if f.kind == "categorical":
                cats = ", ".join(f.categories[:6]) + (", ..." if len(f.categories) > 6 else "")
                lines.append(f"  {f.name:<24} categorical ({len(f.categories)}: {cats})")
            else:
                lines.append(f"  {f.name:<24} numeric")
        if self.ignored:
            lines.append(f"ignored   {', '.join(self.ignored)}")
        return "\n".join(lines)


@dataclass
class Dataset:
    """A dataset encoded by its schema: ``X`` float64 (rows x features) and labels ``y``."""

    schema: Schema
    X: np.ndarray
    y: np.ndarray

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(X_train, X_val, y_train, y_val), the same on every machine for the schema's seed."""
        train, val = split_indices(self.schema, self.y)
        return self.X[train], self.X[val], self.y[train], self.y[val]


# --------------------------------------------------------------------------------------------
# reading


def file_fingerprint(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING


def missing_cells(col: np.ndarray) -> np.ndarray:
    """Which cells of a column as :func:`read_columns` returns it are missing (NaN or None)."""
    return np.isnan(col) if col.dtype.kind == "f" else np.array([v is None for v in col], dtype=bool)


def _to_float_column(values: Sequence[str]) -> np.ndarray | None:
    """The column as float64 with NaN for missing cells, or None when a cell is not a number."""
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if _is_missing(v):
            out[i] = np.nan
            continue
        try:
            x = float(v)
        except ValueError:
            return None
        if math.isinf(x):
            return None
        out[i] = x
    return out


def read_columns(path: str | os.PathLike, text: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Column name -> raw values: float64 (NaN = missing) or object array of str (None = missing).

    A CSV column is read as numbers when every cell is one; the columns named in ``text`` stay
    text whatever they hold. A held-out file read against a known schema needs that: its
    subset of a category column may happen to be all numeric-looking ("01", "02") where the
    training file's was not, and reading it as numbers would turn "01" into "1".
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DatasetError(f"dataset {path!r} does not exist")
    if os.path.isdir(path):
        raise DatasetError(f"dataset {path!r} is a directory; give a .csv or .npz file")
    if path.lower().endswith(".npz"):
        return _read_npz(path)
    return _read_csv(path, frozenset(text))


def _read_csv(path: str, text: frozenset = frozenset()) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"dataset {path!r} is not a UTF-8 CSV file ({exc.reason} at byte {exc.start})")
    except csv.Error as exc:
        raise DatasetError(f"dataset {path!r}: malformed CSV ({exc})")
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise DatasetError(f"dataset {path!r} is empty; expected a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise DatasetError(f"dataset {path!r}: duplicate column name(s) {', '.join(map(repr, dup))} in the header")
    if any(h == "" for h in header):
        raise DatasetError(f"dataset {path!r}: column {header.index('') + 1} has an empty name in the header")
    data = rows[1:]
    if not data:
        raise DatasetError(f"dataset {path!r} has a header but no data rows")
    for lineno, r in enumerate(data, start=2):
        if len(r) != len(header):
            raise DatasetError(
                f"dataset {path!r}: row {lineno} has {len(r)} cells, the header has {len(header)}"
            )
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        raw = [r[j] for r in data]
        as_float = None if name in text else _to_float_column(raw)
        if as_float is not None:
            cols[name] = as_float
        else:
            cols[name] = np.array([None if _is_missing(v) else v.strip() for v in raw], dtype=object)
    return cols


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a bad archive
        raise DatasetError(f"dataset {path!r} is not a readable .npz archive ({exc})")
    with archive:
        arrays = {k: archive[k] for k in archive.files}
    if not arrays:
        raise DatasetError(f"dataset {path!r} holds no arrays")
    cols: dict[str, np.ndarray] = {}
    if "X" in arrays and arrays["X"].ndim == 2:
        X = arrays.pop("X")
        for j in range(X.shape[1]):
            cols[f"x{j}"] = X[:, j]
    for k, a in arrays.items():
        if a.ndim != 1:
            raise DatasetError(
                f"dataset {path!r}: array {k!r} has shape {a.shape}; expected 1-D columns (or a 2-D 'X')"
            )
        cols[k] = a
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f"dataset {path!r}: columns have different lengths {lengths}")
    out: dict[str, np.ndarray] = {}
    for k, a in cols.items():
        if a.dtype.kind in "biuf":
            out[k] = a.astype(np.float64)
        else:
            out[k] = np.array([None if v is None or _is_missing(str(v)) else str(v) for v in a.tolist()], dtype=object)
    if next(iter(lengths.values())) == 0:
        raise DatasetError(f"dataset {path!r} has no rows")
    return out


# --------------------------------------------------------------------------------------------
# inference


def number_text(x: float) -> str:
    """A number as the schema writes it: an integer without ".0", else its shortest repr."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _check_columns(option: str, names: Iterable[str], columns: Sequence[str], path: str) -> None:
    for n in names:
        if n not in columns:
            shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
            raise DatasetError(f"{option}: no column {n!r} in {path}; columns are {shown}")


def infer_schema(
    path: str | os.PathLike,
    target: str,
    *,
    task: str | None = None,
    categorical: Iterable[str] = (),
    numeric: Iterable[str] = (),
    ignore: Iterable[str] = (),
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> Schema:
    """Read the dataset and guess its schema; every keyword corrects one guess."""
    path = os.fspath(path)
    categorical, numeric, ignore = list(categorical), list(numeric), list(ignore)
    if task is not None and task not in TASKS:
        raise DatasetError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if not 0.0 < validation_fraction < 1.0:
        raise DatasetError(f"validation fraction must be in (0, 1), got {validation_fraction}")
    cols = read_columns(path)
    names = list(cols)
    _check_columns("--target", [target], names, path)
    _check_columns("--categorical", categorical, names, path)
    _check_columns("--numeric", numeric, names, path)
    _check_columns("--ignore", ignore, names, path)
    both = set(categorical) & set(numeric)
    if both:
        raise DatasetError(f"column {sorted(both)[0]!r} is given both as --categorical and --numeric")
    for opt, group in (("--categorical", categorical), ("--numeric", numeric), ("--ignore", ignore)):
        if target in group:
            raise DatasetError(f"{opt}: {target!r} is the target column; it cannot be a feature option")

    y_raw = cols[target]
    n = len(y_raw)
    missing = missing_cells(y_raw)
    if missing.any():
        first = int(np.argmax(missing))
        raise DatasetError(
            f"target column {target!r} in {path} has {int(missing.sum())} empty value(s) "
            f"(first at data row {first + 1}); fill or drop those rows"
        )
    numeric_target = y_raw.dtype.kind == "f"
    integral = numeric_target and bool(np.all(np.equal(np.mod(y_raw, 1), 0)))
    if task is None:
        if not numeric_target:
            task = "classification"
        elif integral and len(np.unique(y_raw)) <= MAX_INFERRED_CLASSES:
            task = "classification"
        else:
            task = "regression"
    if task == "regression" and not numeric_target:
        bad = next(v for v in y_raw if v is not None)
        raise DatasetError(
            f"--task regression needs a numeric target, but column {target!r} holds {bad!r}"
        )

    classes: tuple[str, ...] = ()
    label_kind = "float"
    if task == "classification":
        if integral:
            values = np.unique(y_raw)
            classes = tuple(number_text(v) for v in values)
            label_kind = "int"
        else:
            labels = [(number_text(v) if numeric_target else v) for v in y_raw]
            classes = tuple(sorted(set(labels)))
            label_kind = "str"
        if len(classes) < 2:
            raise DatasetError(
                f"target column {target!r} in {path} has a single class {classes[0]!r}; classification needs at least 2"
            )
        if len(classes) > max(MAX_INFERRED_CLASSES, n // 2):
            # A user-forced task with nearly one class per row is almost surely a mistake.
            raise DatasetError(
                f"target column {target!r} has {len(classes)} distinct values in {n} rows; "
                "that is not a classification target (use --task regression)"
            )

    features: list[Feature] = []
    for name in names:
        if name == target or name in ignore:
            continue
        col = cols[name]
        if name in numeric and col.dtype.kind != "f":
            bad = next(v for v in col if v is not None)
            raise DatasetError(f"--numeric: column {name!r} holds {bad!r}, which is not a number")
        kind = "categorical" if (name in categorical or col.dtype.kind != "f") else "numeric"
        if kind == "categorical":
            if col.dtype.kind == "f":
                cats = sorted({number_text(v) for v in col if not np.isnan(v)}, key=_natural_key)
            else:
                cats = sorted({v for v in col if v is not None}, key=_natural_key)
            features.append(Feature(name, "categorical", tuple(cats)))
        else:
            if np.all(np.isnan(col)):
                raise DatasetError(f"column {name!r} in {path} is empty in every row; use --ignore {name}")
            features.append(Feature(name, "numeric"))
    if not features:
        raise DatasetError(f"dataset {path} has no feature columns besides the target {target!r}")
    n_val = max(1, int(round(n * validation_fraction)))
    if n - n_val < 2 or n_val < 1:
        raise DatasetError(f"dataset {path} has {n} rows; need at least 5 to split off a validation set")

    return Schema(
        source=os.path.basename(path), fingerprint=file_fingerprint(path), target=target, task=task,
        features=tuple(features), n_rows=n, classes=classes, label_kind=label_kind,
        validation_fraction=validation_fraction, seed=seed, ignored=tuple(ignore),
    )


def _natural_key(s: str):
    try:
        return (0, float(s), "")
    except ValueError:
        return (1, 0.0, s)


# --------------------------------------------------------------------------------------------
# encoding


def _shown_columns(cols: dict[str, np.ndarray]) -> str:
    names = list(cols)
    return ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")


def _numbers_or_none(col: np.ndarray) -> np.ndarray | None:
    """A text column (None = missing) as float64 when every cell is a number, else None."""
    return _to_float_column(["" if v is None else str(v) for v in col])


def _first_non_number(col: np.ndarray) -> tuple[int, str]:
    """(row index, value) of the first cell of a text column that is not a number."""
    return next((i, v) for i, v in enumerate(col) if v is not None and _to_float_column([str(v)]) is None)


def _as_number_text(value: str) -> str:
    """A text cell as the schema writes a number ("1.0" -> "1"), or unchanged when not a number.

    Used for values read as text that the schema does not list as they are: a column that was
    numeric at submit but marked categorical has categories like "1" and "2.5", while the same
    column read as text (forced, or mixed with words in this file) holds "1.0" or "2.50".
    """
    try:
        x = float(value)
    except ValueError:
        return value
    return number_text(x) if math.isfinite(x) else value


def encode_features(cols: dict[str, np.ndarray], schema: Schema, *, path: str = "dataset") -> np.ndarray:
    """The float matrix the models take: one column per schema feature, in schema order.

    Numeric columns as they are (NaN = missing); categorical columns as the index of the value in
    the feature's sorted category list, -1 for a missing cell or a value the schema never saw.
    Training and ``easeml-automl testset`` both go through here, so a test set is encoded exactly
    as the model's training rows were. Columns the schema does not name are left out.
    """
    n = len(next(iter(cols.values()))) if cols else 0
    X = np.empty((n, schema.n_features))
    for j, f in enumerate(schema.features):
        if f.name not in cols:
            raise DatasetError(
                f"{path}: no column {f.name!r}, which the schema needs ({f.kind} feature); "
                f"columns are {_shown_columns(cols)}"
            )
        col = cols[f.name]
        if f.kind == "numeric":
            if col.dtype.kind != "f":
                col = _numbers_or_none(col)
            if col is None:
                row, bad = _first_non_number(cols[f.name])
                raise DatasetError(
                    f"{path}: column {f.name!r} is numeric in the schema, but data row {row + 1} holds {bad!r}; "
                    f"allowed: a number, or a missing value (empty, {', '.join(sorted(m for m in MISSING if m))})"
                )
            X[:, j] = col
        else:
            index = {c: i for i, c in enumerate(f.categories)}
            keys = [(number_text(v) if not np.isnan(v) else None) for v in col] if col.dtype.kind == "f" else list(col)
            X[:, j] = [-1 if k is None else index[k] if k in index else index.get(_as_number_text(k), -1)
                       for k in keys]
    return X


def encode_labels(cols: dict[str, np.ndarray], schema: Schema, *, path: str = "dataset") -> np.ndarray:
    """The target column as the estimators see it: float64 (regression), int64 or str classes."""
    if schema.target not in cols:
        raise DatasetError(
            f"{path}: no target column {schema.target!r}; columns are {_shown_columns(cols)}"
        )
    y_raw = cols[schema.target]
    missing = missing_cells(y_raw)
    if missing.any():
        first = int(np.argmax(missing))
        raise DatasetError(
            f"{path}: target column {schema.target!r} has {int(missing.sum())} empty value(s) "
            f"(first at data row {first + 1}); every row needs a label"
        )
    if schema.task == "regression" or schema.label_kind == "int":
        want = "a number" if schema.task == "regression" else "an integer class label"
        numbers = y_raw if y_raw.dtype.kind == "f" else _numbers_or_none(y_raw)
        if numbers is None:
            row, bad = _first_non_number(y_raw)
            raise DatasetError(
                f"{path}: target column {schema.target!r}, data row {row + 1} holds {bad!r}; allowed: {want}"
            )
        if schema.task == "regression":
            return numbers.astype(np.float64)
        fractional = np.mod(numbers, 1) != 0
        if fractional.any():
            row = int(np.argmax(fractional))
            raise DatasetError(
                f"{path}: target column {schema.target!r}, data row {row + 1} holds {number_text(numbers[row])}; "
                f"allowed: {want}"
            )
        return numbers.astype(np.int64)
    known = set(schema.classes)
    return np.array([number_text(v) if isinstance(v, float) else v if v in known else _as_number_text(v)
                     for v in y_raw.tolist()], dtype=str)


def encode(cols: dict[str, np.ndarray], schema: Schema, *, path: str = "dataset") -> Dataset:
    """Turn raw columns into the float matrix and label vector the candidates train on."""
    y = encode_labels(cols, schema, path=path)
    X = encode_features(cols, schema, path=path)
    if len(y) != X.shape[0]:
        raise DatasetError(f"{path}: target has {len(y)} rows, features {X.shape[0]}")
    return Dataset(schema=schema, X=X, y=y)


def load_dataset(path: str | os.PathLike, schema: Schema, *, check_fingerprint: bool = True) -> Dataset:
    """Read and encode a tenant's dataset; refuse a file whose content changed since submit."""
    path = os.fspath(path)
    if check_fingerprint:
        if not os.path.exists(path):
            raise DatasetError(f"dataset {path!r} of this tenant does not exist on this machine")
        fp = file_fingerprint(path)
        if fp != schema.fingerprint:
            raise DatasetError(
                f"dataset {path!r} changed since it was submitted (sha256 {fp[:12]}, expected {schema.fingerprint[:12]}); submit it again"
            )
    return encode(read_columns(path), schema, path=path)


def split_indices(schema: Schema, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices, stratified by class when every class can be split."""
    n = len(y)
    n_val = max(1, int(round(n * schema.validation_fraction)))
    rng = np.random.default_rng(schema.seed)
    if schema.task == "classification":
        labels, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2:
            val: list[np.ndarray] = []
            # Largest-remainder allocation so the validation size is exactly n_val.
            share = counts * n_val / n
            take = np.floor(share).astype(int)
            take = np.minimum(np.maximum(take, 1), counts - 1)
            order = np.argsort(-(share - np.floor(share)))
            i = 0
            while take.sum() < n_val and i < 10 * len(labels):
                k = order[i % len(labels)]
                if take[k] < counts[k] - 1:
                    take[k] += 1
                i += 1
            for lab, t in zip(labels, take):
                rows = np.flatnonzero(y == lab)
                val.append(rng.permutation(rows)[:t])
            v = np.sort(np.concatenate(val))
            mask = np.ones(n, dtype=bool)
            mask[v] = False
            return np.flatnonzero(mask), v
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def with_corrections(schema: Schema, **changes) -> Schema:
    """A copy of the schema with some fields replaced (used by tests and the CLI)."""
    return replace(schema, **changes)
