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
from easeml_ci.ledger import Budget, FileBackend, Ledger, LedgerNeedsMigration
from easeml_ci.ledger.chain import canonical, entry_hash
from easeml_ci.testsets import fingerprint_arrays, load_testset

GOLDEN = Path(__file__).parent / "golden"

FINGERPRINT = "8272563a7f566e34e73cd701613a3532460a8ea045589f0ba238de8dc7ffe3ce"
LEDGER_HEAD = {"length": 6,
               "hash": "3e398a220b8f019d0cb100763a274b20953b806cd688033c45692f73660da82a"}
FIRST_ENTRY_HASH = "a8f81277aac2eac5c1a520ecf9b844e41864a4442db64c1e5fc87af71796f93d"
LEDGER_V2_HEAD = {"length": 7,
                  "hash": "5b90d9a9fcffd2b760b633488d4829b83c398fd827ce97840cae248856d6a293"}
LEDGER_V2_LAST_MAC = "9455f27c31ee76418c1da2038a44f079b8667bf3ea2dcd4f748b826683a8de42"
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


# --- the budget ledger, v1 (no MACs: read only through `ledger migrate`) ----------------------
@pytest.fixture
def golden_ledger(tmp_path) -> Ledger:
    directory = tmp_path / "ledger"
    shutil.copytree(GOLDEN / "ledger", directory)  # readers create a lock file: not in tests/
    return Ledger(FileBackend(directory), FINGERPRINT)


def golden_ledger_key() -> bytes:
    return crypto.derive_key(crypto.key_from_env("EASEML_GOLDEN_TEST_KEY"), "ledger")


@pytest.fixture(autouse=True)
def golden_key_env(monkeypatch):
    monkeypatch.setenv("EASEML_GOLDEN_TEST_KEY", GOLDEN_KEY)


def test_golden_v1_ledger_verifies_its_chain_head_and_budget_without_a_key(golden_ledger):
    report = golden_ledger.verify()
    assert report.ok and report.warnings == [
        "not authenticated: no ledger key given (the test-set key of an encrypted test set, "
        "else EASEML_LEDGER_KEY)"], report
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


def test_golden_v1_ledger_is_refused_with_the_key_until_migrated(golden_ledger):
    keyed = Ledger(golden_ledger.backend, FINGERPRINT, golden_ledger_key())
    with pytest.raises(LedgerNeedsMigration, match="easeml-ci ledger migrate"):
        keyed.entries()
    assert keyed.migrate() == 6
    migrated = keyed.entries()  # authenticated now: every MAC checks
    assert [e["kind"] for e in migrated] == ["register", "step", "step", "step", "alert",
                                             "alert-result"]
    assert migrated[0]["format"] == 2 and all("mac" in e for e in migrated)
    assert keyed.budget() == Budget(used=3, total=3, passes_used=1, passes_total=None,
                                    status="exhausted", adaptivity="full")  # the same budget
    assert keyed.verify().ok and keyed.alert_state("exhausted") == "delivered"
    with pytest.raises(Exception, match="not a v1 ledger"):
        keyed.migrate()  # once: a v2 ledger is never re-signed
    other = Ledger(golden_ledger.backend, FINGERPRINT, b"\x01" * 32)
    with pytest.raises(Exception, match="entry 1 .register.: forged"):
        other.entries()  # another key does not authenticate it


