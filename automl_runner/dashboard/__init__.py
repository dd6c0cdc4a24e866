"""The read-only dashboard of the AutoML queue and the test-set ledgers (the `dashboard` extra).

``create_app(store_url, config_path=None, token=None)`` is the Flask app; ``easeml-automl
dashboard`` serves it with waitress.
"""
from .app import create_app, is_loopback

__all__ = ["create_app", "is_loopback"]
