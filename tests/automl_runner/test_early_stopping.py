"""Learning curves: the CSV format, multitenant-hb's rung rule, and that no trial trains past its budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from automl_runner.scheduling.gp import CandidatePrior, TenantGP, direct_posterior
from automl_runner.scheduling.matrices import LearningCurves, load_any, load_curves, split_curves, synthetic_curves
from automl_runner.scheduling.registry import make_scheduler
from automl_runner.candidates.search_space import (
    SearchSpaceError,
    classification_spaces,
    config_name,
    parse_name,
    pool,
    rung_fidelities,
)
from automl_runner.scheduling.simulate import run_once, simulate_command
from automl_runner.scheduling.successive_halving import RUNGS, CurveModel, MultiTenantHBScheduler

HEAD = "tenant,candidate,fidelity,quality,cost\n"


def _run(*args):
    return CliRunner().invoke(simulate_command, list(args))


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# -- the CSV format -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        (HEAD + "A,x,0,0.9,1\n", ":2: column fidelity must be in (0, 1] (a fraction of the full budget), got 0"),
        (HEAD + "A,x,1,0.9,1\nA,x,1.5,0.9,2\n", ":3: column fidelity must be in (0, 1]"),
        (HEAD + "A,x,half,0.9,1\n", ":2: column fidelity must be a number, got 'half'"),
        (HEAD + "A,x,1,0.9,1\nA,y,0.5,0.7,1\n", ":3: tenant 'A', candidate 'y' has no row with fidelity 1"),
        (HEAD + "A,x,1,0.9,1\nA,x,1.0,0.8,1\n", ":3: duplicate row for tenant 'A', candidate 'x', fidelity 1"),
        (HEAD + "A,x,0.5,0.9,-2\n", ":2: column cost must be >= 0 seconds, got -2"),
        (HEAD + "A,x,0.5,,1\n", ":2: column quality must be a number, got ''"),
        (HEAD.strip() + ",resumes\nA,x,1,0.9,1,maybe\n", ":2: column resumes must be 1 or 0 (true or false), got 'maybe'"),
        (HEAD.strip() + ",resumes\nA,x,0.5,0.8,1,1\nA,x,1,0.9,2,0\n", ":3: column resumes is 0 for candidate 'x', but 1 on line 2"),
        (HEAD + "A,x,1\n", ":2: expected 5 fields, got 3"),
        ("tenant,candidate,fidelity,cost\nA,x,1,1\n", ":1: missing column(s) quality"),
    ],
    ids=["zero-fidelity", "fidelity-above-1", "non-numeric-fidelity", "no-full-row", "duplicate-fidelity",
         "negative-cost", "empty-quality", "bad-resumes", "inconsistent-resumes", "short-row", "missing-column"],
)
def test_bad_curves_are_a_one_line_error_naming_line_and_column_exit_2(tmp_path, text, expected):
    path = _write(tmp_path, "curves.csv", text)
    r = _run("--matrix", path, "--seeds", "1")
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert lines[0].startswith(f"error: {path}:")
    assert expected in lines[0]
    assert "Traceback" not in r.output


def test_bad_prior_curves_name_the_prior_file(tmp_path):
    m = _write(tmp_path, "m.csv", HEAD + "A,x,1,0.9,1\n")
    p = _write(tmp_path, "p.csv", HEAD + "B,x,2,0.9,1\n")
    r = _run("--matrix", m, "--prior", p, "--seeds", "1")
    assert r.exit_code == 2
    assert f"error: {p}:2: column fidelity must be in (0, 1]" in r.output


def test_curves_round_trip_and_full_rows_are_the_plain_matrix(tmp_path):
    c = synthetic_curves(tenants=5, candidates=4, seed=3)
    c.to_csv(tmp_path / "c.csv")
    back = load_any(tmp_path / "c.csv")
    assert len(back) == len(c) and back.resumes == c.resumes
    full = back.full()
    assert len(full) == 5 * 4
    for t, cand, q, cost in full.rows:
        assert back.at(t, cand, 1.0) == pytest.approx((q, cost))
        assert back.fidelities(t, cand) == pytest.approx([1 / 27, 1 / 9, 1 / 3, 1.0], rel=1e-5)
    # a plain matrix reads as curves with fidelity 1 only
    full.to_csv(tmp_path / "m.csv")
    plain = load_any(tmp_path / "m.csv")
    assert {r[2] for r in plain.rows} == {1.0} and not any(plain.resumes.values())


def test_cli_json_on_curves_has_every_scheduler_with_time_to_target(tmp_path):
    c = synthetic_curves(tenants=10, candidates=6, seed=1)
    sched, prior = split_curves(c, 4, np.random.default_rng(0))
    sched.to_csv(tmp_path / "m.csv")
    prior.to_csv(tmp_path / "p.csv")
    r = _run("--matrix", str(tmp_path / "m.csv"), "--prior", str(tmp_path / "p.csv"), "--devices", "2",
             "--seeds", "2", "--target", "0.02", "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output)
    assert list(obj["schedulers"]) == ["multitenant", "round-robin", "random", "multitenant-hb"]
    for entry in obj["schedulers"].values():
        assert entry["time_to_target"] > 0 and len(entry["time_to_target_per_seed"]) == 2


def test_committed_real_curves_load():
    from automl_runner.scheduling.matrices import DATA_DIR

    c = load_curves(DATA_DIR / "real_curves.csv")
    assert len(c.tenants) == 71 and len(c.candidates) == 24
    assert sum(c.resumes.values()) == 15  # boosting, hist-boosting, forests, extra-trees, MLPs


# -- the rung rule ----------------------------------------------------------------------

def _prior_curves(n=12, seed=0):
    """Prior tenants where the final score is the partial one plus 0.02, give or take 0.005."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n):
        level = rng.uniform(0.7, 0.95)
        for cand, resumes, cost in (("gbm", True, 9.0), ("cheap", False, 1.0), ("other", False, 1.0)):
            q1 = float(np.clip(level + rng.normal(0, 0.02), 0, 1))
            rows.append((f"p{t}", cand, 1.0, q1, cost, resumes))
            for f in RUNGS[:-1]:
                rows.append((f"p{t}", cand, f, q1 - 0.02 + rng.normal(0, 0.005), cost * f, resumes))
    return LearningCurves(rows)


