"""The label store and `easeml-ci testset label`: append-only, bound to the test set, sealed when
the test set is encrypted, and every bad input refused with exit 2 and nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest

from testset_files import KEY_ENV, cli, new_key, write_csv, write_npz
from easeml_ci.errors import InputError
from easeml_ci.testsets.labels import LabelStore, default_store_path, read_labels_csv
from easeml_ci.testsets import (
    encrypt_unlabelled_testset,
    fingerprint_arrays,
    load_unlabelled_testset,
    unlabelled_from_arrays,
)
from easeml_ci.testsets import crypto


def _features(rows=6, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, 3)).astype(np.float32)


def _unlabelled(tmp_path, name="t.npz", rows=6, seed=0, ids=None):
    ids = np.array([f"r{k}" for k in range(rows)]) if ids is None else ids
    return write_npz(tmp_path / name, X=_features(rows, seed), ids=ids)


def _labels(tmp_path, rows, name="labels.csv"):
    return write_csv(tmp_path / name, ["id", "label"], [list(r) for r in rows])


# --- the unlabelled test set and its fingerprint -------------------------------------------------

def test_fingerprint_covers_features_and_ids_not_labels(tmp_path):
    X = _features()
    ids = np.array([f"r{k}" for k in range(6)])
    base = unlabelled_from_arrays(X, ids, "a").fingerprint
    assert unlabelled_from_arrays(X, ids[::-1], "b").fingerprint != base
    X2 = X.copy()
    X2[0, 0] += 1
    assert unlabelled_from_arrays(X2, ids, "c").fingerprint != base
    # A different kind: never equal to a labelled fingerprint of the same features.
    assert base != fingerprint_arrays(X, np.zeros(6, dtype="<i8"))
    # Integer ids and their text are the same rows.
    assert unlabelled_from_arrays(X, np.arange(6), "d").fingerprint == \
        unlabelled_from_arrays(X, np.array([str(k) for k in range(6)]), "e").fingerprint


def test_fingerprint_survives_csv_and_encryption(tmp_path, monkeypatch):
    ts = load_unlabelled_testset(_unlabelled(tmp_path))
    rows = [[i] + [f"{v:.9g}" for v in x] for i, x in zip(ts.ids.tolist(), ts.X)]
    csv_ts = load_unlabelled_testset(write_csv(tmp_path / "t.csv", ["id", "a", "b", "c"], rows))
    assert csv_ts.fingerprint == ts.fingerprint
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    encrypt_unlabelled_testset(ts, tmp_path / "t.enc", crypto.key_from_env(KEY_ENV))
    assert load_unlabelled_testset(tmp_path / "t.enc").fingerprint == ts.fingerprint
    assert crypto.read_header(tmp_path / "t.enc").fingerprint == ts.fingerprint


@pytest.mark.parametrize("ids, message", [
    (np.array(["a", "b", "a", "c", "d", "e"]), "'a' appears more than once"),
    (np.array(["a", "", "b", "c", "d", "e"]), "empty row id at index 1"),
    (np.arange(6) * 0.5, "floating-point"),
])
def test_bad_row_ids_are_refused(tmp_path, ids, message):
    with pytest.raises(InputError, match=message):
        load_unlabelled_testset(_unlabelled(tmp_path, ids=ids))


# --- the CLI: adding labels ------------------------------------------------------------------

def test_labels_are_added_and_the_same_labels_again_are_a_no_op(tmp_path):
    ts_path = _unlabelled(tmp_path)
    labels = _labels(tmp_path, [("r0", 1), ("r3", 0), ("r5", 2)])
    first = cli(["testset", "label", str(ts_path), str(labels)])
    assert first.exit_code == 0, first.output
    assert "3 new labels, 0 already given; 3 of 6 rows labelled" in first.stderr
    store_path = default_store_path(ts_path)
    before = store_path.read_bytes()
    again = cli(["testset", "label", str(ts_path), str(labels)])
    assert again.exit_code == 0 and "0 new labels, 3 already given" in again.stderr
    assert store_path.read_bytes() == before and again.stdout == first.stdout
    more = cli(["testset", "label", str(ts_path), str(_labels(tmp_path, [("r1", 1), ("r0", 1)], "b.csv"))])
    assert more.exit_code == 0 and "1 new labels, 1 already given; 4 of 6" in more.stderr
    store = LabelStore.open(store_path, load_unlabelled_testset(ts_path), None)
    y, known = store.label_vector()
    assert known.tolist() == [True, True, False, True, False, True]
    assert y[known].tolist() == [1, 1, 0, 2]
    assert store.records == 2 and store.head == more.stdout.strip()


def test_a_csv_test_set_whose_label_column_has_another_name(tmp_path):
    """--label-column names the label column of LABELS.csv and of a CSV TESTSET alike, as
    --id-column does; without it the empty column reads as a feature and is refused, exit 2."""
    ts_path = write_csv(tmp_path / "ts.csv", ["id", "a", "b", "species"],
                        [["r0", 1, 2, ""], ["r1", 3, 4, ""], ["r2", 5, 6, ""]])
    labels = write_csv(tmp_path / "lab.csv", ["id", "species"], [["r0", 1], ["r2", 0]])
    _refused(cli(["testset", "label", str(ts_path), str(labels)]), "ts.csv", "'species'")
    assert not default_store_path(ts_path).exists()
    done = cli(["testset", "label", str(ts_path), str(labels), "--label-column", "species"])
    assert done.exit_code == 0, done.output
    assert "2 new labels, 0 already given; 2 of 3 rows labelled" in done.stderr


def _refused(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_a_changed_label_is_refused_and_nothing_written(tmp_path):
    ts_path = _unlabelled(tmp_path)
    assert cli(["testset", "label", str(ts_path), str(_labels(tmp_path, [("r0", 1)]))]).exit_code == 0
    before = default_store_path(ts_path).read_bytes()
    flip = _labels(tmp_path, [("r2", 1), ("r0", 0)], "flip.csv")
    _refused(cli(["testset", "label", str(ts_path), str(flip)]), "flip.csv line 3", "'r0'",
             "never changes")
    assert default_store_path(ts_path).read_bytes() == before  # r2 was not added either


def test_a_label_given_twice_differently_in_one_file_is_refused(tmp_path):
    ts_path = _unlabelled(tmp_path)
    twice = _labels(tmp_path, [("r2", 1), ("r2", 0)])
    _refused(cli(["testset", "label", str(ts_path), str(twice)]), "line 3", "'r2'")
    assert not default_store_path(ts_path).exists()


@pytest.mark.parametrize("rows, needles", [
    ([("r0", 1), ("r9", 0)], ("labels.csv line 3", "'r9'", "not in the test set")),
    ([("r0", 1), ("r1", "")], ("labels.csv line 3", "'r1'", "not a label")),
    ([("r0", 1), ("r1", "nan")], ("labels.csv line 3", "'nan'", "not a label")),
    ([("r0", 1), ("", 1)], ("labels.csv line 3", "empty row id")),
])
def test_bad_labels_files_are_refused_and_nothing_written(tmp_path, rows, needles):
    ts_path = _unlabelled(tmp_path)
    _refused(cli(["testset", "label", str(ts_path), str(_labels(tmp_path, rows))]), *needles)
    assert not default_store_path(ts_path).exists()


def test_a_word_in_a_store_of_integers_names_its_line(tmp_path):
    ts_path = _unlabelled(tmp_path)
    assert cli(["testset", "label", str(ts_path), str(_labels(tmp_path, [("r0", 1)]))]).exit_code == 0
    before = default_store_path(ts_path).read_bytes()
    word = _labels(tmp_path, [("r1", 0), ("r2", "cat")], "word.csv")
    _refused(cli(["testset", "label", str(ts_path), str(word)]), "word.csv line 3", "'cat'", "integer")
    assert default_store_path(ts_path).read_bytes() == before


def test_a_store_of_another_test_set_is_refused(tmp_path):
    a, b = _unlabelled(tmp_path, "a.npz", seed=1), _unlabelled(tmp_path, "b.npz", seed=2)
    assert cli(["testset", "label", str(a), str(_labels(tmp_path, [("r0", 1)]))]).exit_code == 0
    store_a = default_store_path(a)
    before = store_a.read_bytes()
    _refused(cli(["testset", "label", str(b), str(_labels(tmp_path, [("r1", 1)], "b.csv")),
                  "--store", str(store_a)]), str(store_a), "holds labels for test set")
    assert store_a.read_bytes() == before


def test_missing_columns_name_the_file(tmp_path):
    ts_path = _unlabelled(tmp_path)
    bad = write_csv(tmp_path / "l.csv", ["row", "label"], [["r0", 1]])
    _refused(cli(["testset", "label", str(ts_path), str(bad)]), "l.csv", "no column 'id'")


# --- the chain and the seal -------------------------------------------------------------------

def test_an_edited_or_dropped_record_breaks_the_chain(tmp_path):
    ts_path = _unlabelled(tmp_path)
    for k, name in enumerate(("a.csv", "b.csv", "c.csv")):
        assert cli(["testset", "label", str(ts_path), str(_labels(tmp_path, [(f"r{k}", k)], name))]).exit_code == 0
    store_path = default_store_path(ts_path)
    lines = store_path.read_bytes().splitlines(keepends=True)
    ts = load_unlabelled_testset(ts_path)
    edited = json.loads(lines[0])
    edited["labels"] = [["r0", 2]]
    store_path.write_bytes(json.dumps(edited).encode() + b"\n" + b"".join(lines[1:]))
    with pytest.raises(InputError, match="line 1: the label store's hash chain is broken"):
        LabelStore.open(store_path, ts, None)
    store_path.write_bytes(lines[0] + lines[2])
    with pytest.raises(InputError, match="line 2: the label store's hash chain is broken"):
        LabelStore.open(store_path, ts, None)


def test_an_encrypted_test_sets_store_is_sealed(tmp_path, monkeypatch):
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    plain = load_unlabelled_testset(_unlabelled(tmp_path))
    enc = tmp_path / "t.enc"
    encrypt_unlabelled_testset(plain, enc, crypto.key_from_env(KEY_ENV))
    labels = _labels(tmp_path, [("r0", "zebra-secret"), ("r4", "okapi-secret")])
    ok = cli(["testset", "label", str(enc), str(labels)], env={KEY_ENV: key})
    assert ok.exit_code == 0, ok.output
    data = default_store_path(enc).read_bytes()
    # nothing but base64 ciphertext may carry the rows (random base64 can contain any short
    # run such as 'r4', so the plaintext is looked for outside the ciphertext fields)
    records = [json.loads(line) for line in data.splitlines()]
    clear = json.dumps([{k: v for k, v in r.items() if k != "ciphertext"} for r in records])
    assert all(r.get("ciphertext") for r in records)
    for secret in ("zebra", "okapi", '"r4"', '"r0"'):
        assert secret not in clear
    assert b"zebra" not in data and b"okapi" not in data
    ts = load_unlabelled_testset(enc)
    store = LabelStore.open(default_store_path(enc), ts, crypto.key_from_env(KEY_ENV))
    assert store.labels == {"r0": "zebra-secret", "r4": "okapi-secret"}
    with pytest.raises(InputError, match="sealed"):
        LabelStore.open(default_store_path(enc), ts, None)
    with pytest.raises(InputError, match="another key"):
        LabelStore.open(default_store_path(enc), ts, crypto.key_from_env(KEY_ENV)[::-1])
    # Without the key the CLI says so and writes nothing.
    _refused(cli(["testset", "label", str(enc), str(labels)], env={KEY_ENV: None}), KEY_ENV)
    assert default_store_path(enc).read_bytes() == data


def test_a_sealed_record_moved_elsewhere_fails_authentication(tmp_path, monkeypatch):
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    enc = tmp_path / "t.enc"
    encrypt_unlabelled_testset(load_unlabelled_testset(_unlabelled(tmp_path)), enc,
                               crypto.key_from_env(KEY_ENV))
    for k, name in enumerate(("a.csv", "b.csv")):
        assert cli(["testset", "label", str(enc), str(_labels(tmp_path, [(f"r{k}", k)], name))],
                   env={KEY_ENV: key}).exit_code == 0
    store_path = default_store_path(enc)
    first, second = (json.loads(x) for x in store_path.read_bytes().splitlines())
    second["ciphertext"] = first["ciphertext"]  # swap in another record's sealed labels
    from easeml_ci.ledger.chain import canonical, entry_hash
    second["hash"] = entry_hash(second)  # even with a re-computed hash
    store_path.write_bytes(canonical(first) + b"\n" + canonical(second) + b"\n")
    with pytest.raises(InputError, match="line 2: a sealed label record failed authentication"):
        LabelStore.open(store_path, load_unlabelled_testset(enc), crypto.key_from_env(KEY_ENV))


def test_label_kinds(tmp_path):
    assert read_labels_csv(_labels(tmp_path, [("a", 1), ("b", 2.0)])).kind == "integer"
    batch = read_labels_csv(_labels(tmp_path, [("a", 1), ("b", 2.5)], "n.csv"))
    assert batch.kind == "number" and batch.witness == (3, "2.5")
    assert read_labels_csv(_labels(tmp_path, [("a", "x"), ("b", 2)], "t.csv")).kind == "text"
