"""What every test module shares: Hypothesis's profiles and the fixtures more than one module uses.

Hypothesis runs 100 examples a property by default and 1,000 under CI (``CI=true``, as GitHub
Actions and ``.ci/run`` set it); ``HYPOTHESIS_PROFILE=ci`` picks the CI profile by hand. Neither
has a deadline: how long one example takes is no assertion of these tests (``bench/`` measures
speed). The slow tests (``-m slow``: the Monte Carlo runs through the CLI) are left out of
``make test`` and run by ``make test-slow`` and ``.ci/run``.

Fixtures (helpers that are plain modules stay importable from ``tests/``):

* ``fake_github``: a running :class:`github_fake.FakeGitHub`, stopped after the test.
* ``gh``: ``fake_github`` holding the action's repository and pull request
  (``action_harness.REPO``, ``PR``) and two tokens, ``ghs-write`` and the read-only ``ghs-read``.
* ``data`` (one per module): the action tests' test set (6,000 rows, plain and encrypted under
  ``data["key"]``) and three prediction files: new (~95% right), old (~70%), worse (~60%).
* ``store_url``: the AutoML store under test, once a SQLite file and once a fresh schema on the
  local PostgreSQL (``store_fixtures.PG_URL``), dropped after the test.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "default"))


@pytest.fixture
def fake_github():
    from github_fake import FakeGitHub

    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def gh(fake_github):
    from action_harness import PR, REPO

    fake_github.add_repo(REPO)
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


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    from automl_runner.store import open_store
    from store_fixtures import pg_store_url

    url = pg_store_url()
    yield url
    s = open_store(url, create=False)
    s.drop_all()
    s.close()
