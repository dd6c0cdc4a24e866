"""A model that runs out of memory, or errs, only on some features must not tell the team which.

Two channels outside the verdict (docs/threat-model.md): the job killed by the kernel when the
model's memory use depends on the features (no step recorded, a crash the team sees), and
onnxruntime's own error log on the process's stderr, which quotes shapes and sizes computed from
the features. Under the memory ceiling the allocation fails inside onnxruntime and the gate
records a failed model: a counted fail step, the same fixed text. And nothing reaches stderr.
"""
from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper

from easeml_ci.models import memory as memory_ceiling
from easeml_ci.cli import main

SECRET_ROWS = 250_000_000  # floats the model asks for when it reads the secret feature: 1 GB


# Every test model reads a secret feature (column 0: the largest |value| of the batch, as "am")
# and gives round(column 1) as its label (adding "z", 0 x whatever it computed on the side).
_SECRET = [
    helper.make_node("Constant", [], ["i0"], value=helper.make_tensor("i0", T.INT64, [1], [0])),
    helper.make_node("Constant", [], ["i1"], value=helper.make_tensor("i1", T.INT64, [1], [1])),
    helper.make_node("Gather", ["X", "i0"], ["c0"], axis=1),
    helper.make_node("Gather", ["X", "i1"], ["c1"], axis=1),
    helper.make_node("ReduceMax", ["c0"], ["m"], keepdims=0),
    helper.make_node("Abs", ["m"], ["am"]),
]
_LABEL = [
    helper.make_node("Reshape", ["c1", "minus1"], ["c1r"]),
    helper.make_node("Add", ["c1r", "z"], ["c1z"]),
    helper.make_node("Round", ["c1z"], ["r"]),
    helper.make_node("Cast", ["r"], ["label"], to=T.INT64),
]


