"""Labels on demand through the gate: `easeml-ci check` on a test set registered without labels.

What is checked here, and how:

* Through the CLI (click's CliRunner, in-process): a team checks several model pairs whose new
  models disagree with the old one on *different* rows (the scenario that breaks placeholder
  labels); the owner answers each label request from a synthetic truth with `testset label`,
  and the team re-runs until the private sink holds a decision. Every decision equals the one
  the same sequential test takes with every label known, every request asks only for rows not
  labelled yet, and labels given for one step are reused by the next.
* What the team sees: an awaiting check and a deciding one give the same stdout, exit code and
  ledger entries (volatile fields masked); one step per model pair, whatever happened; adaptive
  modes refused before anything is written.
* Monte Carlo, reliability low (delta' = 0.2): through the CLI, 150 fresh repositories per zone
  edge (~45 ms a run; enough to fail on an error twice the bound); the rates themselves with ten
  times the runs on :func:`conditions.sequential.decide_in_order`, the function `check` calls after
  evaluating the models, in the same loop (decide -> label the requested rows -> decide), and
  24 pairs through the CLI pin that the CLI decides exactly what this function decides.
"""
from __future__ import annotations

import base64

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from testset_files import KEY_ENV, cli, new_key, write_csv
from easeml_ci.testsets import crypto
import conditions
from conditions.sequential import decide_in_order, row_order
from easeml_ci.gate import reading_order
from easeml_ci.models.digest import model_digest, pair_digest
from easeml_ci.testsets.labels import LabelStore, default_store_path
from easeml_ci.ledger import FileBackend, Ledger
from easeml_ci.testsets import load_unlabelled_testset
from ledger_test_key import KEY as LEDGER_KEY  # noqa: E402

CONDITION = "n - o > 0.1 +/- 0.1"  # fp-free zone on n - o: (0.1, 0.3)
SEED = 20261201


def _slack(p: float, runs: int) -> float:
    return 4 * math.sqrt(max(p, 1e-3) * (1 - p) / runs)


def _pair(rng, y, disagree: float, mu: float, on=None):
    """Old and new predictions: they disagree on a ``disagree`` share of rows (or on the rows
    ``on``), and there the new one is right with probability ``(1 + mu / disagree) / 2``, so
    E[n - o] = mu. Labels are binary: where they disagree exactly one of them is right."""
    rows = len(y)
    dis = rng.random(rows) < disagree if on is None else on
    share = dis.mean()
    right = rng.random(rows) < (1 + mu / share) / 2
    old = np.where(rng.random(rows) < 0.8, y, 1 - y)
    new = old.copy()
    new[dis] = np.where(right[dis], y[dis], 1 - y[dis])
    old[dis] = 1 - new[dis]
    return new, old


