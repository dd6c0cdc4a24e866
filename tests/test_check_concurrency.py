"""Checks racing for the last steps of one test set, and a check killed while recording its step."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from easeml_ci.check import run_check
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
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_one_check, args=(str(gate.root), barrier, queue)) for _ in range(8)]
    for proc in procs:
        proc.start()
    outcomes = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    revealed = sorted(step for kind, step in outcomes if kind == "revealed")
    assert revealed == [1, 2, 3, 4, 5]  # register is entry 0; no step revealed twice
    assert sum(kind == "refused" for kind, _ in outcomes) == 3
    assert len(gate.steps()) == 5
    claims = [e for e in gate.entries() if e["kind"] == "alert"]
    assert len(claims) == 1  # the losers and the last step all raise it; it goes out once


def test_a_check_killed_while_writing_its_step_reveals_nothing_and_costs_a_step(gate):
    assert gate.check("good.npy").exit_code == 0
    env = dict(os.environ, _EASEML_LEDGER_TEST_PAUSE_MID_WRITE="30")
    proc = subprocess.Popen([sys.executable, "-c", "from easeml_ci.cli import main; main()",
                             "check", "--new", "good.npy",
                             "--testset", "ts.npz"], cwd=gate.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ledger_file = next((gate.root / ".easeml" / "ledger").glob("*.jsonl"))
    deadline = time.monotonic() + 60
    while ledger_file.read_bytes().endswith(b"\n"):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert "PASS" not in proc.stdout.read()
    assert [e["kind"] for e in gate.entries()] == ["register", "step", "torn"]
    result = gate.check("good.npy", "--json")
    assert result.exit_code == 0
    assert '"used": 3' in result.stdout  # the torn write counted
