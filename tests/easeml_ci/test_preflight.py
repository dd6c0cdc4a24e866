"""What a model may show before and after the test set is opened (issue 12), raw scores are not
labels (issue 11 item 3), and ONNX files as people export them (issue 11 item 12)."""
from __future__ import annotations

import re
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from testset_files import write_npz
from easeml_ci.testsets import crypto
from easeml_ci.config import parse_config
from easeml_ci.errors import ConfigError, EasemlError, InputError, ModelFailedOnTestSet, UsageError
from easeml_ci.models import (OnnxModel, OutputRule, TestSetSchema, load_predictions, preflight)
from easeml_ci.testsets import encrypt_testset, load_testset

F = 6


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import make_classification

    X, y = make_classification(400, F, n_informative=4, random_state=3)
    return X.astype(np.float32), y


@pytest.fixture
def testset(tmp_path, data):
    X, y = data
    return load_testset(write_npz(tmp_path / "t.npz", X=X, y=y))


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _graph(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def _features(shape=(None, F)):
    return [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(shape))]


def _int(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _first_feature_nodes():
    """x0 = X[:, 0] as a 1-D float tensor, and x00 = X[0, 0] as a [1] float tensor."""
    return [
        helper.make_node("Slice", ["X", "zero", "one", "one"], ["col"]),        # X[:, 0:1]
        helper.make_node("Reshape", ["col", "minus_one"], ["x0"]),               # [N]
        helper.make_node("Slice", ["x0", "zero", "one", "zero"], ["x00"]),       # [1]
    ], [_int("zero", [0]), _int("one", [1]), _int("minus_one", [-1])]


def _length_attack(path: Path) -> Path:
    """An output of n + floor(X[0,0] / 1000) labels: right on made-up rows, and on the test set
    a shape that spells out the first secret feature (issue 12's report)."""
    nodes, inits = _first_feature_nodes()
    nodes += [
        helper.make_node("Div", ["x00", "thousand"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["k"], to=TensorProto.INT64),
        helper.make_node("Shape", ["X"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one", "zero"], ["n"]),
        helper.make_node("Add", ["n", "k"], ["length"]),
        helper.make_node("ConstantOfShape", ["length"], ["label"],
                         value=numpy_helper.from_array(np.array([0], np.int64))),
    ]
    inits.append(numpy_helper.from_array(np.array([1000.0], np.float32), "thousand"))
    return _graph(path, nodes, _features(), [helper.make_tensor_value_info("label", TensorProto.INT64, [None])], inits)


def _crash_attack(path: Path) -> Path:
    """Reshapes to a size taken from X[0,0]: fine on made-up rows, an onnxruntime error that
    quotes the secret number on the test set."""
    nodes, inits = _first_feature_nodes()
    nodes += [
        helper.make_node("Div", ["x00", "thousand"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["k"], to=TensorProto.INT64),
        helper.make_node("Add", ["k", "minus_one"], ["dim"]),                   # -1 on made-up rows
        helper.make_node("Reshape", ["x0", "dim"], ["flat"]),
        helper.make_node("Cast", ["flat"], ["label"], to=TensorProto.INT64),
    ]
    inits.append(numpy_helper.from_array(np.array([1000.0], np.float32), "thousand"))
    return _graph(path, nodes, _features(), [helper.make_tensor_value_info("label", TensorProto.INT64, [None])], inits)


def _nan_on_test(path: Path) -> Path:
    """0 * sqrt(1000 - X[:,0]): 0 on made-up rows, NaN where a feature is over 1000."""
    nodes, inits = _first_feature_nodes()
    nodes += [helper.make_node("Sub", ["thousand", "x0"], ["d"]),
              helper.make_node("Sqrt", ["d"], ["root"]),
              helper.make_node("Mul", ["root", "nought"], ["score"])]
    inits += [numpy_helper.from_array(np.array([1000.0], np.float32), "thousand"),
              numpy_helper.from_array(np.array([0.0], np.float32), "nought")]
    return _graph(path, nodes, _features(), [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])], inits)


def _half_on_test(path: Path) -> Path:
    """0.5 where X[:,0] > 1000, else 0: whole numbers on made-up rows, scores on the test set."""
    nodes, inits = _first_feature_nodes()
    nodes += [helper.make_node("Greater", ["x0", "thousand"], ["big"]),
              helper.make_node("Cast", ["big"], ["bigf"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["bigf", "half"], ["score"])]
    inits += [numpy_helper.from_array(np.array([1000.0], np.float32), "thousand"),
              numpy_helper.from_array(np.array([0.5], np.float32), "half")]
    return _graph(path, nodes, _features(), [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])], inits)


ATTACKS = {"output length from X[0,0]": _length_attack,
           "onnxruntime error quoting X[0,0]": _crash_attack,
           "NaN on the test data": _nan_on_test,
           "scores only on the test data": _half_on_test}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_failure_on_the_test_set_shows_a_fixed_message(tmp_path, monkeypatch, data, attack):
    X, y = data
    X = X.copy()
    X[0, 0], X[:, 0] = 0, np.abs(X[:, 0]) + 2000   # every first feature > 1000 ...
    X[0, 0] = 101257.0                              # ... and the first one is the secret to leak
    ts = load_testset(write_npz(tmp_path / "t.npz", X=X, y=y))
    monkeypatch.chdir(tmp_path)
    ATTACKS[attack](tmp_path / "attack.onnx")
    model = preflight("attack.onnx", n_features=F, label_kind="integer")  # made-up rows: fine
    with pytest.raises(ModelFailedOnTestSet) as info:
        load_predictions(model, ts)
    err = info.value
    assert str(err) == "model attack.onnx could not be evaluated on the test set"
    assert not re.search(r"\d", str(err)) and err.exit_code == 1
    assert isinstance(err, EasemlError) and not isinstance(err, UsageError)
    assert "attack.onnx" in err.detail and "t.npz" in err.detail  # the owner's private text
    leak = {"output length from X[0,0]": "shape (501,) for 400 examples",  # n + 101
            "onnxruntime error quoting X[0,0]": "100",                       # the Reshape dim
            "NaN on the test data": "NaN", "scores only on the test data": "such as 0.5"}[attack]
    assert leak in err.detail, err.detail  # what the team would have read
    # the same through a spec, without preflight first
    with pytest.raises(ModelFailedOnTestSet, match="^model attack.onnx could not be evaluated"):
        load_predictions("attack.onnx", ts)


def test_wrong_feature_count_is_refused_before_anything_is_decrypted(tmp_path, monkeypatch, data):
    from sklearn.linear_model import LogisticRegression
    from skl2onnx import to_onnx

    X, y = data
    key = crypto.generate_key()
    monkeypatch.setenv("EASEML_TESTSET_KEY", key)
    plain = load_testset(write_npz(tmp_path / "t.npz", X=X, y=y))
    enc = tmp_path / "t.enc"
    encrypt_testset(plain, enc, crypto.key_from_env())
    registered = TestSetSchema.of(plain).to_dict()   # what registration can pin, no data in it
    assert registered == {"n_features": F, "label_kind": "integer", "n_examples": 400,
                          "feature_dtype": "<f4"}
    decrypted = []
    real = crypto.decrypt_into_sink
    monkeypatch.setattr(crypto, "decrypt_into_sink",
                        lambda *a, **k: decrypted.append(a[0]) or real(*a, **k))

    def gate(spec: Path) -> np.ndarray:  # the order a check keeps: preflight, decrypt, evaluate
        schema = TestSetSchema.from_dict(registered)
        model = preflight(str(spec), n_features=schema.n_features, label_kind=schema.label_kind,
                          n_examples=schema.n_examples, feature_dtype=schema.feature_dtype)
        return load_predictions(model, load_testset(enc))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        narrow = LogisticRegression().fit(X[:, :4], y)
        (tmp_path / "narrow.onnx").write_bytes(to_onnx(narrow, X[:1, :4]).SerializeToString())
        right = LogisticRegression().fit(X, y)
        (tmp_path / "right.onnx").write_bytes(to_onnx(right, X[:1]).SerializeToString())
    with pytest.raises(InputError, match="expects 4 features but the test set has 6"):
        gate(tmp_path / "narrow.onnx")
    assert decrypted == []
    np.testing.assert_array_equal(gate(tmp_path / "right.onnx"), right.predict(X))
    assert len(decrypted) == 1  # the spy sees decryptions when they happen


# --- refused by preflight, before anything is spent ----------------------------------------

def _logit_model(path: Path, w: np.ndarray, b: float, shape=(None, F), out_shape=(None, 1)) -> Path:
    nodes = [helper.make_node("MatMul", ["X", "w"], ["z"]), helper.make_node("Add", ["z", "b"], ["logit"])]
    return _graph(path, nodes, _features(shape),
                  [helper.make_tensor_value_info("logit", TensorProto.FLOAT, list(out_shape))],
                  [numpy_helper.from_array(w.reshape(F, -1).astype(np.float32), "w"),
                   numpy_helper.from_array(np.full(w.reshape(F, -1).shape[1], b, np.float32), "b")])


def _fixed_batch(batch):
    def make(tmp, data):
        return _logit_model(tmp / "m.onnx", np.ones(F), 0.0, shape=(batch, F), out_shape=(batch, 1)), None
    return make


def _skl2onnx_fixed_batch(tmp, data):
    from sklearn.linear_model import LogisticRegression
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    X, y = data
    clf = LogisticRegression().fit(X, y)
    onx = to_onnx(clf, initial_types=[("input", FloatTensorType([32, F]))], target_opset=15)
    (tmp / "m.onnx").write_bytes(onx.SerializeToString())
    return tmp / "m.onnx", None


def _logits(tmp, data):
    return _logit_model(tmp / "m.onnx", np.linspace(-1, 1, F), 0.3), None


def _scores_3(tmp, data):
    return _logit_model(tmp / "m.onnx", np.ones((F, 3)), 0.1), None


def _argmax_wrong_classes(tmp, data):
    return _logit_model(tmp / "m.onnx", np.ones((F, 3)), 0.1), {"argmax": [0, 1]}


def _threshold_on_columns(tmp, data):
    return _logit_model(tmp / "m.onnx", np.ones((F, 3)), 0.1), {"threshold": 0.5}


def _argmax_on_one_column(tmp, data):
    return _logit_model(tmp / "m.onnx", np.ones(F), 0.1), "argmax"


def _not_following_batch(tmp, data):
    nodes = [helper.make_node("Constant", [], ["label"],
                              value=numpy_helper.from_array(np.array([0, 1, 1], np.int64)))]
    return _graph(tmp / "m.onnx", nodes, _features(),
                  [helper.make_tensor_value_info("label", TensorProto.INT64, [3])]), None


def _probabilities_npy(tmp, data):
    np.save(tmp / "p.npy", np.linspace(0.01, 0.99, len(data[1])))
    return tmp / "p.npy", None


def _probabilities_csv(tmp, data):
    (tmp / "p.csv").write_text("p\n" + "\n".join(f"{v:.3f}" for v in np.linspace(0.01, 0.99, len(data[1]))))
    return tmp / "p.csv", None


def _nan_npy(tmp, data):
    p = data[1].astype(float)
    p[7] = np.nan
    np.save(tmp / "p.npy", p)
    return tmp / "p.npy", None


def _inf_csv(tmp, data):
    (tmp / "p.csv").write_text("\n".join(["1"] * 5 + ["inf"] + ["0"] * (len(data[1]) - 6)))
    return tmp / "p.csv", None


def _scores_npy(tmp, data):
    np.save(tmp / "p.npy", np.full((len(data[1]), 2), 0.5))
    return tmp / "p.npy", None


REFUSED = {
    "fixed batch of 1 (PyTorch's default export)": (_fixed_batch(1), ["fixed batch of 1 row ", "dynamic_axes={'X': {0: 'batch'}, 'logit': {0: 'batch'}}"]),
    "fixed batch of 32": (_fixed_batch(32), ["fixed batch of 32 rows", "dynamic_axes"]),
    "fixed batch of 32 (skl2onnx, initial_types)": (_skl2onnx_fixed_batch, ["fixed batch of 32 rows (input 'input' has shape [32, 6])", "{'input': {0: 'batch'}, 'output_label': {0: 'batch'}}", "FloatTensorType([None, 6])"]),
    "one logit per row": (_logits, ["non-integer numbers", "scores, not labels", "`output: {threshold: T}`"]),
    "3 scores per row, undeclared": (_scores_3, ["3 scores per example, not a label", "`output: argmax`"]),
    "argmax naming too few classes": (_argmax_wrong_classes, ["3 scores per example", "names 2 classes"]),
    "threshold on 3 columns": (_threshold_on_columns, ["instead of `output: {threshold: 0.5}`, which reads one score column"]),
    "argmax on one column": (_argmax_on_one_column, ["one score per example", "`output: {threshold: T}`"]),
    "output that ignores the batch": (_not_following_batch, ["output 'label' has shape (3,) for 2 examples", "no test data involved"]),
    "probabilities in an .npy": (_probabilities_npy, ["non-integer numbers (such as 0.01)", "threshold"]),
    "probabilities in a .csv": (_probabilities_csv, ["non-integer numbers", "threshold"]),
    "NaN in an .npy": (_nan_npy, ["1 NaN or infinite value(s) (first in row 7)"]),
    "inf in a .csv": (_inf_csv, ["NaN or infinite", "row 5"]),
    "2-D scores in an .npy": (_scores_npy, ["2 scores per example", "`output: argmax`"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_outputs_that_cannot_be_labels_are_refused_before_the_test_set_is_opened(tmp_path, data, case):
    make, fragments = REFUSED[case]
    spec, output = make(tmp_path, data)
    with pytest.raises(InputError) as info:
        preflight(str(spec), n_features=F, label_kind="integer", output=output)
    message = str(info.value)
    assert all(f in message for f in fragments), message
    assert info.value.exit_code == 2


def test_text_labels_need_named_classes(tmp_path, data):
    path = _logit_model(tmp_path / "m.onnx", np.ones(F), 0.0)
    with pytest.raises(InputError, match=r"`output: \{threshold: 0.0\}` gives integer labels but the test set has text"):
        preflight(str(path), n_features=F, label_kind="text", output={"threshold": 0})
    with pytest.raises(InputError, match="gives text labels but the test set has numeric labels"):
        preflight(str(path), label_kind="integer", output={"threshold": 0, "classes": ["a", "b"]})
    preflight(str(path), n_features=F, label_kind="text", output={"threshold": 0, "classes": ["a", "b"]})


# --- declared scores become labels --------------------------------------------------------

def test_one_logit_per_row_with_a_threshold_scores_what_sklearn_scores(tmp_path, data, testset):
    from sklearn.linear_model import LogisticRegression

    X, y = data
    clf = LogisticRegression(max_iter=500).fit(X, y)
    path = _logit_model(tmp_path / "logit.onnx", clf.coef_[0], float(clf.intercept_[0]))
    with pytest.raises(InputError, match="scores, not labels"):
        load_predictions(str(path), testset)   # refused, not a silent accuracy of 0
    preds = load_predictions(str(path), testset, output=OutputRule.parse({"threshold": 0}))
    agree = np.mean(preds == clf.predict(X))
    assert agree > 0.99 and np.mean(preds == y) > 0.8


def test_declared_classes_name_the_labels(tmp_path, data):
    X, y = data
    names = np.array(["ham", "spam"])[y]
    ts = load_testset(write_npz(tmp_path / "s.npz", X=X, y=names))
    w = np.random.default_rng(2).normal(size=(F, 2))
    two = _logit_model(tmp_path / "two.onnx", w, 0.0)
    got = load_predictions(str(two), ts, output={"argmax": ["ham", "spam"]})
    assert got.tolist() == np.array(["ham", "spam"])[np.argmax(X @ w.astype(np.float32), axis=1)].tolist()
    np.save(tmp_path / "p.npy", np.linspace(0, 1, len(y)))
    got = load_predictions(str(tmp_path / "p.npy"), ts, output={"threshold": 0.5, "classes": ["ham", "spam"]})
    assert got.tolist() == np.where(np.linspace(0, 1, len(y)) >= 0.5, "spam", "ham").tolist()


def test_label_outputs_are_read_as_labels_whatever_rule_is_declared(tmp_path, data, testset):
    from sklearn.tree import DecisionTreeClassifier
    from skl2onnx import to_onnx

    X, y = data
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    (tmp_path / "tree.onnx").write_bytes(to_onnx(tree, X[:1]).SerializeToString())
    for rule in (None, "argmax", {"threshold": 0.9}):
        np.testing.assert_array_equal(load_predictions(str(tmp_path / "tree.onnx"), testset, output=rule),
                                      tree.predict(X))


# --- prediction files: clear messages that never echo a label ------------------------------

LABEL_WORDS = ["zebraword", "yakword", "quokkaword"]


def _csv(tmp, rows):
    (tmp / "p.csv").write_text("\n".join(rows) + "\n")
    return tmp / "p.csv"


PREDICTION_FILE_MISTAKES = {
    "numbers against text labels": lambda tmp, n: _csv(tmp, ["1"] * n),
    "too few rows": lambda tmp, n: _csv(tmp, [LABEL_WORDS[0]] * (n - 3)),
    "too many rows": lambda tmp, n: _csv(tmp, ["head", "er"] + [LABEL_WORDS[1]] * n),
    "scores against text labels": lambda tmp, n: _csv(tmp, ["0.25"] * n),
}


@pytest.mark.parametrize("case", list(PREDICTION_FILE_MISTAKES))
def test_prediction_file_messages_never_echo_a_label(tmp_path, data, case):
    X, y = data
    labels = np.array(LABEL_WORDS)[np.arange(len(y)) % 3]
    ts = load_testset(write_npz(tmp_path / "s.npz", X=X, y=labels))
    spec = PREDICTION_FILE_MISTAKES[case](tmp_path, len(y))
    with pytest.raises(InputError) as info:
        load_predictions(str(spec), ts)
    assert not any(word in str(info.value) for word in LABEL_WORDS), str(info.value)
    assert "p.csv" in str(info.value)


# --- ONNX files as exported ----------------------------------------------------------------

def _mlp_with_external_data(folder: Path, X, y, zipmap=False, name="mlp.onnx"):
    """A small skl2onnx MLP saved the way PyTorch saves by default: weights in `<name>.data`."""
    from sklearn.neural_network import MLPClassifier
    from skl2onnx import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((16,), max_iter=300, random_state=0).fit(X, y)
        onx = to_onnx(mlp, X[:1], options={id(mlp): {"zipmap": zipmap}})
    for i, t in enumerate(onx.graph.initializer):
        if t.data_type == TensorProto.FLOAT:  # skl2onnx writes float_data; external data needs raw
            onx.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(onx, folder / name, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=name + ".data", size_threshold=0)
    assert (folder / (name + ".data")).stat().st_size > 0
    return folder / name, mlp


@pytest.mark.parametrize("zipmap", [False, True], ids=["tensor-output", "zipmap-output"])
def test_external_data_models_load_from_their_path(tmp_path, data, testset, zipmap):
    X, y = data
    path, mlp = _mlp_with_external_data(tmp_path / "models", X, y, zipmap=zipmap)
    with pytest.raises(InputError, match="external data .* cannot be read from memory"):
        OnnxModel(path.read_bytes(), "mlp.onnx")
    np.testing.assert_array_equal(load_predictions(str(path), testset), mlp.predict(X))


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
                        "PATH": "/usr/bin:/bin", "HOME": str(repo)})


def test_external_data_models_load_from_git_through_a_private_folder_that_is_removed(
        tmp_path, monkeypatch, data, testset):
    X, y = data
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _, mlp = _mlp_with_external_data(repo / "models", X, y)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "model with external data")
    (repo / "models" / "mlp.onnx.data").unlink()       # the working tree no longer has it
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    preds = load_predictions("git:main:models/mlp.onnx", testset, repo=repo)
    np.testing.assert_array_equal(preds, mlp.predict(X))
    assert list(scratch.iterdir()) == []                # materialised, loaded, removed
    _git(repo, "rm", "-q", "--cached", "models/mlp.onnx.data")
    _git(repo, "commit", "-q", "-m", "weights not committed")
    with pytest.raises(InputError, match=r"external data file 'mlp.onnx.data', which is not readable on main"):
        load_predictions("git:main:models/mlp.onnx", testset, repo=repo)


@pytest.mark.parametrize("location", ["/etc/hostname", "../outside.data", "sub/../../outside.data"])
def test_external_data_outside_the_models_folder_is_refused(tmp_path, data, testset, location):
    X, y = data
    path, _ = _mlp_with_external_data(tmp_path / "models", X, y)
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InputError, match="outside its own folder"):
        load_predictions(str(path), testset)


def test_external_data_through_a_symlink_is_refused(tmp_path, data, testset):
    X, y = data
    path, _ = _mlp_with_external_data(tmp_path / "models", X, y)
    data_file = path.parent / "mlp.onnx.data"
    data_file.rename(tmp_path / "elsewhere.data")
    data_file.symlink_to(tmp_path / "elsewhere.data")
    with pytest.raises(InputError, match="symbolic link"):
        load_predictions(str(path), testset)


def test_load_errors_are_kept_whole(tmp_path, testset):
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / ("and-another-one-" * 8)
    deep.mkdir(parents=True)
    path = deep / "model.onnx"
    path.write_bytes(b"\x08\x07garbage that is not protobuf")
    with pytest.raises(InputError) as info:
        load_predictions(str(path), testset)
    message = str(info.value)
    assert len(str(path)) > 300 and message.count(str(path)) >= 1 and len(message) > 400
    assert message.startswith(f"cannot load ONNX model {path}: ") and "\n" not in message


# --- the `output` key ----------------------------------------------------------------------

@pytest.mark.parametrize("text, rule", [
    ("output: argmax", OutputRule("argmax")),
    ("output: {argmax: [cat, dog, bird]}", OutputRule("argmax", classes=("cat", "dog", "bird"))),
    ("output: {threshold: 0.5}", OutputRule("threshold", threshold=0.5)),
    ("output: {threshold: 0, classes: [ham, spam]}", OutputRule("threshold", 0.0, ("ham", "spam"))),
])
def test_output_key_parses(text, rule):
    cfg = parse_config(f"condition: n > 0.8 +/- 0.05\nreliability: 0.99\n{text}\n")
    assert cfg.output == rule
    assert OutputRule.parse(rule.as_config()) == rule


@pytest.mark.parametrize("value, fragment", [
    ("max", "`argmax` (one score column per class"),
    ("{threshold: .nan}", "output.threshold to be a finite number"),
    ("{threshold: 0.5, classes: [a, b, c]}", "exactly 2 class labels"),
    ("{argmax: [a]}", "at least 2 class labels"),
    ("{argmax: [a, a]}", "each class once"),
    ("{threshold: 0.5, classes: [no, yes]}", "quote them"),
    ("{argmax: [1, b]}", "all integers or all text"),
    ("{threshold: 0.5, argmax: [a, b]}", "`argmax` (one score column per class"),
])
def test_bad_output_key_names_its_line_and_what_is_allowed(value, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(f"condition: n > 0.8 +/- 0.05\nreliability: 0.99\noutput: {value}\n", where="g.yml")
    assert str(info.value).startswith("g.yml:3: key 'output': expected ")
    assert fragment in str(info.value), str(info.value)


def test_preflight_s_made_up_rows_are_fixed_spread_and_need_no_numpy_random():
    """Two batches (2 rows of zeros, 5 of made-up values), the same on every run; the values
    look like features (standard normal, or each of 0..3 for an integer input), and making them
    does not import numpy.random (~11 ms of every check's start, bench/check_overhead.py)."""
    import os
    import sys

    from easeml_ci.models.onnx import SYNTHETIC_ROWS, _synthetic_inputs

    width = 4_000
    floats = dict(_synthetic_inputs(width, np.float32, np.dtype(np.float32)))
    again = dict(_synthetic_inputs(width, np.float32, np.dtype(np.float32)))
    assert [x.shape for x in floats.values()] == [(r, width) for r in SYNTHETIC_ROWS]
    normal = floats["standard normal values"]
    assert np.array_equal(normal, again["standard normal values"]) and np.isfinite(normal).all()
    assert abs(normal.mean()) < 0.02 and abs(normal.std() - 1) < 0.02
    assert 0.30 < np.mean(np.abs(normal) > 1) < 0.34  # P(|Z| > 1) = 0.317 for a normal Z
    assert len({row.tobytes() for row in normal}) == SYNTHETIC_ROWS[1]  # rows differ
    ints = dict(_synthetic_inputs(7, np.int64, np.dtype(np.int64)))["small integers"]
    assert ints.dtype == np.int64 and set(np.unique(ints)) == {0, 1, 2, 3}
    assert len({row.tobytes() for row in ints}) == SYNTHETIC_ROWS[1]
    code = ("import sys, numpy as np; before = 'numpy.random' in sys.modules; "  # numpy < 2 loads it
            "from easeml_ci.models.onnx import _synthetic_inputs; "
            "list(_synthetic_inputs(20, np.float32, np.dtype(np.float32))); "
            "print(not before and 'numpy.random' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.strip() == "False"
