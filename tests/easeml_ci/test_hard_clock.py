"""The hard clock, Ctrl-C and a full disk (issue 20).

* A model runs on the test set in a child process killed at the deadline: a single MatMul sized
  by a secret value cannot overrun it (onnxruntime's terminate flag is not checked inside one
  operator); the overrun is a counted fail with the fixed text.
* On a runner (``GITHUB_ACTIONS=true``, the Action) ``evaluation_time`` has a default, pinned at
  registration; a registration without it stays valid.
* Ctrl-C stops a check while a model runs: exit 130, one line, no traceback, no child left.
* A full disk (ENOSPC) on any write exits 2 naming the file, never 1, never a traceback, and
  never leaves the ledger's head behind its entries.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper

from easeml_ci.cli import main
from easeml_ci.config import load_config
from easeml_ci.models import clock as evaluation_clock
from easeml_ci.models.clock import RUNNER_DEFAULT

REPO_ROOT = Path(__file__).resolve().parents[2]
BIG = 7000.0  # the MatMul's side when the secret feature says so: 7000^3 multiply-adds, ~minutes


def matmul_model(path) -> None:
    """label = round(X[:, 1]); on the side ONE MatMul of two k x k matrices, k = max |X[:, 0]|
    (a few on synthetic rows, BIG on the test set that holds it), added as 0 x its sum."""
    nodes = [
        helper.make_node("Constant", [], ["i0"], value=helper.make_tensor("i0", T.INT64, [1], [0])),
        helper.make_node("Constant", [], ["i1"], value=helper.make_tensor("i1", T.INT64, [1], [1])),
        helper.make_node("Gather", ["X", "i0"], ["c0"], axis=1),
        helper.make_node("Gather", ["X", "i1"], ["c1"], axis=1),
        helper.make_node("ReduceMax", ["c0"], ["m"], keepdims=0),
        helper.make_node("Abs", ["m"], ["am"]),
        helper.make_node("Cast", ["am"], ["k"], to=T.INT64),
        helper.make_node("Reshape", ["k", "i1"], ["k1"]),
        helper.make_node("Concat", ["k1", "k1"], ["shape"], axis=0),
        helper.make_node("ConstantOfShape", ["shape"], ["A"],
                         value=helper.make_tensor("v", T.FLOAT, [1], [1.0])),
        helper.make_node("MatMul", ["A", "A"], ["AA"]),
        helper.make_node("ReduceSum", ["AA"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Reshape", ["c1", "minus1"], ["c1r"]),
        helper.make_node("Add", ["c1r", "z"], ["c1z"]),
        helper.make_node("Round", ["c1z"], ["r"]),
        helper.make_node("Cast", ["r"], ["label"], to=T.INT64),
    ]
    graph = helper.make_graph(
        nodes, "matmul", [helper.make_tensor_value_info("X", T.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("label", T.INT64, [None])],
        initializer=[helper.make_tensor("zero", T.FLOAT, [], [0.0]),
                     helper.make_tensor("minus1", T.INT64, [1], [-1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def workspace(tmp_path: Path, secret: float, extra: str = "") -> Path:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    X = np.column_stack([rng.uniform(0, 3, 400), y]).astype(np.float32)
    X[7, 0] = secret
    np.savez(tmp_path / "t.npz", X=X, y=y)
    matmul_model(tmp_path / "m.onnx")
    np.save(tmp_path / "p.npy", y)  # right predictions, from a file: nothing runs on the test set
    (tmp_path / ".easeml.yml").write_text(
        'condition: "n > 0.8 +/- 0.1"\nreliability: 0.9\nadaptivity: full\nsteps: 4\n'
        "ledger:\n  backend: file\n  path: ledger\n" + extra)
    return tmp_path


def check(tmp_path: Path, model: str = "m.onnx", env: dict | None = None):
    return CliRunner().invoke(main, ["check", "--config", str(tmp_path / ".easeml.yml"), "--new",
                                     str(tmp_path / model), "--testset", str(tmp_path / "t.npz"),
                                     "--json"], catch_exceptions=False, env=env)


@pytest.fixture
def clocks(monkeypatch):
    """Every EvaluationClock the gate starts, with what it waited."""
    made = []

    class Recorded(evaluation_clock.EvaluationClock):
        def __init__(self, seconds, **kw):
            self.waits = []
            super().__init__(seconds, sleep=lambda s: (self.waits.append(s), time.sleep(s)))
            made.append(self)

    monkeypatch.setattr(evaluation_clock, "EvaluationClock", Recorded)
    return made


# --- the child killed at the deadline --------------------------------------------------------------

def test_a_single_matmul_sized_by_a_secret_value_is_killed_at_the_deadline(tmp_path, clocks, capfd):
    """Without the child, this one operator runs for minutes whatever the clock says (the
    terminate flag is never looked at inside it). Killed at 1 s, it is a counted fail with the
    fixed text; nothing of the run reaches the team."""
    workspace(tmp_path, BIG, "evaluation_time: 1s\n")
    r = check(tmp_path)
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["verdict"] == "fail" and out["budget"]["used"] == 1, r.output
    (clock,) = clocks
    assert clock.stopped and clock.seconds == 1.0
    # killed at the deadline: nothing left to wait out but the release margin after it
    (release,) = clock.waits
    assert 0 < release <= evaluation_clock.RELEASE_MARGIN
    err = capfd.readouterr().err
    for text in (r.output, err):
        assert "7000" not in text and "MatMul" not in text


def test_the_same_model_on_a_small_secret_passes_and_waits_out_the_clock(tmp_path, clocks):
    workspace(tmp_path, 2.0, "evaluation_time: 3s\n")  # 3 s: room for a fork on a busy machine
    r = check(tmp_path)
    assert r.exit_code == 0 and json.loads(r.stdout)["verdict"] == "pass", r.output
    (clock,) = clocks
    assert not clock.stopped and len(clock.waits) == 2 and 0 < clock.waits[0] <= 3.0
    assert 0 < clock.waits[1] <= evaluation_clock.RELEASE_MARGIN  # then the answer's moment


def test_predictions_files_need_no_clock(tmp_path, clocks):
    """Nothing runs on the test data: no child, no clock, no wait (a runner's default clock
    would otherwise cost every check of a predictions file 300 s)."""
    workspace(tmp_path, BIG, "evaluation_time: 1s\n")
    r = check(tmp_path, model="p.npy")
    assert r.exit_code == 0, r.output
    assert clocks == []


def test_a_model_that_kills_its_own_process_is_a_counted_fail(tmp_path, monkeypatch):
    """A child that dies (the OOM killer, a crash in onnxruntime) is the model failing on the
    test data: a counted fail, never a killed gate or an uncounted crash."""
    from easeml_ci.models.onnx import OnnxModel

    def dies(self, testset, **kw):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(OnnxModel, "predictions", dies)
    workspace(tmp_path, 2.0)
    r = check(tmp_path)
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["verdict"] == "fail" and out["budget"]["used"] == 1, r.output


def test_the_child_returns_the_predictions_the_process_computes(tmp_path):
    """Predictions through the child (shared memory, no pickle) equal those computed in this
    process, text labels included."""
    from easeml_ci.models import evaluate_on_testset, load_predictions, preflight
    from easeml_ci.testsets import load_testset

    workspace(tmp_path, 2.0)
    ts = load_testset(tmp_path / "t.npz")
    model = preflight(str(tmp_path / "m.onnx"))
    here = load_predictions(model, ts)
    got = evaluate_on_testset({"new": model, "old": preflight(str(tmp_path / "p.npy"))}, ts)
    assert list(got) == ["new", "old"]
    assert got["new"].dtype == here.dtype and np.array_equal(got["new"], here)
    assert np.array_equal(got["old"], ts.y)


@pytest.mark.parametrize("status", [{"failed": None}, {"failed": 1, "detail": "x"}])
def test_the_childs_result_file_round_trips_every_kind_of_prediction(status):
    """The child's result (raw arrays behind a JSON header, mapped back copy-on-write): every
    dtype a model's predictions take, odd sizes (alignment), 2-D and empty arrays; the arrays
    are writable and writing one leaves the others and the file alone."""
    from easeml_ci.models import child

    arrays = [np.arange(7, dtype=np.int64), np.array(["cat", "horse", "é"]),
              np.array([True, False, True]), np.linspace(0, 1, 13, dtype=np.float32).reshape(13, 1),
              np.empty((0,), dtype=np.float64), np.arange(5, dtype=np.uint8)]
    fd = os.memfd_create("t")
    try:
        child._write_arrays(fd, arrays, status)
        got_status, got = child._read_arrays(fd)
        assert got_status == status
        assert [a.dtype for a in got] == [a.dtype for a in arrays]
        assert all(np.array_equal(a, b) and a.shape == b.shape for a, b in zip(got, arrays))
        got[0][0] = 99
        assert got[1][0] == "cat" and child._read_arrays(fd)[1][0][0] == 0
    finally:
        os.close(fd)


def test_the_answer_is_released_a_fixed_margin_after_the_deadline():
    """Whatever the decision, the commit and the reveal took after the deadline, the answer
    leaves the gate at deadline + RELEASE_MARGIN (an injected clock: no real time)."""
    now = [100.0]
    slept = []
    clock = evaluation_clock.EvaluationClock(
        10, clock=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    now[0] += 4.0  # the models ended early
    clock.pad()
    assert now[0] == 110.0
    now[0] += 0.3  # deciding, completing the step, the reveal
    clock.release()
    assert now[0] == 110.0 + evaluation_clock.RELEASE_MARGIN and len(slept) == 2
    now[0] += 5.0  # a release past the margin waits no more
    clock.release()
    assert len(slept) == 2


def _sleeping_model(tmp_path, monkeypatch, seconds: float):
    from easeml_ci.models import preflight
    from easeml_ci.models.onnx import OnnxModel
    from easeml_ci.testsets import load_testset

    workspace(tmp_path, 2.0)
    model = preflight(str(tmp_path / "m.onnx"))

    def sleeps(self, testset, **kw):
        os.write(1, b"the model talks on standard output\n")
        time.sleep(seconds)
        return testset.y

    monkeypatch.setattr(OnnxModel, "predictions", sleeps)
    return model, load_testset(tmp_path / "t.npz")


def _record_reaping_threads(monkeypatch) -> list:
    """For each waitpid of the child: whether it ran on the main thread."""
    import threading

    from easeml_ci.models import child

    reaped_on, real_waitpid = [], os.waitpid

    def waitpid(pid, options):
        reaped_on.append(threading.current_thread() is threading.main_thread())
        return real_waitpid(pid, options)

    monkeypatch.setattr(child.os, "waitpid", waitpid)
    return reaped_on


def _join_reapers() -> None:
    import threading

    for thread in threading.enumerate():
        if thread.name == "easeml-reap":
            thread.join(30)


def test_the_gate_does_not_wait_for_a_killed_childs_teardown(tmp_path, monkeypatch, capfd):
    """At the deadline the child is killed and reaped on another thread: a child that held GBs
    gives them back in a time that depends on what it allocated, and the gate's answer must not
    wait for it. The child writes nothing on the job's output either (its streams are
    /dev/null), so a job reading the gate's output does not wait for the child's end."""
    from easeml_ci.errors import ModelFailedOnTestSet
    from easeml_ci.models import evaluate_on_testset

    model, ts = _sleeping_model(tmp_path, monkeypatch, 60)
    reaped_on = _record_reaping_threads(monkeypatch)
    with pytest.raises(ModelFailedOnTestSet):
        evaluate_on_testset({"new": model}, ts, clock=evaluation_clock.EvaluationClock(1))
    _join_reapers()
    assert reaped_on == [False]
    assert "talks" not in capfd.readouterr().out


def test_a_finished_child_is_reaped_off_the_main_thread_too(tmp_path, monkeypatch, capfd):
    from easeml_ci.models import evaluate_on_testset

    model, ts = _sleeping_model(tmp_path, monkeypatch, 0)
    reaped_on = _record_reaping_threads(monkeypatch)
    got = evaluate_on_testset({"new": model}, ts)
    assert np.array_equal(got["new"], ts.y)
    _join_reapers()
    assert reaped_on == [False]
    assert "talks" not in capfd.readouterr().out


# --- on by default on runners ---------------------------------------------------------------------

def test_a_runner_has_a_default_clock_and_registration_pins_it(tmp_path, monkeypatch):
    workspace(tmp_path, 2.0)
    assert load_config(tmp_path / ".easeml.yml").evaluation_time is None or \
        os.environ.get("GITHUB_ACTIONS") == "true"
    assert load_config(tmp_path / ".easeml.yml", runner=True).evaluation_time == RUNNER_DEFAULT
    set_one = tmp_path / "set.yml"
    set_one.write_text((tmp_path / ".easeml.yml").read_text() + "evaluation_time: 45s\n")
    assert load_config(set_one, runner=True).evaluation_time == 45.0  # the config's own wins

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path / "elsewhere"))
    (tmp_path / ".easeml.yml").write_text((tmp_path / ".easeml.yml").read_text().replace(
        "path: ledger", f"path: {tmp_path / 'ledger'}"))
    r = CliRunner().invoke(main, ["testset", "register", str(tmp_path / "t.npz"), "--config",
                                  str(tmp_path / ".easeml.yml"), "--underpowered", "--json"])
    assert r.exit_code == 0, r.output
    (head,) = [json.loads(line) for line in
               next((tmp_path / "ledger").glob("*.jsonl")).read_text().splitlines()]
    assert head["terms"]["evaluation_time"] == RUNNER_DEFAULT


def test_a_registration_without_the_clock_stays_valid_on_a_runner(tmp_path, monkeypatch):
    workspace(tmp_path, 2.0)
    (tmp_path / ".easeml.yml").write_text((tmp_path / ".easeml.yml").read_text().replace(
        "path: ledger", f"path: {tmp_path / 'ledger'}"))
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    r = check(tmp_path, model="p.npy")  # registered by its first check, without evaluation_time
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path / "elsewhere"))
    r = check(tmp_path, model="p.npy")
    assert r.exit_code == 0 and json.loads(r.stdout)["budget"]["used"] == 2, r.output


# --- Ctrl-C ---------------------------------------------------------------------------------------

def _stat(pid) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's name (state, parent, ...); None when
    the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children_of(pid: int) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and (fields := _stat(entry)) is not None and int(fields[1]) == pid]


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``seconds``. The gate kills its child
    and does not wait for it (a child that held GBs takes a while to give them back, see
    easeml_ci/models/child.py), so it may outlive the gate by a moment; a child left running
    would go on for minutes (the MatMul)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fields = _stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _interrupted_check(tmp_path: Path, extra: str) -> tuple[subprocess.CompletedProcess, float, list]:
    """Start `easeml-ci check` on the MatMul model, wait for its evaluation child, send SIGINT."""
    workspace(tmp_path, BIG, extra)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("GITHUB_ACTIONS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from easeml_ci.cli import main; main()", "check", "--config",
         str(tmp_path / ".easeml.yml"), "--new", str(tmp_path / "m.onnx"), "--testset",
         str(tmp_path / "t.npz")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        cwd=tmp_path)
    deadline = time.monotonic() + 120
    children = []
    while not children and time.monotonic() < deadline and proc.poll() is None:
        children = _children_of(proc.pid)
        time.sleep(0.05)
    assert children, "the check never started its evaluation child"
    time.sleep(0.5)  # the child is inside the MatMul by now (it takes minutes)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)  # without the fix: minutes, then a pass
    took = time.monotonic() - sent
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode()), took, children


@pytest.mark.parametrize("extra", ["", "evaluation_time: 600s\n"], ids=["no clock", "clock"])
def test_ctrl_c_stops_a_check_while_a_model_runs(tmp_path, extra):
    done, _took, children = _interrupted_check(tmp_path, extra)
    assert done.returncode == 130, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: interrupted") and "Traceback" not in done.stderr
    assert done.stdout == ""
    for child in children:  # the model's process was killed, not left running
        assert _gone_within(child, 30.0), f"the evaluation child {child} still runs"
    # count before open: the step was reserved before the test set was opened, so the
    # interrupted check has spent it, and it was never completed (no pass, no verdict)
    entries = [json.loads(line) for p in (tmp_path / "ledger").glob("*.jsonl")
               for line in p.read_text().splitlines()]
    assert [e["kind"] for e in entries if e["kind"] in ("step", "complete")] == ["step"]


@pytest.mark.slow
def test_ctrl_c_stops_a_check_within_a_second(tmp_path):
    done, took, _ = _interrupted_check(tmp_path, "evaluation_time: 600s\n")
    assert done.returncode == 130 and took < 1.0, (took, done.stderr)


# --- a full disk --------------------------------------------------------------------------------------

class FullDisk:
    """os.write into files under ``folder`` takes ``room`` more bytes, then fails with ENOSPC
    (a write that does not fit writes what fits first, as a real file system does)."""

    def __init__(self, monkeypatch, folder: Path, room: int):
        self.folder, self.room = str(folder.resolve()), room
        real = os.write

        def write(fd, data):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if not target.startswith(self.folder):
                return real(fd, data)
            if self.room <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            part = bytes(memoryview(data)[:self.room])
            self.room -= len(part)
            return real(fd, part)

        monkeypatch.setattr(os, "write", write)


def _ledger_state(ledger: Path) -> tuple[int, dict]:
    (lines,) = list(ledger.glob("*.jsonl"))
    (head,) = list(ledger.glob("*.head"))
    return len(lines.read_text().splitlines()), json.loads(head.read_text())


@pytest.mark.parametrize("room", [0, 40], ids=["no room", "room for half a line"])
def test_a_full_disk_during_a_check_exits_2_naming_the_file_and_the_ledger_stays_whole(
        tmp_path, monkeypatch, room):
    workspace(tmp_path, 2.0)
    assert check(tmp_path, model="p.npy").exit_code == 0  # registered, one step
    before = _ledger_state(tmp_path / "ledger")
    assert before[0] == 3 and before[1]["length"] == 3  # register, step, its completion

    with monkeypatch.context() as m:
        FullDisk(m, tmp_path / "ledger", room)
        r = CliRunner().invoke(main, ["check", "--config", str(tmp_path / ".easeml.yml"), "--new",
                                      str(tmp_path / "p.npy"), "--testset",
                                      str(tmp_path / "t.npz")])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "No space left on device" in r.output
    assert str(tmp_path / "ledger") in r.output  # the file is named
    assert _ledger_state(tmp_path / "ledger") == before  # head and lines as they were
    assert not [p for p in (tmp_path / "ledger").iterdir() if p.name.endswith(".tmp")]

    verify = CliRunner().invoke(main, ["ledger", "verify", "--config", str(tmp_path / ".easeml.yml"),
                                       "--testset", str(tmp_path / "t.npz")])
    assert verify.exit_code == 0, verify.output
    r = check(tmp_path, model="p.npy")  # room again: the next check counts on from there
    assert r.exit_code == 0 and json.loads(r.stdout)["budget"]["used"] == 2, r.output


def test_a_full_disk_in_any_atomic_write_names_the_file(tmp_path, monkeypatch):
    """The label store, model cards, encrypted files: a buffered write's ENOSPC surfaces at
    flush or fsync (delayed allocation), with no file name; DiskFull names it."""
    from easeml_ci.atomic import write_bytes
    from easeml_ci.errors import DiskFull

    target = tmp_path / "store.labels"
    target.write_bytes(b"old")

    def fsync(fd):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskFull) as caught:
        write_bytes(target, b"new content")
    assert caught.value.exit_code == 2 and str(target) in caught.value.message
    assert "quota" in caught.value.message.lower()
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["store.labels"]


# --- no exception path exits 1 -----------------------------------------------------------------------

def test_an_unexpected_error_exits_2_with_one_line_and_no_data(tmp_path, monkeypatch):
    from easeml_ci.gate import steps

    def broken(gate, ts):
        raise RuntimeError(f"value {float(ts.X[7, 0])!r} of the secret test set")

    monkeypatch.setattr(steps, "evaluate", broken)
    workspace(tmp_path, 1234.5)
    r = CliRunner().invoke(main, ["check", "--config", str(tmp_path / ".easeml.yml"), "--new",
                                  str(tmp_path / "p.npy"), "--testset", str(tmp_path / "t.npz")])
    assert r.exit_code == 2, r.output
    assert "internal error: RuntimeError at" in r.output and "1234" not in r.output
    assert "Traceback" not in r.output


def test_a_full_disk_anywhere_else_exits_2(tmp_path, monkeypatch):
    from easeml_ci.gate import steps

    def full(gate, ts):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(steps, "evaluate", full)
    workspace(tmp_path, 2.0)
    r = CliRunner().invoke(main, ["check", "--config", str(tmp_path / ".easeml.yml"), "--new",
                                  str(tmp_path / "p.npy"), "--testset", str(tmp_path / "t.npz"),
                                  "--json"])
    assert r.exit_code == 2 and "No space left on device" in r.output and "Traceback" not in r.output
    assert json.loads(r.stdout)["exit_code"] == 2


@pytest.mark.parametrize("batches", [
    [np.arange(5, dtype=np.int64), np.arange(3, dtype=np.int64)],        # streamed whole
    [np.array(["cat", "dog"]), np.array(["horse", "emu"])],             # a wider text: in memory
    [np.array([1, 0]), np.array([0.5, 1.0])],                            # int, then float
    [np.array([1.0, 0.0]), np.array([2.0, 1.0])],                        # whole floats: int64
    [np.array([True, False]), np.array([False])],
    [np.array(["a", "b"], dtype=object), np.array(["c"], dtype=object)],  # objects: in memory
    [np.arange(4, dtype=np.int64), np.array(["x"])],                     # int, then text
    [],                                                                  # no rows
])
def test_a_models_batches_written_as_they_come_read_back_as_pieces_joined_in_memory(batches):
    """The evaluation process writes each model's decoded batches into the shared file as they
    come (no array of all the labels in its own memory) while their dtype stays the first one's;
    whatever the batches, the gate reads what joining them in memory gives (Pieces)."""
    from easeml_ci.models import child
    from easeml_ci.models.onnx import Pieces

    expected = Pieces(batches).result()
    fd = os.memfd_create("t")
    try:
        result = child._ResultFile(fd)
        first = result.stream()
        for piece in batches:
            first.add(piece)
        result.add(child._plain(first.result()), first)
        result.add(np.arange(3, dtype=np.int16))  # the next model's, written whole after it
        streamed = first.view is not None  # the labels the gate reads are the ones it streamed
        result.finish({"failed": None})
        _, (got, after) = child._read_arrays(fd)
    finally:
        os.close(fd)
    assert got.dtype == child._plain(expected).dtype and np.array_equal(got, child._plain(expected))
    assert after.dtype == np.int16 and list(after) == [0, 1, 2]
    same_kind = len({(b.dtype, b.ndim) for b in batches}) == 1 and batches[0].dtype.kind in "biuUS"
    assert streamed == bool(batches and same_kind) and (not streamed or first.parts == [])
