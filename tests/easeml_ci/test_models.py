"""Model evaluation: ONNX (skl2onnx conventions), prediction files, git:REF:PATH, bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from testset_files import write_npz
from easeml_ci.errors import InputError
from easeml_ci.models import OnnxModel, bare_inference, load_predictions
from easeml_ci.testsets import load_pool, load_testset


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import make_classification

    X, y = make_classification(300, 6, n_informative=4, n_classes=3, random_state=1)
    return X.astype(np.float32), y


@pytest.fixture
def testset(tmp_path, data):
    X, y = data
    return load_testset(write_npz(tmp_path / "t.npz", X=X, y=y))


def _to_onnx(model, X, path: Path, zipmap=False, double=False) -> Path:
    from skl2onnx import to_onnx

    sample = X[:1].astype(np.float64) if double else X[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = to_onnx(model, sample, options={id(model): {"zipmap": zipmap}})
    path.write_bytes(onx.SerializeToString())
    return path


@pytest.fixture(scope="module")
def fitted(data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    X, y = data
    return {
        "logreg": LogisticRegression(max_iter=500).fit(X, y),
        "tree": DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y),
    }


# --- ONNX ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["logreg", "tree"])
@pytest.mark.parametrize("zipmap", [False, True], ids=["tensor-output", "zipmap-output"])
def test_onnx_predictions_equal_sklearn(tmp_path, data, fitted, testset, name, zipmap):
    X, _ = data
    path = _to_onnx(fitted[name], X, tmp_path / "m.onnx", zipmap=zipmap)
    preds = load_predictions(str(path), testset, batch_size=64)
    assert preds.dtype == np.int64 and preds.shape == (len(testset),)
    np.testing.assert_array_equal(preds, fitted[name].predict(X))


def test_zipmap_is_cut_out_before_the_session_is_built(tmp_path, data, fitted):
    X, _ = data
    path = _to_onnx(fitted["logreg"], X, tmp_path / "m.onnx", zipmap=True)
    assert "ZipMap" in {n.op_type for n in onnx.load(path).graph.node}
    model = OnnxModel(path, str(path))
    kinds = [o.type for o in model.session.get_outputs()]
    assert all(k.startswith("tensor(") for k in kinds)
    assert model.output_rule == "label"


def test_text_class_labels_and_double_input(tmp_path, data):
    from sklearn.linear_model import LogisticRegression

    X, y = data
    names = np.array(["ant", "bee", "cat"])[y]
    model = LogisticRegression(max_iter=500).fit(X.astype(np.float64), names)
    path = _to_onnx(model, X, tmp_path / "m.onnx", double=True)
    ts = load_testset(write_npz(tmp_path / "s.npz", X=X, y=names))
    preds = load_predictions(str(path), ts, batch_size=50)
    assert preds.tolist() == model.predict(ts.X.astype(np.float64)).tolist()


def _score_model(path: Path, W: np.ndarray) -> Path:
    """A bare ONNX graph with one float score output [N, k] and no label output."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["scores"])],
        "scores_only",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, W.shape[0]])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, W.shape[1]])],
        initializer=[numpy_helper.from_array(W, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_argmax_of_scores_when_declared(tmp_path, data, testset):
    X, _ = data
    W = np.random.default_rng(0).normal(size=(X.shape[1], 4)).astype(np.float32)
    path = _score_model(tmp_path / "scores.onnx", W)
    preds = load_predictions(str(path), testset, batch_size=7, output="argmax")
    np.testing.assert_array_equal(preds, np.argmax(X @ W, axis=1))
    with pytest.raises(InputError, match=r"holds 4 scores per example, not a label; .*`output: argmax`"):
        load_predictions(str(path), testset)


def test_batch_size_does_not_change_predictions(tmp_path, data, fitted, testset):
    X, _ = data
    path = _to_onnx(fitted["tree"], X, tmp_path / "m.onnx")
    whole = load_predictions(str(path), testset, batch_size=10_000)
    calls = []
    pieces = load_predictions(str(path), testset, batch_size=13, progress=lambda d, n: calls.append((d, n)))
    np.testing.assert_array_equal(whole, pieces)
    assert calls[-1] == (len(testset), len(testset)) and len(calls) == -(-len(testset) // 13)
    np.testing.assert_array_equal(bare_inference(path, testset.X), whole)


# --- prediction files ------------------------------------------------------------------------------

def test_prediction_files_csv_with_and_without_header_and_npy(tmp_path, data, testset):
    _, y = data
    preds = (y + 1) % 3
    (tmp_path / "h.csv").write_text("prediction\n" + "\n".join(map(str, preds)) + "\n")
    (tmp_path / "n.csv").write_text("\n".join(f"{p}.0" for p in preds))
    np.save(tmp_path / "p.npy", preds.astype(np.int32))
    scores = np.eye(3)[preds] * 0.8 + 0.1
    np.save(tmp_path / "s.npy", scores)
    for name in ("h.csv", "n.csv", "p.npy", "s.npy"):
        got = load_predictions(str(tmp_path / name), testset,
                               output="argmax" if name == "s.npy" else None)
        assert got.dtype == np.int64, name
        np.testing.assert_array_equal(got, preds)


def test_text_predictions_with_header_detected_by_length(tmp_path, data):
    X, y = data
    names = np.array(["ant", "bee", "cat"])[y]
    ts = load_testset(write_npz(tmp_path / "s.npz", X=X, y=names))
    (tmp_path / "p.csv").write_text("species\n" + "\n".join(names) + "\n")
    (tmp_path / "q.csv").write_text("\n".join(names) + "\n")
    for name in ("p.csv", "q.csv"):
        assert load_predictions(str(tmp_path / name), ts).tolist() == names.tolist()


# --- git:REF:PATH ----------------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
                        "PATH": "/usr/bin:/bin", "HOME": str(repo)})


def test_git_ref_path_reads_the_file_as_it_is_on_that_ref(tmp_path, data, fitted, testset):
    X, _ = data
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _to_onnx(fitted["logreg"], X, repo / "models" / "model.onnx")
    np.savetxt(repo / "models" / "preds.csv", fitted["logreg"].predict(X), fmt="%d")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "old model")
    _to_onnx(fitted["tree"], X, repo / "models" / "model.onnx")  # the working tree moves on
    _git(repo, "commit", "-q", "-am", "new model")
    old = load_predictions("git:HEAD~1:models/model.onnx", testset, repo=repo)
    new = load_predictions("git:main:models/model.onnx", testset, repo=repo)
    np.testing.assert_array_equal(old, fitted["logreg"].predict(X))
    np.testing.assert_array_equal(new, fitted["tree"].predict(X))
    from_csv = load_predictions("git:HEAD~1:models/preds.csv", testset, repo=repo)
    np.testing.assert_array_equal(from_csv, old)
    before = set(tmp_path.rglob("*"))
    load_predictions("git:HEAD~1:models/model.onnx", testset, repo=repo)
    assert set(tmp_path.rglob("*")) == before  # nothing written


