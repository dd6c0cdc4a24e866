"""The models' run on the test set in a child process: killed at the deadline, or on Ctrl-C.

onnxruntime's terminate flag is checked between operators, not inside one: a single MatMul
sized by a secret feature ran 35 s under a 3 s clock. A child process can be stopped anywhere,
so the ONNX models run in one, forked from the gate once the test set is open:

* the test set reaches the child by ``fork`` (copy-on-write pages: nothing is pickled or
  copied through a pipe, whatever its size), and the predictions come back through an
  anonymous shared-memory file (``memfd``; an unlinked temporary file where there is none):
  each model's raw labels, written batch by batch as they are decoded (:class:`_Streamed`:
  the child never holds them all), then a JSON header (the status, each array's dtype, shape
  and offset). The gate maps the file copy-on-write: no pickle, no archive, no copy. An
  ``.npz`` cost ~40 ms of CRCs and copies at 1M rows, and joining the labels in the child
  before writing them ~12 ms;
* the child builds each model's session afresh (the parent's onnxruntime thread pool does not
  survive a fork: the inherited session would run on one thread), caps its memory as the gate
  did (:mod:`.memory`), ignores SIGINT (the gate decides what Ctrl-C does), dies with the gate
  (``PR_SET_PDEATHSIG``) and offers itself first to the kernel's OOM killer, so a model that
  exhausts the machine is a failed model, not a killed job;
* the gate waits on a pipe the child writes the index of the model it starts and ``done``;
  at the deadline (:class:`~.clock.EvaluationClock`) it sends SIGKILL, and does not wait for the
  child to go: a child that held GBs (a MatMul sized by a secret value) takes a secret-dependent
  while to give its memory back, so it is reaped on a thread of its own, and it holds none of
  the job's output streams (its standard output and error are /dev/null), whose end the job
  would otherwise wait for. A killed, crashed or
  failing child is :class:`~easeml_ci.errors.ModelFailedOnTestSet` of the model it was running:
  a counted fail with the fixed text; the detail goes to the owner's private channel only;
* Ctrl-C (KeyboardInterrupt in the gate) kills the child at once and propagates.

Prediction files run nothing on the test data and stay in the gate's process; so does
everything where ``fork`` is missing (not POSIX), where no hard stop is possible.
"""
from __future__ import annotations

import contextlib
import json
import mmap
import os
import select
import signal
import tempfile
import threading

import numpy as np

from ..errors import ModelFailedOnTestSet
from .onnx import OnnxModel, Pieces

__all__ = ["ISOLATED", "predictions_on_testset"]

#: Whether models can run in a child process here (POSIX ``fork``).
ISOLATED = hasattr(os, "fork")

_DONE = 255  # the byte after the models' indices (0..254)
_ALIGN = mmap.ALLOCATIONGRANULARITY  # each array starts at a page (a stream is mapped there)


def predictions_on_testset(models: dict, testset, *, clock=None) -> dict:
    """Each model's predictions on ``testset`` (role -> array, in the order of ``models``).

    ONNX models run in one child process (see the module docstring), under ``clock``'s deadline
    when there is one; prediction files are read here. Raises ModelFailedOnTestSet for the
    first model that fails, overruns or dies."""
    outputs = {role: model.predictions(testset) for role, model in models.items()
               if not isinstance(model, OnnxModel)}
    onnx = {role: model for role, model in models.items() if isinstance(model, OnnxModel)}
    if onnx:
        outputs.update(_in_child(onnx, testset, clock) if ISOLATED else
                       {role: model.predictions(testset) for role, model in onnx.items()})
    return {role: outputs[role] for role in models}


# --- the gate's side ------------------------------------------------------------------------------

def _in_child(models: dict, testset, clock) -> dict:
    roles = list(models)
    result_fd = _shared_file()
    read_end, write_end = os.pipe()
    gate = os.getpid()
    with _children_reaped_by_us():
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_end)
            _child(models, testset, result_fd, write_end, gate)
        os.close(write_end)
        handle = _Handle(pid)
        status = "killed"
        try:
            started, done, ended = _wait(read_end, clock)
            if ended:  # it ended by itself (EOF): it is gone, its status is there at once
                status = handle.reap()
        finally:  # Ctrl-C (KeyboardInterrupt) lands here too: the child goes at once
            handle.kill()
            handle.reap_later()
            os.close(read_end)
    try:
        if done:
            return _read_result(result_fd, roles, models, testset)
    finally:
        os.close(result_fd)
    model = models[roles[min(started, len(roles) - 1)]]
    if clock is not None and clock.expired:
        clock.stopped = True
        detail = f"stopped at the end of evaluation_time ({clock.seconds:g} s) before it finished"
    else:
        detail = f"the evaluation process ended without predictions ({status})"
    raise ModelFailedOnTestSet(model.label, f"ONNX model {model.label} on the test set "
                                            f"{testset.source}: {detail}")


