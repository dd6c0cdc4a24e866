"""External data named inside a model-local function (``model.functions``) is checked like the
rest, and a model is always loaded from a path (issue 20): the check used to skip function
bodies, so their external data was never checked, and a model given as bytes left onnxruntime to
resolve what it names on its own (against the working folder, in some versions)."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from easeml_ci.cli import main
from easeml_ci.errors import InputError
from easeml_ci.models.onnx import OnnxModel, external_data_locations


def function_model(path, location: str):
    """A model whose only node calls a local function; the function adds a Constant whose
    three floats live in the external file ``location``, then takes the argmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = numpy_helper.from_array(np.zeros(3, dtype=np.float32), name="C")
    c.ClearField("raw_data")
    c.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "12")):
        entry = c.external_data.add()
        entry.key, entry.value = key, value
    body = [helper.make_node("Constant", [], ["C"], value=c),
            helper.make_node("Add", ["X", "C"], ["S"]),
            helper.make_node("ArgMax", ["S"], ["Y"], axis=1, keepdims=0)]
    fn = helper.make_function("local", "AddWeights", ["X"], ["Y"], body,
                              [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("AddWeights", ["input"], ["label"], domain="local")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None])])
    model = helper.make_model(graph, functions=[fn], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def weights(path, hot: int):
    w = np.zeros(3, dtype=np.float32)
    w[hot] = 100.0
    w.tofile(path)


def test_the_locations_include_those_inside_functions(tmp_path):
    import onnx

    model = onnx.load(function_model(tmp_path / "m" / "fn.onnx", "w.bin"), load_external_data=False)
    assert external_data_locations(model) == ["w.bin"]


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "a/../../secret.bin"])
def test_external_data_outside_the_folder_inside_a_function_is_refused(tmp_path, location):
    path = function_model(tmp_path / "models" / "fn.onnx", location)
    with pytest.raises(InputError, match="outside its own folder"):
        OnnxModel.from_spec(str(path))


def test_a_file_in_the_working_folder_is_never_read(tmp_path, monkeypatch):
    """The weights exist only in the working folder: refused as missing beside the model."""
    path = function_model(tmp_path / "models" / "fn.onnx", "secret.bin")
    work = tmp_path / "work"
    work.mkdir()
    weights(work / "secret.bin", 2)
    monkeypatch.chdir(work)
    with pytest.raises(InputError, match="does not exist; put it beside the model"):
        OnnxModel.from_spec(str(path))


def test_a_function_with_its_data_beside_the_model_runs_from_its_path(tmp_path, monkeypatch):
    path = function_model(tmp_path / "models" / "fn.onnx", "w.bin")
    weights(tmp_path / "models" / "w.bin", 1)
    weights(tmp_path / "w.bin", 2)  # a decoy in the working folder
    monkeypatch.chdir(tmp_path)
    model = OnnxModel.from_spec("models/fn.onnx")
    assert model.predict(np.zeros((4, 3), dtype=np.float32)).tolist() == [1, 1, 1, 1]


def test_through_the_cli_before_the_test_set_is_opened(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ts.npz", X=rng.normal(size=(3000, 3)).astype(np.float32),
             y=rng.integers(0, 3, 3000))
    (tmp_path / ".easeml.yml").write_text(yaml.safe_dump(
        {"condition": "n > 0.3 +/- 0.1", "reliability": 0.9, "steps": 4}))
    function_model(tmp_path / "models" / "fn.onnx", "../ts.npz")
    result = CliRunner().invoke(main, ["check", "--new", "models/fn.onnx", "--testset", "ts.npz"],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "outside its own folder" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / ".easeml").exists()
