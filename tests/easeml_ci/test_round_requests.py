"""`easeml-ci round requests` (issue 17): label requests in batches.

The check's private request holds the first batch; each `round requests` sends, for every pair
pending in a round that has not ended, the next batch or "decided, no more labels", to the
private sink only. Through the CLI (in-process, the batch made small so a decision takes several),
an owner who follows the batches reaches the decision every label gives; what the command shows
the team is the same whatever the labels; bad input is exit 2."""
from __future__ import annotations

import json

import numpy as np
import pytest

import conditions.rounds
from conditions.label_cost import owner_labels
from testset_files import cli
from test_labels_gate import _pair, secret_order
from test_rounds_gate import ROUNDS, Clock, RoundsRepo, _expected, _plan

BATCH = 24


OwnerRepo = RoundsRepo  # with requests() and follow()


@pytest.fixture
def small_batch(monkeypatch):
    monkeypatch.setattr(conditions.rounds, "REQUEST_BATCH", BATCH)


def test_an_owner_following_the_batches_reaches_the_decisions_of_every_label(
        tmp_path, monkeypatch, small_batch):
    clock = Clock(monkeypatch)
    plan = _plan(steps=5)
    repo = OwnerRepo(tmp_path, plan.rows, steps=5)
    repo.register()
    rng = np.random.default_rng(21)
    mus = (0.2, 0.1, 0.3, 0.5, -0.1)  # mid-zone (the most labels), the edges, clear
    pairs = [repo.models(f"m{k}", *_pair(rng, repo.truth, 0.4, mu)) for k, mu in enumerate(mus)]
    first = repo.check(*pairs[0])
    assert first.exit_code == 0
    record = repo.records()[-1]
    assert record["label_request"]["count"] == BATCH and "first batch" in record["label_request"]["batch"]
    labelled, trips = repo.follow()  # the first pair alone: what the owner labels for it
    new, old = (np.load(repo.root / p) for p in pairs[0])
    order = secret_order(len(repo.ids))
    every = _expected(repo, plan, new, old, repo.ids.tolist())
    clause = plan.clauses[0]
    in_cap = int((new != old)[order][:clause.cap_rows].sum())
    assert len(labelled) == owner_labels(every.decision.clauses[0].labels, in_cap, batch=BATCH)
    assert trips >= 2  # it took more than the first batch
    since = len(repo.records())
    for new_p, old_p in pairs[1:]:
        assert repo.check(new_p, old_p).exit_code == 0
    more, _ = repo.follow(since)
    clock.advance(hours=9)
    closed = repo.close()
    assert [r["step"] for r in closed["released"]] == [1, 2, 3, 4, 5]
    for (new_p, old_p), released in zip(pairs, closed["released"]):
        want = _expected(repo, plan, np.load(repo.root / new_p), np.load(repo.root / old_p),
                         repo.ids.tolist())  # every label known
        assert released["verdict"] == ("pass" if want.passed else "fail")
    accounts = [r for r in repo.records() if r.get("closed")]
    assert not any(c["by"].startswith("labels late") for a in accounts for c in a["clauses"])
    assert len(labelled | more) < len(repo.ids)  # and not every row was labelled


def _team(result) -> tuple:
    out = json.loads(result.stdout) if result.stdout.lstrip().startswith("{") else result.stdout
    if isinstance(out, dict):
        out = {k: v for k, v in out.items() if k not in ("private_sink", "config", "ledger")}
    else:
        out = "\n".join(line for line in out.splitlines()
                        if not line.startswith(("ledger:", "easeml-ci round requests:")))
        out = out.split(" sent to ")[0]
    return result.exit_code, out


