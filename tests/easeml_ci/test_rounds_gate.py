"""Verdicts in rounds (issue 17): labels on demand under full, firstChange and passes.

Through the CLI (in-process), with the gate's clock moved by the test (easeml_ci.gate.schedule.now):
a check of a new pair reserves its step and shows "pending: verdict at the end of round r";
`round close` after the round's end decides on the labels present (conditions.rounds), completes
the step and releases the bit. What the team sees is compared field by field when the labels came
early, late or not at all; Monte Carlo through the CLI with a team that picks its next pair from
the bits it has seen."""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import yaml

import conditions
from conditions.rounds import decide_at_round_end
from easeml_ci.config import parse_config
from easeml_ci.errors import ConfigError
from easeml_ci.gate import rounds as rounds_gate
from easeml_ci.gate import schedule
from testset_files import cli, write_csv
from test_labels_gate import CONDITION, Repo, _pair, secret_order

START = "2026-12-07T18:00:00Z"
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)  # 9 h before round 0 ends
ROUNDS = {"every": "24h", "start": START, "labelling": "6h"}


class Clock:
    """The gate's wall clock (schedule.now), moved by the test. The pad of the close's and the
    requests' label-dependent work is taken out (test_the_label_dependent_work_ends_at_a_fixed_moment
    tests it with an injected clock)."""

    def __init__(self, monkeypatch, at=T0):
        self.at = at
        monkeypatch.setattr(schedule, "now", lambda: self.at)
        monkeypatch.setattr(rounds_gate, "DECISION_TIME_PER_PAIR", 0.0)

    def advance(self, **delta):
        self.at += timedelta(**delta)


