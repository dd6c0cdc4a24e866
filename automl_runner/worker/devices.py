"""Which devices this machine has: `easeml-automl work --device cuda:N` is checked at start.

A worker that claims a GPU it does not have would train on the CPU and record the trials as run
on the GPU. So ``cuda:N`` is accepted only when a framework that trains there sees device N:
PyTorch (``torch.cuda.device_count()``) or, without PyTorch, XGBoost (one boosting round on
``cuda:N``, which XGBoost silently moves to the CPU when the GPU is missing). With neither
installed no candidate could use a GPU, and the message says which extra to install.
"""
from __future__ import annotations

import importlib.util
import re
import warnings

from ..errors import AutomlError

DEVICE = re.compile(r"^(cpu|cuda:(\d+))$")


class DeviceError(AutomlError):
    """The device asked for does not exist on this machine (exit 2)."""


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def torch_cuda_count() -> int | None:
    """How many CUDA devices PyTorch sees; None when PyTorch is not installed."""
    if not _have("torch"):
        return None
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def xgboost_sees(index: int) -> bool | None:
    """Whether XGBoost trains on ``cuda:index``; None when XGBoost is not installed."""
    if not _have("xgboost"):
        return None
    import json

    import numpy as np
    import xgboost as xgb

    X = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            booster = xgb.train({"device": f"cuda:{index}", "tree_method": "hist", "fail_on_invalid_gpu_id": True},
                                xgb.DMatrix(X, label=[0.0, 1.0, 0.0, 1.0]), num_boost_round=1)
    except xgb.core.XGBoostError:
        return False
    device = json.loads(booster.save_config())["learner"]["generic_param"].get("device", "cpu")
    return device.startswith("cuda")


def check_device(device: str) -> str:
    """``device`` if this machine can train there, else :class:`DeviceError` saying why."""
    m = DEVICE.match(device or "")
    if not m:
        raise DeviceError(f"--device must be cpu or cuda:N (N a GPU index), got {device!r}")
    if device == "cpu":
        return device
    index = int(m.group(2))
    count = torch_cuda_count()
    if count is not None:
        if index < count:
            return device
        seen = "no CUDA device" if count == 0 else f"{count} CUDA device(s): cuda:0..cuda:{count - 1}"
        raise DeviceError(f"--device {device}: PyTorch sees {seen} on this machine; "
                          "use --device cpu or a GPU index that exists")
    sees = xgboost_sees(index)
    if sees is None:
        raise DeviceError(f"--device {device}: no GPU framework is installed, so no candidate could train on a GPU; "
                          "install the GPU candidates with pip install 'easeml-ci[gpu]' (PyTorch, XGBoost), "
                          "or use --device cpu")
    if not sees:
        raise DeviceError(f"--device {device}: XGBoost finds no such CUDA device on this machine; "
                          "use --device cpu or a GPU index that exists")
    return device