def _save(nodes, name: str, path) -> None:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("X", T.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("label", T.INT64, [None])],
        initializer=[helper.make_tensor("zero", T.FLOAT, [], [0.0]),
                     helper.make_tensor("minus1", T.INT64, [1], [-1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _hungry_model(path) -> None:
    """label = round(X[:, 1]); on the side it allocates max(X[:, 0]) floats (and adds 0 x their
    sum): a few on synthetic rows, as many as the secret feature says on the test set."""
    nodes = [
        *_SECRET,
        helper.make_node("Cast", ["am"], ["mi"], to=T.INT64),
        helper.make_node("Reshape", ["mi", "i1"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["big"],
                         value=helper.make_tensor("v", T.FLOAT, [1], [1.0])),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        *_LABEL,
    ]
    _save(nodes, "hungry", path)


def _workspace(tmp_path, secret: float):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    X = np.column_stack([rng.uniform(0, 3, 400), y]).astype(np.float32)
    X[7, 0] = secret
    np.savez(tmp_path / "t.npz", X=X, y=y)
    _hungry_model(tmp_path / "m.onnx")
    (tmp_path / ".easeml.yml").write_text(
        'condition: "n > 0.8 +/- 0.1"\nreliability: 0.9\nadaptivity: full\nsteps: 4\n'
        "ledger:\n  backend: file\n  path: ledger\n")


def _check(tmp_path):
    return CliRunner().invoke(main, ["check", "--config", str(tmp_path / ".easeml.yml"), "--new",
                                     str(tmp_path / "m.onnx"), "--testset", str(tmp_path / "t.npz"),
                                     "--json"], catch_exceptions=False)


@pytest.fixture
def tight_ceiling(monkeypatch):
    """The machine 'has' 256 MiB available: the model's 1 GB cannot fit under the ceiling."""
    monkeypatch.setattr(memory_ceiling, "available_bytes", lambda: 256 * 2**20)


def test_the_model_passes_where_the_secret_feature_is_small(tmp_path, tight_ceiling, capfd):
    _workspace(tmp_path, secret=2.0)
    r = _check(tmp_path)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verdict"] == "pass"


def test_running_out_of_memory_on_the_secret_feature_is_a_counted_fail_and_nothing_on_stderr(
        tmp_path, tight_ceiling, capfd):
    _workspace(tmp_path, secret=float(SECRET_ROWS))
    r = _check(tmp_path)
    # Without the ceiling the 1 GB allocation succeeds here and the model passes (its labels are
    # right): the fail below is the ceiling's doing, and the job was not killed.
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["verdict"] == "fail" and out["step"] >= 1 and out["budget"]["used"] == 1
    fd_out, fd_err = capfd.readouterr()
    for text in (r.output, fd_out, fd_err):
        assert str(SECRET_ROWS) not in text and str(SECRET_ROWS * 4) not in text
        assert "allocate" not in text and "ConstantOfShape" not in text


def test_the_ceiling_is_lifted_after_the_run():
    import resource

    before = resource.getrlimit(resource.RLIMIT_DATA)
    with memory_ceiling.memory_ceiling() as limit:
        if limit is None:
            pytest.skip("this platform has no RLIMIT_DATA or /proc")  # only off Linux
        assert resource.getrlimit(resource.RLIMIT_DATA)[0] == limit
        assert limit > memory_ceiling.data_bytes()
    assert resource.getrlimit(resource.RLIMIT_DATA) == before


@pytest.mark.parametrize("version", ["v2", "v1", "v2 unlimited", "v1 at the mount's root"])
def test_a_containers_memory_limit_lowers_the_room(tmp_path, version):
    """A runner in a container: its control group's limit, not the machine's memory, is what the
    OOM killer enforces, so the ceiling must sit under the group's room."""
    proc = tmp_path / "cgroup"
    if version.startswith("v2"):
        proc.write_text("0::/job\n")
        folder = tmp_path / "job"
        limit, usage = ("max" if "unlimited" in version else str(3 * 2**30)), str(2**30)
        names = ("memory.max", "memory.current")
    else:
        proc.write_text("4:memory:/docker/abc\n1:cpu:/\n")
        folder = tmp_path / "memory" / ("docker/abc" if "root" not in version else "")
        limit, usage, names = str(3 * 2**30), str(2**30), ("memory.limit_in_bytes", "memory.usage_in_bytes")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / names[0]).write_text(limit + "\n")
    (folder / names[1]).write_text(usage + "\n")
    room = memory_ceiling._cgroup_room(str(proc), str(tmp_path))
    assert room == (None if "unlimited" in version else 2 * 2**30)


# --- timing: evaluation_time ---------------------------------------------------------------------

SLOW_SECRET = 2e7  # loop iterations the slow model runs when the secret feature says so (~30 s)


def _slow_model(path) -> None:
    """label = round(X[:, 1]); on the side a loop of max(X[:, 0]) additions (a few on synthetic
    rows, SLOW_SECRET on the test set that holds it), added as 0 x its result."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])], "body",
        [helper.make_tensor_value_info("i", T.INT64, []), helper.make_tensor_value_info("cond_in", T.BOOL, []),
         helper.make_tensor_value_info("acc_in", T.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", T.BOOL, []),
         helper.make_tensor_value_info("acc_out", T.FLOAT, [])],
        initializer=[helper.make_tensor("one", T.FLOAT, [], [1.0])])
    nodes = [
        *_SECRET,
        helper.make_node("Cast", ["am"], ["M"], to=T.INT64),
        helper.make_node("Constant", [], ["t"], value=helper.make_tensor("t", T.BOOL, [], [True])),
        helper.make_node("Loop", ["M", "t", "zero"], ["acc"], body=body),
        helper.make_node("Mul", ["acc", "zero"], ["z"]),
        *_LABEL,
    ]
    _save(nodes, "slow", path)


def _timed_workspace(tmp_path, secret: float, extra: str = "evaluation_time: 1.5s\n"):
    _workspace(tmp_path, secret)
    _slow_model(tmp_path / "m.onnx")
    with open(tmp_path / ".easeml.yml", "a") as fh:
        fh.write(extra)


@pytest.mark.parametrize("secret, verdict", [(3.0, "pass"), (SLOW_SECRET, "fail")])
def test_evaluation_time_makes_a_slow_and_a_fast_run_take_the_same_time(tmp_path, capfd, monkeypatch,
                                                                        secret, verdict):
    """The same model, fast or (on the secret feature) slow: each check's evaluation takes 1.5 s.
    The slow run's child process is killed at 1.5 s and fails the check as a
    counted step; without the clock it runs ~30 s and passes. The fast one ends in milliseconds
    and waits out the rest. Asserted on the evaluation clock's own readings and waits, not on
    how long the test took."""
    from easeml_ci.models import clock as evaluation_clock

    clocks = []

    class Recorded(evaluation_clock.EvaluationClock):
        def __init__(self, seconds, **kw):
            self.readings, self.waits = [], []

            def clock():
                self.readings.append(time.monotonic())
                return self.readings[-1]

            super().__init__(seconds, clock=clock, sleep=lambda s: (self.waits.append(s), time.sleep(s)))
            clocks.append(self)

    monkeypatch.setattr(evaluation_clock, "EvaluationClock", Recorded)
    _timed_workspace(tmp_path, secret)
    r = _check(tmp_path)
    out = json.loads(r.stdout)
    assert out["verdict"] == verdict and out["budget"]["used"] == 1, r.output
    (clock,) = clocks
    assert clock.seconds == 1.5
    assert clock.stopped == (verdict == "fail")  # the slow run's child was killed at 1.5 s
    # pad() read the clock last and waited out what was left of the 1.5 s: either way the
    # evaluation ends at the deadline, the fast run by waiting, the stopped one at once
    assert clock.readings[-1] + sum(clock.waits) - clock.start >= 1.5 - 1e-9
    assert "Loop" not in capfd.readouterr().err


def test_evaluation_time_is_checked_and_pinned(tmp_path):
    _timed_workspace(tmp_path, 3.0, extra="evaluation_time: soon\n")
    r = _check(tmp_path)
    assert r.exit_code == 2 and "evaluation_time" in r.output and "'soon'" in r.output and "1h30m" in r.output
    assert not (tmp_path / "ledger").exists()

    _timed_workspace(tmp_path, 3.0)  # registered (first check) with evaluation_time: 1.5 s
    assert _check(tmp_path).exit_code == 0
    (tmp_path / ".easeml.yml").write_text(
        (tmp_path / ".easeml.yml").read_text().replace("evaluation_time: 1.5s\n", ""))
    r = _check(tmp_path)  # a config that drops it would reopen the timing channel
    assert r.exit_code == 2 and "evaluation_time" in r.output and "registered with" in r.output, r.output


@pytest.mark.parametrize("text, seconds", [(600, 600.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0),
                                           ("0.5s", 0.5), ("45", 45.0)])
def test_durations(text, seconds):
    from easeml_ci.models.clock import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", [0, -5, "soon", "0s", "m", True, float("nan"), "10d", "1h 30x"])
def test_bad_durations(bad):
    from easeml_ci.models.clock import parse_duration

    with pytest.raises(ValueError):
        parse_duration(bad)
