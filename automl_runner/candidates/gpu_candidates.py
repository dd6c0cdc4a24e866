"""Candidates that train on the worker's GPU: XGBoost and PyTorch networks (the ``gpu`` extra).

Each takes the device it trains on under ``device`` (``cpu`` or ``cuda:N``), reports where it
really trained in ``trained_on_`` (what the store records), resumes with ``warm_start`` (so early
stopping can grow its rounds or epochs), and is exported by its own framework's exporter:
onnxmltools for XGBoost, ``torch.onnx`` for the networks (see :mod:`automl_runner.candidates.onnx_compose`).

Without the frameworks installed (``pip install 'easeml-ci[gpu]'``) :func:`gpu_catalogue` is
empty and the queue runs the scikit-learn catalogue alone.
"""
from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from .candidate import Candidate
from ..datasets.schema import Schema


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------------------------
# XGBoost


class _XGBoost(BaseEstimator):
    """XGBoost's hist trees on ``device``, with labels of any kind and resumable rounds."""

    def __init__(self, n_estimators: int = 200, max_depth: int = 6, learning_rate: float = 0.1,
                 subsample: float = 1.0, colsample_bytree: float = 1.0, min_child_weight: float = 1.0,
                 device: str = "cpu", n_jobs: int | None = None, random_state: int = 0, warm_start: bool = False):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.warm_start = warm_start

    _classify = True

    def _booster_model(self, rounds: int):
        import xgboost as xgb

        cls = xgb.XGBClassifier if self._classify else xgb.XGBRegressor
        return cls(n_estimators=rounds, max_depth=self.max_depth, learning_rate=self.learning_rate,
                   subsample=self.subsample, colsample_bytree=self.colsample_bytree,
                   min_child_weight=self.min_child_weight, device=self.device, n_jobs=self.n_jobs,
                   random_state=self.random_state, tree_method="hist")

    def _target(self, y):
        if self._classify:
            if not (self.warm_start and hasattr(self, "model_")):
                self.classes_ = np.unique(y)
            return np.searchsorted(self.classes_, y)
        return np.asarray(y, dtype=float)

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float32)
        target = self._target(y)
        if self.warm_start and hasattr(self, "model_") and self.n_estimators >= self.rounds_:
            extra = self.n_estimators - self.rounds_
            if extra:  # resume: add only the missing rounds to the fitted booster
                self.model_ = self._booster_model(extra).fit(X, target, xgb_model=self.model_.get_booster())
        else:
            self.model_ = self._booster_model(self.n_estimators).fit(X, target)
        self.rounds_ = self.n_estimators
        self.n_features_in_ = X.shape[1]
        config = json.loads(self.model_.get_booster().save_config())
        dev = config["learner"]["generic_param"].get("device", "cpu")
        # XGBoost falls back to the CPU (with a warning) when the GPU is missing: say so.
        self.trained_on_ = "cpu" if dev == "cpu" else (dev if ":" in dev else f"{dev}:0")
        return self

    def _predict_input(self, X):
        return np.asarray(X, dtype=np.float32)

    def predict(self, X):
        out = self.model_.predict(self._predict_input(X))
        return self.classes_[np.asarray(out, dtype=int)] if self._classify else out


class XGBoostClassifier(ClassifierMixin, _XGBoost):
    _classify = True

    def predict_proba(self, X):
        return self.model_.predict_proba(self._predict_input(X))


class XGBoostRegressor(RegressorMixin, _XGBoost):
    _classify = False


def export_xgboost(model: _XGBoost, n_inputs: int):
    """onnxmltools' converter: the booster's trees as ai.onnx.ml tree ensembles."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    return convert_xgboost(model.model_, initial_types=[("features", FloatTensorType([None, n_inputs]))],
                           target_opset=15)


# --------------------------------------------------------------------------------------------
# the catalogue


def image_side(schema: Schema) -> int | None:
    """The side of a square grey image when the features look like one (8x8 digits, 28x28)."""
    n = schema.n_features
    side = int(round(math.sqrt(n)))
    if n >= 16 and side * side == n and all(f.kind == "numeric" for f in schema.features):
        return side
    return None


def gpu_catalogue() -> list:
    """The GPU-capable candidates whose frameworks are installed (none without the extra)."""
    C, R = ("classification",), ("regression",)
    out = []
    if have("xgboost") and have("onnxmltools"):
        common = {"max_depth": 6, "learning_rate": 0.1, "subsample": 0.9, "random_state": 0}
        xgb = dict(takes_gpu=True, device_parameter="device", thread_parameter="n_jobs", exporter=export_xgboost,
                   scale=False, fidelity="rounds", fidelity_param="n_estimators", max_budget=200)
        out += [
            Candidate("xgboost-200", "xgboost", XGBoostClassifier, {"n_estimators": 200, **common}, C, **xgb,
                      description="XGBoost hist trees, 200 rounds; on the GPU on a cuda worker"),
            Candidate("xgboost-reg-200", "xgboost", XGBoostRegressor, {"n_estimators": 200, **common}, R, **xgb,
                      description="XGBoost hist trees for regression, 200 rounds"),
        ]
    if have("torch"):
        from .torch_candidates import TorchNetClassifier, TorchNetRegressor, export_torch

        net = dict(takes_gpu=True, device_parameter="device", exporter=export_torch, fidelity="epochs",
                   fidelity_param="epochs", min_train_rows=20)
        out += [
            Candidate("torch-mlp-128-64", "torch-mlp", TorchNetClassifier,
                      {"architecture": "mlp", "hidden": (128, 64), "epochs": 40, "random_state": 0}, C,
                      max_budget=40, **net, description="PyTorch MLP 128-64, 40 epochs of Adam"),
            Candidate("torch-mlp-reg-128-64", "torch-mlp", TorchNetRegressor,
                      {"architecture": "mlp", "hidden": (128, 64), "epochs": 60, "random_state": 0}, R,
                      max_budget=60, **net, description="PyTorch MLP 128-64 for regression, 60 epochs"),
            Candidate("torch-cnn-16-32", "torch-cnn", TorchNetClassifier,
                      {"architecture": "cnn", "channels": (16, 32), "epochs": 20, "random_state": 0}, C,
                      max_budget=20, accepts_schema=lambda s: image_side(s) is not None, **net,
                      description="PyTorch CNN (two 3x3 convolutions) for square image features, 20 epochs"),
        ]
    return out
