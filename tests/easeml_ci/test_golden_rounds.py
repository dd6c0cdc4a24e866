"""Golden files of verdicts in rounds (issue 17): the pending store's sealed record and the
secret reading order are promises. A registered test set's order must never change (its pending
and decided pairs were read in it), and a pending record sealed by one release must open in the
next, or a round's close could not decide the pairs checked before an upgrade."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from easeml_ci.gate import reading_order
from easeml_ci.testsets import crypto
from easeml_ci.testsets.pending import PendingStore, padded_size

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_KEY = base64.urlsafe_b64decode("Z29sZGVuLXRlc3Qta2V5LW5vdC1hLXNlY3JldCEhISE=")  # test only
FINGERPRINT = "8272563a7f566e34e73cd701613a3532460a8ea045589f0ba238de8dc7ffe3ce"
PAIR = "sha256:" + "ab" * 32


def test_the_reading_order_of_a_key_never_changes():
    secret = crypto.derive_key(GOLDEN_KEY, "reading-order")
    assert reading_order.permutation(secret, 12).tolist() == [7, 5, 10, 6, 11, 2, 1, 0, 4, 8, 3, 9]


def test_the_golden_pending_record_opens_with_its_predictions():
    store = PendingStore(GOLDEN / "pending", GOLDEN_KEY)
    record = store.open(FINGERPRINT, 3, PAIR)
    assert record.round == 2 and not record.model_failed
    assert record.new.tolist() == [0, 2, 1, 1, 0, 2] and record.old.tolist() == [0, 1, 1, 2, 0, 2]
    raw = (GOLDEN / "pending" / "step-000003.sealed").read_bytes()
    assert raw[:8] == b"EASEMLPD" and len(raw) == 8 + 12 + padded_size(6, 0) + 16


def test_a_record_opens_only_as_its_own_step_and_pair(tmp_path):
    import shutil

    import pytest

    from easeml_ci.errors import InputError

    shutil.copy(GOLDEN / "pending" / "step-000003.sealed", tmp_path / "step-000004.sealed")
    store = PendingStore(tmp_path, GOLDEN_KEY)
    with pytest.raises(InputError, match="not the sealed pending record of step 4"):
        store.open(FINGERPRINT, 4, PAIR)  # moved to another step
    with pytest.raises(InputError):
        PendingStore(GOLDEN / "pending", b"\0" * 32).open(FINGERPRINT, 3, PAIR)  # another key


def test_the_size_of_a_record_depends_on_the_rows_only(tmp_path):
    from easeml_ci.testsets.pending import PendingRecord

    store = PendingStore(tmp_path, GOLDEN_KEY)
    sizes = set()
    for step, (new, old, failed) in enumerate([
            (np.zeros(500, np.int64), np.ones(500, np.int64), False),
            (np.arange(500) % 7, np.arange(500) % 3, False),
            (None, None, True)], start=1):
        sizes.add(store.seal(PendingRecord(FINGERPRINT, step, PAIR, 0, new, old, failed),
                             rows=500).stat().st_size)
    assert len(sizes) == 1