def test_what_the_requests_show_the_team_is_the_same_whatever_the_labels(
        tmp_path, monkeypatch, small_batch):
    """Three owners, the same pairs: one labels everything (every pair decided), one follows the
    batches, one labels nothing. stdout (text and JSON) and exit code of every `round requests`
    are identical; the private sink's messages differ."""
    plan = _plan()
    views, private = [], []
    for owner in ("all", "follows", "none"):
        clock = Clock(monkeypatch)
        repo = OwnerRepo(tmp_path / owner, plan.rows)
        repo.register()
        rng = np.random.default_rng(22)
        pairs = [repo.models(f"m{k}", *_pair(rng, repo.truth, 0.4, mu))
                 for k, mu in enumerate((0.5, 0.1))]
        for new, old in pairs:
            assert repo.check(new, old).exit_code == 0
        if owner == "all":
            repo.label(repo.ids.tolist())
        seen = []
        for _ in range(3):
            if owner == "follows":
                asked = [r for rec in repo.records()[-2:] for r in
                         rec.get("label_request", {}).get("row_ids", [])]
                if asked:
                    repo.label(asked, name=f"l{len(repo.records())}.csv")
            seen += [_team(repo.requests()), _team(repo.requests("--json"))]
            clock.advance(hours=2)
        clock.advance(hours=4)  # round 0 has ended: nothing is sent any more
        seen.append(_team(repo.requests("--json")))
        views.append(seen)
        private.append([r.get("decided") for r in repo.records() if r.get("requests")])
    assert views[0] == views[1] == views[2]
    assert views[0][0][1].startswith("label requests for 2 pending steps (1, 2)")
    assert json.loads(json.dumps(views[0][-1][1]))["steps"] == []
    assert views[0][-1][1]["awaiting_close"] == 2
    assert private[0] == [True] * 12 and private[2] == [False] * 12  # the sink's did differ


def test_bad_input_is_exit_2_and_nothing_is_sent(tmp_path, monkeypatch):
    Clock(monkeypatch)
    plan = _plan()
    repo = OwnerRepo(tmp_path, plan.rows)
    repo.register()
    new, old = repo.models("m", *_pair(np.random.default_rng(23), repo.truth, 0.4, 0.3))
    assert repo.check(new, old).exit_code == 0
    sent = len(repo.records())
    base = ["round", "requests", "--config", str(repo.root / ".easeml.yml")]
    cases = [
        (base + ["--testset", str(tmp_path / "missing.npz"), "--label-store", str(repo.store)],
         "missing.npz"),
        (["round", "requests", "--config", str(tmp_path / "nope.yml")], "nope.yml"),
    ]
    for argv, needle in cases:
        result = cli(argv)
        assert result.exit_code == 2, (argv, result.output)
        assert needle in result.stderr and "Traceback" not in result.output
    repo.config(adaptivity="full", rounds={**ROUNDS, "every": "48h"}, private_sink=str(repo.sink))
    moved = cli(base + ["--testset", str(repo.root / "ts.npz"), "--label-store", str(repo.store)])
    assert moved.exit_code == 2 and "rounds" in moved.stderr and "registered" in moved.stderr
    repo.config(adaptivity="full", private_sink=str(repo.sink))  # no rounds: nothing to request
    no_rounds = cli(base + ["--testset", str(repo.root / "ts.npz")])
    assert no_rounds.exit_code == 2 and "rounds:" in no_rounds.stderr
    assert len(repo.records()) == sent


def test_the_label_dependent_work_ends_at_a_fixed_moment(tmp_path, monkeypatch, small_batch):
    """`round requests` and `round close` pad each pending pair's decision and private record to
    DECISION_TIME_PER_PAIR: on an injected clock whose work takes 0.01 s (nothing labelled) or
    0.3 s (everything labelled), both end exactly at start + pairs x the pad."""
    import easeml_ci.gate.rounds as rounds_gate
    from easeml_ci.models.clock import EvaluationClock

    plan = _plan()
    for owner, work in (("all", 0.3), ("none", 0.01)):
        wall = Clock(monkeypatch)  # takes the pad out: put it back on the injected clock
        monkeypatch.setattr(rounds_gate, "DECISION_TIME_PER_PAIR", 0.5)
        now = [100.0]

        def clock(pairs, work=work):
            made = EvaluationClock(rounds_gate.DECISION_TIME_PER_PAIR * pairs,
                                   clock=lambda: now[0],
                                   sleep=lambda s: now.__setitem__(0, now[0] + s))
            now[0] += work  # the label-dependent work, after the clock started
            return made

        monkeypatch.setattr(rounds_gate, "decision_clock", clock)
        repo = OwnerRepo(tmp_path / owner, plan.rows)
        repo.register()
        rng = np.random.default_rng(22)
        for k, mu in enumerate((0.5, 0.1)):
            assert repo.check(*repo.models(f"m{k}", *_pair(rng, repo.truth, 0.4, mu))).exit_code == 0
        if owner == "all":
            repo.label(repo.ids.tolist())
        assert repo.requests().exit_code == 0
        assert now[0] == pytest.approx(100.0 + 2 * 0.5)  # two pairs, padded
        wall.advance(hours=9)
        assert len(repo.close()["released"]) == 2
        assert now[0] == pytest.approx(100.0 + 2 * 0.5 + 2 * 0.5)
