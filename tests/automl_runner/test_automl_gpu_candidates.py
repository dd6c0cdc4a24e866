"""The GPU-capable candidates (XGBoost, PyTorch MLP and CNN), trained here on the CPU.

Each is exported by its own framework's exporter (onnxmltools, torch.onnx), joined with the
skl2onnx preprocessing into one graph, and checked like every candidate: the ONNX graph's
predictions equal the estimator's on the validation rows.
"""
from __future__ import annotations

import csv

import numpy as np
import onnx
import pytest

from automl_runner.candidates.catalogue import GATE_OPSETS, Candidate, by_name, export_onnx, load_catalogue, onnx_predict, validation_score
from automl_runner.errors import ExportError
from automl_runner.candidates.gpu_candidates import XGBoostClassifier, gpu_catalogue
from automl_runner.datasets.schema import infer_schema, load_dataset
from automl_runner.candidates.torch_candidates import TorchNetClassifier, TorchNetRegressor

GPU = by_name(gpu_catalogue())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """As a worker does (automl_runner.worker.threads): one training thread, not one per core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """600 rows of sklearn's 8x8 digits as a tenant's CSV: image-shaped features."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    path = tmp_path_factory.mktemp("digits") / "digits.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"px{i}" for i in range(64)] + ["digit"])
        for row, label in zip(X[:600], y[:600]):
            w.writerow([int(v) for v in row] + [int(label)])
    schema = infer_schema(path, "digit")
    return schema, load_dataset(path, schema).split()


@pytest.fixture(scope="module")
def mixed(mixed_csv):
    schema = infer_schema(mixed_csv, "label")
    return schema, load_dataset(mixed_csv, schema).split()


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory):
    """Numeric and categorical features, string labels, a few missing cells."""
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("mixed") / "mixed.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "colour", "label"])
        for i in range(300):
            a, b = rng.normal(size=2)
            colour = rng.choice(["red", "green", "blue"])
            label = "yes" if a + (colour == "red") - 0.5 * b > 0.3 else "no"
            w.writerow(["" if i % 37 == 0 else round(a, 4), round(b, 4), colour, label])
    return str(path)


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    rng = np.random.default_rng(4)
    path = tmp_path_factory.mktemp("reg") / "reg.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x1", "x2", "x3", "y"])
        for _ in range(300):
            x = rng.normal(size=3)
            w.writerow([*np.round(x, 4), round(float(2 * x[0] - x[1] ** 2 + 0.5 * x[2] + 0.1 * rng.normal()), 4)])
    schema = infer_schema(path, "y", task="regression")
    return schema, load_dataset(path, schema).split()


def test_the_catalogue_has_gpu_candidates_of_two_families_one_a_network():
    assert {"xgboost-200", "xgboost-reg-200", "torch-mlp-128-64", "torch-mlp-reg-128-64", "torch-cnn-16-32"} <= set(GPU)
    assert {c.family for c in GPU.values()} >= {"xgboost", "torch-mlp", "torch-cnn"}
    assert set(GPU) <= {c.name for c in load_catalogue()}
    for c in GPU.values():
        assert c.takes_gpu and not c.uses_gpu and c.exporter is not None
        assert c.placement("cuda:2") == "cuda:2" and c.placement("cpu") == "cpu"
        assert c.fidelity in ("rounds", "epochs") and c.max_budget > 1
        assert c.spec()["exporter"] != "skl2onnx"


def test_build_passes_the_device_and_the_thread_cap(digits):
    schema, _ = digits
    xgb = GPU["xgboost-200"].build(schema, "cuda:3", threads=1).steps[-1][1]
    assert (xgb.device, xgb.n_jobs) == ("cuda:3", 1)
    assert GPU["xgboost-200"].build(schema, "cpu").steps[-1][1].device == "cpu"
    assert GPU["torch-cnn-16-32"].build(schema, "cuda:1").steps[-1][1].device == "cuda:1"
    # a scikit-learn candidate trains on the CPU even on a GPU worker, and says so
    logreg = by_name(load_catalogue())["logreg-C1"]
    assert logreg.placement("cuda:0") == "cpu"


