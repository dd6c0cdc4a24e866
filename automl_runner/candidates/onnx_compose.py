"""One ONNX graph from a pipeline whose model step has its own exporter (XGBoost, PyTorch).

skl2onnx converts the preprocessing (the ``features`` ColumnTransformer) at the model graph's
opsets; the model's own exporter (onnxmltools, ``torch.onnx``) converts the model step;
``onnx.compose.merge_models`` joins them; for classification a label head (ArgMax over the
probabilities, then the class labels) is added behind. The result has what every exported
candidate has: one float input ``X`` ``[N, features]``, then ``label`` and ``probabilities``
(classification) or ``variable`` (regression).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import ExportError
from ..datasets.schema import Schema


def _opsets(model) -> dict[str, int]:
    return {(o.domain or ""): int(o.version) for o in model.opset_import}


def compose_export(pipeline, schema: Schema, exporter) -> bytes:
    import onnx
    from onnx import TensorProto, compose, helper
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    if not hasattr(pipeline, "steps") or len(pipeline.steps) != 2:
        raise ExportError("a candidate with its own exporter must be a (features, model) pipeline")
    features, model = pipeline.steps[0][1], pipeline.steps[1][1]
    n_inputs = int(getattr(model, "n_features_in_", 0) or 0)
    if n_inputs <= 0:
        raise ExportError(f"{type(model).__name__} does not say how many features it was fitted on (n_features_in_)")
    body = exporter(model, n_inputs)
    if isinstance(body, (bytes, bytearray)):
        body = onnx.load_from_string(bytes(body))
    classify = schema.task == "classification"
    outs = [o.name for o in body.graph.output]
    if classify and "probabilities" not in outs:
        raise ExportError(f"the exporter of {type(model).__name__} gave outputs {outs}; expected 'probabilities'")
    body_out = "probabilities" if classify else outs[0]

    ops = _opsets(body)
    target = {"": ops.get("", 15), "ai.onnx.ml": ops.get("ai.onnx.ml", 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = to_onnx(features, initial_types=[("X", FloatTensorType([None, schema.n_features]))],
                      target_opset=target)
    pre_out = pre.graph.output[0].name
    ir = max(pre.ir_version, body.ir_version)
    pre.ir_version = body.ir_version = ir
    # Both graphs must import the same version of each domain they share.
    for m in (pre, body):
        have = _opsets(m)
        for dom, ver in target.items():
            if dom in have and have[dom] != ver:
                raise ExportError(f"opset mismatch for domain {dom!r}: {have[dom]} vs {ver}")
    merged = compose.merge_models(pre, body, io_map=[(pre_out, body.graph.input[0].name)],
                                  prefix1="pre_", prefix2="model_")
    g = merged.graph
    final = "model_" + body_out
    if final not in [o.name for o in g.output]:
        raise ExportError(f"joined graph lost the model output {body_out!r}")
    del g.output[:]
    if classify:
        classes = np.asarray(model.classes_)
        if classes.dtype.kind in "iu":
            labels = helper.make_tensor("class_labels", TensorProto.INT64, [len(classes)], classes.astype(np.int64).tolist())
            label_type = TensorProto.INT64
        else:
            labels = helper.make_tensor("class_labels", TensorProto.STRING, [len(classes)],
                                        [str(c).encode() for c in classes])
            label_type = TensorProto.STRING
        g.initializer.append(labels)
        g.node.append(helper.make_node("Identity", [final], ["probabilities"], name="probabilities_out"))
        g.node.append(helper.make_node("ArgMax", ["probabilities"], ["class_index"], axis=1, keepdims=0, name="argmax"))
        g.node.append(helper.make_node("Gather", ["class_labels", "class_index"], ["label"], axis=0, name="to_label"))
        g.output.extend([helper.make_tensor_value_info("label", label_type, [None]),
                         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(classes)])])
    else:
        g.node.append(helper.make_node("Reshape", [final, "one_column"], ["variable"], name="to_column"))
        g.initializer.append(helper.make_tensor("one_column", TensorProto.INT64, [2], [-1, 1]))
        g.output.extend([helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])])
    # The input keeps skl2onnx's name: X (merge_models prefixed it).
    old_in = g.input[0].name
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == old_in:
                node.input[i] = "X"
    g.input[0].name = "X"
    onnx.checker.check_model(merged)
    return merged.SerializeToString()
