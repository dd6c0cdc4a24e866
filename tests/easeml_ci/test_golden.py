"""Golden files: the on-disk formats are promises (tests/golden/, made by make_golden.py).

A fingerprint keys a test set's budget, a ledger's hashes must keep verifying, an encrypted
test set must keep decrypting, a model card must keep loading. Each test reads a committed file
and compares with values fixed here, so a change to the canonical bytes (JSON separators, key
order, dtypes, padding) fails here instead of resetting every real budget or marking every real
ledger TAMPERED. A failure here is not fixed by regenerating the files: see make_golden.py.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from automl_runner.worker.promote import ModelCard
from automl_runner.datasets.testset_export import load_card, schema_from_card
from easeml_ci.testsets import crypto
from easeml_ci.cli import main
from easeml_ci.ledger import Budget, FileBackend, Ledger
from easeml_ci.ledger.chain import canonical, entry_hash
from easeml_ci.testsets import fingerprint_arrays, load_testset

GOLDEN = Path(__file__).parent / "golden"

FINGERPRINT = "8272563a7f566e34e73cd701613a3532460a8ea045589f0ba238de8dc7ffe3ce"
LEDGER_HEAD = {"length": 6,
               "hash": "3e398a220b8f019d0cb100763a274b20953b806cd688033c45692f73660da82a"}
FIRST_ENTRY_HASH = "a8f81277aac2eac5c1a520ecf9b844e41864a4442db64c1e5fc87af71796f93d"
GOLDEN_KEY = "Z29sZGVuLXRlc3Qta2V5LW5vdC1hLXNlY3JldCEhISE="  # test-only, see make_golden.py

X = np.array([[0.5, -1.25, 3.0], [2.0, 0.0, -0.75], [-4.5, 1.5, 0.125],
              [1.0, 2.5, -2.0], [0.25, -0.5, 8.0], [-1.0, 6.0, 0.0]], dtype=np.float32)
Y = np.array([0, 2, 1, 1, 0, 2], dtype=np.int64)


# --- test sets and their fingerprint -------------------------------------------------------
def test_canonical_form_of_the_arrays_has_its_fingerprint():
    assert fingerprint_arrays(X, Y) == FINGERPRINT


@pytest.mark.parametrize("name", ["testset.npz", "testset.csv"])
def test_plaintext_test_set_has_its_fingerprint(name):
    ts = load_testset(GOLDEN / name)
    assert ts.fingerprint == FINGERPRINT
    np.testing.assert_array_equal(ts.X, X)
    np.testing.assert_array_equal(ts.y, Y)


def test_encrypted_test_set_decrypts_with_its_key_to_the_same_fingerprint(monkeypatch):
    monkeypatch.setenv("EASEML_GOLDEN_TEST_KEY", GOLDEN_KEY)
    path = GOLDEN / "testset.enc"
    header = crypto.read_header(path)
    assert header.fingerprint == FINGERPRINT
    assert json.loads(header.raw)["version"] == crypto.VERSION == 1
    assert header.chunks > 1  # the chunk framing is pinned too, not only a one-chunk file
    assert header.key_id == crypto.key_id(crypto.key_from_env("EASEML_GOLDEN_TEST_KEY"))
    ts = load_testset(path, key_env="EASEML_GOLDEN_TEST_KEY")
    assert ts.fingerprint == FINGERPRINT
    np.testing.assert_array_equal(ts.X, X)
    np.testing.assert_array_equal(ts.y, Y)


# --- the budget ledger -------------------------------------------------------------------------
@pytest.fixture
def golden_ledger(tmp_path) -> Ledger:
    directory = tmp_path / "ledger"
    shutil.copytree(GOLDEN / "ledger", directory)  # readers create a lock file: not in tests/
    return Ledger(FileBackend(directory), FINGERPRINT)


def test_golden_ledger_verifies_with_its_head_and_budget(golden_ledger):
    report = golden_ledger.verify()
    assert report.ok and not report.warnings, report
    assert golden_ledger.backend.head(FINGERPRINT) == LEDGER_HEAD
    entries = golden_ledger.entries()
    assert [e["kind"] for e in entries] == ["register", "step", "step", "step", "alert",
                                            "alert-result"]
    assert entries[0]["hash"] == FIRST_ENTRY_HASH and entries[-1]["hash"] == LEDGER_HEAD["hash"]
    assert golden_ledger.budget() == Budget(used=3, total=3, passes_used=1, passes_total=None,
                                            status="exhausted", adaptivity="full")
    assert golden_ledger.alert_state("exhausted") == "delivered"


def test_golden_ledger_lines_are_the_canonical_json_that_is_hashed(golden_ledger):
    stored = (GOLDEN / "ledger" / f"{FINGERPRINT}.jsonl").read_bytes().splitlines(keepends=True)
    entries = golden_ledger.entries()
    assert stored == [canonical(e) + b"\n" for e in entries]
    assert [entry_hash(e) for e in entries] == [e["hash"] for e in entries]
    assert "modèle".encode() in stored[1]  # stored as UTF-8, not \\u escapes


def test_golden_ledger_through_the_cli(golden_ledger, monkeypatch):
    monkeypatch.chdir(golden_ledger.backend.directory.parent)
    (golden_ledger.backend.directory.parent / ".easeml").mkdir()
    shutil.move(golden_ledger.backend.directory, golden_ledger.backend.directory.parent / ".easeml")
    verify = CliRunner().invoke(main, ["ledger", "verify", "--fingerprint", FINGERPRINT])
    assert verify.exit_code == 0 and f"{FINGERPRINT[:12]}  ok  (6 entries)" in verify.output
    status = json.loads(CliRunner().invoke(main, ["ledger", "status", "--json"]).output)
    assert [(t["used"], t["total"], t["status"]) for t in status["testsets"]] == \
        [(3, 3, "exhausted")]


# --- the AutoML model card ---------------------------------------------------------------------
def _golden_card_fields() -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CARD


def test_model_card_writer_still_writes_the_golden_card():
    assert ModelCard(**_golden_card_fields()).to_json() == \
        (GOLDEN / "model-card.json").read_text(encoding="utf-8")


def test_model_card_markdown_is_the_golden_one():
    """MODEL_CARD.md (and the pull request body built from it) is pinned byte for byte."""
    assert ModelCard(**_golden_card_fields()).to_markdown() == \
        (GOLDEN / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_golden_model_card_loads_into_its_schema():
    card = load_card(GOLDEN / "model-card.json")
    schema, notes = schema_from_card(card, GOLDEN / "model-card.json")
    assert notes == []
    assert (schema.target, schema.task, schema.label_kind) == ("label", "classification", "int")
    assert [(f.name, f.kind, f.categories) for f in schema.features] == [
        ("x0", "numeric", ()), ("colour", "categorical", ("blue", "red")), ("größe", "numeric", ())]
    assert schema.classes == ("0", "1", "2") and schema.n_rows == 200
    assert (schema.ignored, schema.validation_fraction, schema.seed) == (("row_id",), 0.2, 0)


# --- label stores ----------------------------------------------------------------------------

LABEL_STORES = {  # name: (head, labels); every sealed one under GOLDEN_KEY
    "sealed-v1.labels": ("3bfbfe01475cd43541d52274146edb037cdd9ff8918b1e2c933b1124e1ef368a",
                         {"r0": "cat", "r1": "horse", "r4": "cat"}),
    "plain-v1.labels": ("b794c78bb04c1506005629370b24c60b1f08052e8bd5910d1aa41522be406c50",
                        {"r0": "cat", "r2": "horse"}),
    "sealed-v2.labels": ("a940200da5df237c2c8b608fa95c7311419a272d77e220939a8e4f87e549a285",
                         {"r0": "cat", "r1": "horse", "r4": "cat"}),
    "plain-v2.labels": ("4aebb8c9d41cacb4275e3f9fcc923f8094899ee13a2b4aa56a80cf64be83afc0",
                        {"r0": "cat", "r2": "horse"}),
}
UNLABELLED_FINGERPRINT = "211a1ae3eefba4182df009099db1dfcda1ca3af1bb39b14c47065ed6c7613427"


@pytest.mark.parametrize("name", sorted(LABEL_STORES))
def test_label_stores_of_both_versions_read_with_their_head_and_labels(name, monkeypatch):
    from easeml_ci.testsets import load_unlabelled_testset
    from easeml_ci.testsets.labels import LabelStore

    ts = load_unlabelled_testset(GOLDEN / "labels" / "unlabelled.npz")
    assert ts.fingerprint == UNLABELLED_FINGERPRINT
    monkeypatch.setenv("EASEML_GOLDEN_TEST_KEY", GOLDEN_KEY)
    key = crypto.key_from_env("EASEML_GOLDEN_TEST_KEY") if name.startswith("sealed") else None
    store = LabelStore.open(GOLDEN / "labels" / name, ts, key)
    head, labels = LABEL_STORES[name]
    assert store.head == head and store.labels == labels and store.kind == "text"
    assert store.legacy == (store.records if "v1" in name else 0)
    if name == "sealed-v2.labels":  # one size for every sealed record; no kind in clear
        lines = (GOLDEN / "labels" / name).read_bytes().splitlines()
        assert len({len(line) for line in lines}) == 1
        assert all("label_kind" not in json.loads(line) for line in lines)
