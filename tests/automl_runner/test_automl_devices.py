"""Devices told the truth: `work --device cuda:N` is checked at start, and the store records where
each trial really trained (this machine has no GPU, so every trial here says `cpu`)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from automl_runner.worker import devices
from automl_runner.candidates.catalogue import load_catalogue
from automl_runner.cli import main
from automl_runner.worker.devices import DeviceError, check_device
from automl_runner.datasets.schema import infer_schema
from automl_runner.store import open_store
from automl_runner.worker.worker import Worker, WorkerOptions


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _dataset(tmp_path, n=80):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "label"])
        for _ in range(n):
            a, b, c = rng.normal(size=3)
            w.writerow([round(a, 4), round(b, 4), round(c, 4), int(a - b > 0)])
    return str(path)


def test_cpu_is_always_there():
    assert check_device("cpu") == "cpu"


@pytest.mark.parametrize("bad", ["gpu0", "cuda", "cuda:-1", "cuda:x", ""])
def test_malformed_devices_are_refused(bad):
    with pytest.raises(DeviceError, match="must be cpu or cuda:N"):
        check_device(bad)


def test_a_gpu_this_machine_lacks_is_refused_with_what_pytorch_sees():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert check_device(f"cuda:{n - 1}") == f"cuda:{n - 1}"
        with pytest.raises(DeviceError, match=f"{n} CUDA device"):
            check_device(f"cuda:{n}")
    else:
        with pytest.raises(DeviceError, match="PyTorch sees no CUDA device"):
            check_device("cuda:0")


def test_device_count_decides(monkeypatch):
    monkeypatch.setattr(devices, "torch_cuda_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1"
    with pytest.raises(DeviceError, match=r"2 CUDA device\(s\): cuda:0..cuda:1"):
        check_device("cuda:2")


def test_without_pytorch_xgboost_is_asked(monkeypatch):
    pytest.importorskip("xgboost")
    monkeypatch.setattr(devices, "torch_cuda_count", lambda: None)
    # XGBoost really trains one round on cuda:0 and reports where it ran: here, the CPU
    with pytest.raises(DeviceError, match="XGBoost finds no such CUDA device"):
        check_device("cuda:0")
    monkeypatch.setattr(devices, "xgboost_sees", lambda i: i == 0)
    assert check_device("cuda:0") == "cuda:0"


def test_without_any_gpu_framework_the_message_names_the_extra(monkeypatch):
    monkeypatch.setattr(devices, "torch_cuda_count", lambda: None)
    monkeypatch.setattr(devices, "xgboost_sees", lambda i: None)
    with pytest.raises(DeviceError, match=r"pip install 'easeml-ci\[gpu\]'"):
        check_device("cuda:3")


def test_work_on_a_missing_gpu_exits_2_before_touching_the_queue(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    data = _dataset(tmp_path)
    with open_store(url) as s:
        s.add_tenant("t1", data, infer_schema(data, "label"), load_catalogue(), only=["gaussian-nb"])
    r = CliRunner().invoke(main, ["work", "--store", url, "--device", "cuda:7", "--once"])
    assert r.exit_code == 2, r.output
    assert "cuda:7" in r.output and "Traceback" not in r.output
    with open_store(url) as s:
        assert [(t.status, t.attempts) for t in s.trials()] == [("queued", 0)]
        assert s.events() == []


def test_the_store_records_where_each_trial_really_ran(tmp_path):
    """A scikit-learn candidate on a worker started as cuda:0 trained on the CPU: the trial
    says `cpu`, whatever the worker claimed; PyTorch and XGBoost report their own device."""
    pytest.importorskip("xgboost")  # the gpu extra (make test installs it; make test-lowest not)
    pytest.importorskip("torch")
    url = f"sqlite:///{tmp_path / 'q.db'}"
    data = _dataset(tmp_path)
    only = ["gaussian-nb", "xgboost-200", "torch-mlp-128-64"]
    with open_store(url) as s:
        s.add_tenant("t1", data, infer_schema(data, "label"), load_catalogue(), only=only)
    results = Worker(url, WorkerOptions(device="cpu", exit_when_idle=True, poll_seconds=0.05, promote=False,
                                        threads=1)).run()
    assert sorted((r.candidate, r.status, r.ran_on) for r in results) == sorted((c, "done", "cpu") for c in only)
    with open_store(url) as s:
        assert {t.candidate: t.ran_on for t in s.trials()} == {c: "cpu" for c in only}
        # a pretend GPU worker (the Python API does not check the device; the CLI does)
        s.add_tenant("t2", data, infer_schema(data, "label"), load_catalogue(), only=["gaussian-nb"])
    Worker(url, WorkerOptions(device="cuda:0", once=True, promote=False)).run()
    with open_store(url) as s:
        (t2,) = s.trials("t2")
        assert t2.ran_on == "cpu"
        device_claimed = s._read("SELECT device FROM trials WHERE id = ?", (t2.id,))[0][0]
        assert device_claimed == "cuda:0"  # what the worker was started with; ran_on is the truth
    r = CliRunner().invoke(main, ["status", "--store", url, "--tenant", "t1"])
    assert r.exit_code == 0, r.output
    assert "ran on:  cpu 3" in r.output
    r = CliRunner().invoke(main, ["status", "--store", url, "--json"])
    rows = {t["name"]: t for t in json.loads(r.output)["tenants"]}
    assert rows["t1"]["ran_on"] == {"cpu": 3} and rows["t2"]["ran_on"] == {"cpu": 1}


def test_status_shows_trials_recorded_before_ran_on_existed(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    data = _dataset(tmp_path)
    with open_store(url) as s:
        s.add_tenant("t1", data, infer_schema(data, "label"), load_catalogue(), only=["gaussian-nb"])
        claim = s.try_claim("t1", "gaussian-nb", "w", "cpu")
        s.complete(claim, "w", 0.9, 1.0, None, None)  # an older worker: no ran_on
        (row,) = s.status()
        assert row.ran_on == {"unrecorded": 1}


def test_a_worker_caps_every_thread_pool_it_trains_with(tmp_path):
    """In a fresh process (the caps are per process): BLAS/OpenMP pools, PyTorch, XGBoost's
    n_jobs through the candidate's thread_parameter, all at the worker's --threads."""
    pytest.importorskip("torch")  # the gpu extra (make test installs it; make test-lowest not)
    pytest.importorskip("xgboost")
    import subprocess
    import sys

    code = (
        "from threadpoolctl import threadpool_info\n"
        "import numpy, torch, xgboost\n"
        "from automl_runner.worker.threads import cap_threads, current_cap\n"
        "cap_threads(1)\n"
        "pools = [p['num_threads'] for p in threadpool_info()]\n"
        "print(current_cap(), torch.get_num_threads(), max(pools), len(pools))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cap, torch_threads, most, n_pools = map(int, out.stdout.split())
    assert (cap, torch_threads, most) == (1, 1, 1) and n_pools >= 1
    from automl_runner.candidates.catalogue import by_name

    schema = infer_schema(_dataset(tmp_path), "label")
    assert by_name(load_catalogue())["xgboost-200"].build(schema, "cpu", threads=1).steps[-1][1].n_jobs == 1