def _ops(blob: bytes) -> set[str]:
    return {n.op_type for n in onnx.load_from_string(blob).graph.node}


@pytest.mark.parametrize("name,op,min_accuracy", [
    ("xgboost-200", "TreeEnsembleClassifier", 0.85),
    ("torch-mlp-128-64", "Gemm", 0.85),
    ("torch-cnn-16-32", "Conv", 0.85),
])
def test_digits_train_on_the_cpu_and_export_through_their_own_framework(digits, name, op, min_accuracy):
    schema, (X_tr, X_val, y_tr, y_val) = digits
    cand = GPU[name]
    assert cand.accepts(schema)
    est = cand.build(schema, "cpu", threads=1).fit(X_tr, y_tr)
    assert est.steps[-1][1].trained_on_ == "cpu"
    assert validation_score(schema, y_val, est.predict(X_val)) >= min_accuracy
    blob = export_onnx(est, schema, X_val, exporter=cand.exporter)  # raises unless predictions agree
    assert op in _ops(blob)
    model = onnx.load_from_string(blob)
    assert model.ir_version <= 9 and all(imp.version <= GATE_OPSETS[imp.domain or ""] for imp in model.opset_import)
    assert [i.name for i in model.graph.input] == ["X"]
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    # dynamic batch axis: one row and many rows
    assert onnx_predict(blob, X_val[:1]).shape == (1,)
    got = onnx_predict(blob, X_val)
    assert np.array_equal(got.astype(np.int64), est.predict(X_val.astype(np.float32)).astype(np.int64))


def test_the_cnn_only_takes_image_shaped_features(mixed, digits):
    assert GPU["torch-cnn-16-32"].accepts(digits[0])
    assert not GPU["torch-cnn-16-32"].accepts(mixed[0])
    assert GPU["torch-mlp-128-64"].accepts(mixed[0])


@pytest.mark.parametrize("name", ["xgboost-200", "torch-mlp-128-64"])
def test_string_labels_categories_and_missing_cells_export_exactly(mixed, name):
    schema, (X_tr, X_val, y_tr, y_val) = mixed
    cand = GPU[name]
    est = cand.build(schema, "cpu", threads=1).fit(X_tr, y_tr)
    assert validation_score(schema, y_val, est.predict(X_val)) >= 0.8
    blob = export_onnx(est, schema, X_val, exporter=cand.exporter)
    assert list(onnx_predict(blob, X_val)) == list(est.predict(X_val.astype(np.float32)))
    assert set(onnx_predict(blob, X_val)) <= {"yes", "no"}


@pytest.mark.parametrize("name", ["xgboost-reg-200", "torch-mlp-reg-128-64"])
def test_regression_exports_its_values(regression, name):
    schema, (X_tr, X_val, y_tr, y_val) = regression
    cand = GPU[name]
    est = cand.build(schema, "cpu", threads=1).fit(X_tr, y_tr)
    assert validation_score(schema, y_val, est.predict(X_val)) >= 0.7
    blob = export_onnx(est, schema, X_val, exporter=cand.exporter)
    assert [o.name for o in onnx.load_from_string(blob).graph.output] == ["variable"]
    np.testing.assert_allclose(onnx_predict(blob, X_val), est.predict(X_val.astype(np.float32)), rtol=1e-3, atol=1e-3)


