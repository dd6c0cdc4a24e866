"""The catalogue (ease.ml's knowledge base): candidate models the queue may train for a tenant.

A :class:`Candidate` is a named scikit-learn estimator with fixed hyperparameters. It says which
schemas it accepts (task, size limits) and whether it needs a GPU, and builds a pipeline that
imputes, scales and one-hot encodes the schema's features before the estimator, so that every
candidate takes the same float matrix and exports to ONNX as one graph with one input ``X``.

The catalogue is extensible: a package registers more candidates under the entry point group
``easeml_automl.candidates``; each entry point is a :class:`Candidate`, a list of them, or a
callable returning either. :meth:`automl_runner.store.Store.add_candidate` then queues a new
candidate for every tenant whose schema it accepts.
"""
from __future__ import annotations

import warnings
from importlib import metadata
from typing import Iterable

import numpy as np

from .candidate import Candidate
from ..errors import AutomlError, ExportError
from ..datasets.schema import Schema

ENTRY_POINT_GROUP = "easeml_automl.candidates"


def default_catalogue() -> list[Candidate]:
    """The built-in candidates: 21 for classification, 12 for regression, all CPU, all ONNX-exportable."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    C, R = ("classification",), ("regression",)
    # Kernel SVMs are quadratic in the training rows: beyond this they cost more than they give.
    svm_rows = 20_000
    cands = [
        *[
            Candidate(f"logreg-C{c:g}", "linear", LogisticRegression, {"C": c, "max_iter": 2000}, C)
            for c in (0.01, 0.1, 1.0, 10.0)
        ],
        *[
            Candidate(f"linear-svm-C{c:g}", "svm", LinearSVC, {"C": c, "max_iter": 5000}, C)
            for c in (0.1, 1.0)
        ],
        *[
            Candidate(f"svc-rbf-C{c:g}", "svm", SVC, {"C": c, "kernel": "rbf", "gamma": "scale"}, C,
                      max_train_rows=svm_rows)
            for c in (1.0, 10.0)
        ],
        *[
            Candidate(f"knn-{k}", "knn", KNeighborsClassifier, {"n_neighbors": k}, C, min_train_rows=k)
            for k in (5, 15)
        ],
        Candidate("decision-tree-d5", "tree", DecisionTreeClassifier, {"max_depth": 5, "random_state": 0}, C, scale=False),
        Candidate("decision-tree", "tree", DecisionTreeClassifier, {"min_samples_leaf": 2, "random_state": 0}, C, scale=False),
        Candidate("random-forest-100", "forest", RandomForestClassifier,
                  {"n_estimators": 100, "min_samples_leaf": 1, "random_state": 0}, C, scale=False),
        Candidate("random-forest-100-leaf5", "forest", RandomForestClassifier,
                  {"n_estimators": 100, "min_samples_leaf": 5, "random_state": 0}, C, scale=False),
        Candidate("extra-trees-100", "forest", ExtraTreesClassifier,
                  {"n_estimators": 100, "min_samples_leaf": 1, "random_state": 0}, C, scale=False),
        Candidate("gradient-boosting-100", "boosting", GradientBoostingClassifier,
                  {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3, "random_state": 0}, C, scale=False),
        Candidate("gradient-boosting-200-lr0.05", "boosting", GradientBoostingClassifier,
                  {"n_estimators": 200, "learning_rate": 0.05, "max_depth": 4, "subsample": 0.8, "random_state": 0},
                  C, scale=False),
        Candidate("gaussian-nb", "naive-bayes", GaussianNB, {}, C),
        Candidate("lda", "linear", LinearDiscriminantAnalysis, {}, C),
        Candidate("mlp-64", "mlp", MLPClassifier,
                  {"hidden_layer_sizes": (64,), "max_iter": 300, "random_state": 0}, C),
        Candidate("mlp-128-64", "mlp", MLPClassifier,
                  {"hidden_layer_sizes": (128, 64), "max_iter": 300, "early_stopping": True, "random_state": 0},
                  C, min_train_rows=20),
        # regression
        *[Candidate(f"ridge-a{a:g}", "linear", Ridge, {"alpha": a}, R) for a in (0.1, 1.0, 10.0)],
        Candidate("linear-svr", "svm", LinearSVR, {"C": 1.0, "max_iter": 5000}, R),
        Candidate("svr-rbf", "svm", SVR, {"C": 1.0}, R, max_train_rows=svm_rows),
        Candidate("knn-reg-5", "knn", KNeighborsRegressor, {"n_neighbors": 5}, R, min_train_rows=5),
        Candidate("knn-reg-15", "knn", KNeighborsRegressor, {"n_neighbors": 15}, R, min_train_rows=15),
        Candidate("decision-tree-reg-d5", "tree", DecisionTreeRegressor, {"max_depth": 5, "random_state": 0}, R, scale=False),
        Candidate("random-forest-reg-100", "forest", RandomForestRegressor,
                  {"n_estimators": 100, "random_state": 0}, R, scale=False),
        Candidate("extra-trees-reg-100", "forest", ExtraTreesRegressor,
                  {"n_estimators": 100, "random_state": 0}, R, scale=False),
        Candidate("gradient-boosting-reg-100", "boosting", GradientBoostingRegressor,
                  {"n_estimators": 100, "max_depth": 3, "random_state": 0}, R, scale=False),
        Candidate("mlp-reg-64", "mlp", MLPRegressor,
                  {"hidden_layer_sizes": (64,), "max_iter": 500, "random_state": 0}, R),
    ]
    return cands


def _entry_point_candidates(group: str = ENTRY_POINT_GROUP) -> list[Candidate]:
    found: list[Candidate] = []
    for ep in metadata.entry_points(group=group):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, Candidate):
                obj = obj()
        except Exception as exc:  # a broken plugin must not take the whole queue down
            warnings.warn(f"candidate entry point {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        items = [obj] if isinstance(obj, Candidate) else list(obj) if isinstance(obj, (list, tuple)) else None
        if items is None or not all(isinstance(c, Candidate) for c in items):
            warnings.warn(
                f"candidate entry point {ep.name!r} ({ep.value}) returned {type(obj).__name__}; "
                "expected a Candidate or a list of them", stacklevel=2,
            )
            continue
        found.extend(items)
    return found


def load_catalogue(extra: Iterable[Candidate] = ()) -> list[Candidate]:
    """The default catalogue plus every candidate registered by entry point (and ``extra``)."""
    from .gpu_candidates import gpu_catalogue

    cands = default_catalogue() + gpu_catalogue() + _entry_point_candidates() + list(extra)
    seen: dict[str, Candidate] = {}
    for c in cands:
        if c.name in seen:
            raise AutomlError(f"two candidates are named {c.name!r}; candidate names must be unique")
        seen[c.name] = c
    return cands


def by_name(catalogue: Iterable[Candidate]) -> dict[str, Candidate]:
    return {c.name: c for c in catalogue}


# --------------------------------------------------------------------------------------------
# evaluation and export


def validation_score(schema: Schema, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The quality the scheduler maximises: accuracy for classification, R^2 for regression."""
    if schema.task == "classification":
        return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
    y_true = np.asarray(y_true, dtype=float)
    ss_res = float(np.sum((y_true - np.asarray(y_pred, dtype=float)) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)


#: Rows whose two best class probabilities differ by less than this are numerical ties: the
#: float32 ONNX graph may break such a tie the other way than float64 scikit-learn.
TIE_MARGIN = 1e-5


#: The newest opsets a promoted model may import: those of the oldest onnxruntime the gate
#: installs with (1.17, pyproject.toml), so a model a worker exports with a newer onnx and
#: skl2onnx (which would pick opset 22 and IR version 10 by default) still loads in every gate.
GATE_OPSETS = {"": 20, "ai.onnx.ml": 3}


def export_onnx(estimator, schema: Schema, X_sample: np.ndarray, *, check: bool = True, exporter=None) -> bytes:
    """Serialise a fitted pipeline to ONNX (one float input ``X``) and check it on ``X_sample``.

    The check runs the ONNX graph with onnxruntime and compares its predictions with the
    estimator's on the same float32 rows: class labels must be equal on every row that is not a
    numerical tie (see :data:`TIE_MARGIN`), regression outputs equal to float32 precision.
    Raises :class:`ExportError` otherwise.

    ``exporter``: the candidate's own exporter for its model step (see :class:`Candidate`); the
    preprocessing still goes through skl2onnx and the two graphs are joined into one.
    """
    if exporter is not None:
        from .onnx_compose import compose_export

        X32 = np.asarray(X_sample, dtype=np.float32)
        try:
            blob = compose_export(estimator, schema, exporter)
        except ExportError:
            raise
        except Exception as exc:
            model = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
            raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(exc).__name__}: {exc}") from exc
        if check:
            check_onnx(blob, estimator, schema, X32)
        return blob
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    X32 = np.asarray(X_sample, dtype=np.float32)
    types = [("X", FloatTensorType([None, schema.n_features]))]
    model = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    from sklearn.base import is_classifier

    # Plain probability tensors instead of a list of dicts. Converters of classifiers without
    # probabilities (LinearSVC) reject that option, yet inside a Pipeline skl2onnx applies it
    # unless the model gets options of its own, hence the explicit (default) `nocl`.
    options = None
    if is_classifier(model):
        options = {id(model): {"zipmap": False} if hasattr(model, "predict_proba") else {"nocl": False}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # converters read deprecated attributes
            onx = to_onnx(estimator, initial_types=types, options=options, target_opset=GATE_OPSETS)
    except Exception as exc:
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    blob = onx.SerializeToString()
    if check:
        check_onnx(blob, estimator, schema, X32)
    return blob


def onnx_predict(blob: bytes, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: np.asarray(X, dtype=np.float32)})
    return np.asarray(out[0]).reshape(len(X), -1)[:, 0] if np.asarray(out[0]).ndim > 1 else np.asarray(out[0])


