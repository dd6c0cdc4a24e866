"""Checks racing for the last steps of one test set, and a check killed while recording its step."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys

import pytest

from easeml_ci.gate.check import run_check
from easeml_ci.errors import BudgetExhausted

from test_check import Gate


def _one_check(root: str, barrier, queue) -> None:
    barrier.wait()
    try:
        result = run_check(os.path.join(root, ".easeml.yml"), os.path.join(root, "good.npy"),
                           None, os.path.join(root, "ts.npz"), workdir=root)
        queue.put(("revealed", result.step))
    except BudgetExhausted:
        queue.put(("refused", None))


@pytest.fixture
def gate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Gate(tmp_path)


def test_eight_checks_at_once_spend_each_step_exactly_once(gate):
    gate.config(steps=5)
    # forks of a fresh single-threaded server that imported the gate once: a fork of the threaded
    # test runner (xdist, onnxruntime) has been seen to exit 1 after its work was done, under
    # load, and eight spawned interpreters would each import the gate (~1 s of CPU apiece)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["easeml_ci.gate.check"])
    barrier, queue = ctx.Barrier(8, timeout=120), ctx.Queue()  # a peer that never starts breaks it
    procs = [ctx.Process(target=_one_check, args=(str(gate.root), barrier, queue)) for _ in range(8)]
    for proc in procs:
        proc.start()
    outcomes = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    revealed = sorted(step for kind, step in outcomes if kind == "revealed")
    steps = [e["seq"] for e in gate.entries() if e["kind"] == "step"]
    assert revealed == steps and len(steps) == 5  # no step revealed twice (entry 0: register)
    assert sum(kind == "refused" for kind, _ in outcomes) == 3
    assert len(gate.steps()) == 5
    claims = [e for e in gate.entries() if e["kind"] == "alert"]
    assert len(claims) == 1  # the losers and the last step all raise it; it goes out once


# A check in a process of its own, whose ledger writer stops half-way through the step's line
# and says so; everything the check would show goes to stdout.
CHECK_STOPPED_MID_WRITE = """
import os, sys
from easeml_ci.gate.check import run_check
from easeml_ci.ledger import FileBackend

def stop_mid_write(fd, line):
    os.write(fd, line[:len(line) // 2])
    os.fsync(fd)
    print("mid-write", flush=True)
    sys.stdin.read()  # until killed

backend = FileBackend(os.path.join(".easeml", "ledger"), write_line=stop_mid_write)
result = run_check(".easeml.yml", "good.npy", None, "ts.npz", backend=backend,
                   progress=lambda message: print(message, flush=True))
print("verdict", result.verdict, flush=True)
"""


def test_a_check_killed_while_writing_its_step_reveals_nothing_and_costs_a_step(gate):
    assert gate.check("good.npy").exit_code == 0
    proc = subprocess.Popen([sys.executable, "-c", CHECK_STOPPED_MID_WRITE], cwd=gate.root,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    said = []
    try:
        for line in proc.stdout:
            said.append(line)
            if line == "mid-write\n":
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    said.append(proc.stdout.read())
    assert said[-2] == "mid-write\n", said  # it reached the write, and was killed in it
    assert not any("verdict" in line or "pass" in line.lower() for line in said), said
    # killed in its reservation (written before the test set is opened): a torn line, counted
    assert [e["kind"] for e in gate.entries()] == ["register", "step", "complete", "torn"]
    result = gate.check("good.npy", "--json")
    assert result.exit_code == 0
    assert '"used": 3' in result.stdout  # the torn write counted
