"""The AutoML store under test: a SQLite file, and a fresh schema on the local PostgreSQL."""
from __future__ import annotations

import os
import uuid

import pytest

from automl_runner.store import open_store

PG_URL = os.environ.get("EASEML_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    import psycopg

    try:
        psycopg.connect(PG_URL, connect_timeout=5).close()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_URL} is required for the AutoML store tests: {exc}")
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema=automl_t_{uuid.uuid4().hex[:12]}"
    yield url
    s = open_store(url, create=False)
    s.drop_all()
    s.close()
