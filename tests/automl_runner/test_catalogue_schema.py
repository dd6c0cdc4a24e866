"""Schema inference for AutoML datasets: types, task, classes, corrections, the fixed split."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from automl_runner.errors import DatasetError
from automl_runner.datasets.schema import Schema, infer_schema, load_dataset, split_indices


def _csv(tmp_path, header, rows, name="d.csv"):
    p = tmp_path / name
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return str(p)


@pytest.fixture
def mixed(tmp_path):
    rows = [[i * 0.5, ["a", "b", "c"][i % 3], i % 4, "" if i % 7 == 0 else i, ["yes", "no"][i % 2]] for i in range(40)]
    return _csv(tmp_path, ["num", "word", "code", "gappy", "label"], rows)


def test_infers_types_task_and_classes(mixed):
    s = infer_schema(mixed, "label")
    assert s.task == "classification" and s.classes == ("no", "yes") and s.label_kind == "str"
    assert [(f.name, f.kind) for f in s.features] == [
        ("num", "numeric"), ("word", "categorical"), ("code", "numeric"), ("gappy", "numeric")]
    assert s.features[1].categories == ("a", "b", "c")
    assert (s.n_rows, s.n_validation, s.n_train) == (40, 8, 32)
    assert len(s.fingerprint) == 64
    text = s.describe()
    assert "classification, 2 classes: no, yes" in text and "word" in text and "categorical (3: a, b, c)" in text
    assert Schema.from_json(s.to_json()) == s


def test_corrections_change_the_schema(mixed):
    s = infer_schema(mixed, "code", categorical=["num"], ignore=["gappy"], task="regression", seed=3)
    assert s.task == "regression" and s.classes == ()
    kinds = {f.name: f.kind for f in s.features}
    assert kinds == {"num": "categorical", "word": "categorical", "label": "categorical"}
    assert s.ignored == ("gappy",) and s.seed == 3
    c = infer_schema(mixed, "code")
    assert c.task == "classification" and c.classes == ("0", "1", "2", "3") and c.label_kind == "int"


def test_encoding_and_missing_values(mixed):
    s = infer_schema(mixed, "label")
    ds = load_dataset(mixed, s)
    assert ds.X.shape == (40, 4) and ds.y.dtype.kind == "U"
    assert list(ds.X[:3, 1]) == [0.0, 1.0, 2.0]  # index into the sorted categories
    assert np.isnan(ds.X[0, 3]) and ds.X[1, 3] == 1.0


def test_split_is_fixed_by_seed_stratified_and_exact(mixed):
    s = infer_schema(mixed, "label")
    ds = load_dataset(mixed, s)
    tr1, va1 = split_indices(s, ds.y)
    tr2, va2 = split_indices(s, ds.y)
    assert np.array_equal(va1, va2) and len(va1) == s.n_validation
    assert sorted(np.concatenate([tr1, va1]).tolist()) == list(range(40))
    assert sorted(np.unique(ds.y[va1], return_counts=True)[1].tolist()) == [4, 4]
    other = infer_schema(mixed, "label", seed=9)
    assert not np.array_equal(split_indices(other, ds.y)[1], va1)


def test_npz_with_matrix_and_target(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    p = tmp_path / "d.npz"
    np.savez(p, X=X, y=(X[:, 0] > 0).astype(int))
    s = infer_schema(str(p), "y")
    assert [f.name for f in s.features] == ["x0", "x1", "x2"] and s.classes == ("0", "1")
    ds = load_dataset(str(p), s)
    assert np.allclose(ds.X, X) and ds.y.dtype == np.int64


@pytest.mark.parametrize(
    "setup, kwargs, message",
    [
        ("ok", {"target": "nope"}, "--target: no column 'nope' in .*; columns are num, word, code, gappy, label"),
        ("ok", {"target": "label", "categorical": ["zzz"]}, "--categorical: no column 'zzz'"),
        ("ok", {"target": "label", "numeric": ["word"]}, "--numeric: column 'word' holds 'a', which is not a number"),
        ("ok", {"target": "label", "task": "regression"}, "--task regression needs a numeric target"),
        ("ok", {"target": "label", "task": "ranking"}, "--task must be one of classification, regression, got 'ranking'"),
        ("ok", {"target": "gappy"}, "target column 'gappy' .* has 6 empty value"),
        ("ok", {"target": "label", "categorical": ["label"]}, "is the target column"),
        ("onecls", {"target": "label"}, "single class 'x'"),
        ("ragged", {"target": "label"}, "row 3 has 1 cells, the header has 2"),
        ("missing", {"target": "label"}, "does not exist"),
    ],
)
def test_bad_input_names_the_problem(tmp_path, mixed, setup, kwargs, message):
    path = {
        "ok": lambda: mixed,
        "onecls": lambda: _csv(tmp_path, ["a", "label"], [[i, "x"] for i in range(10)], "one.csv"),
        "ragged": lambda: _csv(tmp_path, ["a", "label"], [[1, "x"], [2]], "rag.csv"),
        "missing": lambda: str(tmp_path / "none.csv"),
    }[setup]()
    target = kwargs.pop("target")
    with pytest.raises(DatasetError, match=message):
        infer_schema(path, target, **kwargs)


def test_changed_dataset_is_refused(mixed):
    s = infer_schema(mixed, "label")
    with open(mixed, "a") as fh:
        fh.write("1,a,1,1,yes\n")
    with pytest.raises(DatasetError, match="changed since it was submitted"):
        load_dataset(mixed, s)