# --- bad input -------------------------------------------------------------------------------------

def _bad_width(tmp, data, fitted):
    X, y = data
    path = _to_onnx(fitted["logreg"], X, tmp / "m.onnx")
    ts = load_testset(write_npz(tmp / "wide.npz", X=np.hstack([X, X[:, :2]]), y=y))
    return str(path), ts, ["expects 6 features", "has 8"]


def _short_predictions(tmp, data, fitted):
    X, y = data
    np.save(tmp / "p.npy", y[:-5])
    return str(tmp / "p.npy"), None, ["have 295 rows", "has 300 examples"]


def _long_csv_predictions(tmp, data, fitted):
    X, y = data
    (tmp / "p.csv").write_text("\n".join(map(str, np.concatenate([y, y[:3]]))))
    return str(tmp / "p.csv"), None, ["have 303 rows", "has 300 examples"]


def _corrupt_onnx(tmp, data, fitted):
    (tmp / "m.onnx").write_bytes(b"\x08\x07garbage that is not protobuf")
    return str(tmp / "m.onnx"), None, ["cannot load ONNX model", "m.onnx"]


def _missing_model(tmp, data, fitted):
    return str(tmp / "absent.onnx"), None, ["absent.onnx does not exist"]


def _unknown_extension(tmp, data, fitted):
    (tmp / "model.pkl").write_bytes(b"\x80\x04")
    return str(tmp / "model.pkl"), None, ["'.pkl'", ".onnx, .csv, .npy"]


