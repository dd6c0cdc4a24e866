"""Turning a model reference into one prediction per test example.

A model reference (``--new`` / ``--old``) is one of

* an ``.onnx`` file, run with onnxruntime in large batches;
* a predictions file from any framework: ``.csv`` (one prediction per row, optional header) or
  ``.npy`` (1-D, or 2-D scores whose row-wise argmax is the prediction);
* ``git:REF:PATH`` — either of the above as it is on a git ref (e.g. the pull request's base
  branch), read with ``git show`` into memory; nothing is written to disk.

ONNX conventions (what skl2onnx exports): the model has one 2-D input (``[N, features]``);
we cast the features to the input's element type, and take the first integer/string tensor
output whose name contains ``label`` (classifiers), else the argmax over a 2-D float output
(scores or probabilities; the argmax is a class *index*), else a 1-D / ``[N, 1]`` output as is.
A ``ZipMap`` (skl2onnx's list-of-dicts probabilities) is cut out of the graph before the
session is built: it is never needed for a label and costs more than the model itself.

Why the care about speed: the gate's promise is that a check costs little more than running the
two models; see ``bench/check_overhead.py``.
"""
from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import InputError
from .testset import TestSet

# Rows per onnxruntime call. Measured on 1M rows x 20 features (bench/check_overhead.py): an MLP
# (128, 128) run on the whole array peaks at +1 GB of activations and is *slower* than batches
# (16,384 rows: +43 MB; 8,192 rows: +27 MB, same speed); a 100-tree ensemble costs the same CPU
# time at any batch size. Per-call overhead is ~0.1 ms, about 1% of an 8k-row batch. Wide
# inputs get fewer rows (at most 32 MiB of input per call).
DEFAULT_BATCH_ROWS = 8_192
_MAX_BATCH_INPUT_BYTES = 32 * 1024 * 1024
GIT_PREFIX = "git:"
PREDICTION_SUFFIXES = (".csv", ".npy")
MODEL_SUFFIXES = (".onnx",) + PREDICTION_SUFFIXES

_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}

Progress = Callable[[int, int], None]


# --- entry point ---------------------------------------------------------------------------------

def load_predictions(spec: str, testset: TestSet, *, repo: Path = Path("."),
                     batch_size: int = DEFAULT_BATCH_ROWS, progress: Progress | None = None,
                     ) -> np.ndarray:
    """One prediction per test example for the model named by ``spec``.

    ``progress(done, total)`` is called after each ONNX batch (for a status line); the caller
    decides whether to show it. Every user mistake is an :class:`InputError`.
    """
    spec = str(spec)
    if spec.startswith(GIT_PREFIX):
        name, blob = read_git_blob(spec, repo)
        label = spec
    else:
        path = Path(spec)
        _check_file(path)
        name, blob, label = path.name, None, str(path)
    suffix = Path(name).suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise InputError(f"model {label} has extension {Path(name).suffix or '(none)'!r}; allowed: "
                         f"{', '.join(MODEL_SUFFIXES)} or git:REF:PATH to one of those")
    if suffix == ".onnx":
        model = OnnxModel(blob if blob is not None else Path(spec), label)
        preds = model.predict(testset.X, batch_size=batch_size, progress=progress,
                              source=testset.source)
    elif suffix == ".npy":
        preds = _read_npy(blob if blob is not None else Path(spec), label)
    else:
        preds = _read_csv_predictions(blob if blob is not None else Path(spec), label, len(testset))
    if preds.shape[0] != len(testset):
        raise InputError(f"predictions from {label} have {preds.shape[0]} rows but the test set "
                         f"{testset.source} has {len(testset)} examples; one prediction per test "
                         f"example is needed")
    return _same_kind_as_labels(preds, testset, label)


def _same_kind_as_labels(preds: np.ndarray, testset: TestSet, label: str) -> np.ndarray:
    """Text predictions against numeric labels (or the reverse) would compare unequal
    everywhere and fail the model silently; numeric text is converted, the rest refused."""
    text_preds, text_labels = preds.dtype.kind == "U", testset.y.dtype.kind == "U"
    if text_preds and not text_labels:
        try:
            return _normalise(preds.astype(np.float64), label)
        except ValueError:
            raise InputError(f"predictions from {label} are text but "
                             f"the test set {testset.source} has numeric labels; the model must "
                             f"predict the same kind of label") from None
    if text_labels and not text_preds:
        raise InputError(f"predictions from {label} are numbers but the test set "
                         f"{testset.source} has text labels; the model must predict the same "
                         f"kind of label")
    return preds


