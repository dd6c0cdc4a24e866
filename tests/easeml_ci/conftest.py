"""Fixtures of the easeml_ci tests: the fake GitHub, the action's repository, its test set."""
from __future__ import annotations

import os

import numpy as np
import pytest


ORDER_KEY = "b3JkZXIta2V5LW9mLXRoZS10ZXN0LXN1aXRlLTMyYnk="  # 32 bytes, URL-safe base64


@pytest.fixture(autouse=True)
def order_key(monkeypatch):
    """The owner's reading-order secret (EASEML_ORDER_KEY), set as in the owner's jobs: a
    plaintext test set labelled on demand (or a pick's) is read in the order it seeds."""
    monkeypatch.setenv("EASEML_ORDER_KEY", ORDER_KEY)
    return ORDER_KEY


@pytest.fixture
def fake_github():
    from github_fake import FakeGitHub

    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def gh(fake_github):
    from action_harness import PR, REPO

    repo = fake_github.add_repo(REPO)
    # the ledger branch's ruleset (the gate refuses a branch that can be force-pushed or deleted)
    repo.rules["easeml-ledger"] = [{"type": "non_fast_forward"}, {"type": "deletion"}]
    fake_github.add_pull_request(REPO, PR)
    fake_github.add_token("ghs-write")                          # the workflow's GITHUB_TOKEN
    fake_github.add_token("ghs-read", permission="read")        # a fork's read-only token
    return fake_github


ACTION_ROWS = 6000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A test set and three prediction files: new (~95% right), old (~70%), worse (~60%)."""
    from easeml_ci.testsets import crypto
    from easeml_ci.testsets import encrypt_testset, load_testset

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, ACTION_ROWS)

    def model(acc):
        wrong = rng.random(ACTION_ROWS) >= acc
        return np.where(wrong, 1 - y, y)

    X = rng.normal(size=(ACTION_ROWS, 3))
    np.savez(root / "testset.npz", X=X, y=y)
    key = crypto.generate_key()
    encrypt_testset(load_testset(root / "testset.npz", label_column="label", key_env="UNUSED"),
                    root / "testset.enc", _key_bytes(key))
    preds = {"key": key, "encrypted": root / "testset.enc"}
    for name, acc in (("new", 0.95), ("old", 0.70), ("worse", 0.60)):
        preds[name] = root / f"{name}.npy"
        np.save(preds[name], model(acc))
    return {"testset": root / "testset.npz", **preds}


def _key_bytes(text: str) -> bytes:
    from easeml_ci.testsets import crypto

    os.environ["_H3_TEST_KEY"] = text
    try:
        return crypto.key_from_env("_H3_TEST_KEY")
    finally:
        del os.environ["_H3_TEST_KEY"]
