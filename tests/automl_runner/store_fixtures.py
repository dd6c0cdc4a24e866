"""The PostgreSQL server the AutoML store tests use (the ``store_url`` fixture is in conftest.py)."""
from __future__ import annotations

import os
import uuid

import pytest

PG_URL = os.environ.get("EASEML_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_store_url() -> str:
    """A fresh schema on the test server; fails the test when PostgreSQL cannot be reached."""
    import psycopg

    try:
        psycopg.connect(PG_URL, connect_timeout=5).close()
    except Exception as exc:  # noqa: BLE001 - any connection failure fails the test
        pytest.fail(f"PostgreSQL at {PG_URL} is required for the AutoML store tests: {exc}")
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema=automl_t_{uuid.uuid4().hex[:12]}"
