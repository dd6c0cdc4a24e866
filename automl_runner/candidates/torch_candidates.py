"""PyTorch networks as scikit-learn estimators: an MLP for tabular tenants, a small CNN for
square image features (8x8 digits), trained on ``device`` (``cpu`` or ``cuda:N``).

They train with Adam on mini-batches, resume with ``warm_start`` (raise ``epochs``, fit again:
only the missing epochs run) or ``partial_fit`` (one epoch), and keep a CPU copy of the weights
between fits, so prediction and the ONNX export (``torch.onnx``, dynamic batch axis) run on the
CPU whatever device trained them. ``trained_on_`` is the device the weights were on while
training, as torch reports it.
"""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin


def _torch():
    import torch

    return torch


def build_net(architecture: str, n_inputs: int, n_outputs: int, hidden, channels):
    torch = _torch()
    nn = torch.nn
    if architecture == "mlp":
        layers, width = [], n_inputs
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, n_outputs))
        return nn.Sequential(*layers)
    if architecture == "cnn":
        side = int(round(math.sqrt(n_inputs)))
        if side * side != n_inputs:
            raise ValueError(f"a CNN needs square image features; got {n_inputs} features")
        c1, c2 = (int(c) for c in channels)
        pooled = side // 2
        return nn.Sequential(
            _image_module()(side),
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * pooled * pooled, n_outputs),
        )
    raise ValueError(f"architecture must be 'mlp' or 'cnn', got {architecture!r}")


def _image_module():
    torch = _torch()

    class Image(torch.nn.Module):
        """Rows of side*side pixels -> [N, 1, side, side]."""

        def __init__(self, side: int):
            super().__init__()
            self.side = side

        def forward(self, x):
            return x.reshape(-1, 1, self.side, self.side)

    return Image


class _TorchNet(BaseEstimator):
    _classify = True

    def __init__(self, architecture: str = "mlp", hidden=(128, 64), channels=(16, 32), epochs: int = 40,
                 batch_size: int = 64, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                 device: str = "cpu", random_state: int = 0, warm_start: bool = False):
        self.architecture = architecture
        self.hidden = hidden
        self.channels = channels
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.device = device
        self.random_state = random_state
        self.warm_start = warm_start

    # -- training -----------------------------------------------------------------------------
    def _init(self, X, y, classes=None) -> None:
        torch = _torch()
        self.n_features_in_ = X.shape[1]
        if self._classify:
            self.classes_ = np.unique(y) if classes is None else np.asarray(classes)
            n_out = len(self.classes_)
        else:
            yf = np.asarray(y, dtype=float)
            self.y_mean_ = float(yf.mean())
            self.y_std_ = float(yf.std()) or 1.0
            n_out = 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.net_ = build_net(self.architecture, X.shape[1], n_out, self.hidden, self.channels)
        self.optimizer_state_ = None
        self.epochs_done_ = 0

    def _train(self, X, y, epochs: int) -> None:
        torch = _torch()
        device = torch.device(self.device)
        net = self.net_.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        if self.optimizer_state_ is not None:
            opt.load_state_dict(self.optimizer_state_)
        Xt = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
        if self._classify:
            yt = torch.as_tensor(np.searchsorted(self.classes_, y), dtype=torch.long, device=device)
            loss_fn = torch.nn.CrossEntropyLoss()
        else:
            yn = (np.asarray(y, dtype=np.float32) - self.y_mean_) / self.y_std_
            yt = torch.as_tensor(yn.reshape(-1, 1), device=device)
            loss_fn = torch.nn.MSELoss()
        n = len(Xt)
        net.train()
        for epoch in range(self.epochs_done_, self.epochs_done_ + epochs):
            order = np.random.default_rng((self.random_state, epoch)).permutation(n)
            idx_all = torch.as_tensor(order, device=device)
            for start in range(0, n, self.batch_size):
                idx = idx_all[start:start + self.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        self.trained_on_ = str(next(net.parameters()).device)
        if self.trained_on_ == "cuda":
            self.trained_on_ = f"cuda:{torch.cuda.current_device()}"
        self.epochs_done_ += epochs
        # Keep the weights (and the optimiser's moments, to resume) on the CPU between fits.
        self.net_ = net.to("cpu").eval()
        self.optimizer_state_ = _to_cpu(opt.state_dict())

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float32)
        if not (self.warm_start and hasattr(self, "net_") and self.epochs >= self.epochs_done_):
            self._init(X, y)
        missing = int(self.epochs) - self.epochs_done_
        if missing > 0:
            self._train(X, y, missing)
        return self

    def partial_fit(self, X, y, classes=None):
        """One epoch (from scratch the first time)."""
        X = np.asarray(X, dtype=np.float32)
        if not hasattr(self, "net_"):
            self._init(X, y, classes)
        self._train(X, y, 1)
        return self

    # -- prediction -----------------------------------------------------------------------------
    def _forward(self, X) -> np.ndarray:
        torch = _torch()
        with torch.no_grad():
            out = self.net_(torch.as_tensor(np.asarray(X, dtype=np.float32)))
        return out.numpy()

    def export_module(self):
        """The network as ONNX should run it: softmax probabilities, or de-standardised values."""
        torch = _torch()
        net = self.net_
        if self._classify:
            return torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
        return torch.nn.Sequential(net, _Affine(self.y_std_, self.y_mean_)).eval()


def _to_cpu(obj):
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _Affine(scale: float, shift: float):
    torch = _torch()

    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = float(scale)
            self.shift = float(shift)

        def forward(self, x):
            return x * self.scale + self.shift

    return Affine()


class TorchNetClassifier(ClassifierMixin, _TorchNet):
    _classify = True

    def predict_proba(self, X):
        torch = _torch()
        with torch.no_grad():
            return self.export_module()(torch.as_tensor(np.asarray(X, dtype=np.float32))).numpy()

    def predict(self, X):
        return self.classes_[np.argmax(self._forward(X), axis=1)]


class TorchNetRegressor(RegressorMixin, _TorchNet):
    _classify = False

    def predict(self, X):
        return self._forward(X)[:, 0] * self.y_std_ + self.y_mean_


def export_torch(model: _TorchNet, n_inputs: int):
    """``torch.onnx.export`` of the network with a dynamic batch axis (input ``features``).

    The TorchScript-based exporter runs offline and in a fraction of a second; should a later
    torch drop it, the ``torch.export`` (dynamo) exporter takes over.
    """
    import onnx

    torch = _torch()
    module = model.export_module()
    dummy = torch.zeros(2, n_inputs, dtype=torch.float32)
    out_name = "probabilities" if model._classify else "variable"
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (dummy,), buf, dynamo=False, input_names=["features"], output_names=[out_name],
                              dynamic_axes={"features": {0: "batch"}, out_name: {0: "batch"}}, opset_version=17)
            return onnx.load_from_string(buf.getvalue())
        except (TypeError, AttributeError, RuntimeError) as legacy_error:
            try:
                prog = torch.onnx.export(module, (dummy,), dynamo=True, input_names=["features"],
                                         output_names=[out_name],
                                         dynamic_shapes=({0: torch.export.Dim("batch")},))
            except Exception:
                raise legacy_error
            return prog.model_proto