def _hb(curves):
    return MultiTenantHBScheduler(prior=curves.full().rows, curves=curves)


def test_curve_model_learns_the_gain_and_the_cost_ratio():
    model = CurveModel(_prior_curves())
    mean, sd = model.predict("gbm", 1 / 9, 0.8)
    assert mean == pytest.approx(0.82, abs=0.006)
    assert sd < 0.02
    assert model.cost_ratio("gbm", 1 / 9) == pytest.approx(9.0, rel=1e-6)
    assert model.cost_ratio("gbm", 1 / 3) == pytest.approx(3.0, rel=1e-6)
    assert model.predict("gbm", 1.0, 0.8) == (0.8, 0.0)


def test_a_trial_far_below_its_tenants_best_stops_when_other_work_is_pending():
    s = _hb(_prior_curves())
    s.observe("A", "cheap", 0.95, 1.0)
    s.start("A", "gbm")
    pending = {"B": ["cheap", "other"]}  # tenant B has nothing yet: its first trial is worth a lot
    assert s.should_stop("A", "gbm", 1 / 9, 0.60, 1.0, pending)


def test_a_trial_above_its_tenants_best_goes_on():
    s = _hb(_prior_curves())
    s.observe("A", "cheap", 0.80, 1.0)
    s.observe("B", "cheap", 0.99, 1.0)  # B is nearly solved: little to gain there
    s.start("A", "gbm")
    assert not s.should_stop("A", "gbm", 1 / 9, 0.90, 1.0, {"B": ["other"]})


def test_the_rule_is_going_on_against_the_best_alternative_in_ei_per_second():
    s = _hb(_prior_curves())
    s.observe("A", "cheap", 0.80, 1.0)
    s.start("A", "gbm")
    # tenant B has nothing yet: a 1-second first model is worth more per second than the
    # 8 seconds left of A's promising trial, so the greedy rule hands the device to B
    pending = {"B": ["cheap", "other"]}
    ei, remaining = s.continuation("A", "gbm", 1 / 9, 0.90, 1.0)
    assert remaining == pytest.approx(8.0, rel=1e-6)  # cost ratio 9 from the prior curves
    assert ei == pytest.approx(0.12, abs=0.02)
    assert s.should_stop("A", "gbm", 1 / 9, 0.90, 1.0, pending) == (ei / remaining < s.alternative_rate(pending))
    assert s.alternative_rate(pending) > ei / remaining


def test_with_nothing_else_pending_a_trial_always_goes_on():
    s = _hb(_prior_curves())
    s.observe("A", "cheap", 0.95, 1.0)
    s.start("A", "gbm")
    assert not s.should_stop("A", "gbm", 1 / 9, 0.30, 1.0, {})


def test_the_decision_moves_with_the_partial_score_monotonically():
    # more promising partial scores never stop when a worse one goes on (same state)
    stops = []
    for q in np.linspace(0.5, 1.0, 26):
        s = _hb(_prior_curves())
        s.observe("A", "cheap", 0.93, 1.0)
        s.observe("B", "cheap", 0.99, 1.0)
        s.start("A", "gbm")
        stops.append(s.should_stop("A", "gbm", 1 / 9, float(q), 1.0, {"B": ["other", "gbm"]}))
    assert stops[0] and not stops[-1]
    first_go = stops.index(False)
    assert not any(stops[first_go:])


