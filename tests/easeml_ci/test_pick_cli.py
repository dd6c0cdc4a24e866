"""`easeml-ci pick` end to end: the owner labels what a pick asks for, the team re-runs it, and
the pick is certified; what the team sees and what each run spends."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from testset_files import cli, write_csv

ROWS = 3000
ACCURACIES = (0.70, 0.86, 0.78)  # model 2 is best by 8 points


class PickRepo:
    def __init__(self, tmp_path: Path, *, adaptivity="none", seed=5, **pick):
        self.root = tmp_path / "repo"
        self.root.mkdir()
        self.sink = tmp_path / "owner" / "sink.jsonl"
        self.sink.parent.mkdir()
        rng = np.random.default_rng(seed)
        self.truth = rng.integers(0, 3, ROWS)
        self.ids = np.array([f"r{k}" for k in range(ROWS)])
        np.savez(self.root / "fresh.npz", X=rng.normal(size=(ROWS, 2)).astype(np.float32),
                 ids=self.ids)
        self.models = []
        for k, acc in enumerate(ACCURACIES, 1):
            wrong = rng.random(ROWS) >= acc
            pred = np.where(wrong, (self.truth + rng.integers(1, 3, ROWS)) % 3, self.truth)
            np.save(self.root / f"m{k}.npy", pred)
            self.models.append(f"m{k}.npy")
        cfg = {"condition": "n > 0.5 +/- 0.1", "reliability": 0.99, "adaptivity": "none",
               "steps": 3, "private_sink": str(self.sink),
               "pick": {"reliability": 0.95, "adaptivity": adaptivity, "steps": 8,
                        "candidates": 5, **pick}}
        (self.root / ".easeml.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def pick(self, *models):
        return cli(["pick", "--config", str(self.root / ".easeml.yml"), "--testset",
                    str(self.root / "fresh.npz"), "--json", "--models",
                    *[str(self.root / m) for m in (models or self.models)]])

    def records(self):
        return [json.loads(line) for line in self.sink.read_text().splitlines()]

    def label(self, row_ids):
        index = {r: k for k, r in enumerate(self.ids.tolist())}
        path = write_csv(self.root.parent / "labels.csv", ["id", "label"],
                         [[r, int(self.truth[index[r]])] for r in row_ids])
        result = cli(["testset", "label", str(self.root / "fresh.npz"), str(path)])
        assert result.exit_code == 0, result.output

    def until_picked(self, rounds=25):
        outs = []
        for _ in range(rounds):
            result = self.pick()
            assert result.exit_code == 0, result.output
            outs.append(json.loads(result.stdout))
            record = self.records()[-1]
            if record["status"] != "awaiting labels":
                return outs, record
            self.label(record["label_request"]["row_ids"])
        raise AssertionError("no pick")


def test_withheld_pick_spends_one_step_and_certifies_the_best_model(tmp_path):
    repo = PickRepo(tmp_path)
    outs, record = repo.until_picked()
    assert record["status"] == "picked" and record["pick"].endswith("m2.npy")
    assert len(outs) > 1  # it had to ask for labels at least once
    assert {o["answer"] for o in outs} == {"withheld"}  # the team sees nothing, every time
    assert [o["budget"]["used"] for o in outs] == [1] * len(outs)  # one step for the set
    assert record["labels_used"] < ROWS  # labels only where the candidates disagree
    for visible in outs:  # nothing label-dependent in what the team sees
        assert not {"labels_used", "survivors", "request", "label_request"} & set(visible)


def test_under_full_every_run_is_a_step_and_releases_one_symbol(tmp_path):
    repo = PickRepo(tmp_path, adaptivity="full")
    outs, record = repo.until_picked()
    answers = [o["answer"] for o in outs]
    assert answers[-1].endswith("m2.npy") and set(answers[:-1]) == {"no pick yet"}
    assert [o["budget"]["used"] for o in outs] == list(range(1, len(outs) + 1))
    plan = outs[-1]["plan"]
    assert plan["queries"] == sum(6 ** s for s in range(8))  # (k + 1)-ary tree, k = 5 registered
    assert plan["pick_reliability"] == pytest.approx(1 - 0.05 / plan["queries"])


def test_more_candidates_than_registered_is_refused_before_anything_runs(tmp_path):
    repo = PickRepo(tmp_path, candidates=2)
    result = repo.pick()
    assert result.exit_code == 2 and "at most 2 allowed" in result.stderr
    assert not repo.sink.exists()
    assert not (repo.root / ".easeml").exists()  # no ledger written


def test_the_gates_terms_that_shape_the_pick_are_pinned_too(tmp_path):
    """Issue 20, attack 5 for the pick: once its test set is registered, a config that changes
    how outputs become labels or where the alert goes is refused (exit 2, no step written)."""
    repo = PickRepo(tmp_path)
    assert repo.pick().exit_code == 0
    config = repo.root / ".easeml.yml"
    registered = config.read_text()
    for key, value in (("output", {"threshold": 0.5}),
                       ("alerts", {"webhook": "https://attacker.example/hook"})):
        cfg = yaml.safe_load(registered)
        cfg[key] = value
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        before = repo.records()
        result = repo.pick()
        assert result.exit_code == 2 and "registered with" in result.stderr, result.output
        assert key in result.stderr and "Traceback" not in result.output
        assert repo.records() == before  # nothing decided, nothing sent


def test_a_config_without_a_pick_section_names_what_to_add(tmp_path):
    repo = PickRepo(tmp_path)
    cfg = yaml.safe_load((repo.root / ".easeml.yml").read_text())
    del cfg["pick"]
    (repo.root / ".easeml.yml").write_text(yaml.safe_dump(cfg))
    result = repo.pick()
    assert result.exit_code == 2 and "no `pick:` section" in result.stderr
    assert "Traceback" not in result.output


def test_pick_plan_prints_the_count_under_both_adaptivities_and_refuses_an_impossible_one(tmp_path):
    repo = PickRepo(tmp_path)
    out = json.loads(cli(["pick", "--plan", "--json", "--config",
                          str(repo.root / ".easeml.yml")]).stdout)
    none, full = out["rows"]
    assert none["queries"] == 8 and none["pick_reliability"] == pytest.approx(1 - 0.05 / 8)
    assert full["queries"] == sum(6 ** s for s in range(8))
    cfg = yaml.safe_load((repo.root / ".easeml.yml").read_text())
    cfg["pick"].update(candidates=30, steps=32, adaptivity="full")
    (repo.root / ".easeml.yml").write_text(yaml.safe_dump(cfg))
    refused = repo.pick()
    assert refused.exit_code == 2 and "beyond what can be certified" in refused.stderr


def test_a_spent_pick_test_set_asks_for_fresh_rows_not_labelled_examples(tmp_path):
    repo = PickRepo(tmp_path, adaptivity="full", steps=1)
    assert repo.pick().exit_code == 0
    spent = repo.pick()
    assert spent.exit_code == 3
    alert = json.loads(spent.stdout)["alert"]
    assert "rows of features (labels only where a decision asks)" in alert["text"]
    assert "easeml-ci pick" in alert["next_step"]
