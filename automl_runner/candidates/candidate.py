"""A candidate model: a named estimator with fixed hyperparameters, the schemas it accepts and
how it takes a device and exports to ONNX (see :mod:`automl_runner.candidates.catalogue` for the list)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import AutomlError
from ..datasets.schema import Schema


@dataclass(frozen=True)
class Candidate:
    """One model the queue can train: an estimator class with fixed hyperparameters.

    ``estimator`` is called as ``estimator(**hyperparameters)``.

    How it takes a device:

    * ``uses_gpu``: it needs a GPU; CPU workers never take it.
    * ``takes_gpu``: it trains on the worker's GPU when the worker has one (``--device cuda:N``)
      and on the CPU otherwise (XGBoost, PyTorch). A candidate with neither trains on the CPU
      even on a GPU worker, and the store records ``cpu`` for it.
    * ``device_parameter``: the keyword under which the device the candidate trains on
      (``cpu`` or ``cuda:N``, see :meth:`placement`) is passed to the estimator, as is;
      ``device_kwargs`` instead maps that device to keyword arguments in the estimator's own
      words (LightGBM: ``{"device_type": "gpu", "gpu_device_id": N}``).
    * ``thread_parameter``: the keyword that caps the estimator's own threads (XGBoost's
      ``n_jobs``); the worker passes its per-worker thread cap under it.

    How it is exported: ``exporter`` is None for scikit-learn estimators (skl2onnx converts
    the whole pipeline). Otherwise it is the framework's own exporter, called as
    ``exporter(model, n_inputs)`` with the fitted model step, returning an ``onnx.ModelProto``
    with one float input ``[N, n_inputs]`` (the preprocessed features) and, for classification,
    an output named ``probabilities`` (``[N, classes]`` in the order of ``model.classes_``), for
    regression the predictions as its first output. :func:`export_onnx` puts skl2onnx's
    preprocessing in front and the class labels behind, so every candidate exports to one graph
    with one input ``X`` and a ``label`` output, checked like the others.

    Early stopping (see docs/automl.md): ``fidelity`` names the budget unit of an iterative
    learner (``rounds``, ``epochs``, ...), ``fidelity_param`` the hyperparameter that sets it
    (the estimator resumes with ``warm_start``), ``max_budget`` the full budget.
    """

    name: str
    family: str
    estimator: Callable[..., Any]
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ("classification",)
    uses_gpu: bool = False
    device_parameter: str | None = None
    #: Standardise numeric features (linear models, SVMs, k-NN, MLP); trees do not need it.
    scale: bool = True
    min_train_rows: int = 2
    max_train_rows: int | None = None
    description: str = ""
    takes_gpu: bool = False
    device_kwargs: Callable[[str], Mapping[str, Any]] | None = None
    thread_parameter: str | None = None
    exporter: Callable[[Any, int], Any] | None = None
    #: Schemas it accepts beyond task and size (the CNN: image-shaped features).
    accepts_schema: Callable[[Schema], bool] | None = None
    fidelity: str | None = None
    fidelity_param: str | None = None
    max_budget: int = 1

    def accepts(self, schema: Schema) -> bool:
        """Whether this candidate can be trained on a dataset with this schema."""
        if schema.task not in self.tasks:
            return False
        if schema.n_train < self.min_train_rows:
            return False
        if self.max_train_rows is not None and schema.n_train > self.max_train_rows:
            return False
        if self.accepts_schema is not None and not self.accepts_schema(schema):
            return False
        return True

    def runs_on(self, device: str) -> bool:
        return device.startswith("cuda") or not self.uses_gpu

    def placement(self, device: str) -> str:
        """The device this candidate trains on when the worker runs on ``device``."""
        takes = self.uses_gpu or self.takes_gpu or self.device_parameter or self.device_kwargs is not None
        if device.startswith("cuda") and takes:
            return device
        return "cpu"

    def build(self, schema: Schema, device: str = "cpu", *, threads: int | None = None):
        """A fresh, unfitted pipeline: preprocessing for the schema, then the estimator."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        if not self.runs_on(device):
            raise AutomlError(f"candidate {self.name!r} needs a GPU; device {device!r} is not one")
        parts = []
        num = schema.numeric_indices
        cat = schema.categorical_indices
        if num:
            steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
            if self.scale:
                steps.append(("scale", StandardScaler()))
            parts.append(("numeric", Pipeline(steps), num))
        if cat:
            parts.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat))
        kwargs = dict(self.hyperparameters)
        placed = self.placement(device)
        if self.device_parameter:
            kwargs[self.device_parameter] = placed
        if self.device_kwargs is not None:
            kwargs.update(self.device_kwargs(placed))
        if self.thread_parameter and threads:
            kwargs[self.thread_parameter] = int(threads)
        model = self.estimator(**kwargs)
        return Pipeline([("features", ColumnTransformer(parts, remainder="drop")), ("model", model)])

    def spec(self) -> dict:
        """What the store records about the candidate (the code itself stays in the catalogue)."""
        return {
            "name": self.name,
            "family": self.family,
            "estimator": f"{getattr(self.estimator, '__module__', '?')}.{getattr(self.estimator, '__qualname__', self.estimator)}",
            "hyperparameters": _jsonable(dict(self.hyperparameters)),
            "tasks": list(self.tasks),
            "uses_gpu": self.uses_gpu,
            "takes_gpu": self.takes_gpu,
            "exporter": "skl2onnx" if self.exporter is None else getattr(self.exporter, "__qualname__", repr(self.exporter)),
            "fidelity": self.fidelity,
            "fidelity_param": self.fidelity_param,
            "max_budget": self.max_budget,
            "min_train_rows": self.min_train_rows,
            "max_train_rows": self.max_train_rows,
        }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
