"""The ledger key every test runs with (EASEML_LEDGER_KEY: tests/conftest.py sets it), as text
and as the bytes a :class:`easeml_ci.ledger.Ledger` takes. A test-only key: it protects nothing."""
import base64

TEXT = "bGVkZ2VyLXRlc3Qta2V5LW5vdC1hLXNlY3JldCEhISE="
KEY = base64.urlsafe_b64decode(TEXT)