def _two_column_csv(tmp, data, fitted):
    (tmp / "p.csv").write_text("id,pred\n1,0\n2,1\n")
    return str(tmp / "p.csv"), None, ["more than one column"]


def _blank_prediction(tmp, data, fitted):
    _, y = data
    lines = list(map(str, y))
    lines[10] = ""
    (tmp / "p.csv").write_text("\n".join(lines) + "\n")
    return str(tmp / "p.csv"), None, ["empty line", "line 11"]


def _pickled_npy(tmp, data, fitted):
    np.save(tmp / "p.npy", np.array([{"a": 1}] * 300, dtype=object), allow_pickle=True)
    return str(tmp / "p.npy"), None, ["pickled"]


def _git_repo(tmp):
    repo = tmp / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.csv").write_text("0\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "x")
    return repo


def _git_unknown_ref(tmp, data, fitted):
    return "git:no-such-branch:a.csv", _git_repo(tmp), ["'no-such-branch'", "a.csv"]


def _git_unknown_path(tmp, data, fitted):
    return "git:main:models/nope.onnx", _git_repo(tmp), ["models/nope.onnx", "'main'"]


def _git_malformed(tmp, data, fitted):
    return "git:main", _git_repo(tmp), ["git:REF:PATH"]


BAD_MODELS = {
    "ONNX input width differs from the test set": _bad_width,
    "predictions shorter than the test set (npy)": _short_predictions,
    "predictions longer than the test set (csv)": _long_csv_predictions,
    "corrupt ONNX file": _corrupt_onnx,
    "missing model file": _missing_model,
    "unknown model extension": _unknown_extension,
    "predictions CSV with two columns": _two_column_csv,
    "blank line among predictions": _blank_prediction,
    "pickled npy": _pickled_npy,
    "git: unknown ref": _git_unknown_ref,
    "git: unknown path": _git_unknown_path,
    "git: spec without a path": _git_malformed,
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_is_an_input_error_naming_the_problem(tmp_path, data, fitted, testset, case):
    spec, extra, fragments = BAD_MODELS[case](tmp_path, data, fitted)
    kwargs = {}
    ts = testset
    if isinstance(extra, Path):
        kwargs["repo"] = extra
    elif extra is not None:
        ts = extra
    with pytest.raises(InputError) as info:
        load_predictions(spec, ts, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert info.value.exit_code == 2


def _graph_model(path: Path, inputs, output_shape, nodes, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, output_shape)],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("case", ["two inputs", "3-D input", "dynamic width, wrong at run time"])
def test_onnx_inputs_that_do_not_fit_are_input_errors(tmp_path, testset, case):
    if case == "two inputs":
        path = _graph_model(tmp_path / "m.onnx",
                            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 3]),
                             helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 3])],
                            [None, 3], [helper.make_node("Add", ["a", "b"], ["out"])])
        fragment = "has 2 inputs (a, b)"
    elif case == "3-D input":
        path = _graph_model(tmp_path / "m.onnx",
                            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 6, 1])],
                            [None, 6, 1], [helper.make_node("Identity", ["a"], ["out"])])
        fragment = "2-D [examples, features]"
    else:
        W = np.ones((4, 2), np.float32)  # needs 4 features, declares an unknown width
        path = _graph_model(tmp_path / "m.onnx",
                            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, None])],
                            [None, 2], [helper.make_node("MatMul", ["a", "W"], ["out"])],
                            [numpy_helper.from_array(W, "W")])
        fragment = "on synthetic input (2 rows x 6 features of zeros; no test data involved), fails"
    with pytest.raises(InputError, match=fragment.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_predictions(str(path), testset)


def test_wide_inputs_get_smaller_batches(tmp_path):
    from easeml_ci.models import onnx as models_onnx

    rows, width = 600, 4096  # 16 KiB per row: the 32 MiB cap allows 2,048 rows per call
    X = np.random.default_rng(0).normal(size=(rows, width)).astype(np.float32)
    W = np.random.default_rng(1).normal(size=(width, 3)).astype(np.float32)
    path = _score_model(tmp_path / "wide.onnx", W)
    calls = []
    model = OnnxModel(path, "wide.onnx", output="argmax")
    cap = models_onnx._MAX_BATCH_INPUT_BYTES
    models_onnx._MAX_BATCH_INPUT_BYTES = 256 * width * 4  # 256 rows per call, to keep the test small
    try:
        preds = model.predict(X, progress=lambda d, n: calls.append(d))
    finally:
        models_onnx._MAX_BATCH_INPUT_BYTES = cap
    assert calls == [256, 512, 600]
    np.testing.assert_array_equal(preds, np.argmax(X @ W, axis=1))


def test_demo_data_builder_keeps_its_promises(tmp_path, monkeypatch):
    """examples/make_demo_data.py: what examples/demo.sh relies on (files, key, model order)."""
    out = tmp_path / "demo"
    monkeypatch.delenv("EASEML_DEMO_KEY", raising=False)
    done = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "examples" / "make_demo_data.py"),
                           str(out), "--rows", "4000", "--pool-rows", "300", "--key-env", "EASEML_DEMO_KEY"],
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "EASEML_DEMO_KEY"})
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"testset.npz", "testset.enc", "pool.npz", "key.txt",
                                               "old.onnx", "new.onnx", "worse.onnx"}
    assert (out / "key.txt").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("EASEML_DEMO_KEY", (out / "key.txt").read_text().strip())
    ts = load_testset(out / "testset.enc", key_env="EASEML_DEMO_KEY")
    assert len(ts) == 4000 and ts.fingerprint == load_testset(out / "testset.npz").fingerprint
    assert load_pool(out / "pool.npz").shape == (300, ts.n_features)
    acc = {m: float(np.mean(load_predictions(str(out / f"{m}.onnx"), ts) == ts.y))
           for m in ("old", "new", "worse")}
    # n - o > 0.02 +/- 0.02 must pass reliably (needs > 0.06) and fail for worse; n > 0.8 +/- 0.05
    # must pass for new (needs > 0.9) and fail for worse.
    assert acc["new"] - acc["old"] > 0.1, acc
    assert acc["worse"] < acc["old"] and acc["worse"] < 0.75 and acc["new"] > 0.92, acc


