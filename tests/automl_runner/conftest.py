"""Fixtures of the AutoML queue's tests: the store under test, SQLite and PostgreSQL."""
from __future__ import annotations

import pytest


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
