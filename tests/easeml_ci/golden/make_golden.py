"""Regenerate the golden files that pin easeml-ci's on-disk formats (tests/test_golden.py).

    .venv/bin/python tests/golden/make_golden.py      # then update the constants it prints

Do not run this to make tests/test_golden.py pass again after a code change. These files are
promises to every existing user: a test set's fingerprint keys its budget ledger, a ledger's
hashes must keep verifying, an encrypted test set must keep decrypting, a model card must keep
loading. If a golden test fails, the change broke a format that is already on disk somewhere.
Changing a format on purpose is a release step: bump its version (the test-set preamble's
``easeml-ci testset v1``, ``crypto.VERSION``, the ledger's ``format`` in its register entry; the
model card carries no version field yet, so it would need one first), keep reading the old
version or ship a migration, and only then regenerate these files and the expected values in
tests/test_golden.py. The v1 ledger (``ledger/``) stays as it is: it is what ``easeml-ci ledger
migrate`` must keep reading; ``ledger-v2/`` is the authenticated format (MACs under the ledger
key derived from GOLDEN_KEY, as for an encrypted test set).

The encrypted file is re-encrypted with fresh random nonces on every run (its bytes change,
its fingerprint and plaintext do not). Everything else is byte-for-byte reproducible.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from automl_runner.worker.promote import ModelCard  # noqa: E402
from easeml_ci.ledger import FileBackend  # noqa: E402
from easeml_ci.ledger.chain import GENESIS, seal  # noqa: E402
from easeml_ci.testsets import encrypt_testset, load_testset  # noqa: E402

# A test-only key, committed on purpose: it protects nothing but these golden files.
GOLDEN_KEY = "Z29sZGVuLXRlc3Qta2V5LW5vdC1hLXNlY3JldCEhISE="
GOLDEN_KEY_ENV = "EASEML_GOLDEN_TEST_KEY"

# Six rows, three features, labels in {0, 1, 2}; every value is exact in float32, so the CSV
# and the npz hold the same numbers and must share a fingerprint.
X = np.array([[0.5, -1.25, 3.0], [2.0, 0.0, -0.75], [-4.5, 1.5, 0.125],
              [1.0, 2.5, -2.0], [0.25, -0.5, 8.0], [-1.0, 6.0, 0.0]], dtype=np.float32)
Y = np.array([0, 2, 1, 1, 0, 2], dtype=np.int64)

TERMS = {"condition": "n > 0.8 +/- 0.05", "reliability": 0.99, "mode": "fp-free",
         "adaptivity": "full", "steps": 3, "passes": None}

CARD = dict(
    tenant="acme", candidate="logreg-C1", family="linear", hyperparameters={"C": 1.0},
    task="classification", metric="accuracy", validation_score=0.875, previous_score=None,
    validation_rows=40, train_rows=160, dataset="data/train.csv",
    data_fingerprint="5" * 64, target="label", classes=["0", "1", "2"],
    features=[{"name": "x0", "kind": "numeric"},
              {"name": "colour", "kind": "categorical", "categories": ["blue", "red"]},
              {"name": "größe", "kind": "numeric"}],
    trial_id=7, promotion_id=2, onnx_sha256="6" * 64, promoted_at="2026-01-02T03:04:05+00:00",
    label_kind="int", ignored=["row_id"], validation_fraction=0.2, seed=0,
)


def write_testsets() -> str:
    np.savez(HERE / "testset.npz", X=X, y=Y)
    with open(HERE / "testset.csv", "w", newline="") as fh:
        fh.write("x0,x1,x2,label\n")
        for row, label in zip(X, Y):
            fh.write(",".join(repr(float(v)) for v in row) + f",{label}\n")
    ts = load_testset(HERE / "testset.npz")
    os.environ[GOLDEN_KEY_ENV] = GOLDEN_KEY
    from easeml_ci.testsets.crypto import key_from_env

    encrypt_testset(ts, HERE / "testset.enc", key_from_env(GOLDEN_KEY_ENV), chunk_bytes=64)
    return ts.fingerprint


def write_ledger(fingerprint: str) -> dict:
    """What easeml-ci writes for: register, three steps (exhausting the budget), one alert."""
    directory = HERE / "ledger"
    shutil.rmtree(directory, ignore_errors=True)
    backend = FileBackend(directory)
    bodies = [
        {"kind": "register", "time": "2026-01-02T03:04:05+00:00", "fingerprint": fingerprint,
         "terms": TERMS, "by": "register", "plan": {"method": "exact", "test_examples": 6}},
        {"kind": "step", "time": "2026-01-02T04:00:00+00:00", "passed": False,
         "new": "models/modèle.onnx", "old": None},  # not ASCII: pins ensure_ascii=False
        {"kind": "step", "time": "2026-01-02T05:00:00+00:00", "passed": True,
         "new": "models/new.onnx", "old": "models/old.onnx", "underpowered": True},
        {"kind": "step", "time": "2026-01-02T06:00:00+00:00", "passed": False,
         "new": "preds.npy", "old": None},
        {"kind": "alert", "time": "2026-01-02T06:00:01+00:00", "event": "exhausted"},
        {"kind": "alert-result", "time": "2026-01-02T06:00:02+00:00", "event": "exhausted",
         "delivered": True, "detail": ""},
    ]
    prev = GENESIS
    for seq, body in enumerate(bodies):
        entry = seal(body, seq, prev)
        backend.append(fingerprint, entry, seq)
        prev = entry["hash"]
    (directory / f"{fingerprint}.lock").unlink()
    return {"length": len(bodies), "hash": prev}


def write_label_stores() -> dict:
    """Label stores of format version 2 (labels/sealed-v2.labels under GOLDEN_KEY, and
    labels/plain-v2.labels) for labels/unlabelled.npz. The version-1 stores beside them were
    written by the version-1 writer, which no longer exists: they are kept as they are, never
    regenerated (a sealed record's bytes change on every run: fresh nonces)."""
    from easeml_ci.testsets import load_unlabelled_testset
    from easeml_ci.testsets.crypto import key_from_env
    from easeml_ci.testsets.labels import LabelStore, batch_from_rows

    folder = HERE / "labels"
    ts = load_unlabelled_testset(folder / "unlabelled.npz")
    os.environ[GOLDEN_KEY_ENV] = GOLDEN_KEY
    heads = {}
    for name, key in (("sealed-v2.labels", key_from_env(GOLDEN_KEY_ENV)), ("plain-v2.labels", None)):
        (folder / name).unlink(missing_ok=True)
        store = LabelStore.open(folder / name, ts, key)
        batches = ([[("r0", "cat", 2)], [("r1", "horse", 2), ("r4", "cat", 3)]] if key else
                   [[("r0", "cat", 2), ("r2", "horse", 3)]])
        for rows in batches:
            store.add(batch_from_rows(Path("labels.csv"), rows))
        heads[name] = store.head
    return heads


def write_ledger_v2(fingerprint: str) -> dict:
    """Format v2: register, two checks (reserved, then completed), a third reserved and never
    completed (a run killed after the open: spent, no pass), one alert; every entry MAC'd."""
    from easeml_ci.ledger import auth
    from easeml_ci.testsets.crypto import derive_key, key_from_env

    os.environ[GOLDEN_KEY_ENV] = GOLDEN_KEY
    key = derive_key(key_from_env(GOLDEN_KEY_ENV), "ledger")
    directory = HERE / "ledger-v2"
    shutil.rmtree(directory, ignore_errors=True)
    backend = FileBackend(directory)
    bodies = [
        {"kind": "register", "time": "2026-01-02T03:04:05+00:00", "fingerprint": fingerprint,
         "terms": TERMS, "by": "register", "plan": {"method": "exact", "test_examples": 6},
         "format": 2},
        {"kind": "step", "time": "2026-01-02T04:00:00+00:00", "passed": None, "reserved": True,
         "new": "models/modèle.onnx", "old": None},
        {"kind": "complete", "time": "2026-01-02T04:00:01+00:00", "step": 1, "passed": False},
        {"kind": "step", "time": "2026-01-02T05:00:00+00:00", "passed": None, "reserved": True,
         "new": "models/new.onnx", "old": "models/old.onnx"},
        {"kind": "complete", "time": "2026-01-02T05:00:01+00:00", "step": 3, "passed": True,
         "underpowered": True},
        {"kind": "step", "time": "2026-01-02T06:00:00+00:00", "passed": None, "reserved": True,
         "new": "preds.npy", "old": None},
        {"kind": "alert", "time": "2026-01-02T06:00:01+00:00", "event": "exhausted"},
    ]
    prev, prev_mac = GENESIS, GENESIS
    for seq, body in enumerate(bodies):
        entry = auth.sign(key, fingerprint, prev_mac, seal(body, seq, prev))
        backend.append(fingerprint, entry, seq)
        prev, prev_mac = entry["hash"], entry["mac"]
    (directory / f"{fingerprint}.lock").unlink()
    return {"length": len(bodies), "hash": prev, "mac": prev_mac}


def write_card() -> None:
    (HERE / "model-card.json").write_text(ModelCard(**CARD).to_json(), encoding="utf-8")
    (HERE / "MODEL_CARD.md").write_text(ModelCard(**CARD).to_markdown(), encoding="utf-8")


if __name__ == "__main__":
    fp = write_testsets()
    head = write_ledger(fp)
    head_v2 = write_ledger_v2(fp)
    write_card()
    print(f"LABEL_STORE_HEADS = {write_label_stores()!r}")
    print(f"FINGERPRINT = {fp!r}")
    print(f"LEDGER_HEAD = {head!r}")
    print(f"LEDGER_V2_HEAD = {head_v2!r}")
