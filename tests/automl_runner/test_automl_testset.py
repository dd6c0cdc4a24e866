"""`easeml-automl testset`: a tenant's raw held-out rows -> the test set the gate judges the
promoted model on, encoded by the training code path; and the whole loop submit -> work ->
testset -> `easeml-ci check` on data with a text category and text classes."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from automl_runner.cli import main as automl
from automl_runner.store import open_store
from automl_runner.datasets.testset_export import encode_rows, schema_from_card
from easeml_ci.cli import main as gate
from easeml_ci.testsets.crypto import generate_key
from easeml_ci.models import OnnxModel
from easeml_ci.testsets import load_pool, load_testset

PLANS = ["pro", "basic", "plus", "enterprise"]  # sorted in the card: basic, enterprise, plus, pro
YES = {"plus", "enterprise"}  # not a contiguous range of codes: only a right encoding learns it


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _churn_rows(rng, n, unseen=0):
    """tenure (numeric, some empty), plan (text, decides the class), usage (noise), churned."""
    rows = []
    for i in range(n):
        plan = "legacy" if i < unseen else str(rng.choice(PLANS))
        label = "yes" if plan in YES else "no"
        if rng.random() < 0.03:
            label = "no" if label == "yes" else "yes"
        tenure = "" if rng.random() < 0.05 else round(float(rng.normal(24, 10)), 1)
        rows.append([round(float(rng.normal()), 3), "NA" if rng.random() < 0.03 else plan, tenure, label])
    return rows


CARD = {
    "target": "churned", "task": "classification", "classes": ["no", "yes"], "label_kind": "str",
    "features": [
        {"name": "tenure", "kind": "numeric"},
        {"name": "plan", "kind": "categorical", "categories": ["basic", "enterprise", "plus", "pro"]},
        {"name": "usage", "kind": "numeric"},
    ],
    "dataset": "churn.csv", "data_fingerprint": "0" * 64, "train_rows": 8, "validation_rows": 2,
}


def _card(tmp_path, card=CARD, name="model-card.json"):
    p = tmp_path / name
    p.write_text(json.dumps(card) if isinstance(card, dict) else card)
    return p


def run(cli, *args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


# --- unit: the encoding is the card's ---------------------------------------------------------


def test_codes_follow_the_card_unseen_and_missing_are_minus_one_and_columns_in_card_order(tmp_path):
    raw = _write_csv(tmp_path / "raw.csv", ["churned", "usage", "id", "plan", "tenure"], [
        ["yes", "0.5", "a1", "plus", "12"],
        ["no", "", "a2", "basic", "3.5"],
        ["no", "1", "a3", "gold", "NA"],          # gold: never seen at submit
        ["yes", "2", "a4", "", "7"],              # empty category
        ["no", "-1", "a5", "pro", "1"],
        ["yes", "0", "a6", "enterprise", ""],
    ])
    enc = encode_rows(_card(tmp_path), raw)
    # card order (tenure, plan, usage), not RAW's; the extra column 'id' is left out
    np.testing.assert_array_equal(enc.X[:, 1], [2, 0, -1, -1, 3, 1])
    np.testing.assert_array_equal(enc.X[:, 0], [12, 3.5, np.nan, 7, 1, np.nan])
    np.testing.assert_array_equal(enc.X[:, 2], [0.5, np.nan, 1, 2, -1, 0])
    assert list(enc.y) == ["yes", "no", "no", "yes", "no", "yes"] and enc.y.dtype.kind == "U"
    assert enc.unseen == {"plan": {"gold": 1}} and enc.unseen_cells == 1
    assert enc.missing == {"tenure": 2, "plan": 1, "usage": 1}
    assert enc.unknown_labels == {} and enc.notes == []

    r = run(automl, "testset", "--card", tmp_path / "model-card.json", raw, tmp_path / "t.npz", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["features"] == ["tenure", "plan", "usage"] and (out["rows"], out["columns"]) == (6, 3)
    assert out["unseen_cells"] == 1 and out["unseen"] == {"plan": {"gold": 1}}
    ts = load_testset(tmp_path / "t.npz")
    assert out["fingerprint"] == ts.fingerprint and ts.y.dtype.kind == "U"
    np.testing.assert_array_equal(ts.X, enc.X.astype(np.float32))


def test_integer_classes_stay_integers_and_an_old_card_gets_its_label_kind_inferred(tmp_path):
    card = dict(CARD, classes=["0", "1", "2"])
    del card["label_kind"]  # a card written before label_kind was recorded
    raw = _write_csv(tmp_path / "raw.csv", ["tenure", "plan", "usage", "churned"],
                     [[1, "pro", 0, 2], [2, "basic", 1, 0], [3, "plus", 2, 7]])
    schema, notes = schema_from_card(card, "old.json")
    assert schema.label_kind == "int" and "inferred 'int'" in notes[0]
    assert schema_from_card(dict(card, classes=["no", "yes"]), "old.json")[0].label_kind == "str"
    r = run(automl, "testset", "--card", _card(tmp_path, card), raw, tmp_path / "t.csv", "--label-column", "churned")
    assert r.exit_code == 0, r.output
    assert "note: card" in r.stderr and "no 'label_kind'" in r.stderr
    assert "1 label(s) the model never predicts ('7')" in r.stderr
    ts = load_testset(tmp_path / "t.csv", label_column="churned")
    assert ts.y.dtype == np.int64 and list(ts.y) == [2, 0, 7]
    assert r.stdout.strip() == ts.fingerprint


def test_pool_and_encrypted_test_set_share_the_encoding(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    rows = _churn_rows(rng, 30, unseen=2)
    raw = _write_csv(tmp_path / "raw.csv", ["usage", "plan", "tenure", "churned"], rows)
    pool_raw = _write_csv(tmp_path / "pool-rows.csv", ["usage", "plan", "tenure"], [r[:3] for r in rows])
    card = _card(tmp_path)
    monkeypatch.setenv("MY_KEY", generate_key())
    r = run(automl, "testset", "--card", card, raw, tmp_path / "t.enc", "--key-env", "MY_KEY")
    assert r.exit_code == 0, r.output
    legacy = sum(row[1] == "legacy" for row in rows)
    assert "(encrypted)" in r.stderr and f"{legacy} cell(s) with a category the card has never seen" in r.stderr
    assert (tmp_path / "t.enc").read_bytes()[:8] == b"EASEMLTS"
    ts = load_testset(tmp_path / "t.enc", key_env="MY_KEY")
    assert r.stdout.strip() == ts.fingerprint
    assert run(automl, "testset", "--card", card, raw, tmp_path / "t.npz").stdout.strip() == ts.fingerprint
    for out in ("pool.npz", "pool.csv"):
        r = run(automl, "testset", "--card", card, pool_raw, tmp_path / out, "--pool")
        assert r.exit_code == 0, r.output
        assert r.stdout == "" and "to the pool" in r.stderr
        np.testing.assert_array_equal(load_pool(tmp_path / out), ts.X)


# --- end to end: submit -> work -> testset -> easeml-ci check ------------------------------------


def test_promoted_model_is_judged_by_the_gate_on_encoded_raw_holdout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(7)
    header = ["usage", "plan", "tenure", "churned"]
    _write_csv(tmp_path / "churn.csv", header, _churn_rows(rng, 300))
    holdout = _churn_rows(rng, 150, unseen=4)
    _write_csv(tmp_path / "holdout.csv", header, holdout)
    store = f"sqlite:///{tmp_path / 'q.db'}"

    r = run(automl, "submit", "churn.csv", "--store", store, "--name", "churn", "--target", "churned",
            "--output", "out", "--margin", "0", "--only", "logreg-C1", "--only", "gaussian-nb",
            "--only", "decision-tree-d5")
    assert r.exit_code == 0, r.output
    assert "categorical (4: basic, enterprise, plus, pro)" in r.output
    r = run(automl, "work", "--store", store, "--exit-when-idle", "--poll", "0.05", "--json")
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "out" / "model-card.json").read_text())
    with open_store(store) as s:
        tenant = s.tenant("churn")
    # the card rebuilds the tenant's schema exactly
    assert schema_from_card(card, "model-card.json") == (tenant.schema, [])
    assert "easeml-automl testset --card model-card.json" in (tmp_path / "out" / "MODEL_CARD.md").read_text()

    r = run(automl, "testset", "--card", "out/model-card.json", "holdout.csv", "testset.npz")
    assert r.exit_code == 0, r.output
    fingerprint = r.stdout.strip()
    assert "wrote 150 rows x 3 columns from holdout.csv" in r.stderr
    legacy = sum(row[1] == "legacy" for row in holdout)
    assert f"{legacy} cell(s) with a category the card has never seen, encoded -1 (plan: 'legacy' x{legacy})" in r.stderr

    ts = load_testset("testset.npz")
    assert ts.fingerprint == fingerprint and ts.y.dtype.kind == "U" and set(ts.y) == {"no", "yes"}
    preds = OnnxModel(tmp_path / "out" / "model.onnx", "promoted").predict(ts.X)
    assert preds.dtype.kind == "U"
    assert float(np.mean(preds == ts.y)) >= 0.85
    # the assertion has teeth: the same rows with the categories coded in another order fail it
    wrong = ts.X.copy()
    wrong[:, 1] = np.where(wrong[:, 1] >= 0, (wrong[:, 1] + 1) % 4, -1)
    assert float(np.mean(OnnxModel(tmp_path / "out" / "model.onnx", "p").predict(wrong) == ts.y)) < 0.85

    promoted = card["candidate"]
    old = next(p for p in sorted((tmp_path / "out" / "trials").glob("*.onnx")) if p.stem != promoted)
    (tmp_path / ".easeml.yml").write_text(
        'condition: "n > 0.75 +/- 0.1 and d < 0.3 +/- 0.1"\nreliability: 0.9\nadaptivity: full\nsteps: 4\n')
    r = run(gate, "check", "--config", ".easeml.yml", "--new", "out/model.onnx", "--old", old,
            "--testset", "testset.npz", "--json")
    verdict = json.loads(r.stdout)
    # the data dictates a pass: the promoted model is ~97% accurate and agrees with the old one
    assert (r.exit_code, verdict["verdict"]) == (0, "pass"), r.output
    assert verdict["testset"]["fingerprint"] == fingerprint and verdict["step"] == 1


# --- bad input: exit 2, one line naming the thing, nothing written -------------------------------


BAD = {
    "card missing": ([], {"card": "nope.json"}, ["card nope.json does not exist"]),
    "card is a directory": ([], {"card": "."}, ["card . is a directory"]),
    "card not JSON": ([], {"card_text": "{not json"}, ["is not JSON (line 1, column 2"]),
    "card not an object": ([], {"card_text": "[1, 2]"}, ["holds a JSON list, not an object"]),
    "card lacks features": ([], {"card_drop": "features"}, ["no key 'features'"]),
    "card lacks target": ([], {"card_drop": "target"}, ["no key 'target'"]),
    "card lacks classes": ([], {"card_drop": "classes"}, ["no key 'classes'"]),
    "card bad task": ([], {"card_set": {"task": "ranking"}}, ["key 'task' is 'ranking'", "classification, regression"]),
    "card of a regression model": ([], {"card_set": {"task": "regression", "label_kind": "float", "classes": []}},
                                   ["key 'task' is 'regression'", "the gate judges classifiers only"]),
    "card bad label kind": ([], {"card_set": {"label_kind": "bool"}}, ["key 'label_kind' is 'bool'", "int, str"]),
    "card bad feature kind": ([], {"card_set": {"features": [{"name": "plan", "kind": "text"}]}},
                              ["features[0] ('plan'): key 'kind' is 'text'", "numeric, categorical"]),
    "raw missing": ([], {"raw": "gone.csv"}, ["dataset 'gone.csv' does not exist"]),
    "raw lacks a feature column": ([], {"rows": (["tenure", "usage", "churned"], [[1, 2, "no"]])},
                                   ["raw.csv: no column 'plan' (categorical)", "card model-card.json", "'tenure', 'usage', 'churned'"]),
    "raw lacks the target": ([], {"rows": (["tenure", "plan", "usage"], [[1, "pro", 2]])},
                             ["no target column 'churned'", "pass --pool"]),
    "numeric column holds text": ([], {"rows": (["tenure", "plan", "usage", "churned"],
                                                 [[1, "pro", 2, "no"], ["12 months", "pro", 2, "no"]])},
                                  ["column 'tenure' is numeric", "data row 2 holds '12 months'", "allowed: a number"]),
    "empty label": ([], {"rows": (["tenure", "plan", "usage", "churned"],
                                  [[1, "pro", 2, "no"], [1, "pro", 2, ""]])},
                    ["target column 'churned' has 1 empty value(s) (first at data row 2)"]),
    "text label for integer classes": ([], {"card_set": {"classes": ["0", "1"], "label_kind": "int"},
                                            "rows": (["tenure", "plan", "usage", "churned"], [[1, "pro", 2, "yes"]])},
                                       ["target column 'churned', data row 1 holds 'yes'", "an integer class label"]),
    "unsupported OUT extension": ([], {"out": "t.txt"}, ["t.txt: extension '.txt'", "allowed: .npz, .csv, .enc"]),
    "encrypted pool": (["--pool"], {"out": "p.enc"}, ["extension '.enc'", "never encrypted"]),
    "OUT directory missing": ([], {"out": "no/such/t.npz"}, ["directory no/such does not exist"]),
    "no key for .enc": (["--key-env", "NO_SUCH_KEY_VAR"], {"out": "t.enc"}, ["NO_SUCH_KEY_VAR is not set"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_2_names_the_problem_and_writes_nothing(tmp_path, monkeypatch, name):
    extra, spec, messages = BAD[name]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    card = {**CARD, **spec.get("card_set", {})}
    card.pop(spec.get("card_drop"), None)
    _card(tmp_path, spec.get("card_text", card))
    header, rows = spec.get("rows", (["tenure", "plan", "usage", "churned"], [[1, "pro", 2, "no"]]))
    _write_csv(tmp_path / "raw.csv", header, rows)
    out = spec.get("out", "t.npz")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = CliRunner().invoke(automl, ["testset", "--card", spec.get("card", "model-card.json"),
                                    spec.get("raw", "raw.csv"), out, *extra])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    for m in messages:
        assert m in r.output
    assert not (tmp_path / out).exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_out_is_never_overwritten_without_force(tmp_path):
    _card(tmp_path)
    raw = _write_csv(tmp_path / "raw.csv", ["tenure", "plan", "usage", "churned"], [[1, "pro", 2, "no"]])
    out = tmp_path / "t.npz"
    out.write_bytes(b"precious")
    r = CliRunner().invoke(automl, ["testset", "--card", str(tmp_path / "model-card.json"), str(raw), str(out)])
    assert r.exit_code == 2 and f"{out} already exists; pass --force to overwrite it" in r.output
    assert out.read_bytes() == b"precious"
    r = CliRunner().invoke(automl, ["testset", "--card", str(tmp_path / "model-card.json"), str(raw), str(out),
                                    "--force"])
    assert r.exit_code == 0, r.output
    assert len(load_testset(out)) == 1
    r = CliRunner().invoke(automl, ["testset", "--card", str(tmp_path / "model-card.json"), str(raw), str(raw),
                                    "--force"])
    assert r.exit_code == 2 and "extension '.csv'" not in r.output and "same file as RAW" in r.output



def test_a_subset_whose_categories_all_look_like_numbers_keeps_them_as_the_card_does(tmp_path):
    # At submit the column held "01", "02" and "x" (so text); this held-out file has only
    # "01" and "02". Read by type guessing they would become the numbers 1 and 2 ("1", "2":
    # unseen, -1). Classes "007"/"42" likewise stay text.
    card = dict(CARD, classes=["007", "42"], features=[
        {"name": "code", "kind": "categorical", "categories": ["01", "02", "x"]},
        {"name": "size", "kind": "categorical", "categories": ["1", "2.5"]},  # numeric at submit, marked categorical
    ])
    raw = _write_csv(tmp_path / "raw.csv", ["code", "size", "churned"], [
        ["01", "1.0", "007"], ["02", "2.50", "42"], ["02", "3", "42"], ["", "1", "007"],
    ])
    enc = encode_rows(_card(tmp_path, card), raw)
    assert enc.X.tolist() == [[0, 0], [1, 1], [1, -1], [-1, 0]]
    assert enc.y.tolist() == ["007", "42", "42", "007"]
