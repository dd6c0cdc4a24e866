"""Test sets, keys and the CLI for the test-set, crypto, label and model tests: plain helpers (the
shared fixtures are in conftest.py)."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner

KEY_ENV = "EASEML_TESTSET_KEY"


def arrays(rows: int = 40, features: int = 3, seed: int = 0, classes: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    y = rng.integers(0, classes, size=rows)
    return X, y


def write_npz(path: Path, **arrays_) -> Path:
    np.savez(path, **arrays_)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def cli(args: list[str], env: dict[str, str | None] | None = None):
    """Run `easeml-ci ARGS` in-process; returns click's Result (exit_code, stdout, stderr)."""
    from easeml_ci.cli import main

    runner = CliRunner()
    return runner.invoke(main, args, env=env or {}, catch_exceptions=False)
