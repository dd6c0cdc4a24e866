"""What every test module shares: Hypothesis's profiles and the fixtures more than one module uses.

Hypothesis runs 100 examples a property by default and 1,000 under CI (``CI=true``, as GitHub
Actions and ``.ci/run`` set it); ``HYPOTHESIS_PROFILE=ci`` picks the CI profile by hand. Neither
has a deadline: how long one example takes is no assertion of these tests (``bench/`` measures
speed). The slow tests (``-m slow``: the Monte Carlo runs through the CLI) are left out of
``make test`` and run by ``make test-slow`` and ``.ci/run``.

Fixtures (helpers that are plain modules stay importable from ``tests/``):

* ``fake_github``: a running :class:`github_fake.FakeGitHub`, stopped after the test.
* ``store_url``: the AutoML store under test, once a SQLite file and once a fresh schema on the
  local PostgreSQL (``store_fixtures.PG_URL``), dropped after the test.
"""
from __future__ import annotations

import os

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
