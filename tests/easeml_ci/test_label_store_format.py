"""The sealed label store's format version 2: a record's size and clear fields say nothing about
its labels (issue 20: `cat` made a 40-byte ciphertext and `horse` 44, and the label kind was in
clear); version-1 stores are read and migrated by `easeml-ci testset migrate-labels`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from testset_files import KEY_ENV, cli, new_key
from easeml_ci.errors import InputError
from easeml_ci.testsets import crypto, encrypt_unlabelled_testset, load_unlabelled_testset
from easeml_ci.testsets.labels import SEALED_BYTES, LabelStore, batch_from_rows

GOLDEN = Path(__file__).parent / "golden" / "labels"
GOLDEN_KEY = "Z29sZGVuLXRlc3Qta2V5LW5vdC1hLXNlY3JldCEhISE="  # test-only, see make_golden.py


@pytest.fixture
def sealed(tmp_path, monkeypatch):
    """An encrypted unlabelled test set of 300 rows and its key (in KEY_ENV)."""
    monkeypatch.setenv(KEY_ENV, new_key())
    path = tmp_path / "plain.npz"
    np.savez(path, X=np.zeros((300, 2), dtype=np.float32),
             ids=np.array([f"r{k}" for k in range(300)]))
    enc = tmp_path / "t.enc"
    encrypt_unlabelled_testset(load_unlabelled_testset(path), enc, crypto.key_from_env(KEY_ENV))
    return load_unlabelled_testset(enc), crypto.key_from_env(KEY_ENV)


def _store(tmp_path, ts, key, batches, name):
    store = LabelStore.open(tmp_path / name, ts, key)
    for rows in batches:
        store.add(batch_from_rows(Path("labels.csv"), [(i, v, n) for n, (i, v) in
                                                         enumerate(rows, start=2)]))
    return tmp_path / name


def _records(path):
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_records_have_one_size_whatever_the_labels_and_no_kind_in_clear(tmp_path, sealed):
    ts, key = sealed
    stores = {
        "cat": [[("r0", "cat")]],
        "horse": [[("r0", "horse")]],
        "integer": [[("r0", "7")]],
        "fifty": [[(f"r{k}", "hippopotamus") for k in range(50)]],
    }
    sizes = {}
    for name, batches in stores.items():
        records = _records(_store(tmp_path, ts, key, batches, name))
        assert len(records) == 1
        assert "label_kind" not in records[0] and records[0]["version"] == 2
        sizes[name] = len(records[0]["ciphertext"])
    assert len(set(sizes.values())) == 1, sizes  # v1: 40 vs 44 bytes for cat and horse
    assert LabelStore.open(tmp_path / "fifty", ts, key).kind == "text"
    assert LabelStore.open(tmp_path / "integer", ts, key).kind == "integer"


def test_a_batch_larger_than_a_record_fills_several_of_the_same_size(tmp_path, sealed):
    ts, key = sealed
    rows = [(f"r{k}", f"label-{k:04d}-" + "x" * 20) for k in range(300)]
    path = _store(tmp_path, ts, key, [rows], "big")
    records = _records(path)
    assert len(records) > 1 and len({len(r["ciphertext"]) for r in records}) == 1
    assert [r["seq"] for r in records] == list(range(len(records)))
    store = LabelStore.open(path, ts, key)
    assert store.labels == dict(rows) and store.records == len(records)
    # every record's plaintext is exactly SEALED_BYTES (16 bytes of GCM tag on top)
    import base64
    assert {len(base64.b64decode(r["ciphertext"])) for r in records} == {SEALED_BYTES + 16}


def test_a_label_too_long_for_a_record_names_its_line_and_writes_nothing(tmp_path, sealed):
    ts, key = sealed
    store = LabelStore.open(tmp_path / "long", ts, key)
    batch = batch_from_rows(Path("labels.csv"), [("r0", "ok", 2), ("r1", "y" * SEALED_BYTES, 3)])
    with pytest.raises(InputError, match=r"labels.csv line 3: row id 'r1'"):
        store.add(batch)
    assert not (tmp_path / "long").exists()


def _golden_copy(tmp_path, name):
    folder = tmp_path / "owner"
    folder.mkdir(exist_ok=True)
    shutil.copy(GOLDEN / "unlabelled.npz", folder / "unlabelled.npz")
    shutil.copy(GOLDEN / name, folder / name)
    return folder / "unlabelled.npz", folder / name


def test_a_version_1_sealed_store_is_read_refused_for_appending_and_migrated(tmp_path,
                                                                             monkeypatch):
    """The golden v1 store (under the golden key; an encrypted test set's store behaves the
    same: only the key decides whether a store is sealed)."""
    ts_path, store_path = _golden_copy(tmp_path, "sealed-v1.labels")
    ts = load_unlabelled_testset(ts_path)
    monkeypatch.setenv("EASEML_GOLDEN_TEST_KEY", GOLDEN_KEY)
    key = crypto.key_from_env("EASEML_GOLDEN_TEST_KEY")
    old = LabelStore.open(store_path, ts, key)
    before = store_path.read_bytes()
    with pytest.raises(InputError, match="format version 1.*testset migrate-labels"):
        old.add(batch_from_rows(Path("more.csv"), [("r5", "dog", 2)]))
    assert store_path.read_bytes() == before
    assert old.migrate() >= 1
    again = LabelStore.open(store_path, ts, key)
    assert again.labels == old.labels == {"r0": "cat", "r1": "horse", "r4": "cat"}
    assert again.legacy == 0 and again.kind == "text"
    assert all(r["version"] == 2 and "label_kind" not in r for r in _records(store_path))
    again.add(batch_from_rows(Path("more.csv"), [("r5", "dog", 2)]))
    assert LabelStore.open(store_path, ts, key).labels["r5"] == "dog"
    assert again.migrate() == 0  # nothing left to migrate


def test_migrate_labels_through_the_cli(tmp_path):
    ts_path, store_path = _golden_copy(tmp_path, "plain-v1.labels")
    done = cli(["testset", "migrate-labels", str(ts_path), "--store", str(store_path)])
    assert done.exit_code == 0, done.output
    assert "migrated to format version 2" in done.stderr
    store = LabelStore.open(store_path, load_unlabelled_testset(ts_path), None)
    assert store.labels == {"r0": "cat", "r2": "horse"} and done.stdout.strip() == store.head
    again = cli(["testset", "migrate-labels", str(ts_path), "--store", str(store_path)])
    assert again.exit_code == 0 and "already" in again.stderr
    missing = cli(["testset", "migrate-labels", str(ts_path), "--store",
                   str(tmp_path / "nowhere.labels")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.output