def test_a_stopped_trial_updates_its_tenant_and_counts_at_its_rung_score():
    s = _hb(_prior_curves())
    s.observe("A", "cheap", 0.9, 1.0)
    s.start("A", "gbm")
    before = s._gp("A").posterior()[0][s.prior.index["gbm"]]
    s.observe_partial("A", "gbm", 1 / 9, 0.5, 1.0)
    after = s._gp("A").posterior()[0][s.prior.index["gbm"]]
    assert after < before - 0.1  # pulled towards 0.52, its extrapolated score
    assert s.best("A") == 0.9 and "gbm" not in s.running.get("A", ())
    # a stopped model better than the tenant's best is its best, as the store promotes it
    s.start("A", "other")
    s.observe_partial("A", "other", 1 / 3, 0.93, 1.0)
    assert s.best("A") == 0.93
    assert s.rungs("A", "gbm", RUNGS) == [1.0]  # chosen again, it runs to the end in one go
    assert s.rungs("B", "gbm", RUNGS) == list(RUNGS)
    assert s.rungs("B", "cheap", RUNGS) == [1.0]  # does not resume: no rungs


def test_other_schedulers_never_stop_and_have_no_rungs():
    for name in ("multitenant", "round-robin", "random", "round-robin-gp"):
        s = make_scheduler(name, prior=_prior_curves().full().rows)
        assert not s.early_stopping
        assert s.rungs("A", "gbm", RUNGS) == [1.0]
        assert not s.should_stop("A", "gbm", 1 / 9, 0.0, 1.0, {"B": ["x"]})


# -- the budget ---------------------------------------------------------------------------

@pytest.mark.parametrize("devices", [1, 3])
def test_no_trial_trains_past_its_budget_and_stopped_ones_free_the_device_at_once(devices):
    c = synthetic_curves(tenants=14, candidates=8, seed=4)
    sched, prior = split_curves(c, 6, np.random.default_rng(1))
    tr = run_once(sched, prior, "multitenant-hb", devices, seed=2, stop_when_solved=False)
    stopped = [e for e in tr.log if e[4]]
    assert stopped, "the rule never stopped anything: this test would not see a budget overrun"
    first_attempt = {}
    for tenant, cand, fid, spent, was_stopped in tr.log:
        key = (tenant, cand)
        assert 0 < fid <= 1.0
        if was_stopped:
            assert fid < 1.0 and key not in first_attempt
            assert any(abs(fid - r) < 1e-9 for r in RUNGS[:-1])
            # resumable: what it spent is the curve's cost at the rung it reached, no more
            assert spent == pytest.approx(sched.at(tenant, cand, fid)[1])
            first_attempt[key] = spent
        else:
            assert fid == 1.0
            # a full trial costs its full cost (plus, if it was stopped once, that first attempt)
            assert spent == pytest.approx(sched.at(tenant, cand, 1.0)[1])
            assert spent <= sched.at(tenant, cand, 1.0)[1] + 1e-9
    # every (tenant, candidate) ends at fidelity 1 exactly once: stopped trials are retried last
    full = [(t, cnd) for t, cnd, f, _s, st in tr.log if not st]
    assert sorted(full) == sorted((t, cnd) for t, cnd, *_ in sched.full().rows)
    assert tr.regret[-1] == pytest.approx(0.0, abs=1e-9)
    if devices == 1:
        # one device, back to back: the last event is the sum of everything spent
        assert tr.times[-1] == pytest.approx(sum(e[3] for e in tr.log))


def test_a_stopped_model_counts_in_the_regret_at_its_rung_score_capped_at_the_best():
    """The simulator counts what the queue delivers: a stopped trial is a done trial in the store
    with its rung score, and the store promotes the tenant's best done trial, stopped or not."""
    from automl_runner.scheduling.matrices import DATA_DIR

    c = load_curves(DATA_DIR / "real_curves.csv")
    sched, prior = split_curves(c, 8, np.random.default_rng([8, 0]))
    tr = run_once(sched, prior, "multitenant-hb", 4, seed=0, stop_when_solved=False)
    full = sched.full()
    found = {t: min(0.0, min(full.quality[t].values())) for t in full.tenants}
    expected = [sum(full.best(t) - found[t] for t in full.tenants)]
    for tenant, cand, fid, _spent, _stopped in tr.log:
        q = min(sched.at(tenant, cand, fid)[0], full.best(tenant))
        found[tenant] = max(found[tenant], q)
        expected.append(sum(full.best(t) - found[t] for t in full.tenants))
    assert len(tr.regret) == len(expected)
    assert tr.regret == pytest.approx(np.maximum(expected, 0.0), abs=1e-9)
    # and it matters: some stopped model lowered the regret when it stopped
    lowered = [i for i, e in enumerate(tr.log, start=1) if e[4] and tr.regret[i] < tr.regret[i - 1] - 1e-12]
    assert lowered, "no stopped model ever beat its tenant's best: this test would not see the rule"