def validate_model_spec(spec: str, repo: Path = Path(".")) -> None:
    """Cheap up-front check of a model reference (extension, file, git ref and path) without
    reading or running the model, so a check can refuse a typo before decrypting anything."""
    spec = str(spec)
    if spec.startswith(GIT_PREFIX):
        _, path = parse_git_spec(spec)
        name, label = path, spec
    else:
        _check_file(Path(spec))
        name, label = Path(spec).name, spec
    if Path(name).suffix.lower() not in MODEL_SUFFIXES:
        raise InputError(f"model {label} has extension {Path(name).suffix or '(none)'!r}; allowed: "
                         f"{', '.join(MODEL_SUFFIXES)} or git:REF:PATH to one of those")
    if spec.startswith(GIT_PREFIX):
        _git(spec, repo, "cat-file", "-e")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    if path.is_dir():
        raise InputError(f"model {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"model {path} is not readable (permission denied)")


# --- git -----------------------------------------------------------------------------------------

def parse_git_spec(spec: str) -> tuple[str, str]:
    """``git:REF:PATH`` -> (REF, PATH). Refs cannot contain ':', so the first ':' splits."""
    body = spec[len(GIT_PREFIX):]
    ref, sep, path = body.partition(":")
    if not sep or not ref or not path:
        raise InputError(f"model {spec!r} is not of the form git:REF:PATH (for example "
                         f"git:origin/main:models/model.onnx)")
    return ref, path


def _git(spec: str, repo: Path, *command: str) -> bytes:
    """Run ``git -C repo COMMAND REF:PATH`` for a ``git:REF:PATH`` spec; its stdout, or an
    InputError that names the spec and git's own reason."""
    ref, path = parse_git_spec(spec)
    if ref.startswith("-"):
        raise InputError(f"model {spec!r}: a git ref cannot start with '-'")
    try:
        done = subprocess.run(["git", "-C", str(repo), *command, f"{ref}:{path}"],
                              capture_output=True, check=False)
    except FileNotFoundError:
        raise InputError(f"model {spec!r}: git is not installed or not on PATH") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = why[-1] if why else f"git exited with {done.returncode}"
        raise InputError(f"model {spec!r}: cannot read {path!r} at ref {ref!r} in {repo}: {reason}")
    return done.stdout


def read_git_blob(spec: str, repo: Path) -> tuple[str, bytes]:
    """The bytes of PATH as it is on REF, via ``git show`` (into memory, nothing on disk)."""
    ref, path = parse_git_spec(spec)
    blob = _git(spec, repo, "show")
    if blob.startswith(b"version https://git-lfs.github.com/spec/"):
        raise InputError(f"model {spec!r} is a Git LFS pointer on {ref}; fetch the LFS objects "
                         f"(`git lfs fetch origin {ref}`) or name a predictions file instead")
    return path, blob


# --- prediction files ------------------------------------------------------------------------------

def _read_npy(source: Path | bytes, label: str) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(source) if isinstance(source, bytes) else source, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputError(f"predictions {label} store Python objects (pickled); save a plain "
                             f"numeric or text array") from None
        raise InputError(f"predictions {label} are not a readable .npy file: {exc}") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"predictions {label} are not a readable .npy file: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"predictions {label} hold an .npz archive; save one array with np.save")
    return _normalise(arr, label)


def _read_csv_predictions(source: Path | bytes, label: str, expected: int) -> np.ndarray:
    """One prediction per row; the first row is a header when it is not a value like the rest,
    or, for text predictions, when the file has exactly one row more than the test set."""
    try:
        raw = source if isinstance(source, bytes) else Path(source).read_bytes()
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"predictions {label} are not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"cannot read predictions {label}: {exc.strerror or exc}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    values = np.array([ln.strip() for ln in lines], dtype=str) if lines else np.array([], dtype=str)
    if values.size and np.char.find(values, ",").max() >= 0:
        first = int(np.flatnonzero(np.char.find(values, ",") >= 0)[0])
        raise InputError(f"predictions {label}: line {first + 1} has more than one column; "
                         f"write one prediction per line")
    if values.size:
        numeric_head = _is_number(values[0])
        rest_numeric = _all_numbers(values[1:])
        if (not numeric_head and rest_numeric and values.size > 1) or (
                not numeric_head and values.size == expected + 1):
            values, offset = values[1:], 2
        else:
            offset = 1
    else:
        offset = 1
    empty = np.char.str_len(values) == 0
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        raise InputError(f"predictions {label}: {int(empty.sum())} empty line(s) among the "
                         f"predictions (first at line {first + offset})")
    if _all_numbers(values):
        return _normalise(values.astype(np.float64), label)
    return _normalise(values, label)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _all_numbers(values: np.ndarray) -> bool:
    try:
        values.astype(np.float64)
    except ValueError:
        return False
    return True


def _normalise(arr: np.ndarray, label: str) -> np.ndarray:
    """Bring predictions to the label conventions of :mod:`easeml_ci.testset` (int64 / text)."""
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2 and arr.dtype.kind in "fiu":
        arr = np.argmax(arr, axis=1)
    if arr.ndim != 1:
        raise InputError(f"predictions {label} have shape {arr.shape}; expected one prediction "
                         f"per test example (1-D, or 2-D scores)")
    kind = arr.dtype.kind
    if kind == "b" or kind in "iu":
        return arr.astype(np.int64, copy=False)
    if kind == "f":
        finite = np.isfinite(arr)
        if finite.all():
            with np.errstate(invalid="ignore"):
                as_int = arr.astype(np.int64)
            if np.array_equal(as_int, arr):
                return as_int
        return arr.astype(np.float64, copy=False)
    if kind == "S":
        return np.char.decode(arr, "utf-8")
    if kind == "U":
        return arr
    raise InputError(f"predictions {label} have unsupported dtype {arr.dtype}")


# --- ONNX ----------------------------------------------------------------------------------------

def _strip_zipmap(model_bytes: bytes) -> bytes:
    """Remove skl2onnx's ZipMap nodes (probabilities as a list of dicts): we never need them,
    and building millions of Python-visible maps dominates the run time when they are present."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    zipmaps = [n for n in graph.node if n.op_type == "ZipMap"]
    if not zipmaps:
        return model_bytes
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


class OnnxModel:
    """An onnxruntime session plus the conventions to get labels out of it."""

    def __init__(self, source: Path | bytes, label: str, *, session_options=None):
        import onnxruntime as ort

        self.label = label
        try:
            blob = source if isinstance(source, bytes) else Path(source).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read model {label}: {exc.strerror or exc}") from None
        if b"ZipMap" in blob:
            try:
                blob = _strip_zipmap(blob)
            except Exception:  # noqa: BLE001 - a corrupt file is reported by onnxruntime below
                pass
        self.size_bytes = len(blob)
        if session_options is None:
            session_options = ort.SessionOptions()
            # Batches all have one shape, so the memory-pattern plan buys no measurable speed,
            # but it holds a second block for the intermediates (+17 MB vs +9 MB for an MLP
            # (128, 128) on 8k-row batches).
            session_options.enable_mem_pattern = False
        try:
            self.session = ort.InferenceSession(blob, sess_options=session_options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot load ONNX model {label}: {first[:300]}") from None
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

    @property
    def n_features(self) -> int | None:
        shape = self.input.shape
        if len(shape) == 2 and isinstance(shape[1], int):
            return shape[1]
        return None

    def _choose_output(self, outputs: Sequence) -> tuple[str, str]:
        tensors = [o for o in outputs if str(o.type).startswith("tensor(")]
        for o in tensors:
            if "label" in o.name.lower() and o.type in ("tensor(int64)", "tensor(int32)", "tensor(string)"):
                return o.name, "label"
        for o in tensors:
            if o.type in ("tensor(float)", "tensor(double)") and len(o.shape) == 2 and o.shape[1] != 1:
                return o.name, "argmax"
        for o in tensors:
            return o.name, "as-is"
        raise InputError(f"ONNX model {self.label} has no tensor output to read predictions from "
                         f"(outputs: {', '.join(f'{o.name} {o.type}' for o in outputs)})")

    def check_features(self, X: np.ndarray, source) -> None:
        want = self.n_features
        shape = self.input.shape
        if len(shape) != 2:
            raise InputError(f"ONNX model {self.label} takes input {self.input.name!r} of shape "
                             f"{shape}; easeml-ci feeds a 2-D [examples, features] tensor")
        if want is not None and want != X.shape[1]:
            raise InputError(f"ONNX model {self.label} expects {want} features but the test set "
                             f"{source} has {X.shape[1]}")

    def predict(self, X: np.ndarray, *, batch_size: int = DEFAULT_BATCH_ROWS,
                progress: Progress | None = None, source="(in memory)") -> np.ndarray:
        """Predictions for every row of X, in batches of ``batch_size`` rows."""
        self.check_features(X, source)
        n = X.shape[0]
        row_bytes = max(1, X.shape[1] * self.input_dtype.itemsize)
        batch_size = max(1, min(batch_size, _MAX_BATCH_INPUT_BYTES // row_bytes))
        out: np.ndarray | None = None
        feed_name = self.input.name
        for start in range(0, n, max(1, batch_size)):
            batch = X[start:start + batch_size]
            if batch.dtype != self.input_dtype or not batch.flags.c_contiguous:
                batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
            try:
                (res,) = self.session.run([self.output_name], {feed_name: batch})
            except Exception as exc:  # onnxruntime's own error types
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InputError(f"ONNX model {self.label} failed on the test set: {first[:300]}") from None
            res = np.asarray(res)
            if self.output_rule == "argmax" and res.ndim == 2:
                res = np.argmax(res, axis=1)
            elif res.ndim == 2 and res.shape[1] == 1:
                res = res[:, 0]
            if res.ndim != 1 or res.shape[0] != batch.shape[0]:
                raise InputError(f"ONNX model {self.label} output {self.output_name!r} has shape "
                                 f"{res.shape} for {batch.shape[0]} examples; expected one "
                                 f"prediction per example")
            if out is None:
                dtype = object if res.dtype.kind == "O" else res.dtype
                out = np.empty(n, dtype=dtype)
            out[start:start + res.shape[0]] = res
            if progress is not None:
                progress(min(start + batch_size, n), n)
        if out is None:
            return np.empty(0, dtype=np.int64)
        if out.dtype == object:
            out = out.astype(str)
        return _normalise(out, self.label)


def bare_inference(onnx_path, X: np.ndarray, output: str | None = None) -> np.ndarray:
    """The baseline of ``bench/check_overhead.py``: a default onnxruntime session, one call on
    the whole array, the first (label) output — what a user would write by hand."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = output or session.get_outputs()[0].name
    return session.run([out], {name: X})[0]
