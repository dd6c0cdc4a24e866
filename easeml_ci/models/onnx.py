"""ONNX models run with onnxruntime: the graph checked on synthetic input before any data, then
run on the test set in batches under the clock and the memory ceiling."""
from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from ..errors import InputError, ModelFailedOnTestSet
from ..testsets import TestSet
from .git import GIT_PREFIX, parse_git_spec, read_git_blob
from .output import NotLabels, OutputRule, decode_predictions, describe_labels, rule_of
from .schema import Progress, TestSetSchema

# Rows per onnxruntime call. Measured on 1M rows x 20 features (bench/check_overhead.py): an MLP
# (128, 128) run on the whole array peaks at +1 GB of activations and is *slower* than batches
# (16,384 rows: +43 MB; 8,192 rows: +27 MB, same speed); a 100-tree ensemble costs the same CPU
# time at any batch size. Per-call overhead is ~0.1 ms, about 1% of an 8k-row batch. Wide
# inputs get fewer rows (at most 32 MiB of input per call).
DEFAULT_BATCH_ROWS = 8_192
_MAX_BATCH_INPUT_BYTES = 32 * 1024 * 1024
SYNTHETIC_ROWS = (2, 5)  # rows of preflight's two synthetic batches (see _synthetic_inputs)
_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_LABEL_TENSORS = ("tensor(int64)", "tensor(int32)", "tensor(int16)", "tensor(int8)",
                  "tensor(uint64)", "tensor(uint32)", "tensor(uint16)", "tensor(uint8)",
                  "tensor(bool)", "tensor(string)")
_SCORE_TENSORS = ("tensor(float)", "tensor(double)", "tensor(float16)")


# --- ONNX ----------------------------------------------------------------------------------------

