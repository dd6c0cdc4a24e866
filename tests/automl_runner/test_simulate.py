"""simulate(): a hand-checked replay, and the CLI's input errors and --json shape."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from automl_runner.scheduling.matrices import QualityMatrix, load_matrix, synthetic
from automl_runner.scheduling.simulate import run_once, simulate, simulate_command

# Tenant A: x (0.9, 1 s), y (1.0, 2 s).  Tenant B: x (0.5, 1 s), y (0.8, 3 s).
TINY = QualityMatrix([
    ("A", "x", 0.9, 1.0), ("A", "y", 1.0, 2.0),
    ("B", "x", 0.5, 1.0), ("B", "y", 0.8, 3.0),
])


def test_round_robin_on_two_devices_by_hand():
    # t=0: A.x and B.x start.  t=1: both finish (regret 0.1 + 0.3 = 0.4); the devices take
    # A.y (done t=3, regret 0.3) and B.y (done t=4, regret 0).  Same for either tenant order.
    for seed in range(4):
        tr = run_once(TINY, None, "round-robin", devices=2, seed=seed)
        assert tr.times.tolist() == [0.0, 1.0, 1.0, 3.0, 4.0]
        assert tr.regret[0] == pytest.approx(1.8)
        assert tr.regret[2:].tolist() == pytest.approx([0.4, 0.3, 0.0])
    res = simulate(TINY, None, devices=2, seeds=4, target=0.15, schedulers=["round-robin"])
    rr = res.schedulers["round-robin"]
    assert rr.time_to_target(0.15) == 3.0  # mean regret 0.3 / 2 tenants
    assert rr.time_to_target(0.2) == 1.0
    assert rr.time_to_target(0.149) == 4.0


def test_one_device_runs_trials_back_to_back():
    tr = run_once(TINY, None, "round-robin", devices=1, seed=0, stop_when_solved=False)
    assert tr.trials == 4
    assert tr.times[-1] == pytest.approx(1 + 2 + 1 + 3)  # one device: total cost
    assert np.all(np.diff(tr.times) > 0)


@pytest.mark.parametrize("name", ["multitenant", "round-robin", "random", "round-robin-gp", "random-gp"])
def test_regret_falls_to_zero_and_never_rises(name):
    m = synthetic(tenants=6, candidates=8, seed=2)
    tr = run_once(m, None, name, devices=3, seed=1)
    assert np.all(np.diff(tr.regret) <= 1e-12)
    assert tr.regret[-1] == pytest.approx(0.0, abs=1e-9)
    assert tr.regret[0] == pytest.approx(sum(m.best(t) for t in m.tenants))


def test_multitenant_beats_round_robin_on_a_synthetic_matrix():
    m = synthetic(tenants=30, candidates=12, seed=5)
    names = m.tenants
    sched, prior = m.subset(names[:10]), m.without(names[:10])
    res = simulate(sched, prior, devices=2, seeds=3, target=0.02)
    mt = res.schedulers["multitenant"].time_to_target(0.02)
    assert mt < res.schedulers["round-robin"].time_to_target(0.02)
    assert mt < res.schedulers["random"].time_to_target(0.02)


@pytest.mark.parametrize("devices", [1, 2])
def test_turn_schedulers_replay_like_multitenant_with_one_tenant(devices):
    m = synthetic(tenants=9, candidates=8, seed=3)
    one, prior = m.subset(m.tenants[:1]), m.without(m.tenants[:1])
    ref = run_once(one, prior.rows, "multitenant", devices=devices, seed=0, stop_when_solved=False)
    for name in ("round-robin-gp", "random-gp"):
        tr = run_once(one, prior.rows, name, devices=devices, seed=0, stop_when_solved=False)
        assert tr.times.tolist() == ref.times.tolist()
        assert tr.regret.tolist() == ref.regret.tolist()


# -- the CLI -------------------------------------------------------------------------

def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _run(*args):
    return CliRunner().invoke(simulate_command, list(args))


def test_cli_json_shape(tmp_path):
    m = synthetic(tenants=9, candidates=6, seed=1)
    names = m.tenants
    mp, pp = tmp_path / "m.csv", tmp_path / "p.csv"
    m.subset(names[:4]).to_csv(mp)
    m.without(names[:4]).to_csv(pp)
    r = _run("--matrix", str(mp), "--prior", str(pp), "--devices", "2", "--seeds", "3",
             "--target", "0.02", "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output)
    assert set(obj["schedulers"]) == {"multitenant", "round-robin", "random"}
    for entry in obj["schedulers"].values():
        assert isinstance(entry["time_to_target"], float) and entry["time_to_target"] > 0
        assert len(entry["time_to_target_per_seed"]) == 3
        assert entry["time_to_target"] == pytest.approx(float(np.median(entry["time_to_target_per_seed"])))
        assert len(entry["curve"]["time"]) == len(entry["curve"]["mean_regret"])
    assert obj["tenants"] == 4 and obj["devices"] == 2


def test_cli_accepts_the_turn_schedulers(tmp_path):
    m = synthetic(tenants=9, candidates=6, seed=1)
    names = m.tenants
    mp, pp = tmp_path / "m.csv", tmp_path / "p.csv"
    m.subset(names[:4]).to_csv(mp)
    m.without(names[:4]).to_csv(pp)
    r = _run("--matrix", str(mp), "--prior", str(pp), "--devices", "2", "--seeds", "2", "--target", "0.02",
             "--scheduler", "multitenant", "--scheduler", "round-robin-gp", "--scheduler", "random-gp", "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output)
    assert list(obj["schedulers"]) == ["multitenant", "round-robin-gp", "random-gp"]
    for entry in obj["schedulers"].values():
        assert entry["time_to_target"] > 0 and len(entry["time_to_target_per_seed"]) == 2
    r = _run("--matrix", str(mp), "--prior", str(pp), "--seeds", "2", "--scheduler", "round-robin-gp")
    assert r.exit_code == 0, r.output
    assert "round-robin-gp" in r.output


def test_cli_table_lists_each_scheduler(tmp_path):
    mp = tmp_path / "m.csv"
    TINY.to_csv(mp)
    r = _run("--matrix", str(mp), "--devices", "2", "--seeds", "2", "--target", "0.15")
    assert r.exit_code == 0, r.output
    assert "round-robin" in r.output and "multitenant" in r.output and "random" in r.output


GOOD_HEAD = "tenant,candidate,quality,cost\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tenant,candidate,cost\nA,x,1\n", ":1: missing column(s) quality"),
        (GOOD_HEAD + "A,x,0.9,1\nA,y,abc,2\n", ":3: column quality must be a number, got 'abc'"),
        (GOOD_HEAD + "A,x,0.9,-1\n", ":2: column cost must be >= 0 seconds, got -1"),
        (GOOD_HEAD + "A,x,0.9,fast\n", ":2: column cost must be a number, got 'fast'"),
        (GOOD_HEAD + "A,x,nan,1\n", ":2: column quality must be finite, got 'nan'"),
        (GOOD_HEAD + "A,x,0.9\n", ":2: expected 4 fields, got 3"),
        (GOOD_HEAD + ",x,0.9,1\n", ":2: column tenant is empty"),
        (GOOD_HEAD + "A,x,0.9,1\nA,x,0.8,1\n", ":3: duplicate row for tenant 'A', candidate 'x'"),
        (GOOD_HEAD, ": no rows after the header"),
        ("", ": empty file"),
    ],
    ids=["missing-column", "non-numeric-quality", "negative-cost", "non-numeric-cost", "nan-quality",
         "short-row", "empty-tenant", "duplicate", "no-rows", "empty-file"],
)
def test_cli_bad_matrix_is_a_one_line_error_exit_2(tmp_path, text, expected):
    path = _write(tmp_path, "bad.csv", text)
    r = _run("--matrix", path, "--seeds", "1")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert lines[0].startswith(f"error: {path}")
    assert expected in lines[0]
    assert "Traceback" not in r.output


def test_cli_bad_prior_names_the_prior_file(tmp_path):
    mp = tmp_path / "m.csv"
    TINY.to_csv(mp)
    pp = _write(tmp_path, "prior.csv", GOOD_HEAD + "P,x,high,1\n")
    r = _run("--matrix", str(mp), "--prior", pp)
    assert r.exit_code == 2
    assert f"error: {pp}:2: column quality must be a number, got 'high'" in r.output


def test_cli_prior_must_not_share_tenants(tmp_path):
    mp = tmp_path / "m.csv"
    TINY.to_csv(mp)
    pp = _write(tmp_path, "prior.csv", GOOD_HEAD + "A,x,0.9,1\n")
    r = _run("--matrix", str(mp), "--prior", pp)
    assert r.exit_code == 2
    assert "tenant 'A' is also in" in r.output


def test_cli_missing_file(tmp_path):
    r = _run("--matrix", str(tmp_path / "nope.csv"))
    assert r.exit_code == 2
    assert "cannot read matrix file" in r.output and "nope.csv" in r.output


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--devices", "0"], "--devices"),
        (["--seeds", "0"], "--seeds"),
        (["--target", "-0.1"], "--target"),
        (["--scheduler", "fifo"], "fifo"),
    ],
    ids=["zero-devices", "zero-seeds", "negative-target", "unknown-scheduler"],
)
def test_cli_bad_options_exit_2(tmp_path, args, expected):
    mp = tmp_path / "m.csv"
    TINY.to_csv(mp)
    r = _run("--matrix", str(mp), *args)
    assert r.exit_code == 2
    assert expected in r.output
    assert "Traceback" not in r.output


def test_csv_round_trip(tmp_path):
    p = tmp_path / "m.csv"
    TINY.to_csv(p)
    back = load_matrix(p)
    assert back.rows == TINY.rows


def test_negative_scores_start_from_the_worst_score():
    # R^2 can be negative: before any result, the tenant counts as having its worst score
    m = QualityMatrix([("A", "x", -0.5, 1.0), ("A", "y", 0.25, 2.0)])
    tr = run_once(m, None, "round-robin", devices=1, seed=0)
    assert tr.regret[0] == pytest.approx(0.75)
    assert tr.regret[1:].tolist() == pytest.approx([0.75, 0.0])
    assert np.all(tr.regret >= 0)


def test_the_committed_real_matrices_load_and_split_cleanly():
    from automl_runner.scheduling.matrices import bundled

    real = bundled("real")
    assert len(real.tenants) >= 60 and len(real.candidates) >= 15
    assert all(0.0 <= q <= 1.0 and c > 0 for _t, _c, q, c in real.rows)
    sched, prior = bundled("real_scheduled"), bundled("real_prior")
    assert not set(sched.tenants) & set(prior.tenants)
    assert sorted(sched.tenants + prior.tenants) == sorted(real.tenants)