@pytest.mark.parametrize("case", ["missing model file", "unknown model extension", "git: unknown ref",
                                  "git: unknown path", "git: spec without a path"])
def test_model_specs_are_validated_up_front_without_running_them(tmp_path, data, fitted, case):
    from easeml_ci.models import validate_model_spec

    spec, extra, fragments = BAD_MODELS[case](tmp_path, data, fitted)
    repo = extra if isinstance(extra, Path) else tmp_path
    with pytest.raises(InputError) as info:
        validate_model_spec(spec, repo)
    assert all(f in str(info.value) for f in fragments), str(info.value)


def test_valid_model_specs_pass_validation(tmp_path, data, fitted):
    from easeml_ci.models import validate_model_spec

    repo = _git_repo(tmp_path)
    validate_model_spec("git:main:a.csv", repo)
    validate_model_spec(str(_to_onnx(fitted["tree"], data[0], tmp_path / "m.onnx")), repo)


def test_predictions_of_another_kind_than_the_labels_are_refused_or_converted(tmp_path, data, testset):
    X, y = data
    (tmp_path / "words.csv").write_text("\n".join(["cat"] * len(y)) + "\n")
    with pytest.raises(InputError, match="are text .* numeric labels"):
        load_predictions(str(tmp_path / "words.csv"), testset)
    np.save(tmp_path / "digits.npy", np.array([str(v) for v in y]))  # text that holds numbers
    np.testing.assert_array_equal(load_predictions(str(tmp_path / "digits.npy"), testset), y)
    text_ts = load_testset(write_npz(tmp_path / "s.npz", X=X, y=np.array(["a", "b", "c"])[y]))
    np.save(tmp_path / "ints.npy", y)
    with pytest.raises(InputError, match="are numbers but .* text labels"):
        load_predictions(str(tmp_path / "ints.npy"), text_ts)