def _wait(fd: int, clock) -> tuple[int, bool, bool]:
    """Read the child's progress until ``done``, its end (EOF) or the deadline; returns the
    index of the last model it started, whether it finished and whether it ended (EOF: a
    process's files are closed after its memory is freed, so it is gone by then)."""
    started, done = 0, False
    while not done:
        timeout = None if clock is None else clock.remaining()
        if timeout is not None and timeout <= 0:
            break
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            break  # the deadline
        chunk = os.read(fd, 64)
        if not chunk:
            return started, False, True  # the child ended without saying done
        for byte in chunk:
            if byte == _DONE:
                done = True
            else:
                started = byte
    return started, done, False


def _read_result(fd: int, roles: list, models: dict, testset) -> dict:
    status, arrays = _read_arrays(fd)
    if status.get("failed") is not None:
        model = models[roles[status["failed"]]]
        raise ModelFailedOnTestSet(model.label, status["detail"])
    return dict(zip(roles, arrays))


class _ResultFile:
    """The child's side of the shared file: each array's bytes at an offset aligned to a page,
    written whole (:meth:`add`) or batch by batch as a model decodes them (:meth:`stream`), then
    the JSON header (``status``; each array's dtype, shape and offset), whose offset and length
    the file's first 16 bytes give (:func:`_read_arrays`). ``end`` is the first free page past
    everything written, a stream given up half-way included."""

    def __init__(self, fd: int):
        self.fd, self.end, self.layout = fd, _ALIGN, []

    def write(self, data, offset: int) -> None:
        """``data`` (bytes or an array's raw bytes) at ``offset``."""
        raw = memoryview(data).cast("B") if isinstance(data, np.ndarray) else memoryview(data)
        if raw.nbytes:
            _pwrite_all(self.fd, raw, offset)
        self.end = max(self.end, _aligned(offset + raw.nbytes))

    def stream(self) -> "_Streamed":
        """Where the next model's batches go (``OnnxModel.predictions(into=...)``)."""
        return _Streamed(self, self.end)

    def add(self, array: np.ndarray, stream: "_Streamed | None" = None) -> None:
        """The next array of the result: the one ``stream`` already wrote, or written now."""
        if stream is not None and stream.view is array:
            offset = stream.offset
        else:
            array, offset = np.ascontiguousarray(array), self.end
            self.write(array, offset)
        self.layout.append({"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset})

    def finish(self, status: dict) -> None:
        header, at = json.dumps({"status": status, "arrays": self.layout}).encode(), self.end
        self.write(header, at)
        self.write(at.to_bytes(8, "little") + len(header).to_bytes(8, "little"), 0)


class _Streamed(Pieces):
    """A model's decoded batches written into the result file as they come (``os.pwrite``), while
    each has the first one's dtype: the labels are never joined in this process. Joining 2 x 1M
    int64 labels in memory, then writing them, cost ~21 ms of fresh pages; streamed, ~7 ms.
    A batch of another dtype (a wider text, int then float) or an object array brings what was
    written back into memory and goes on as :class:`Pieces`; so do float labels at the end
    (:func:`integral_labels` reads them all). ``view``: the streamed labels, mapped read-only."""

    def __init__(self, file: _ResultFile, offset: int):
        super().__init__()
        self.file, self.offset, self.rows, self.dtype = file, offset, 0, None
        self.streaming, self.view = True, None

    def add(self, piece: np.ndarray) -> None:
        if self.streaming:
            if self.dtype is None and piece.dtype.kind in "biuUS" and piece.ndim == 1:
                self.dtype = piece.dtype
            if self.dtype is not None and piece.dtype == self.dtype and piece.ndim == 1:
                data = np.ascontiguousarray(piece)
                self.file.write(data, self.offset + self.rows * self.dtype.itemsize)
                self.rows += len(data)
                return
            self.streaming = False
            if self.rows:
                self.parts.append(self._read_back())
        self.parts.append(piece)

    def _read_back(self) -> np.ndarray:
        size = self.rows * self.dtype.itemsize
        data = bytearray(size)
        view, at = memoryview(data), 0
        while at < size:
            at += os.preadv(self.file.fd, [view[at:]], self.offset + at)
        return np.frombuffer(data, dtype=self.dtype, count=self.rows)

    def result(self) -> np.ndarray:
        if not (self.streaming and self.rows):
            return super().result()
        self.view = np.frombuffer(mmap.mmap(self.file.fd, self.rows * self.dtype.itemsize,
                                            offset=self.offset, access=mmap.ACCESS_READ),
                                  dtype=self.dtype, count=self.rows)
        return self.view


def _write_arrays(fd: int, arrays: list, status: dict) -> None:
    """The child's result in ``fd`` (:class:`_ResultFile`), every array written whole."""
    out = _ResultFile(fd)
    for a in arrays:
        out.add(a)
    out.finish(status)


def _aligned(size: int) -> int:
    """``size`` rounded up to a multiple of :data:`_ALIGN`."""
    return -(-size // _ALIGN) * _ALIGN


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _read_arrays(fd: int) -> tuple[dict, list]:
    """What :class:`_ResultFile` wrote: the status and the arrays, mapped copy-on-write (each
    array keeps the mapping alive; writing to one changes only the gate's copy)."""
    size = os.fstat(fd).st_size
    mapped = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    at, length = int.from_bytes(mapped[:8], "little"), int.from_bytes(mapped[8:16], "little")
    header = json.loads(bytes(mapped[at:at + length]))
    arrays = []
    for where in header["arrays"]:
        dtype, shape = np.dtype(where["dtype"]), tuple(where["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        arrays.append(np.frombuffer(mapped, dtype=dtype, count=count,
                                    offset=where["offset"]).reshape(shape)
                      if count else np.empty(shape, dtype=dtype))
    return header["status"], arrays


class _Handle:
    """The child, killed through a pidfd where there is one (a pid reaped behind our back, under
    SIGCHLD ignored, could be reused)."""

    def __init__(self, pid: int):
        self.pid, self.pidfd, self.status = pid, None, None
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(pid)

    def kill(self) -> None:
        if self.status is not None:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)

    def reap_later(self) -> None:
        """Reap the (killed or finished) child on a thread of its own: a child that held GBs
        takes a while to give them back, and how long depends on what the model allocated
        (the secret features). The gate does not wait for that (see :func:`_in_child`)."""
        if self.status is None:
            threading.Thread(target=self.reap, name="easeml-reap", daemon=True).start()

    def reap(self) -> str:
        if self.status is None:
            try:
                _, code = os.waitpid(self.pid, 0)
                self.status = (f"signal {os.WTERMSIG(code)}" if os.WIFSIGNALED(code)
                               else f"exit {os.WEXITSTATUS(code)}")
            except ChildProcessError:  # reaped by the system (SIGCHLD ignored)
                self.status = "ended"
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None
        return self.status


@contextlib.contextmanager
def _children_reaped_by_us():
    """SIGCHLD at its default while the child runs: a parent that ignores it (a zygote, a
    daemon) would have the child reaped by the system and its exit status lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, before)


def _shared_file() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("easeml-predictions", getattr(os, "MFD_CLOEXEC", 0))
    fd, path = tempfile.mkstemp(prefix="easeml-predictions-")
    os.unlink(path)
    return fd


# --- the child's side -----------------------------------------------------------------------------

def _child(models: dict, testset, result_fd: int, progress_fd: int, gate: int) -> None:
    """Run every model, write the result, say done, and exit; whatever happens, never return
    into the gate's code (that would run the rest of the check twice)."""
    code = 0
    try:
        _detach_output()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with(gate)
        _offer_to_oom_killer()
        # The sessions inherited from the gate are kept, never destroyed here: their thread pool's
        # threads did not survive the fork, and a destructor joining them can join a thread of
        # this process that reuses their memory (a hang). os._exit runs no destructor.
        inherited = [model.session for model in models.values()]  # noqa: F841
        result, status = _ResultFile(result_fd), {"failed": None}
        for index, (role, model) in enumerate(models.items()):
            os.write(progress_fd, bytes([min(index, _DONE - 1)]))
            try:
                model.reload_session()
                stream = result.stream()
                result.add(_plain(model.predictions(testset, into=stream)), stream)
                # this process's own session, done: its pool's threads would otherwise spin-wait
                # beside the next model's run (a core of CPU taken from it)
                model.session = None
            except ModelFailedOnTestSet as exc:
                status = {"failed": index, "detail": exc.detail}
                break
            except BaseException as exc:  # noqa: BLE001 - still the model on the test data
                status = {"failed": index, "detail": f"ONNX model {model.label} on the test set "
                                                     f"{testset.source}: {type(exc).__name__}: {exc}"}
                break
        result.finish(status)
        os.write(progress_fd, bytes([_DONE]))
    except BaseException:  # noqa: BLE001 - no report: the gate reads the missing "done"
        code = 70
    finally:
        os._exit(code)


def _detach_output() -> None:
    """Standard input, output and error to /dev/null: the job (a CI runner, a shell's pipe)
    reads the gate's output until every holder of it has closed it, and a killed child closes
    its files only after its memory is freed (secret-dependent time, see :func:`_in_child`)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _plain(predictions: np.ndarray) -> np.ndarray:
    """An array of plain bytes (text labels as fixed-width text, not Python objects)."""
    return predictions.astype(str) if predictions.dtype == object else predictions


def _die_with(gate: int) -> None:
    """Linux: SIGKILL this child when the gate dies (a job cancelled with SIGKILL, say)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != gate:  # the gate died before the call
        os._exit(70)


def _offer_to_oom_killer() -> None:
    with contextlib.suppress(OSError):
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
