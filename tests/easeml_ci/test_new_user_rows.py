"""Mistakes a new user makes (issue 20's review: 148 tried through the CLIs), each of which did
the wrong thing silently or crashed. Each is now exit 2 with a message naming the key, file or
value, no traceback, and nothing written."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from easeml_ci.cli import main

ROWS = 3000


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", X=rng.normal(size=(ROWS, 3)).astype(np.float32),
             y=rng.integers(0, 2, ROWS))
    return tmp_path


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def refused(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


def config(folder, **values):
    cfg = {"condition": "n > 0.6 +/- 0.1", "reliability": 0.9, "steps": 4, **values}
    (folder / ".easeml.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_register_under_none_without_a_private_sink(folder):
    config(folder, adaptivity="none")
    refused(run("testset", "register", "x.npz"), ".easeml.yml:", "adaptivity", "'none'",
            "private_sink")
    assert not (folder / ".easeml").exists()


def test_zero_typed_for_o_is_refused_with_a_hint(folder):
    config(folder, condition="n - 0 > 0.02 +/- 0.01")
    refused(run("testset", "register", "x.npz"), "condition", "did you mean o")
    refused(run("plan", "--condition", "n - 0 > 0.02 +/- 0.01"), "did you mean o")
    assert not (folder / ".easeml").exists()


def test_repository_ledger_with_a_file_ledger_in_the_config(folder):
    config(folder, ledger={"path": ".easeml/ledger"})
    refused(run("testset", "register", "x.npz", "--repository-ledger",
                env={"GITHUB_REPOSITORY": "acme/models", "GITHUB_TOKEN": None}),
            "--repository-ledger", "ledger", "file ledger")
    assert not (folder / ".easeml").exists()


def test_repository_ledger_without_a_token(folder):
    config(folder)
    refused(run("testset", "register", "x.npz", "--repository-ledger",
                env={"GITHUB_REPOSITORY": "acme/models", "GITHUB_TOKEN": None,
                     "INPUT_GITHUB_TOKEN": None}), "GITHUB_TOKEN")
    assert not (folder / ".easeml").exists()


@pytest.mark.parametrize("out", ["testsets/current.enc", "a/b/current.enc"])
def test_encrypt_into_a_missing_folder(folder, out):
    from testset_files import KEY_ENV, new_key

    refused(run("testset", "encrypt", "x.npz", out, env={KEY_ENV: new_key()}),
            f"the folder {out.rsplit('/', 1)[0]} does not exist", "mkdir -p")
    assert not (folder / "testsets").exists()


def test_decrypt_into_a_missing_folder(folder):
    from testset_files import KEY_ENV, new_key

    key = new_key()
    assert run("testset", "encrypt", "x.npz", "x.enc", env={KEY_ENV: key}).exit_code == 0
    refused(run("testset", "decrypt", "x.enc", "plain/x.npz", env={KEY_ENV: key}),
            "the folder plain does not exist")