def test_multitenant_ignores_the_curves_below_fidelity_1():
    c = synthetic_curves(tenants=10, candidates=6, seed=2)
    sched, prior = split_curves(c, 4, np.random.default_rng(0))
    a = run_once(sched, prior, "multitenant", 2, seed=0)
    b = run_once(sched.full(), prior.full().rows, "multitenant", 2, seed=0)
    assert a.times.tolist() == b.times.tolist() and a.regret.tolist() == b.regret.tolist()


# -- the GP with per-observation noise, and the search spaces ------------------------------

def test_gp_observation_with_its_own_noise_matches_the_dense_posterior():
    rows = [(f"t{i}", f"c{j}", 0.7 + 0.02 * ((i * 7 + j * 3) % 5) + 0.01 * j, 1.0)
            for i in range(10) for j in range(5)]
    prior = CandidatePrior.from_rows(rows)
    gp = TenantGP(prior)
    gp.observe(0, 0.8)
    gp.observe(3, 0.7, noise=0.05**2)
    gp.observe(1, 0.75, noise=0.002**2)
    mean, var = gp.posterior()
    ref_mean, ref_var = direct_posterior(prior, [0, 3, 1], [0.8, 0.7, 0.75],
                                         noises=[prior.noise, 0.05**2, 0.002**2])
    assert mean == pytest.approx(ref_mean, abs=1e-10)
    assert var == pytest.approx(ref_var, abs=1e-10)
    # a noisier observation moves the posterior less
    gp2 = TenantGP(prior)
    gp2.observe(3, 0.5, noise=0.1**2)
    gp3 = TenantGP(prior)
    gp3.observe(3, 0.5)
    assert abs(gp2.posterior()[0][3] - prior.mean[3]) < abs(gp3.posterior()[0][3] - prior.mean[3])


def test_search_space_names_round_trip_and_stay_inside_the_space():
    spaces = classification_spaces()
    names = pool(spaces)
    assert len(names) == len(set(names)) == 24
    for name in names:
        space, config = parse_name(name, spaces)
        assert config_name(space.family, config) == name
        space.check(config)
        assert np.all((space.unit_vector(config) >= 0) & (space.unit_vector(config) <= 1))
    with pytest.raises(SearchSpaceError, match="outside"):
        parse_name("boosting/learning_rate=2/max_depth=3/subsample=0.8", spaces)
    with pytest.raises(SearchSpaceError, match="no hyperparameter|not key=value"):
        parse_name("boosting/depth=3", spaces)
    with pytest.raises(SearchSpaceError, match="no family"):
        parse_name("xgb/eta=0.1", spaces)
    assert rung_fidelities(3, 3) == pytest.approx((1 / 9, 1 / 3, 1.0))
    gb = spaces["boosting"]
    assert gb.units(1 / 9) == 9 and gb.units(1.0) == 81 and gb.resumes
    assert not spaces["logreg"].resumes


@pytest.mark.parametrize("family", ["forest/", "mlp/"])
def test_a_configuration_new_to_the_prior_is_modelled_after_its_family(family):
    """Held out of the prior, a configuration is predicted on new tenants from their results on
    the *other* families: modelled after its own family's configurations (``add_like``) the
    error is well below the average-candidate model's (measured: about half for every family)."""
    from automl_runner.scheduling.matrices import DATA_DIR

    full = load_curves(DATA_DIR / "real_curves.csv").full()
    held = next(c for c in full.candidates if c.startswith(family))
    tenants = full.tenants
    prior_rows = [r for r in full.rows if r[0] in tenants[:50] and r[1] != held]
    errors = {}
    for mode in ("family", "average"):
        s = make_scheduler("multitenant", prior=prior_rows)
        if mode == "average":
            s._spaces = {}  # no search spaces known: the average-candidate model
        errs = []
        for t in tenants[50:]:
            gp = TenantGP(s.prior)
            i = s._index(held)
            for c in full.candidates:
                if not c.startswith(family):
                    gp.observe(s._index(c), full.quality[t][c])
            errs.append(abs(gp.posterior()[0][i] - full.quality[t][held]))
        errors[mode] = float(np.mean(errs))
    assert errors["family"] < 0.75 * errors["average"], errors