class Repo:
    """A scratch repository with an unlabelled test set, a config and a private sink outside it."""

    def __init__(self, tmp_path: Path, rows: int, *, seed: int = 0, steps: int = 3,
                 adaptivity: str = "none", reliability: float = 0.6, condition: str = CONDITION):
        self.root = tmp_path / "repo"
        self.root.mkdir(parents=True)
        self.sink = tmp_path / "sink.jsonl"
        rng = np.random.default_rng(seed)
        self.truth = rng.integers(0, 2, rows)
        self.ids = np.array([f"row-{k}" for k in range(rows)])
        np.savez(self.root / "ts.npz", X=rng.normal(size=(rows, 3)).astype(np.float32),
                 ids=self.ids)
        self.config(steps=steps, adaptivity=adaptivity, reliability=reliability,
                    condition=condition)

    def config(self, **values):
        cfg = {"condition": CONDITION, "reliability": 0.6, "adaptivity": "none", "steps": 3,
               "private_sink": str(self.sink)}
        cfg.update(values)
        (self.root / ".easeml.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def models(self, name: str, new, old) -> tuple[str, str]:
        np.save(self.root / f"{name}-new.npy", new)
        np.save(self.root / f"{name}-old.npy", old)
        return f"{name}-new.npy", f"{name}-old.npy"

    def check(self, new: str, old: str, *extra):
        return cli(["check", "--config", str(self.root / ".easeml.yml"), "--new",
                    str(self.root / new), "--old", str(self.root / old), "--testset",
                    str(self.root / "ts.npz"), "--json", *extra])

    def label(self, row_ids, name="labels.csv"):
        index = {r: k for k, r in enumerate(self.ids.tolist())}
        path = write_csv(self.root.parent / name, ["id", "label"],
                         [[r, int(self.truth[index[r]])] for r in row_ids])
        result = cli(["testset", "label", str(self.root / "ts.npz"), str(path)])
        assert result.exit_code == 0, result.output
        return result

    def check_until_decided(self, new: str, old: str, rounds: int = 20) -> dict:
        """The team re-runs the check, the owner answers each label request, until the private
        sink holds a decision; returns that record."""
        for _ in range(rounds):
            assert self.check(new, old).exit_code == 0
            record = self.records()[-1]
            if record["verdict"] != "awaiting labels":
                return record
            self.label(record["label_request"]["row_ids"])
        raise AssertionError(f"no decision after {rounds} rounds of labels")

    def records(self) -> list[dict]:
        if not self.sink.exists():
            return []
        return [json.loads(line) for line in self.sink.read_text().splitlines()]

    def entries(self, testset_key: str | None = None) -> list[dict]:
        """The ledger, authenticated: under the ledger key derived from ``testset_key`` (an
        encrypted test set's), else under the tests' EASEML_LEDGER_KEY."""
        directory = self.root / ".easeml" / "ledger"
        files = list(directory.glob("*.jsonl")) if directory.exists() else []
        key = LEDGER_KEY
        if testset_key:
            key = crypto.derive_key(base64.urlsafe_b64decode(testset_key), "ledger")
        return Ledger(FileBackend(directory), files[0].stem, key).entries() if files else []

    def steps(self, testset_key: str | None = None) -> list[dict]:
        """The spent steps, each with its completion's verdict merged in (count before open)."""
        from easeml_ci.ledger.budget import steps_with_verdicts

        return [e for e in steps_with_verdicts(self.entries(testset_key)) if e["kind"] == "step"]

    def labelled(self) -> set[str]:
        path = default_store_path(self.root / "ts.npz")
        if not path.exists():
            return set()
        return set(LabelStore.open(path, load_unlabelled_testset(self.root / "ts.npz"), None).labels)


def _plan(steps=3, reliability=0.6, condition=CONDITION):
    return conditions.sequential_plan(condition, reliability, "fp-free", "none", steps)


def secret_order(rows: int, env: str = reading_order.ORDER_KEY_ENV):
    """The owner's order: drawn from the reading-order secret in the environment (conftest)."""
    key = crypto.key_from_env(env)
    return reading_order.permutation(crypto.derive_key(key, reading_order.PURPOSE), rows)


def _with_every_label(repo: Repo, plan, new, old) -> str:
    known = np.ones(len(repo.ids), dtype=bool)
    order = secret_order(len(repo.ids))
    return decide_in_order(plan, order, repo.truth, known, new, old).status


# --- the scenario through the CLI ---------------------------------------------------------

def test_steps_disagreeing_on_different_rows_are_decided_as_with_every_label(tmp_path):
    """Three steps whose new models disagree with the old one on different rows: each is
    decided exactly as if every row were labelled (no placeholder ever stands in for a label),
    each request asks only for rows nobody labelled yet, and labels from earlier steps count."""
    plan = _plan()
    repo = Repo(tmp_path, plan.rows)
    rng = np.random.default_rng(SEED)
    a, b = plan.clauses[0].edges
    pairs = []
    for k, mu in enumerate((b + 0.1, a - 0.1, b)):  # clear pass, clear fail, the far edge
        pairs.append((repo.models(f"m{k}", *_pair(rng, repo.truth, 0.4, mu)), mu))
    reused = 0
    for k, ((new, old), mu) in enumerate(pairs):
        before = repo.labelled()
        for attempt in range(20):
            result = repo.check(new, old)
            assert result.exit_code == 0, result.output
            out = json.loads(result.stdout)
            assert out["verdict"] == "withheld" and out["step"] == 2 * k + 1  # step, completion
            record = repo.records()[-1]
            assert record["step"] == 2 * k + 1 and record["repeat"] == (attempt > 0)
            if record["verdict"] != "awaiting labels":
                break
            asked = record["label_request"]["row_ids"]
            assert asked and not set(asked) & repo.labelled()  # only rows nobody labelled
            assert record["label_request"]["count"] == len(asked)
            repo.label(asked)
        else:
            pytest.fail("never decided")
        preds = [np.load(repo.root / f) for f in (new, old)]
        assert record["verdict"] == _with_every_label(repo, plan, *preds), (k, mu)
        if attempt:
            assert record["completes_step"] == 2 * k + 1
        # rows this step read that needed a label and were labelled for an earlier step
        dis = preds[0] != preds[1]
        reused += len({r for r, d in zip(repo.ids.tolist(), dis) if d} & before)
    assert reused > 0
    assert [s["pair"] for s in repo.steps()] == [
        pair_digest(new, old, None, repo.root) for (new, old), _ in pairs]
    assert len(repo.steps()) == 3  # one per pair, however many checks each took


def test_many_pairs_through_the_cli_decide_as_the_decision_function_does(tmp_path):
    """Monte Carlo through the CLI, for the link: 24 model pairs on one test set, their truths
    drawn from both zone edges and the middle, each checked and labelled until decided; every
    private decision equals :func:`conditions.sequential.decide_in_order` with every label known, so the error rates
    measured on that function below hold for the CLI. One step per pair."""
    plan = _plan(steps=24)
    repo = Repo(tmp_path, plan.rows, steps=24)
    rng = np.random.default_rng(SEED + 9)
    a, b = plan.clauses[0].edges
    outcomes = []
    for k in range(24):
        mu = (a, b, (a + b) / 2)[k % 3]
        preds = _pair(rng, repo.truth, float(rng.uniform(0.2, 0.5)), mu)
        new, old = repo.models(f"p{k}", *preds)
        record = repo.check_until_decided(new, old)
        assert record["verdict"] == _with_every_label(repo, plan, *preds), (k, mu)
        outcomes.append(record["verdict"])
    assert len(repo.steps()) == 24 and set(outcomes) == {"pass", "fail"}


CLI_RUNS = 150


@pytest.mark.slow  # the rates: test_error_within_delta_at_both_edges_and_mid_zone_decides, 10x the runs
def test_error_through_the_cli_at_both_edges(tmp_path):
    """Monte Carlo through the CLI itself: a fresh repository, test set and ledger per run
    (~45 ms each), the team re-running `check` and the owner answering with `testset label`
    until the private sink holds a decision. 150 runs per edge put delta' + four standard errors
    at 0.33: an error twice the bound (0.4) would fail here; the rates themselves are measured on
    the decision function below with ten times the runs."""
    plan = _plan(steps=2)
    clause = plan.clauses[0]
    a, b = clause.edges
    rng = np.random.default_rng(SEED + 11)
    for mu, wrong in ((a, "pass"), (b, "fail")):
        errors = 0
        for run in range(CLI_RUNS):
            repo = Repo(tmp_path / f"{wrong}-{run}", plan.rows, seed=int(rng.integers(2**31)),
                        steps=2)
            new, old = repo.models("m", *_pair(rng, repo.truth, 0.3, mu))
            record = repo.check_until_decided(new, old)
            assert len(repo.steps()) == 1
            errors += record["verdict"] == wrong
        rate = errors / CLI_RUNS
        assert rate <= clause.delta + _slack(clause.delta, CLI_RUNS), (mu, rate)


# --- what the team sees ---------------------------------------------------------------------------

def _masked(value):
    volatile = {"time", "hash", "prev_hash", "mac", "ledger", "private_sink", "config", "new",
                "old"}
    if isinstance(value, dict):
        return {k: "*" if k in volatile else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def test_an_awaiting_check_and_a_deciding_one_look_the_same_to_the_team(tmp_path):
    """Same test set, same models; one owner labelled every row beforehand (the check decides),
    the other none (it awaits). stdout, exit code and ledger entries match field by field, the
    fingerprint included; only the private sinks differ."""
    plan = _plan()
    views = []
    for name, labelled in (("decides", True), ("awaits", False)):
        (tmp_path / name).mkdir()
        repo = Repo(tmp_path / name, plan.rows)
        new, old = repo.models("m", *_pair(np.random.default_rng(1), repo.truth, 0.4, 0.3))
        if labelled:
            repo.label(repo.ids.tolist())
        result = repo.check(new, old)
        views.append((result.exit_code, _masked(json.loads(result.stdout)), result.stderr,
                      _masked(repo.entries())))
        assert (repo.records()[-1]["verdict"] == "awaiting labels") is not labelled
    assert views[0] == views[1]
    assert views[0][0] == 0 and views[0][1]["verdict"] == "withheld"


def test_a_pending_step_is_not_spent_twice_and_completes_when_the_budget_is_gone(tmp_path):
    """steps: 1. The first check of a pair spends the only step and awaits; re-running spends
    nothing (same pair, even under another file name); after labelling it decides that step,
    although the budget is exhausted. A different pair is refused: the budget is spent."""
    plan = _plan(steps=1)
    repo = Repo(tmp_path, plan.rows, steps=1)
    new, old = repo.models("m", *_pair(np.random.default_rng(2), repo.truth, 0.4, 0.35))
    first = repo.check(new, old)
    assert first.exit_code == 0 and json.loads(first.stdout)["budget"]["status"] == "exhausted"
    again = repo.check(new, old)
    assert again.exit_code == 0 and len(repo.steps()) == 1
    (repo.root / "copy.npy").write_bytes((repo.root / new).read_bytes())
    assert repo.check("copy.npy", old).exit_code == 0 and len(repo.steps()) == 1
    assert [r["verdict"] for r in repo.records()] == ["awaiting labels"] * 3
    for _ in range(20):
        record = repo.records()[-1]
        if record["verdict"] != "awaiting labels":
            break
        repo.label(record["label_request"]["row_ids"])
        assert repo.check(new, old).exit_code == 0
    assert record["verdict"] == "pass" and record["completes_step"] == 1
    assert len(repo.steps()) == 1 and repo.steps()[0]["passed"] is None
    other = repo.models("other", *_pair(np.random.default_rng(3), repo.truth, 0.4, 0.35))
    assert repo.check(*other).exit_code == 3 and len(repo.steps()) == 1


@pytest.mark.parametrize("adaptivity, passes", [("full", None), ("firstChange", None), ("full", 2)])
def test_adaptive_modes_are_refused_before_anything_is_written(tmp_path, adaptivity, passes):
    plan = _plan()
    repo = Repo(tmp_path, plan.rows)
    extra = {"passes": passes} if passes else {}
    repo.config(adaptivity=adaptivity, **extra)
    new, old = repo.models("m", *_pair(np.random.default_rng(4), repo.truth, 0.4, 0.3))
    for result in (repo.check(new, old),
                   cli(["testset", "register", str(repo.root / "ts.npz"), "--config",
                        str(repo.root / ".easeml.yml")])):
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        for needle in (".easeml.yml:3: adaptivity", f"'{adaptivity}'", "labelled on demand",
                       "adaptivity: none", "label every row"):
            assert needle in result.stderr, (needle, result.stderr)
    assert not (repo.root / ".easeml").exists() and not repo.sink.exists()


def test_an_encrypted_partly_labelled_test_set_end_to_end(tmp_path, monkeypatch):
    """A CSV with ids and some labels: `testset encrypt` seals the labels it has into OUT.labels,
    `testset register` registers it as labelled on demand, and checks decide from the sealed
    store; an adaptive config is refused for the registered encrypted file (no decryption needed)."""
    plan = _plan()
    repo = Repo(tmp_path, plan.rows)
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    X = np.load(repo.root / "ts.npz")["X"]
    given = np.arange(len(repo.ids)) % 5 == 0
    rows = [[i] + [f"{v:.9g}" for v in x] + [int(t) if g else ""]
            for i, x, t, g in zip(repo.ids.tolist(), X, repo.truth, given)]
    plain = write_csv(tmp_path / "plain.csv", ["id", "a", "b", "c", "label"], rows)
    enc = repo.root / "ts.enc"
    out = cli(["testset", "encrypt", str(plain), str(enc)], env={KEY_ENV: key})
    assert out.exit_code == 0, out.output
    fingerprint = out.stdout.strip()
    assert fingerprint == load_unlabelled_testset(repo.root / "ts.npz").fingerprint
    store = LabelStore.open(default_store_path(enc), load_unlabelled_testset(enc),
                            crypto.key_from_env(KEY_ENV))
    assert len(store.labels) == int(given.sum()) and store.sealed
    reg = cli(["testset", "register", str(enc), "--config", str(repo.root / ".easeml.yml"),
               "--json"], env={KEY_ENV: key})
    assert reg.exit_code == 0 and json.loads(reg.stdout)["labels"] == "on-demand", reg.output
    new, old = repo.models("m", *_pair(np.random.default_rng(5), repo.truth, 0.4, 0.4))
    args = ["check", "--config", str(repo.root / ".easeml.yml"), "--new", str(repo.root / new),
            "--old", str(repo.root / old), "--testset", str(enc), "--json"]
    for _ in range(20):
        assert cli(args, env={KEY_ENV: key}).exit_code == 0
        record = repo.records()[-1]
        if record["verdict"] != "awaiting labels":
            break
        index = {r: k for k, r in enumerate(repo.ids.tolist())}
        batch = write_csv(tmp_path / "b.csv", ["id", "label"],
                          [[r, int(repo.truth[index[r]])] for r in record["label_request"]["row_ids"]])
        assert cli(["testset", "label", str(enc), str(batch)], env={KEY_ENV: key}).exit_code == 0
    assert record["verdict"] == "pass" and len(repo.steps(key)) == 1
    repo.config(adaptivity="full")
    refused = cli(args, env={KEY_ENV: None})  # the key authenticates the ledger: asked first
    assert refused.exit_code == 2 and "EASEML_TESTSET_KEY is not set" in refused.stderr
    refused = cli(args, env={KEY_ENV: key})  # refused from the registration, before decrypting
    assert refused.exit_code == 2 and "labelled on demand" in refused.stderr
    assert len(repo.steps(key)) == 1


def test_a_label_store_of_another_test_set_is_refused_with_nothing_spent(tmp_path):
    plan = _plan()
    repo = Repo(tmp_path, plan.rows)
    other = tmp_path / "other.npz"
    np.savez(other, X=np.zeros((4, 3), np.float32), ids=np.array(["a", "b", "c", "d"]))
    labels = write_csv(tmp_path / "o.csv", ["id", "label"], [["a", 1]])
    assert cli(["testset", "label", str(other), str(labels)]).exit_code == 0
    new, old = repo.models("m", *_pair(np.random.default_rng(6), repo.truth, 0.4, 0.3))
    result = repo.check(new, old, "--labels", str(default_store_path(other)))
    assert result.exit_code == 2 and "holds labels for test set" in result.stderr, result.output
    assert repo.steps() == [] and not repo.sink.exists()


def test_a_labels_file_of_another_test_set_names_the_row_id_and_line(tmp_path):
    plan = _plan()
    repo = Repo(tmp_path, plan.rows)
    foreign = write_csv(tmp_path / "f.csv", ["id", "label"], [["row-1", 0], ["x-17", 1]])
    result = cli(["testset", "label", str(repo.root / "ts.npz"), str(foreign)])
    assert result.exit_code == 2
    assert "f.csv line 3" in result.stderr and "'x-17'" in result.stderr
    assert not default_store_path(repo.root / "ts.npz").exists()


def test_a_test_set_smaller_than_the_cap_is_too_small(tmp_path):
    plan = _plan()
    repo = Repo(tmp_path, plan.rows - 1)
    new, old = repo.models("m", *_pair(np.random.default_rng(7), repo.truth, 0.4, 0.3))
    result = repo.check(new, old)
    assert result.exit_code == 3 and f"needs {plan.rows} rows" in result.stderr
    assert repo.steps() == []


# --- Monte Carlo: the error at the zone's edges -----------------------------------------------------

def _team(plan, rng, mu, disagree=0.3):
    """One team run: a fresh test set and model pair with E[n - o] = mu; decide, label the
    requested rows, decide again, until decided. Returns (status, decided by)."""
    rows = plan.rows
    truth = rng.integers(0, 2, rows)
    new, old = _pair(rng, truth, disagree, mu)
    ids = np.arange(rows).astype(str)
    known = np.zeros(rows, dtype=bool)
    seed = int(rng.integers(2**62))
    while True:
        decision = decide_in_order(plan, row_order(rows, seed), np.where(known, truth, 0), known,
                                   new, old)
        if decision.decided:
            return decision.status, decision.clauses[0].by
        known[np.array(decision.request, dtype=int)] = True


def _errors(plan, mu, wrong, runs, seed):
    rng = np.random.default_rng(seed)
    out = [_team(plan, rng, mu) for _ in range(runs)]
    status = np.array([s for s, _ in out])
    by = np.array([b for _, b in out])
    return (status == wrong).mean(), ((status == wrong) & (by == "sequential")).mean(), status


RUNS = 1500


def test_error_within_delta_at_both_edges_and_mid_zone_decides():
    """delta' = 0.2 per clause (reliability 0.6, two steps). At the lower edge a pass is wrong,
    at the upper edge a fail; each happens at most delta' of the time (plus four standard
    errors). Mid-zone either answer is right, and every run ends in a decision."""
    plan = _plan(steps=2)
    clause = plan.clauses[0]
    a, b = clause.edges
    for mu, wrong in ((a, "pass"), (b, "fail")):
        error, _, _ = _errors(plan, mu, wrong, RUNS, SEED)
        assert error <= clause.delta + _slack(clause.delta, RUNS), (mu, error)
    _, _, status = _errors(plan, (a + b) / 2, None, RUNS // 3, SEED + 1)
    assert set(status) <= {"pass", "fail"} and 0.2 < (status == "pass").mean() < 0.8


def test_a_bound_wrong_by_a_factor_of_two_would_be_caught():
    """Ville-style tightness for the e-processes this gate's plan runs, over the rows in the
    registered order with this file's model pairs. A decision's wrong answer at an edge is mostly
    that edge's e-process crossing 1/alpha (alpha = delta'/2; the cap is almost never reached
    there); stopping when the *other* side crosses removes chances, so the decisions above err
    only ~0.3 delta' and could not see a factor two. Without that stop, each side's wealth at
    its null edge crosses 1/alpha at most alpha of the time (Ville), and crosses 1/(2 alpha), a
    bound wrong by a factor of two, more often than alpha plus the noise: the first assertion
    would fail for such a bound."""
    plan = _plan(steps=2)
    clause = plan.clauses[0]
    a, b = clause.edges
    runs = 3000
    rng = np.random.default_rng(SEED + 3)
    level = math.log(1 / clause.alpha)
    for mu, side in ((a, 0), (b, 1)):
        z = []
        for _ in range(runs):
            truth = rng.integers(0, 2, clause.cap_rows)
            new, old = _pair(rng, truth, 0.3, mu)
            z.append((new == truth).astype(float) - (old == truth))
        wealth = clause.bettor.log_wealth(np.array(z))[side]
        crossed = (wealth >= level).any(axis=1).mean()
        assert crossed <= clause.alpha + _slack(clause.alpha, runs), (mu, crossed)
        crossed_at_half = (wealth >= level - math.log(2)).any(axis=1).mean()
        assert crossed_at_half > clause.alpha + _slack(clause.alpha, runs), (mu, crossed_at_half)


def test_fingerprint_and_decrypt_of_an_encrypted_test_set_labelled_on_demand(tmp_path):
    """`testset fingerprint` and `testset decrypt` take it too; the plaintext written back (npz
    or CSV) has the same fingerprint, so re-encrypting it keeps the budget."""
    repo = Repo(tmp_path, 40)
    key = new_key()
    enc = tmp_path / "ts.enc"
    assert cli(["testset", "encrypt", str(repo.root / "ts.npz"), str(enc)],
               env={KEY_ENV: key}).exit_code == 0
    fingerprint = load_unlabelled_testset(repo.root / "ts.npz").fingerprint
    for env in ({KEY_ENV: key}, {KEY_ENV: None}):
        out = cli(["testset", "fingerprint", str(enc)], env=env)
        assert out.exit_code == 0 and out.stdout.strip() == fingerprint, out.output
    for name in ("back.npz", "back.csv"):
        out = cli(["testset", "decrypt", str(enc), str(tmp_path / name)], env={KEY_ENV: key})
        assert out.exit_code == 0, out.output
        assert cli(["testset", "fingerprint", str(tmp_path / name)]).stdout.strip() == fingerprint


def test_an_unregistered_encrypted_test_set_is_refused_under_full_before_registering(tmp_path):
    plan = _plan()
    repo = Repo(tmp_path, plan.rows)
    repo.config(adaptivity="full")
    key = new_key()
    enc = repo.root / "ts.enc"
    assert cli(["testset", "encrypt", str(repo.root / "ts.npz"), str(enc)],
               env={KEY_ENV: key}).exit_code == 0
    new, old = repo.models("m", *_pair(np.random.default_rng(8), repo.truth, 0.4, 0.3))
    result = cli(["check", "--config", str(repo.root / ".easeml.yml"), "--new", str(repo.root / new),
                  "--old", str(repo.root / old), "--testset", str(enc)], env={KEY_ENV: key})
    assert result.exit_code == 2 and "labelled on demand" in result.stderr, result.output
    assert not (repo.root / ".easeml").exists() and not repo.sink.exists()


def test_registering_a_partly_labelled_csv_moves_its_labels_into_the_store(tmp_path):
    """A plaintext CSV with ids and some labels: `testset register` registers it as labelled on
    demand (the fingerprint covers features and ids only) and appends the labels it carries to
    its store; registering again adds nothing, and a check reads them."""
    plan = _plan()
    repo = Repo(tmp_path, plan.rows)
    X = np.load(repo.root / "ts.npz")["X"]
    given = np.arange(len(repo.ids)) % 3 == 0
    rows = [[i] + [f"{v:.9g}" for v in x] + [int(t) if g else ""]
            for i, x, t, g in zip(repo.ids.tolist(), X, repo.truth, given)]
    csv_path = write_csv(repo.root / "ts.csv", ["id", "a", "b", "c", "label"], rows)
    args = ["testset", "register", str(csv_path), "--config", str(repo.root / ".easeml.yml"), "--json"]
    first = cli(args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["fingerprint"] == load_unlabelled_testset(repo.root / "ts.npz").fingerprint
    assert f"{int(given.sum())} labels from" in first.stderr
    store = default_store_path(csv_path)
    before = store.read_bytes()
    assert cli(args).exit_code == 0 and store.read_bytes() == before
    assert len(LabelStore.open(store, load_unlabelled_testset(repo.root / "ts.npz"), None).labels) \
        == int(given.sum())


def test_new_weights_beside_the_same_graph_file_are_another_pair(tmp_path):
    """The pair digest covers an ONNX model's external data: changed weights with the graph file
    unchanged would otherwise pass as the pair already checked, and get a fresh decision under
    the old step (more decisions than the budget counts)."""
    import subprocess

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(weights):
        w = numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(2, 1), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["X", "w"], ["label"])], "g",
                                  [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
                                  [helper.make_tensor_value_info("label", TensorProto.FLOAT, [None, 1])],
                                  initializer=[w])
        onnx.save_model(helper.make_model(graph), tmp_path / "m.onnx", save_as_external_data=True,
                        all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)

    save([1.0, 2.0])
    graph_file = (tmp_path / "m.onnx").read_bytes()
    first = model_digest("m.onnx", tmp_path)
    assert model_digest("m.onnx", tmp_path) == first
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "m.onnx", "m.onnx.data"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    assert model_digest("git:HEAD:m.onnx", tmp_path) == first
    (tmp_path / "m.onnx.data").write_bytes(np.asarray([3.0, 4.0], dtype=np.float32).tobytes())
    assert (tmp_path / "m.onnx").read_bytes() == graph_file  # the graph file did not change
    second = model_digest("m.onnx", tmp_path)
    assert second != first
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    assert model_digest("git:HEAD:m.onnx", tmp_path) == second
    assert model_digest("git:HEAD~1:m.onnx", tmp_path) == first


def test_an_encrypted_test_set_its_first_check_registers_keeps_one_step_per_pair(tmp_path, monkeypatch):
    """No `testset register`: the budget step knows an encrypted file only by its header, so the
    pair is named once the check finds the file labelled on demand; a re-run still spends none."""
    plan = _plan()
    repo = Repo(tmp_path, plan.rows)
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    enc = repo.root / "ts.enc"
    assert cli(["testset", "encrypt", str(repo.root / "ts.npz"), str(enc)], env={KEY_ENV: key}).exit_code == 0
    new, old = repo.models("m", *_pair(np.random.default_rng(3), repo.truth, 0.4, 0.4))
    args = ["check", "--config", str(repo.root / ".easeml.yml"), "--new", str(repo.root / new),
            "--old", str(repo.root / old), "--testset", str(enc), "--json"]
    for _ in range(2):
        r = cli(args, env={KEY_ENV: key})
        assert r.exit_code == 0 and json.loads(r.stdout)["verdict"] == "withheld", r.output
    steps = repo.steps(key)
    assert len(steps) == 1 and steps[0]["pair"] == pair_digest(new, old, None, repo.root)
    assert [rec["repeat"] for rec in repo.records()] == [False, True]
