"""Every kind of bad input: exit 2, one line naming the thing, nothing written to the ledger.

One row per case of the gate issue's "Bad input" list (plus the check command's own: a missing
--old, adaptivity none without a private sink). Each row mutates a working scratch repository,
runs `easeml-ci check`, and asserts the exit code, a message fragment and an untouched ledger.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from easeml_ci.testsets import crypto
from easeml_ci.cli import main
from easeml_ci.testsets import encrypt_testset, load_testset

from test_check import ROWS, Gate

KEY_ENV = "EASEML_TEST_BAD_INPUT_KEY"


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> Path:
    """An ONNX model that takes 5 features (the scratch test sets have 3)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    path = tmp_path_factory.mktemp("onnx") / "wide.onnx"
    path.write_bytes(to_onnx(model, X[:1], options={id(model): {"zipmap": False}}).SerializeToString())
    return path


def _encrypted(gate: Gate) -> dict:
    key = crypto.generate_key()
    os.environ[KEY_ENV] = key
    try:
        encrypt_testset(load_testset(gate.root / "ts.npz"), gate.root / "ts.enc",
                        crypto.key_from_env(KEY_ENV))
    finally:
        del os.environ[KEY_ENV]
    return {"testset": "ts.enc", "env": {KEY_ENV: key}}


def _csv(gate: Gate, rows: list[str], header="a,b,c,label") -> dict:
    (gate.root / "ts.csv").write_text("\n".join([header, *rows]) + "\n")
    return {"testset": "ts.csv"}


def _write(name: str, text: str):
    def setup(gate: Gate) -> dict:
        (gate.root / name).write_text(text)
        return {}
    return setup


def _config(**kw):
    def setup(gate: Gate) -> dict:
        gate.config(**kw)
        return {}
    return setup


def _wrong_key(gate):
    args = _encrypted(gate)
    args["env"] = {KEY_ENV: crypto.generate_key()}
    return args


def _no_key(gate):
    args = _encrypted(gate)
    args["env"] = {KEY_ENV: ""}
    return args


def _tampered(gate):
    args = _encrypted(gate)
    path = gate.root / "ts.enc"
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01
    path.write_bytes(bytes(data))
    return args


def _short_predictions(gate):
    np.save(gate.root / "short.npy", np.zeros(ROWS - 1, dtype=np.int64))
    return {"new": "short.npy"}


def _nan_labels(gate):
    X = np.zeros((ROWS, 3), dtype=np.float32)
    y = np.ones(ROWS)
    y[17] = np.nan
    np.savez(gate.root / "nan.npz", X=X, y=y)
    return {"testset": "nan.npz"}


def _empty(gate):
    np.savez(gate.root / "empty.npz", X=np.zeros((0, 3), dtype=np.float32),
             y=np.zeros(0, dtype=np.int64))
    return {"testset": "empty.npz"}


def _wide_onnx(gate, wide_model):
    return {"new": str(wide_model)}


def _directory_testset(gate):
    (gate.root / "adir.npz").mkdir()
    return {"testset": "adir.npz"}


def _corrupt_npz(gate):
    (gate.root / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return {"testset": "corrupt.npz"}


CASES = {
    # configuration
    "malformed YAML": (_write(".easeml.yml", "condition: [n > 0.6\nreliability: 0.9\n"),
                       [".easeml.yml"]),
    "unknown key": (_config(relability=0.9), ["relability", "reliability"]),
    "missing config key": (_write(".easeml.yml", "reliability: 0.9\n"), ["condition"]),
    "condition does not parse": (_config(condition="n > x +/- 0.1"), ["condition", "'x'"]),
    "reliability above 1": (_config(reliability=1.5), ["reliability", "1.5"]),
    "reliability zero": (_config(reliability=0), ["reliability", "0"]),
    "steps below 1": (_config(steps=0), ["steps", "0"]),
    "webhook is not a URL": (_config(alerts={"webhook": "slack"}), ["webhook", "slack"]),
    "none without private sink": (_config(adaptivity="none"), ["private_sink", "'none'"]),
    # files
    "missing config file": (lambda g: {"config": "nope.yml"}, ["nope.yml"]),
    "missing test set": (lambda g: {"testset": "nope.npz"}, ["nope.npz"]),
    "missing model": (lambda g: {"new": "nope.onnx"}, ["nope.onnx"]),
    "test set is a directory": (_directory_testset, ["adir.npz"]),
    "corrupt test set file": (_corrupt_npz, ["corrupt.npz"]),
    "unknown model extension": (_write("model.pkl", "x"), ["model.pkl"], {"new": "model.pkl"}),
    "old model needed but missing": (_config(condition="n - o > 0.02 +/- 0.05"), ["--old", "o"]),
    "old model at an unknown git ref": (_config(condition="n - o > 0.02 +/- 0.05"),
                                        ["git:no-such-ref:old.npy", "no-such-ref"],
                                        {"old": "git:no-such-ref:old.npy"}),
    # encryption
    "wrong key": (_wrong_key, ["ts.enc"]),
    "missing decryption key": (_no_key, [KEY_ENV]),
    "tampered ciphertext": (_tampered, ["ts.enc"]),
    # shapes and labels
    "ONNX input does not fit": ("wide_onnx", ["wide.onnx", "5", "3"]),
    "predictions of the wrong length": (_short_predictions, ["short.npy", str(ROWS - 1), str(ROWS)]),
    "NaN labels": (_nan_labels, ["nan.npz"]),
    "missing label in CSV": (lambda g: _csv(g, ["1,2,3,1", "1,2,3,", "1,2,3,0"]), ["ts.csv"]),
    "empty test set": (_empty, ["empty.npz"]),
    "label column does not exist": (lambda g: _csv(g, ["1,2,3,1"], header="a,b,c,target"),
                                    ["ts.csv", "label"]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_exits_2_names_the_thing_and_writes_nothing(case, tmp_path, monkeypatch, wide_model):
    monkeypatch.chdir(tmp_path)
    gate = Gate(tmp_path)
    setup, fragments, *fixed = CASES[case]
    args = _wide_onnx(gate, wide_model) if setup == "wide_onnx" else setup(gate)
    args.update(fixed[0] if fixed else {})
    env = {KEY_ENV: "", **args.get("env", {})}
    cli = ["check", "--config", args.get("config", ".easeml.yml"), "--new", args.get("new", "good.npy"),
           "--testset", args.get("testset", "ts.npz"), "--key-env", KEY_ENV]
    if "old" in args:
        cli += ["--old", args["old"]]
    result = CliRunner().invoke(main, cli, env=env)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.rstrip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    # progress lines, the error, and at most a quoted condition with its caret under it
    assert all(line.startswith("... ") for line in lines[:errors[0]])
    assert all(line.startswith("    ") for line in lines[errors[0] + 1:])
    message = "\n".join(lines[errors[0]:])
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert result.stdout == ""
    assert not (tmp_path / ".easeml").exists()  # nothing written: no ledger, no lock file


def test_json_on_bad_input_prints_one_error_object(tmp_path, monkeypatch):
    import json as _json

    from click.testing import CliRunner

    from easeml_ci.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".easeml.yml").write_text("condition: n > 0.8 +/- 0.05\nreliability: 1.5\n")
    result = CliRunner().invoke(main, ["check", "--new", "m.npy", "--testset", "t.npz", "--json"])
    assert result.exit_code == 2
    out = _json.loads(result.stdout)  # exactly one object on stdout
    assert out["verdict"] is None and out["exit_code"] == 2 and out["error"] == "config"
    assert "reliability" in out["message"] and "1.5" in out["message"]
    assert not (tmp_path / ".easeml").exists()