def check_onnx(blob: bytes, estimator, schema: Schema, X: np.ndarray) -> None:
    """Raise :class:`ExportError` unless the ONNX graph predicts what the estimator predicts."""
    X32 = np.asarray(X, dtype=np.float32)
    got = onnx_predict(blob, X32)
    want = estimator.predict(X32)
    if schema.task == "regression":
        want = np.asarray(want, dtype=float)
        scale = max(1.0, float(np.max(np.abs(want))) if len(want) else 1.0)
        bad = np.flatnonzero(~np.isclose(got.astype(float), want, rtol=1e-3, atol=1e-4 * scale))
    else:
        got_s = np.asarray(got).astype(str)
        want_s = np.asarray(want).astype(str)
        bad = np.flatnonzero(got_s != want_s)
        if len(bad) and hasattr(estimator, "predict_proba"):
            try:
                proba = np.sort(estimator.predict_proba(X32[bad]), axis=1)
                gap = proba[:, -1] - proba[:, -2]
                bad = bad[gap >= TIE_MARGIN]
            except Exception:  # LinearSVC has no probabilities: every mismatch counts
                pass
        elif len(bad) and hasattr(estimator, "decision_function"):
            scores = np.asarray(estimator.decision_function(X32[bad]))
            if scores.ndim == 1:
                gap = np.abs(scores)
            else:
                s = np.sort(scores, axis=1)
                gap = s[:, -1] - s[:, -2]
            bad = bad[gap >= TIE_MARGIN]
    if len(bad):
        i = int(bad[0])
        raise ExportError(
            f"ONNX model disagrees with the estimator on {len(bad)} of {len(X32)} validation rows "
            f"(first: row {i}, onnx {got[i]!r} vs estimator {want[i]!r})"
        )
