"""The candidate catalogue: coverage, schema acceptance, ONNX export and its check, plugins."""
from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest

from automl_runner.candidates.catalogue import (
    GATE_OPSETS,
    Candidate,
    check_onnx,
    default_catalogue,
    export_onnx,
    load_catalogue,
    onnx_predict,
    validation_score,
)
from automl_runner.errors import AutomlError, ExportError
from automl_runner.datasets.schema import infer_schema, load_dataset


def _write(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    """Three classes with string labels, a categorical column and missing numeric cells."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(150):
        a, b = rng.normal(), rng.normal()
        col = rng.choice(["red", "green", "blue"])
        label = ["low", "mid", "high"][int(a + (col == "red") > 0.3) + int(b > 0.8)]
        rows.append([round(a, 4), "" if i % 17 == 0 else round(b, 4), col, label])
    path = _write(tmp_path_factory.mktemp("cat") / "cls.csv", ["a", "b", "color", "label"], rows)
    schema = infer_schema(path, "label")
    return schema, load_dataset(path, schema)


@pytest.fixture(scope="module")
def reg_data(tmp_path_factory):
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(80):
        a, b = rng.normal(), rng.normal()
        rows.append([a, b, 2 * a - b + 0.1 * rng.normal()])
    path = _write(tmp_path_factory.mktemp("reg") / "reg.csv", ["a", "b", "y"], rows)
    schema = infer_schema(path, "y")
    return schema, load_dataset(path, schema)


def test_catalogue_covers_the_families_with_unique_names():
    cat = default_catalogue()
    names = [c.name for c in cat]
    assert len(names) == len(set(names))
    cls = [c for c in cat if "classification" in c.tasks]
    assert 15 <= len(cls) <= 30
    families = {c.family for c in cls}
    assert {"linear", "svm", "knn", "forest", "boosting", "naive-bayes", "mlp", "tree"} <= families
    assert not any(c.uses_gpu for c in cat)


def assert_loads_in_every_gate(blob: bytes, name: str) -> None:
    """The export imports no opset newer than the oldest onnxruntime the gate allows (1.17) runs,
    and an IR version it reads (9): skl2onnx's defaults (IR 10) would not load there."""
    import onnx

    model = onnx.load_from_string(blob)
    assert model.ir_version <= 9, (name, model.ir_version)
    for imp in model.opset_import:
        assert imp.version <= GATE_OPSETS[imp.domain or ""], (name, imp.domain, imp.version)


def test_every_classifier_trains_and_exports_to_an_equivalent_onnx_model(cls_data):
    schema, ds = cls_data
    assert schema.categorical_indices == [2] and schema.classes == ("high", "low", "mid")
    X_tr, X_val, y_tr, y_val = ds.split()
    scores = {}
    for cand in default_catalogue():
        if not cand.accepts(schema):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = cand.build(schema).fit(X_tr, y_tr)
        blob = export_onnx(est, schema, X_val)  # raises if ONNX disagrees with the estimator
        assert_loads_in_every_gate(blob, cand.name)
        pred = onnx_predict(blob, X_val)
        assert set(np.asarray(pred).astype(str)) <= set(schema.classes)
        scores[cand.name] = validation_score(schema, y_val, est.predict(X_val))
    assert len(scores) == 21
    # the data is learnable: the best candidate is far above the majority class
    majority = max(np.mean(y_val == c) for c in schema.classes)
    assert max(scores.values()) > majority + 0.1


def test_every_regressor_trains_and_exports(reg_data):
    schema, ds = reg_data
    X_tr, X_val, y_tr, y_val = ds.split()
    done = 0
    for cand in default_catalogue():
        if not cand.accepts(schema):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = cand.build(schema).fit(X_tr, y_tr)
        blob = export_onnx(est, schema, X_val)
        assert_loads_in_every_gate(blob, cand.name)
        assert np.allclose(onnx_predict(blob, X_val), est.predict(X_val.astype(np.float32)), rtol=1e-3, atol=1e-3)
        done += 1
    assert done == 12
    ridge = next(c for c in default_catalogue() if c.name == "ridge-a1").build(schema).fit(X_tr, y_tr)
    assert validation_score(schema, y_val, ridge.predict(X_val)) > 0.95


def test_check_rejects_an_onnx_model_that_predicts_differently(cls_data):
    schema, ds = cls_data
    X_tr, X_val, y_tr, _ = ds.split()
    cat = {c.name: c for c in default_catalogue()}
    a = cat["logreg-C0.01"].build(schema).fit(X_tr, y_tr)
    b = cat["decision-tree"].build(schema).fit(X_tr, y_tr)
    assert (a.predict(X_val) != b.predict(X_val)).any()
    blob_b = export_onnx(b, schema, X_val)
    with pytest.raises(ExportError, match="ONNX model disagrees with the estimator"):
        check_onnx(blob_b, a, schema, X_val)


@pytest.mark.parametrize(
    "name, rows, task, accepted",
    [
        ("knn-15", 10, "classification", False),  # needs 15 training rows
        ("knn-15", 40, "classification", True),
        ("ridge-a1", 40, "classification", False),  # a regressor
        ("logreg-C1", 40, "regression", False),
        ("svc-rbf-C1", 30_000, "classification", False),  # kernel SVMs stop at 20,000 rows
    ],
)
def test_accepts_checks_task_and_size(name, rows, task, accepted):
    from automl_runner.datasets.schema import Feature, Schema

    schema = Schema(source="x", fingerprint="0", target="y", task=task, features=(Feature("a", "numeric"),),
                    n_rows=int(rows / 0.8), classes=("0", "1") if task == "classification" else (),
                    label_kind="int")
    cand = next(c for c in default_catalogue() if c.name == name)
    assert cand.accepts(schema) is accepted


def test_gpu_candidate_refuses_a_cpu_device(cls_data):
    from sklearn.linear_model import LogisticRegression

    schema, _ = cls_data
    cand = Candidate("gpu-x", "test", LogisticRegression, {}, uses_gpu=True)
    assert not cand.runs_on("cpu") and cand.runs_on("cuda:1")
    with pytest.raises(AutomlError, match="needs a GPU"):
        cand.build(schema, "cpu")
    seen = {}

    def factory(device, C=1.0):
        seen["device"] = device
        return LogisticRegression(C=C)

    Candidate("dev", "test", factory, {"C": 1.0}, device_parameter="device").build(schema, "cuda:3")
    assert seen == {"device": "cuda:3"}


def _install_plugin(tmp_path, monkeypatch, body, name="plug"):
    d = tmp_path / f"{name}_site"
    (d / f"{name}-0.1.dist-info").mkdir(parents=True)
    (d / f"{name}.py").write_text(body)
    (d / f"{name}-0.1.dist-info" / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (d / f"{name}-0.1.dist-info" / "entry_points.txt").write_text(
        f"[easeml_automl.candidates]\none = {name}:ONE\nmany = {name}:many\nbroken = {name}:missing\n")
    monkeypatch.syspath_prepend(str(d))


def test_entry_point_candidates_join_the_catalogue(tmp_path, monkeypatch):
    _install_plugin(tmp_path, monkeypatch, (
        "from sklearn.tree import DecisionTreeClassifier\n"
        "from automl_runner.candidates.catalogue import Candidate\n"
        "ONE = Candidate('plug-tree-d2', 'tree', DecisionTreeClassifier, {'max_depth': 2}, scale=False)\n"
        "def many():\n"
        "    return [Candidate('plug-tree-d3', 'tree', DecisionTreeClassifier, {'max_depth': 3}, scale=False)]\n"
    ))
    with pytest.warns(UserWarning, match="'broken'.*failed to load"):
        cat = load_catalogue()
    names = [c.name for c in cat]
    assert set(names[-2:]) == {"plug-tree-d2", "plug-tree-d3"}
    from automl_runner.candidates.gpu_candidates import gpu_catalogue

    assert len(names) == len(default_catalogue()) + len(gpu_catalogue()) + 2
    with pytest.raises(AutomlError, match="two candidates are named 'logreg-C1'"), pytest.warns(UserWarning):
        load_catalogue(extra=[next(c for c in default_catalogue() if c.name == "logreg-C1")])
