"""Many processes spending one ledger at once, and processes killed in the middle of a write."""
from __future__ import annotations

import multiprocessing
import random
import signal
import subprocess
import sys
from pathlib import Path

from easeml_ci.ledger import FileBackend, Ledger, LedgerSpent
from ledger_test_key import KEY as LEDGER_KEY

FP = "cd" * 32
TERMS = {"condition": "n > 0.5 +/- 0.1", "reliability": 0.99, "mode": "fp-free",
         "adaptivity": "full", "steps": 40, "passes": None}


def _spend_until_gone(directory: str, queue) -> None:
    ledger = Ledger(FileBackend(directory), FP, LEDGER_KEY)
    revealed = []
    while True:
        try:
            entry, _ = ledger.record_step(passed=random.random() < 0.5, terms=TERMS)
        except LedgerSpent:
            break
        revealed.append(entry["seq"])  # only now may the verdict be shown
    queue.put(revealed)


def test_concurrent_checks_never_spend_the_same_step_twice(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: a fork of a threaded test
    # runner (xdist, onnxruntime) has been seen to exit 1 after its work was done, under load
    queue = ctx.Queue()
    workers = [ctx.Process(target=_spend_until_gone, args=(str(tmp_path), queue)) for _ in range(8)]
    for w in workers:
        w.start()
    watcher = Ledger(FileBackend(tmp_path), FP, LEDGER_KEY)
    while any(w.is_alive() for w in workers):  # readers never see a torn line or a false truncation
        report = watcher.verify()
        assert report.ok and not report.warnings, report
        if queue.qsize() == len(workers):
            break
    revealed = [seq for _ in workers for seq in queue.get(timeout=60)]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    ledger = Ledger(FileBackend(tmp_path), FP, LEDGER_KEY)
    entries = ledger.entries()
    steps = [e for e in entries if e["kind"] == "step"]
    assert len(revealed) == len(set(revealed)) == len(steps) == 40
    assert sorted(revealed) == sorted(e["seq"] for e in steps)
    assert ledger.budget().to_dict()["status"] == "exhausted"
    assert ledger.verify().ok


WRITER = """
import os, sys
from easeml_ci.ledger import FileBackend, Ledger, LedgerSpent
import base64
LEDGER_KEY = base64.urlsafe_b64decode(os.environ["EASEML_LEDGER_KEY"])
terms = dict(condition="n > 0.5 +/- 0.1", reliability=0.99, mode="fp-free",
             adaptivity="full", steps=100_000, passes=None)

def stop_mid_write(fd, line):  # half a line on disk, then say so and wait to be killed
    os.write(fd, line[:len(line) // 2])
    os.fsync(fd)
    print("mid-write", flush=True)
    sys.stdin.read()

hook = stop_mid_write if sys.argv[4] == "stop-mid-write" else None
ledger = Ledger(FileBackend(sys.argv[1], write_line=hook), sys.argv[2], LEDGER_KEY)
for _ in range(int(sys.argv[3])):
    entry, _ = ledger.record_step(passed=True, terms=terms)
    print("revealed", entry["seq"], flush=True)
"""


def _writer(directory: Path, count: int, stop_mid_write: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(directory), FP, str(count),
                             "stop-mid-write" if stop_mid_write else "run"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_sigkill_mid_write_leaves_a_readable_ledger_that_does_not_under_count(tmp_path):
    ledger = Ledger(FileBackend(tmp_path), FP, LEDGER_KEY)
    ledger.record_step(passed=False, terms=TERMS)
    path = tmp_path / f"{FP}.jsonl"
    assert path.read_bytes().count(b"\n") == 2  # register + first step, complete
    proc = _writer(tmp_path, 1, stop_mid_write=True)
    try:
        assert proc.stdout.readline() == "mid-write\n"  # half of the next line is on disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert not path.read_bytes().endswith(b"\n")
    assert proc.stdout.read() == ""  # it died before revealing anything
    entries = ledger.entries()
    assert [e["kind"] for e in entries] == ["register", "step", "torn"]
    assert ledger.budget().used == 2  # the torn step counts: never under-count
    entry, after = ledger.record_step(passed=False, terms=TERMS)
    assert entry["seq"] == 3 and after.used == 3
    report = ledger.verify()
    assert report.ok, report.problems
    assert any("torn write" in w for w in report.warnings)


def test_random_kills_never_under_count(tmp_path):
    rng = random.Random(7)
    procs = [_writer(tmp_path, 10_000) for _ in range(4)]
    revealed = 0
    for proc in procs:
        # Each writer is killed after it has revealed a chosen number of steps: wherever in
        # its next write the signal lands, what it revealed must already be counted.
        for _ in range(rng.randint(1, 25)):
            line = proc.stdout.readline()
            assert line.startswith("revealed"), line
            revealed += 1
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=10)
        revealed += sum(1 for line in proc.stdout.read().splitlines() if line.startswith("revealed"))
    ledger = Ledger(FileBackend(tmp_path), FP, LEDGER_KEY)
    assert revealed >= len(procs)
    assert ledger.budget().used >= revealed
    assert ledger.verify().ok