def test_a_wrong_export_is_caught(digits):
    """The check compares with the estimator: an exporter that writes other trees fails it."""
    schema, (X_tr, X_val, y_tr, y_val) = digits
    cand = GPU["xgboost-200"]
    est = cand.build(schema, "cpu", threads=1).set_params(model__n_estimators=20).fit(X_tr, y_tr)

    def stale(model, n_inputs):  # the booster after 1 round, not the 20 the estimator has
        early = XGBoostClassifier(n_estimators=1, max_depth=6, n_jobs=1).fit(X_tr, y_tr)
        return cand.exporter(early, n_inputs)

    with pytest.raises(ExportError, match="disagrees with the estimator"):
        export_onnx(est, schema, X_val, exporter=stale)


def test_xgboost_resumes_its_rounds_with_warm_start(digits):
    _, (X_tr, X_val, y_tr, _) = digits
    grown = XGBoostClassifier(n_estimators=5, max_depth=3, n_jobs=1, warm_start=True).fit(X_tr, y_tr)
    first = grown.model_.get_booster().num_boosted_rounds()
    grown.set_params(n_estimators=12).fit(X_tr, y_tr)
    whole = XGBoostClassifier(n_estimators=12, max_depth=3, n_jobs=1).fit(X_tr, y_tr)
    assert (first, grown.model_.get_booster().num_boosted_rounds(), grown.rounds_) == (5, 12, 12)
    np.testing.assert_allclose(grown.predict_proba(X_val), whole.predict_proba(X_val), rtol=1e-5, atol=1e-6)


def test_torch_resumes_epochs_with_warm_start_and_partial_fit(digits):
    _, (X_tr, X_val, y_tr, _) = digits
    kw = dict(architecture="mlp", hidden=(32,), random_state=0)
    grown = TorchNetClassifier(epochs=2, warm_start=True, **kw).fit(X_tr, y_tr)
    grown.set_params(epochs=4).fit(X_tr, y_tr)
    whole = TorchNetClassifier(epochs=4, **kw).fit(X_tr, y_tr)
    stepped = TorchNetClassifier(epochs=99, **kw)
    for _ in range(4):
        stepped.partial_fit(X_tr, y_tr)
    assert grown.epochs_done_ == whole.epochs_done_ == stepped.epochs_done_ == 4
    np.testing.assert_allclose(grown.predict_proba(X_val), whole.predict_proba(X_val), atol=1e-6)
    np.testing.assert_allclose(stepped.predict_proba(X_val), whole.predict_proba(X_val), atol=1e-6)
    once = TorchNetClassifier(epochs=1, **kw).fit(X_tr, y_tr)
    assert not np.allclose(once.predict_proba(X_val), whole.predict_proba(X_val), atol=1e-3)


def test_torch_regressor_learns_in_target_units(regression):
    schema, (X_tr, X_val, y_tr, y_val) = regression
    m = TorchNetRegressor(epochs=40, hidden=(32,)).fit(X_tr, y_tr)
    assert abs(float(np.mean(m.predict(X_val))) - float(np.mean(y_val))) < 0.5 * float(np.std(y_val))


def test_a_plugin_declares_its_exporter_and_device_words(mixed):
    """A plugin's candidate: a device mapped to its estimator's own keywords (LightGBM-style) and
    its own exporter for the model step; the catalogue adds preprocessing and labels."""
    from sklearn.linear_model import LogisticRegression

    seen = {}

    class Model(LogisticRegression):
        def __init__(self, C=1.0, device_type="cpu", gpu_device_id=-1):
            super().__init__(C=C)
            self.device_type = device_type
            self.gpu_device_id = gpu_device_id
            seen.update(device_type=device_type, gpu_device_id=gpu_device_id)

    def words(device):
        return {"device_type": "gpu", "gpu_device_id": int(device.split(":")[1])} if device != "cpu" else {}

    def exporter(model, n_inputs):
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType

        plain = LogisticRegression().set_params(**{k: v for k, v in model.get_params().items() if k == "C"})
        plain.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
        return to_onnx(plain, initial_types=[("features", FloatTensorType([None, n_inputs]))],
                       options={id(plain): {"zipmap": False}}, target_opset={"": 15, "ai.onnx.ml": 1})

    schema, (X_tr, X_val, y_tr, _) = mixed
    cand = Candidate("plug-logreg", "linear", Model, {"C": 1.0}, device_kwargs=words, exporter=exporter)
    cand.build(schema, "cuda:5")
    assert seen == {"device_type": "gpu", "gpu_device_id": 5}
    est = cand.build(schema, "cpu").fit(X_tr, y_tr)
    blob = export_onnx(est, schema, X_val, exporter=cand.exporter)
    assert list(onnx_predict(blob, X_val)) == list(est.predict(X_val.astype(np.float32)))


