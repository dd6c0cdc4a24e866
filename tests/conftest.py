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


# The ledger key of plaintext test sets (EASEML_LEDGER_KEY, easeml_ci.ledger.auth): every test
# runs with one, as a configured gate does; a test of its absence deletes it.
@pytest.fixture(autouse=True)
def ledger_key(monkeypatch):
    from ledger_test_key import TEXT

    monkeypatch.setenv("EASEML_LEDGER_KEY", TEXT)
    return TEXT