def test_golden_v1_ledger_through_the_cli(golden_ledger, monkeypatch):
    monkeypatch.chdir(golden_ledger.backend.directory.parent)
    (golden_ledger.backend.directory.parent / ".easeml").mkdir()
    shutil.move(golden_ledger.backend.directory, golden_ledger.backend.directory.parent / ".easeml")
    monkeypatch.delenv("EASEML_LEDGER_KEY")
    verify = CliRunner().invoke(main, ["ledger", "verify", "--fingerprint", FINGERPRINT])
    assert verify.exit_code == 0 and f"{FINGERPRINT[:12]}  ok  (6 entries)" in verify.output
    assert "not authenticated" in verify.output
    monkeypatch.setenv("EASEML_TESTSET_KEY", GOLDEN_KEY)  # the owner, with the key
    verify = CliRunner().invoke(main, ["ledger", "verify", "--fingerprint", FINGERPRINT])
    assert verify.exit_code == 1 and "ledger migrate" in verify.output
    status = CliRunner().invoke(main, ["ledger", "status", "--json"])
    assert status.exit_code == 2 and "ledger migrate" in status.output
    migrate = CliRunner().invoke(main, ["ledger", "migrate", "--fingerprint", FINGERPRINT])
    assert migrate.exit_code == 0 and "migrated to v2 (6 entries signed)" in migrate.output
    verify = CliRunner().invoke(main, ["ledger", "verify", "--fingerprint", FINGERPRINT])
    assert verify.exit_code == 0 and f"{FINGERPRINT[:12]}  ok  (6 entries)" in verify.output
    status = json.loads(CliRunner().invoke(main, ["ledger", "status", "--json"]).output)
    assert [(t["used"], t["total"], t["status"]) for t in status["testsets"]] == \
        [(3, 3, "exhausted")]


# --- the budget ledger, v2 (every entry MAC'd, chained to the MAC before it) -------------------
@pytest.fixture
def golden_v2(tmp_path) -> Ledger:
    directory = tmp_path / "ledger-v2"
    shutil.copytree(GOLDEN / "ledger-v2", directory)
    return Ledger(FileBackend(directory), FINGERPRINT, golden_ledger_key())


def test_golden_v2_ledger_authenticates_with_its_head_and_budget(golden_v2):
    report = golden_v2.verify()
    assert report.ok and not report.warnings, report
    assert golden_v2.backend.head(FINGERPRINT) == LEDGER_V2_HEAD
    entries = golden_v2.entries()
    assert [e["kind"] for e in entries] == ["register", "step", "complete", "step", "complete",
                                            "step", "alert"]
    assert entries[-1]["mac"] == LEDGER_V2_LAST_MAC
    # the third step was reserved and never completed (a run killed after the open): spent,
    # and no pass; the second's completion is the one pass
    assert golden_v2.budget() == Budget(used=3, total=3, passes_used=1, passes_total=None,
                                        status="exhausted", adaptivity="full")
    assert golden_v2.alert_state("exhausted") == "claimed"


def test_golden_v2_mac_input_layout(golden_v2):
    """The MAC input, spelled out here independently of easeml_ci.ledger.auth: HMAC-SHA256 under
    derive_key(test-set key, "ledger") of b"easeml-ci ledger v2" NUL fingerprint NUL previous
    MAC (64 zeros for the first) NUL the entry's canonical JSON without its "mac"."""
    import hashlib
    import hmac

    stored = (GOLDEN / "ledger-v2" / f"{FINGERPRINT}.jsonl").read_bytes().splitlines()
    prev = "0" * 64
    for line in stored:
        entry = json.loads(line)
        body = json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False).encode()
        message = b"easeml-ci ledger v2\x00" + FINGERPRINT.encode() + b"\x00" + \
            prev.encode() + b"\x00" + body
        assert entry["mac"] == hmac.new(golden_ledger_key(), message, hashlib.sha256).hexdigest()
        assert canonical(entry) == line and entry_hash(entry) == entry["hash"]
        prev = entry["mac"]


def test_golden_v2_ledger_names_a_forged_entry(golden_v2):
    path = golden_v2.backend.directory / f"{FINGERPRINT}.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["passed"] = True  # the first check's fail made a pass, hash recomputed (not the MAC)
    entry["hash"] = entry_hash(entry)
    later = [json.loads(line) for line in lines[3:]]
    prev = entry["hash"]
    for e in later:  # a careful forger re-chains every later entry
        e["prev_hash"] = prev
        e["hash"] = entry_hash(e)
        prev = e["hash"]
    path.write_bytes(b"".join(canonical(e) + b"\n" for e in [*map(json.loads, lines[:2]),
                                                             entry, *later]))
    (golden_v2.backend.directory / f"{FINGERPRINT}.head").write_text(
        json.dumps({"length": 7, "hash": prev}))
    report = golden_v2.verify()
    assert not report.ok
    assert report.problems[0].startswith("entry 3 (complete): forged")
    with pytest.raises(Exception, match=r"entry 3 \(complete\): forged"):
        golden_v2.budget()


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