def _whole(exc: BaseException) -> str:
    """An exception's whole text on one line (onnxruntime's span several)."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return text or type(exc).__name__


def parse_onnx(blob: bytes):
    """The ModelProto of ``blob`` without loading external data; None if it does not parse
    (onnxruntime then says why, in its own words)."""
    import onnx

    try:
        return onnx.load_from_string(blob)
    except Exception:  # noqa: BLE001 - protobuf raises its own types; reported by onnxruntime
        return None


def _node_tensors(nodes):
    """Every TensorProto in nodes' attributes (dense and sparse), subgraphs included."""
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
            for one in [*sparse, *attr.sparse_tensors]:
                yield one.values
                yield one.indices
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def _all_tensors(graph):
    """Every TensorProto in a graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def model_tensors(model_proto):
    """Every TensorProto of a model: its graph's and those inside its model-local functions
    (``model.functions``), whose bodies onnxruntime inlines into the graph."""
    yield from _all_tensors(model_proto.graph)
    for function in model_proto.functions:
        yield from _node_tensors(function.node)


def external_data_locations(model_proto) -> list[str]:
    """The external data files a model's tensors point to (relative to the model's folder),
    model-local functions included."""
    from onnx import TensorProto

    seen: list[str] = []
    for tensor in model_tensors(model_proto):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((kv.value for kv in tensor.external_data if kv.key == "location"), "")
        if location not in seen:
            seen.append(location)
    return seen


def _check_location(location: str, label: str) -> None:
    """External data must lie beside the model: a path out of its folder could make the model's
    weights (and so its outputs, and the messages about them) out of any file on the runner."""
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if not location or location.startswith(("/", "\\")) or ".." in parts or (
            len(location) > 1 and location[1] == ":"):
        raise InputError(f"ONNX model {label} keeps weights in external data {location!r}, "
                         f"outside its own folder; easeml-ci reads external data only from files "
                         f"in the model's folder (export with a relative location such as "
                         f"'model.onnx.data')")


def _check_local_external(path: Path, locations: list[str], label: str) -> None:
    folder = path.parent.resolve()
    for location in locations:
        _check_location(location, label)
        data = path.parent / location
        if data.is_symlink() or not data.resolve().is_relative_to(folder):
            raise InputError(f"ONNX model {label} keeps weights in {data}, a symbolic link; "
                             f"easeml-ci reads external data only from plain files in the "
                             f"model's folder")
        if not data.is_file():
            raise InputError(f"ONNX model {label} keeps its weights in the external data file "
                             f"{data}, which does not exist; put it beside the model (PyTorch "
                             f"writes it next to the .onnx file: commit both)")


def _strip_zipmap(model) -> bytes:
    """Remove skl2onnx's ZipMap nodes (probabilities as a list of dicts): we never need them,
    and building millions of Python-visible maps dominates the run time when they are present."""
    import onnx
    from onnx import helper

    graph = model.graph
    zipmaps = [n for n in graph.node if n.op_type == "ZipMap"]
    dropped = {n.output[0]: n.input[0] for n in zipmaps}
    for node in zipmaps:
        graph.node.remove(node)
    kept = [o for o in graph.output if o.name not in dropped]
    del graph.output[:]
    graph.output.extend(kept)
    if not any(o.type.HasField("tensor_type") for o in kept):
        for src in dropped.values():  # keep the probabilities tensor for an argmax
            graph.output.append(helper.make_tensor_value_info(src, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


def _synthetic_inputs(width: int, feature_dtype, input_dtype: np.dtype):
    """Made-up feature rows for preflight: zeros, then standard normal values (small
    non-negative integers for an integer input, which may index a table). Two batch sizes, so
    an output that does not follow the batch is seen; neither is 1, which some exports squeeze
    to a scalar."""
    zeros_rows, random_rows = SYNTHETIC_ROWS
    yield "zeros", np.zeros((zeros_rows, width), dtype=feature_dtype)
    bits = _random_words(2 * random_rows * width).reshape(2, random_rows, width)
    if input_dtype.kind in "iu":
        yield "small integers", (bits[0] >> np.uint64(62)).astype(feature_dtype)  # 0..3
    else:  # Box-Muller on two uniforms in (0, 1]
        u, v = (((bits >> np.uint64(11)) + 1) * 2.0**-53)
        normal = np.sqrt(-2.0 * np.log(u)) * np.cos(2.0 * np.pi * v)
        yield "standard normal values", normal.astype(feature_dtype)


def _random_words(count: int) -> np.ndarray:
    """``count`` pseudo-random 64-bit words, the same on every run (the standard library's
    Mersenne Twister, seeded 0). numpy.random would cost every check ~11 ms to import
    (bench/check_overhead.py) for a handful of made-up rows."""
    import random

    return np.frombuffer(random.Random(0).randbytes(8 * count), dtype="<u8").astype(np.uint64)


def _default_options(ort):
    """The session options a model runs on the test set with."""
    options = ort.SessionOptions()
    # Batches all have one shape, so the memory-pattern plan buys no measurable speed, but it
    # holds a second block for the intermediates (+17 MB vs +9 MB for an MLP (128, 128) on
    # 8k-row batches).
    options.enable_mem_pattern = False
    # onnxruntime logs a failed run's error to the process's stderr itself, before raising:
    # shapes and sizes computed from the secret features, in the job's public log. Only fatal
    # messages; the error still reaches us as the exception (the private detail).
    options.log_severity_level = 4
    return options


def _light_options(ort):
    """Options of the session a model is opened and checked with (its inputs and outputs, two
    synthetic batches): the defaults on one thread, which does not spin. The default pool's
    threads spin-wait after each run and, on a 2-core runner, took CPU from the decryption that
    follows (0.27 s instead of 0.08 s at 1M rows); the test set's run builds the full session
    (:meth:`OnnxModel.reload_session`)."""
    options = _default_options(ort)
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def _session(ort, target: str | bytes, session_options):
    """An onnxruntime session, always from a file's path: a model given as bytes (from git, or
    rewritten without its ZipMap) is written to a private temporary folder first, so whatever
    it might still name is looked for there (empty), never in the working directory."""
    if isinstance(target, str):
        return ort.InferenceSession(target, sess_options=session_options,
                                    providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory(prefix="easeml-model-") as tmp:  # mode 0700
        path = Path(tmp) / "model.onnx"
        path.write_bytes(target)
        return ort.InferenceSession(str(path), sess_options=session_options,
                                    providers=["CPUExecutionProvider"])


class Pieces:
    """Where a model's decoded batches go, in order: here, kept in memory and joined at the end
    (batches may differ in text width or int/float); :mod:`.child` writes them into its shared
    file as they come instead."""

    def __init__(self, parts: Sequence[np.ndarray] = ()):
        self.parts = list(parts)

    def add(self, piece: np.ndarray) -> None:
        self.parts.append(piece)

    def result(self) -> np.ndarray:
        if not self.parts:
            return np.empty(0, dtype=np.int64)
        return integral_labels(np.concatenate(self.parts))


def integral_labels(out: np.ndarray) -> np.ndarray:
    """Float labels that are all whole numbers, as int64 (a model that outputs 1.0 for class 1
    predicts the int64 labels 1); anything else as it is."""
    if out.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            as_int = out.astype(np.int64)
        if np.array_equal(as_int, out):
            return as_int
    return out


class _RunFailed(Exception):
    """onnxruntime failed while running the model; the text is onnxruntime's, whole."""