def test_the_early_stopping_hook_records_a_partial_trial(tmp_path, monkeypatch, mixed, mixed_csv):
    """The worker's side of the early-stopping interface (/docs/automl.md): an iterative candidate
    goes through `early_stopping.train`; a trial stopped at a fraction of its budget is stored with
    that fidelity, exported as the smaller model it is, and fed back as a partial observation."""
    import sys
    import types

    import automl_runner.scheduling
    from automl_runner.store import open_store
    from automl_runner.worker.worker import Worker, WorkerOptions

    calls = []

    def decider(scheduler, tenant, candidate, pending_fn):
        return lambda fidelity, score, seconds: False  # stop after the first rung

    def train(cand, schema, device, X_tr, y_tr, X_val, y_val, decide=None, rungs=(0.25, 1.0), threads=None):
        budget = int(cand.max_budget * rungs[0])
        est = cand.build(schema, device, threads=threads).set_params(**{f"model__{cand.fidelity_param}": budget})
        est.fit(X_tr, y_tr)
        score = validation_score(schema, y_val, est.predict(X_val))
        go_on = decide(rungs[0], score, 0.1)
        calls.append((cand.name, budget, threads, go_on))
        return types.SimpleNamespace(estimator=est, score=score, fidelity=rungs[0], cost=0.1, stopped=not go_on)

    fake = types.ModuleType("automl_runner.scheduling.early_stopping")
    fake.decider, fake.train = decider, train
    monkeypatch.setitem(sys.modules, "automl_runner.scheduling.early_stopping", fake)
    monkeypatch.setattr(automl_runner.scheduling, "early_stopping", fake, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    class Sched:
        def __init__(self):
            self.seen = []

        def observe(self, *a):
            self.seen.append(("observe", a[1]))

        def observe_partial(self, tenant, cand, fidelity, quality, cost):
            self.seen.append(("partial", cand, fidelity))

        def start(self, *a):
            pass

        def choose(self, pending):
            t = next(iter(pending))
            return t, pending[t][0]

    schema, _ = mixed
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with open_store(url) as s:
        s.add_tenant("t", mixed_csv, schema, load_catalogue(), only=["xgboost-200", "gaussian-nb"])
    w = Worker(url, WorkerOptions(exit_when_idle=True, poll_seconds=0.05, promote=False, threads=1),
               chooser_factory=Sched)
    results = {r.candidate: r for r in w.run()}
    assert calls == [("xgboost-200", 50, 1, False)], results  # gaussian-nb has no fidelity: one plain fit
    assert (results["xgboost-200"].fidelity, results["gaussian-nb"].fidelity) == (0.25, None)
    with open_store(url) as s:
        assert {t.candidate: t.fidelity for t in s.trials()} == {"xgboost-200": 0.25, "gaussian-nb": None}
    onx = onnx.load(results["xgboost-200"].onnx_path)
    trees = next(n for n in onx.graph.node if n.op_type == "TreeEnsembleClassifier")
    n_trees = len(set(next(a.ints for a in trees.attribute if a.name == "nodes_treeids")))
    assert n_trees == 50 * len(schema.classes) or n_trees == 50  # 50 rounds, not 200
    w.feed._reset()
    w.feed.refresh()
    assert sorted(w.feed.scheduler.seen) == [("observe", "gaussian-nb"), ("partial", "xgboost-200", 0.25)]
