"""A sweep of the mistakes a new user makes through both CLIs (issue 20's review tried 148):
each is exit 2 with a message that names the key, file or value at fault, never a traceback,
and nothing is written to a ledger. test_new_user_rows.py holds the ones that once did the
wrong thing; this file keeps the rest from regressing."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from automl_runner.cli import main as automl
from easeml_ci.cli import main
from ledger_test_key import KEY as LEDGER_KEY

LK = {"EASEML_LEDGER_KEY": base64.urlsafe_b64encode(LEDGER_KEY).decode()}
KEY = {"EASEML_TESTSET_KEY": base64.urlsafe_b64encode(bytes(range(32))).decode()}
TS = ["--new", "pred.npy", "--testset", "x.npz"]


def _config(**kw) -> dict:
    return {"condition": "n > 0.6 +/- 0.1", "reliability": 0.9, "steps": 4, **kw}


# (name, cli, args, values, words it must say). "CFG" in args: a config of _config(**values) is
# written and passed with --config, and the run has the ledger key (values {}: the default config).
# values None: no config, no key; "key" / "badkey": EASEML_TESTSET_KEY a good / malformed key.
CASES = [
    ("no config", main, ["check", *TS], {}, [".easeml.yml", "does not exist"]),
    ("missing config", main, ["check", "--config", "nope.yml", *TS], {}, ["nope.yml"]),
    ("YAML syntax", main, ["check", "--config", "bad.yml", *TS], {}, ["bad.yml:2", "YAML"]),
    ("a list", main, ["check", "--config", "list.yml", *TS], {}, ["list.yml", "mapping"]),
    ("empty", main, ["check", "--config", "empty.yml", *TS], {}, ["empty.yml", "empty"]),
    ("+- typo", main, ["check", "CFG", *TS], {"condition": "n > 0.6 +- 0.1"}, ["'+/-'"]),
    ("reliability 1.5", main, ["check", "CFG", *TS], {"reliability": 1.5}, ["reliability", "1.5"]),
    ("reliability text", main, ["check", "CFG", *TS], {"reliability": "high"}, ["'high'"]),
    ("steps 0", main, ["check", "CFG", *TS], {"steps": 0}, ["steps", "got 0"]),
    ("steps -3", main, ["check", "CFG", *TS], {"steps": -3}, ["steps", "-3"]),
    ("adaptivity", main, ["check", "CFG", *TS], {"adaptivity": "fulll"}, ["'fulll'", "firstChange"]),
    ("mode", main, ["check", "CFG", *TS], {"mode": "fp"}, ["'fp'", "fp-free"]),
    ("unknown key", main, ["check", "CFG", *TS], {"reliabilty": 0.9}, ["did you mean 'reliability'"]),
    ("unknown variable", main, ["check", "CFG", *TS], {"condition": "m > 0.6 +/- 0.1"}, ["'m'"]),
    ("tolerance 0", main, ["check", "CFG", *TS], {"condition": "n > 0.6 +/- 0"}, ["tolerance"]),
    ("evaluation_time", main, ["check", "CFG", *TS], {"evaluation_time": "fast"}, ["'fast'"]),
    ("rounds.every", main, ["check", "CFG", *TS], {"rounds": {"every": "1 day"}}, ["rounds.every"]),
    ("missing model", main, ["check", "CFG", "--new", "nope.onnx", "--testset", "x.npz"], {},
     ["nope.onnx"]),
    ("not a model", main, ["check", "CFG", "--new", "garbage.onnx", "--testset", "x.npz"], {},
     ["garbage.onnx"]),
    ("missing test set", main, ["check", "CFG", "--new", "pred.npy", "--testset", "nope.npz"], {},
     ["nope.npz"]),
    ("no labels", main, ["check", "CFG", "--new", "pred.npy", "--testset", "noy.npz"], {},
     ["noy.npz"]),
    ("short predictions", main, ["check", "CFG", "--new", "short.npy", "--testset", "x.npz"], {},
     ["short.npy"]),
    ("no ledger key", main, ["check", "CFG", *TS], {}, ["EASEML_LEDGER_KEY"]),
    ("encrypt, no key", main, ["testset", "encrypt", "x.npz", "x.enc"], None,
     ["EASEML_TESTSET_KEY"]),
    ("encrypt, bad key", main, ["testset", "encrypt", "x.npz", "x.enc"], "badkey",
     ["EASEML_TESTSET_KEY", "base64"]),
    ("decrypt plaintext", main, ["testset", "decrypt", "x.npz", "y.npz"], "key",
     ["x.npz", "not an easeml-ci encrypted"]),
    ("plan steps 0", main, ["plan", "--condition", "n > 0.6 +/- 0.1", "--steps", "0"], None,
     ["--steps"]),
    ("plan reliability 2", main, ["plan", "--condition", "n > 0.6 +/- 0.1", "--reliability", "2"],
     None, ["--reliability"]),
    ("plan condition", main, ["plan", "--condition", "garbage"], None, ["'garbage'"]),
    ("plan --have 0", main, ["plan", "--condition", "n > 0.6 +/- 0.1", "--have", "0"], None,
     ["--have"]),
    ("label a labelled set", main, ["testset", "label", "x.npz", "labels.csv"], {}, ["x.npz"]),
    ("round close", main, ["round", "close", "CFG", "--testset", "x.npz"], {}, ["rounds:"]),
    ("round requests", main, ["round", "requests", "CFG", "--testset", "x.npz"], {}, ["rounds:"]),
    ("pick section", main, ["pick", "CFG", "--testset", "x.npz", "--models", "pred.npy"], {},
     ["pick:"]),
    ("meter section", main, ["meter", "CFG", "--model", "garbage.onnx", "--validation", "x.npz"],
     {}, ["meter:"]),
    ("register missing", main, ["testset", "register", "nope.npz", "CFG"], {}, ["nope.npz"]),
    ("fingerprint missing", main, ["testset", "fingerprint", "nope.npz"], None, ["nope.npz"]),
    ("automl status", automl, ["status", "--store", "nope.db"], None, ["nope.db"]),
    ("automl work", automl, ["work", "--store", "nope.db"], None, ["nope.db"]),
    ("automl submit", automl, ["submit", "--store", "q.db", "--name", "t", "--target", "y", "nope.csv"], None,
     ["nope.csv"]),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mistakes")
    rng = np.random.default_rng(0)
    np.savez(root / "x.npz", X=rng.normal(size=(3000, 3)).astype(np.float32),
             y=rng.integers(0, 2, 3000))
    np.savez(root / "noy.npz", X=rng.normal(size=(3000, 3)).astype(np.float32))
    np.save(root / "pred.npy", rng.integers(0, 2, 3000))
    np.save(root / "short.npy", rng.integers(0, 2, 10))
    (root / "garbage.onnx").write_text("not a model")
    (root / "bad.yml").write_text("condition: [unclosed\n")
    (root / "list.yml").write_text("- a\n- b\n")
    (root / "empty.yml").write_text("")
    (root / "labels.csv").write_text("id,label\n1,0\n")
    return root


@pytest.mark.parametrize("name,cli,args,values,words", CASES, ids=[c[0] for c in CASES])
def test_a_mistake_is_exit_2_naming_what_is_wrong(folder, monkeypatch, name, cli, args, values,
                                                  words):
    monkeypatch.chdir(folder)
    if isinstance(values, dict):
        env = {} if name == "no ledger key" else dict(LK)
    else:
        env = {"badkey": {"EASEML_TESTSET_KEY": "short"}, "key": KEY}.get(values, {})
    if "CFG" in args:
        config = folder / f"c-{abs(hash(name))}.yml"
        config.write_text(yaml.safe_dump(_config(**values), sort_keys=False))
        args = [a if a != "CFG" else "--config" for a in args]
        args.insert(args.index("--config") + 1, str(config))
    for var in ("EASEML_LEDGER_KEY", "EASEML_TESTSET_KEY", "GITHUB_TOKEN", "GITHUB_ACTIONS"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(cli, args, env=env)
    assert not (result.exception and not isinstance(result.exception, SystemExit)), \
        f"{name}: {result.exception!r}"
    assert result.exit_code == 2, (name, result.output)
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (name, word, result.output)
    assert not (folder / ".easeml" / "ledger").exists() or not any(
        (folder / ".easeml" / "ledger").iterdir()), f"{name} wrote a ledger"