class RoundsRepo(Repo):
    """A repository whose owner keeps the label store (and so the pending store) outside it."""

    def __init__(self, tmp_path, rows, *, adaptivity="full", steps=3, passes=None,
                 reliability=0.6, seed=0, rounds=ROUNDS, mode="fp-free"):
        super().__init__(tmp_path, rows, seed=seed)
        self.store = tmp_path / "owner" / "ts.labels"
        self.store.parent.mkdir(exist_ok=True)
        extra = {"passes": passes} if passes else {}
        self.config(adaptivity=adaptivity, steps=steps, reliability=reliability, rounds=rounds,
                    mode=mode, **extra)
        self.sink = tmp_path / "owner" / "sink.jsonl"
        self.config(adaptivity=adaptivity, steps=steps, reliability=reliability, rounds=rounds,
                    mode=mode, private_sink=str(self.sink), **extra)

    def check(self, new, old, *extra):
        return super().check(new, old, "--labels", str(self.store), *extra)

    def label(self, row_ids, name="labels.csv"):
        index = {r: k for k, r in enumerate(self.ids.tolist())}
        path = write_csv(self.root.parent / name, ["id", "label"],
                         [[r, int(self.truth[index[r]])] for r in row_ids])
        result = cli(["testset", "label", str(self.root / "ts.npz"), str(path), "--store",
                      str(self.store)])
        assert result.exit_code == 0, result.output

    def close(self):
        result = cli(["round", "close", "--config", str(self.root / ".easeml.yml"), "--testset",
                      str(self.root / "ts.npz"), "--labels", str(self.store), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def requests(self, *extra):
        result = cli(["round", "requests", "--config", str(self.root / ".easeml.yml"),
                      "--testset", str(self.root / "ts.npz"), "--label-store", str(self.store),
                      *extra])
        assert result.exit_code == 0, result.output
        return result

    def follow(self, since=0, limit=60) -> tuple[set, int]:
        """Label every request until each pending pair is decided: the first batches of the
        checks recorded from ``since`` on, then one `round requests` after another. Returns (the
        rows labelled, the requests)."""
        labelled = {r for rec in self.records()[since:] if rec.get("verdict") == "pending"
                    for r in rec.get("label_request", {}).get("row_ids", [])}
        if labelled:
            self.label(sorted(labelled))
        for trips in range(1, limit):
            seen = len(self.records())
            self.requests("--json")
            new = self.records()[seen:]
            assert new and all(r.get("requests") for r in new)
            asked = [r for rec in new for r in rec.get("label_request", {}).get("row_ids", [])]
            if not asked:
                assert all(rec["decided"] for rec in new)
                return labelled, trips
            assert not labelled & set(asked)  # never a row asked twice
            labelled |= set(asked)
            self.label(asked, name=f"labels-{trips}.csv")
        raise AssertionError(f"not decided after {limit} requests")

    def register(self):
        result = cli(["testset", "register", str(self.root / "ts.npz"), "--config",
                      str(self.root / ".easeml.yml"), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


def _plan(adaptivity="full", steps=3, passes=None, reliability=0.6, mode="fp-free"):
    return conditions.sequential_plan(CONDITION, reliability, mode, adaptivity, steps, passes)


def _expected(repo, plan, new, old, labelled):
    known = np.isin(repo.ids, sorted(labelled))
    return decide_at_round_end(plan, secret_order(len(repo.ids)), np.where(known, repo.truth, 0),
                               known, new, old)


# --- the schedule and the config ---------------------------------------------------------------

def test_a_check_is_in_the_first_round_that_leaves_it_the_labelling_time():
    s = schedule.RoundSchedule.from_terms(parse_config(yaml.safe_dump(
        {"condition": CONDITION, "reliability": 0.9, "rounds": ROUNDS})).rounds)
    assert s.round_of(T0) == 0  # 9 h before the end of round 0, 6 h needed
    assert s.round_of(T0 + timedelta(hours=3)) == 0  # exactly 6 h left
    assert s.round_of(T0 + timedelta(hours=3, seconds=1)) == 1
    assert s.round_of(T0 - timedelta(days=30)) == 0
    assert schedule.show(s.end(2)) == "2026-12-09 18:00 UTC"
    assert s.describe(1) == "pending: verdict at the end of round 1 (2026-12-08 18:00 UTC)"


@pytest.mark.parametrize("rounds, needle, line", [
    ({"every": "24x", "start": START}, "key 'rounds.every': expected a whole number of hours or days", 4),
    ({"every": "0h", "start": START}, "key 'rounds.every': expected at least '1h'", 4),
    ({"every": "1d", "start": "2026-12-07 18:00"}, "key 'rounds.start': expected a UTC time", 5),
    ({"every": "1d"}, "missing 'rounds.start'", 3),
    ({"every": "1d", "start": START, "labeling": "1h"}, "unknown key 'rounds.labeling'; did you "
                                                        "mean 'labelling'?", 6),
])
def test_a_bad_schedule_names_its_key_and_line(rounds, needle, line):
    text = yaml.safe_dump({"condition": CONDITION, "reliability": 0.9, "rounds": rounds},
                          sort_keys=False)
    with pytest.raises(ConfigError) as info:
        parse_config(text, where="x.yml")
    assert needle in info.value.message and f"x.yml:{line}:" in info.value.message


def test_rounds_under_none_are_refused_as_pointless():
    text = yaml.safe_dump({"condition": CONDITION, "reliability": 0.9, "adaptivity": "none",
                           "rounds": ROUNDS}, sort_keys=False)
    with pytest.raises(ConfigError) as info:
        parse_config(text, where="x.yml")
    assert "x.yml:4" in info.value.message and "adaptivity: none" in info.value.message


@pytest.mark.parametrize("adaptivity, passes", [("full", None), ("firstChange", None), ("full", 2)])
def test_registration_under_an_adaptive_mode_pins_the_schedule(tmp_path, adaptivity, passes):
    plan = _plan(adaptivity, passes=passes)
    repo = RoundsRepo(tmp_path, plan.rows, adaptivity=adaptivity, passes=passes)
    assert repo.register()["labels"] == "on-demand"
    terms = repo.entries()[0]["terms"]
    assert terms["rounds"] == {"every": 86400, "start": START, "labelling": 21600}
    repo.config(adaptivity=adaptivity, rounds={**ROUNDS, "every": "48h"}, private_sink=str(repo.sink),
                **({"passes": passes} if passes else {}))
    new, old = repo.models("m", *_pair(np.random.default_rng(1), repo.truth, 0.4, 0.3))
    moved = repo.check(new, old)  # a schedule changed after registration is refused
    assert moved.exit_code == 2 and "rounds" in moved.stderr and "registered" in moved.stderr
    assert repo.steps() == []


# --- a pending check ------------------------------------------------------------------------------

def test_a_new_pair_is_pending_with_its_step_reserved_and_its_record_sealed(tmp_path, monkeypatch):
    Clock(monkeypatch)
    plan = _plan()
    repo = RoundsRepo(tmp_path, plan.rows)
    repo.register()
    new, old = repo.models("m", *_pair(np.random.default_rng(2), repo.truth, 0.4, 0.3))
    first = repo.check(new, old)
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert out["verdict"] == "pending" and out["step"] == 1
    assert out["notes"][0] == "pending: verdict at the end of round 0 (2026-12-07 18:00 UTC)"
    assert out["round"] == {"round": 0, "ends": "2026-12-07 18:00 UTC", "status": "pending"}
    assert {c["verdict"] for c in out["clauses"]} == {"pending"}
    assert out["budget"]["used"] == 1
    (step,) = repo.steps()
    assert step["reserved"] is True and step["passed"] is None and step["round"] == 0
    sealed = list((tmp_path / "owner" / "ts.labels.pending").iterdir())
    assert [p.name for p in sealed] == ["step-000001.sealed"]
    assert np.load(repo.root / new).tobytes() not in sealed[0].read_bytes()
    record = repo.records()[-1]
    assert record["verdict"] == "pending" and record["step"] == 1
    assert record["label_request"]["count"] > 0
    again = repo.check(new, old)  # the same pair: the same pending, no step
    assert again.exit_code == 0 and json.loads(again.stdout)["verdict"] == "pending"
    assert len(repo.steps()) == 1 and len(repo.records()) == 1


def test_close_decides_on_the_labels_present_completes_the_step_and_is_idempotent(tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    plan = _plan()
    repo = RoundsRepo(tmp_path, plan.rows)
    repo.register()
    rng = np.random.default_rng(3)
    pairs = [repo.models(f"m{k}", *_pair(rng, repo.truth, 0.4, mu)) for k, mu in
             enumerate((0.45, -0.2))]
    for new, old in pairs:
        assert repo.check(new, old).exit_code == 0
    early = repo.close()  # round 0 has not ended: nothing released
    assert early["released"] == [] and early["pending"] == 2
    asked = {r for rec in repo.records() for r in rec.get("label_request", {}).get("row_ids", [])}
    repo.label(sorted(asked))
    clock.advance(hours=9)
    closed = repo.close()
    assert [r["step"] for r in closed["released"]] == [1, 2] and closed["pending"] == 0
    for (new, old), released in zip(pairs, closed["released"]):
        want = _expected(repo, plan, np.load(repo.root / new), np.load(repo.root / old), asked)
        assert released["verdict"] == ("pass" if want.passed else "fail")
    assert [r["verdict"] for r in closed["released"]] == ["pass", "fail"]
    completes = [e for e in repo.entries() if e["kind"] == "complete"]
    assert [(e["step"], e["passed"]) for e in completes] == [(1, True), (2, False)]
    assert repo.close()["released"] == []  # idempotent
    assert len([e for e in repo.entries() if e["kind"] == "complete"]) == 2
    shown = [repo.check(new, old) for new, old in pairs]  # after the close: the released bits
    assert [r.exit_code for r in shown] == [0, 1]
    assert [json.loads(r.stdout)["verdict"] for r in shown] == ["pass", "fail"]
    assert len(repo.steps()) == 2


def test_labels_late_fall_to_the_modes_default(tmp_path, monkeypatch):
    """No label at all by the close: fp-free fails (a pass is right), fn-free passes."""
    for mode, want in (("fp-free", "fail"), ("fn-free", "pass")):
        clock = Clock(monkeypatch)
        plan = _plan(mode=mode)
        repo = RoundsRepo(tmp_path / mode, plan.rows, mode=mode)
        new, old = repo.models("m", *_pair(np.random.default_rng(4), repo.truth, 0.4, 0.2))
        repo.register()
        assert repo.check(new, old).exit_code == 0
        clock.advance(days=1)
        assert [r["verdict"] for r in repo.close()["released"]] == [want]
        account = [r for r in repo.records() if r.get("closed")][0]
        assert account["clauses"][0]["by"].startswith("labels late")


def test_a_pass_that_retires_the_test_set_raises_the_alert_at_the_close(tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    plan = _plan("firstChange")
    repo = RoundsRepo(tmp_path, plan.rows, adaptivity="firstChange")
    repo.register()
    rng = np.random.default_rng(5)
    pairs = [repo.models(f"m{k}", *_pair(rng, repo.truth, 0.4, 0.5)) for k in range(2)]
    for new, old in pairs:
        assert repo.check(new, old).exit_code == 0
    repo.label(repo.ids.tolist())
    clock.advance(days=1)
    closed = repo.close()
    assert [r["verdict"] for r in closed["released"]] == ["pass"]
    assert [(r["step"], r["verdict"]) for r in closed["not_released"]] == [(2, "not released")]
    assert closed["budget"]["status"] == "retired" and closed["alert"]["event"] == "retired"
    entries = repo.entries()
    again = repo.close()  # the same answer, nothing written
    assert again["released"] == [] and again["not_released"] == closed["not_released"]
    assert repo.entries() == entries


# --- what the team sees -------------------------------------------------------------------------

VOLATILE = {"time", "hash", "prev_hash", "mac", "ledger", "private_sink", "config", "new", "old"}
BITS = {"passed", "verdict", "passes_used", "exit_code"}


def _team_view(value, released: bool):
    """Volatile fields masked; after a close, the released bits too (they may differ)."""
    masked = VOLATILE | (BITS if released else set())
    if isinstance(value, dict):
        return {k: "*" if k in masked else _team_view(v, released) for k, v in value.items()}
    if isinstance(value, list):
        return [_team_view(v, released) for v in value]
    return value


def _files(root, owner):
    """The repository's files (the ledger apart: compared entry by entry); the config names the
    owner's sink, whose folder differs between the three runs."""
    return {str(p.relative_to(root)): hashlib.sha256(
                p.read_bytes().replace(str(owner).encode(), b"OWNER")).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".easeml" not in p.parts}


def test_what_the_team_sees_is_the_same_when_labels_come_early_late_or_not_at_all(tmp_path, monkeypatch):
    """Same test set, same pairs, three owners: one labels every requested row at once, one half
    of them just before the close, one none. stdout and exit code of every check, the close's
    JSON, the ledger entries and the repository's files are identical, apart from the released
    bits and timestamps (masked)."""
    plan = _plan()
    views, bits, sizes = [], [], []
    for owner in ("early", "late", "never"):
        clock = Clock(monkeypatch)
        repo = RoundsRepo(tmp_path / owner, plan.rows)
        repo.register()
        rng = np.random.default_rng(6)
        pairs = [repo.models(f"m{k}", *_pair(rng, repo.truth, 0.4, mu))
                 for k, mu in enumerate((0.3, 0.1))]
        seen = []
        for new, old in pairs:
            result = repo.check(new, old)
            seen.append((result.exit_code, _team_view(json.loads(result.stdout), False)))
        asked = [r for rec in repo.records() for r in rec.get("label_request", {}).get("row_ids", [])]
        if owner == "early":
            repo.label(asked)
        clock.advance(hours=8)
        if owner == "late":
            repo.label(asked[: len(asked) // 2])
        clock.advance(hours=1)
        closed = repo.close()
        after = repo.check(*pairs[0])
        seen += [_team_view(closed, True), _team_view(json.loads(after.stdout), True),
                 _team_view(repo.entries(), True), _files(repo.root, repo.sink.parent)]
        views.append(seen)
        bits.append([r["verdict"] for r in closed["released"]])
        sizes.append(sorted(p.stat().st_size for p in (repo.store.parent / "ts.labels.pending").iterdir()))
    assert views[0] == views[1] == views[2]
    assert bits[0] != bits[2]  # the bits differed (masked above); nothing else did
    assert sizes[0] == sizes[1] == sizes[2]  # the owner's pending store: a function of the rows


# --- Monte Carlo through the CLI -----------------------------------------------------------------

def _adaptive_team(tmp_path, monkeypatch, run, plan, rng, owner):
    """One life of a test set: the team's next pair sits at the zone's lower edge after a pass
    (where a pass is wrong) and at the upper edge after a fail (where a fail is wrong), each
    disagreeing with the old model on its own rows; the owner labels every batch until the pair
    is decided (`round requests`), a random prefix of the first batch, or none, before the close. Returns (edge, released verdict) per step."""
    clock = Clock(monkeypatch)
    repo = RoundsRepo(tmp_path / f"run-{run}", plan.rows, steps=plan.fixed.steps,
                      seed=int(rng.integers(2**31)))
    repo.register()
    a, b = plan.clauses[0].edges
    mu, out = b, []
    for step in range(plan.fixed.steps):
        new, old = repo.models(f"s{step}", *_pair(rng, repo.truth, float(rng.uniform(0.3, 0.5)), mu))
        since = len(repo.records())
        assert repo.check(new, old).exit_code == 0
        asked = repo.records()[-1].get("label_request", {}).get("row_ids", [])
        if owner == "all":  # the first batch, then each next one until decided
            repo.follow(since)
        elif owner == "prefix":  # a random prefix of the first batch: late
            cut = int(rng.integers(0, len(asked) + 1))
            if cut:
                repo.label(asked[:cut])
        clock.advance(days=1)
        (released,) = repo.close()["released"]
        out.append((mu, released["verdict"], owner))
        mu = a if released["verdict"] == "pass" else b
    return out


def _slack(p, runs):
    return 4 * math.sqrt(max(p, 1e-3) * (1 - p) / runs)


def _rates(tmp_path, monkeypatch, runs, seed):
    plan = _plan(steps=2, reliability=0.6)
    a, b = plan.clauses[0].edges
    rng = np.random.default_rng(seed)
    decisions = [d for run in range(runs) for d in _adaptive_team(
        tmp_path, monkeypatch, run, plan, rng, ("all", "all", "prefix")[run % 3])]
    # fp-free's promise (a pass is right) holds for any labelled prefix; the other side (a
    # good model passes) when the owner labelled what was asked before the round's end
    wrong_pass = [v == "pass" for mu, v, _ in decisions if mu == a]
    wrong_fail = [v == "fail" for mu, v, owner in decisions if mu == b and owner == "all"]
    return plan.clauses[0].delta, wrong_pass, wrong_fail


def test_a_few_adaptive_lives_through_the_cli_stay_within_the_bound(tmp_path, monkeypatch):
    """Fast: 6 lives of two steps each (full, reliability 0.6: delta' = 0.4 / 3 per query). The rates
    are measured by the slow test; here the count of wrong answers may not exceed what delta'
    plus four standard errors allow, and every verdict is a pass or a fail."""
    delta, wrong_pass, wrong_fail = _rates(tmp_path, monkeypatch, 6, 17)
    assert wrong_pass and wrong_fail
    for wrong in (wrong_pass, wrong_fail):
        assert np.mean(wrong) <= delta + _slack(delta, len(wrong)) if wrong else True


@pytest.mark.slow
def test_error_at_the_zone_edges_through_the_cli_with_an_adaptive_team(tmp_path, monkeypatch):
    """180 lives of two steps, the owner labelling all of each request (two lives in three) or a
    random prefix of it (late labels). delta' = 0.133 per query; wrong passes are counted over
    every life (the fp-free side holds for any prefix), wrong fails over the fully labelled ones.
    With >= 110 decisions per edge delta' + four standard errors stays below 2 delta', so an
    error twice the bound would fail here."""
    delta, wrong_pass, wrong_fail = _rates(tmp_path, monkeypatch, 180, 18)
    print(f"delta' {delta:.4f}: wrong passes at the lower edge {np.mean(wrong_pass):.4f} "
          f"({len(wrong_pass)} decisions), wrong fails at the upper edge {np.mean(wrong_fail):.4f} "
          f"({len(wrong_fail)})")
    for wrong in (wrong_pass, wrong_fail):
        assert len(wrong) >= 110 and delta + _slack(delta, len(wrong)) < 2 * delta
        assert np.mean(wrong) <= delta + _slack(delta, len(wrong)), (len(wrong), np.mean(wrong))


def test_a_step_without_its_pending_record_closes_as_a_fail_and_a_forged_one_writes_nothing(
        tmp_path, monkeypatch):
    """A check that died after reserving its step left no record: its step is spent and closes
    as a fail. A record that does not open (edited, or another step's) stops the close before
    anything is written (exit 2), so no verdict is completed that is not released."""
    clock = Clock(monkeypatch)
    plan = _plan()
    repo = RoundsRepo(tmp_path, plan.rows)
    repo.register()
    rng = np.random.default_rng(8)
    pairs = [repo.models(f"m{k}", *_pair(rng, repo.truth, 0.4, 0.45)) for k in range(2)]
    for new, old in pairs:
        assert repo.check(new, old).exit_code == 0
    repo.label(repo.ids.tolist())
    clock.advance(days=1)
    pending = tmp_path / "owner" / "ts.labels.pending"
    first, second = sorted(pending.iterdir())
    saved = second.read_bytes()
    second.write_bytes(first.read_bytes())  # step 1's record in step 2's place
    entries = repo.entries()
    forged = cli(["round", "close", "--config", str(repo.root / ".easeml.yml"), "--testset",
                  str(repo.root / "ts.npz"), "--labels", str(repo.store), "--json"])
    assert forged.exit_code == 2 and "not the sealed pending record of step 2" in forged.stderr
    assert repo.entries() == entries
    second.write_bytes(saved)
    first.unlink()  # step 1's check "died" before sealing
    assert [(r["step"], r["verdict"]) for r in repo.close()["released"]] == [(1, "fail"), (2, "pass")]
    account = [r for r in repo.records() if r.get("closed")][0]
    assert account["step"] == 1 and account["by"].startswith("no pending record")