class OnnxModel:
    """An onnxruntime session plus the conventions to get labels out of it.

    ``source`` is the model's path (external data files are read from its folder) or its bytes
    (a model with external data cannot be built from bytes: use :meth:`from_spec`).
    """

    def __init__(self, source: Path | bytes, label: str, *, output: OutputRule | None = None,
                 session_options=None):
        import onnxruntime as ort

        self.label = label
        self.output = rule_of(output)
        path = None if isinstance(source, (bytes, bytearray)) else Path(source)
        try:
            blob = bytes(source) if path is None else path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read model {label}: {exc.strerror or exc}") from None
        self.size_bytes = len(blob)
        target: str | bytes = blob
        if b"ZipMap" in blob or b"location" in blob:  # cheap screens before parsing the graph
            proto = parse_onnx(blob)
            external = external_data_locations(proto) if proto is not None else []
            if external:
                if path is None:
                    raise InputError(f"ONNX model {label} keeps its weights in external data "
                                     f"({', '.join(map(repr, external))}), which cannot be read "
                                     f"from memory; load it from its path")
                _check_local_external(path, external, label)
                # ZipMap stays: cutting it out would need the weights in memory. It costs time,
                # not correctness (the label output is read, never the maps).
                target = str(path)
            elif proto is not None and any(n.op_type == "ZipMap" for n in proto.graph.node):
                target = _strip_zipmap(proto)
        if path is not None and isinstance(target, bytes) and target is blob:
            target = str(path)  # from its path: never resolve anything against the working folder
        if session_options is None:
            session_options = _default_options(ort)
        session_options.log_severity_level = 4  # a caller's options too (_default_options)
        self._target, self._session_options = target, session_options
        self.scratch = None  # a temporary folder the model is loaded from (git:, external data)
        try:
            self.session = self._new_session(light=True)
            self._light = True
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise InputError(f"cannot load ONNX model {label}: {_whole(exc)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputError(f"ONNX model {label} has {len(inputs)} inputs "
                             f"({', '.join(i.name for i in inputs)}); easeml-ci feeds one 2-D "
                             f"feature tensor (export with a single input)")
        self.input = inputs[0]
        if self.input.type not in _ONNX_DTYPES:
            raise InputError(f"ONNX model {label} takes {self.input.type}; easeml-ci can feed "
                             f"{', '.join(sorted(_ONNX_DTYPES))}")
        self.input_dtype = np.dtype(_ONNX_DTYPES[self.input.type])
        self.output_name, self.output_rule = self._choose_output(self.session.get_outputs())

    def _new_session(self, *, light: bool = False):
        import onnxruntime as ort

        return _session(ort, self._target, _light_options(ort) if light else self._session_options)

    def reload_session(self) -> None:
        """A session of this process's own, from the same graph (the bytes read at load, or the
        checked path), with the full thread pool: the session the model was opened with is a
        light one (:func:`_light_options`), and in a forked child (:mod:`.child`) a session
        inherited from the gate has lost its thread pool anyway."""
        self.session = self._new_session()
        self._light = False

    @classmethod
    def from_spec(cls, spec: str, *, repo: Path = Path("."), output: OutputRule | None = None,
                  ) -> "OnnxModel":
        """A path, or ``git:REF:PATH``: with external data, the model and its data files are
        written from that tree to a private temporary folder, removed with the model."""
        spec = str(spec)
        if not spec.startswith(GIT_PREFIX):
            return cls(Path(spec), spec, output=output)
        ref, path = parse_git_spec(spec)
        _, blob = read_git_blob(spec, repo)
        proto = parse_onnx(blob) if b"location" in blob else None
        external = external_data_locations(proto) if proto is not None else []
        if not external:
            return cls(blob, spec, output=output)
        # The folder (mode 0700) lives as long as the model: the child that evaluates it on the
        # test set loads it again (reload_session); it is removed when the model is released.
        scratch = tempfile.TemporaryDirectory(prefix="easeml-model-")
        try:
            folder = Path(scratch.name)
            for location in external:
                _check_location(location, spec)
                data_path = posixpath.join(posixpath.dirname(path), location)
                try:
                    _, data = read_git_blob(f"{GIT_PREFIX}{ref}:{data_path}", repo)
                except InputError as exc:
                    raise InputError(f"ONNX model {spec} keeps its weights in the external data "
                                     f"file {location!r}, which is not readable on {ref}: "
                                     f"{exc.message}") from None
                target = folder / location
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            model_file = folder / posixpath.basename(path)
            model_file.write_bytes(blob)
            model = cls(model_file, spec, output=output)
        except BaseException:
            scratch.cleanup()
            raise
        model.scratch = scratch
        return model

    @property
    def n_features(self) -> int | None:
        shape = self.input.shape
        if len(shape) == 2 and isinstance(shape[1], int):
            return shape[1]
        return None

    def _choose_output(self, outputs: Sequence) -> tuple[str, str]:
        tensors = [o for o in outputs if str(o.type).startswith("tensor(")]
        for o in tensors:
            if "label" in o.name.lower() and o.type in _LABEL_TENSORS:
                return o.name, "label"
        for o in tensors:
            if o.type in _LABEL_TENSORS:
                return o.name, "label"
        for o in tensors:
            if o.type in _SCORE_TENSORS:
                return o.name, "scores"
        raise InputError(f"ONNX model {self.label} has no tensor output to read predictions from "
                         f"(outputs: {', '.join(f'{o.name} {o.type}' for o in outputs)})")

    # --- checks without the test set ----------------------------------------------------------

    def check(self, schema: TestSetSchema) -> None:
        """Everything checkable without the test data: the input's rank, batch dimension and
        width, and a run on synthetic rows whose output must decode to labels of the test set's
        kind. InputError on any problem (its text comes from the model and synthetic input)."""
        shape = list(self.input.shape or [])
        name = self.input.name
        if shape and len(shape) != 2:
            raise InputError(f"ONNX model {self.label} takes input {name!r} of shape {shape}; "
                             f"easeml-ci feeds a 2-D [examples, features] tensor")
        if shape and isinstance(shape[0], int):
            raise InputError(
                f"ONNX model {self.label} takes a fixed batch of {shape[0]} row"
                f"{'s' if shape[0] != 1 else ''} (input {name!r} has shape {shape}); easeml-ci "
                f"feeds the test set in batches of thousands of rows, so the batch dimension "
                f"must be dynamic. Export it with one: torch.onnx.export(..., input_names="
                f"[{name!r}], output_names=[{self.output_name!r}], dynamic_axes={{{name!r}: "
                f"{{0: 'batch'}}, {self.output_name!r}: {{0: 'batch'}}}}) (with dynamo=True: "
                f"dynamic_shapes), or in skl2onnx initial_types=[({name!r}, FloatTensorType("
                f"[None, {shape[1]}]))]")
        want = self.n_features
        if want is not None and schema.n_features is not None and want != schema.n_features:
            raise InputError(f"ONNX model {self.label} expects {want} features but "
                             f"{schema.where} has {schema.n_features}")
        if self.output is not None and schema.label_kind is not None and (
                (self.output.label_kind == "text") != (schema.label_kind == "text")
                and self.output_rule == "scores"):
            raise InputError(f"ONNX model {self.label}: `output: {self.output}` gives "
                             f"{self.output.label_kind} labels but {describe_labels(schema.label_kind)}; "
                             f"name classes of the same kind")
        width = schema.n_features if schema.n_features is not None else want
        if width is None:
            return  # the width is learnt from the test set's schema; load_predictions runs this
        for kind, X in _synthetic_inputs(width, schema.feature_dtype, self.input_dtype):
            rows = X.shape[0]
            what = (f"ONNX model {self.label}, on synthetic input ({rows} rows x {width} "
                    f"features of {kind}; no test data involved)")
            try:
                res = self._run_batch(X)
                if res.dtype.kind == "f":  # values on made-up rows say nothing: NaN is no fault
                    res = np.nan_to_num(res, nan=0.0, posinf=0.0, neginf=0.0)
                self._decode_batch(res, rows, schema.label_kind)
            except _RunFailed as exc:
                raise InputError(f"{what}, fails: {exc}") from None
            except NotLabels as exc:
                raise InputError(f"{what}: {exc}") from None

    # --- running ---------------------------------------------------------------------------

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != self.input_dtype or not batch.flags.c_contiguous:
            batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        try:
            (res,) = self.session.run([self.output_name], {self.input.name: batch})
        except Exception as exc:  # onnxruntime's own error types
            raise _RunFailed(_whole(exc)) from None
        return np.asarray(res)

    def _decode_batch(self, res: np.ndarray, rows: int, label_kind: str | None) -> np.ndarray:
        if res.ndim == 0 or res.shape[0] != rows:
            raise NotLabels(f"output {self.output_name!r} has shape {res.shape} for {rows} "
                             f"examples; expected one prediction per example (the batch "
                             f"dimension must run through the model)")
        return decode_predictions(res, self.output, label_kind, f"output {self.output_name!r}")

    def _predict(self, X: np.ndarray, label_kind: str | None, batch_size: int,
                 progress: Progress | None, into: "Pieces | None" = None) -> np.ndarray:
        n = X.shape[0]
        row_bytes = max(1, X.shape[1] * self.input_dtype.itemsize)
        batch_size = max(1, min(batch_size, _MAX_BATCH_INPUT_BYTES // row_bytes))
        pieces = Pieces() if into is None else into
        for start in range(0, n, batch_size):
            batch = X[start:start + batch_size]
            pieces.add(self._decode_batch(self._run_batch(batch), batch.shape[0], label_kind))
            if progress is not None:
                progress(min(start + batch_size, n), n)
        return pieces.result()

    def predictions(self, testset: TestSet, *, batch_size: int = DEFAULT_BATCH_ROWS,
                    progress: Progress | None = None, into: "Pieces | None" = None) -> np.ndarray:
        """Labels for the test set. Whatever goes wrong here happened on the secret features:
        :class:`ModelFailedOnTestSet`, whose message is fixed (details in ``.detail``). Runs
        under the memory ceiling (:mod:`.memory`); the gate runs it in a child process that is
        killed at the deadline or on Ctrl-C (:mod:`.child`), which passes ``into``: where the
        decoded batches go (:class:`Pieces`, the default, joins them in memory)."""
        from .memory import memory_ceiling

        if self._light:  # opened for the checks only: the test set gets the full thread pool
            self.reload_session()
        try:
            with memory_ceiling():  # running out of memory fails the model, not the job
                return self._predict(testset.X, TestSetSchema.of(testset).label_kind, batch_size,
                                     progress, into)
        except (_RunFailed, NotLabels) as exc:
            detail = f"ONNX model {self.label} on the test set {testset.source}: {exc}"
        except Exception as exc:  # noqa: BLE001 - anything else is still the model on test data
            detail = (f"ONNX model {self.label} on the test set {testset.source}: "
                      f"{type(exc).__name__}: {_whole(exc)}")
        raise ModelFailedOnTestSet(self.label, detail)

    def predict(self, X: np.ndarray, *, batch_size: int = DEFAULT_BATCH_ROWS,
                progress: Progress | None = None, source="(in memory)") -> np.ndarray:
        """Labels for every row of ``X`` (not the test set: a pool, a validation split). Checks
        the model against X's width first; any failure is an InputError."""
        self.check(TestSetSchema(n_features=int(X.shape[1]), source=str(source)))
        try:
            return self._predict(X, None, batch_size, progress)
        except (_RunFailed, NotLabels) as exc:
            raise InputError(f"ONNX model {self.label} failed on {source}: {exc}") from None


def bare_inference(onnx_path, X: np.ndarray, output: str | None = None) -> np.ndarray:
    """The baseline of ``bench/check_overhead.py``: a default onnxruntime session, one call on
    the whole array, the first (label) output — what a user would write by hand."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = output or session.get_outputs()[0].name
    return session.run([out], {name: X})[0]
