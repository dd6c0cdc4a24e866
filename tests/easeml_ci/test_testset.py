"""Test-set loading: formats, canonical fingerprint, and every bad-input case (exit 2)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from testset_files import arrays, cli, write_csv, write_npz
from easeml_ci.errors import InputError
from easeml_ci.testsets import TestSet, load_pool, load_testset, save_testset


# --- formats and the canonical fingerprint ------------------------------------------------------

def test_npz_loads_canonical_arrays(tmp_path):
    X, y = arrays(rows=25, features=4)
    ts = load_testset(write_npz(tmp_path / "t.npz", X=X.astype(np.float64), y=y.astype(np.int32)))
    assert isinstance(ts, TestSet)
    assert len(ts) == 25 and ts.X.shape == (25, 4)
    assert ts.X.dtype == np.float32 and ts.X.flags.c_contiguous
    assert ts.y.dtype == np.int64
    np.testing.assert_array_equal(ts.X, X)
    np.testing.assert_array_equal(ts.y, y)
    assert len(ts.fingerprint) == 64 and int(ts.fingerprint, 16) >= 0


def test_repr_shows_no_data(tmp_path):
    X, y = arrays(rows=5)
    ts = load_testset(write_npz(tmp_path / "t.npz", X=X, y=y))
    text = repr(ts)
    assert "examples=5" in text and str(y.tolist()) not in text


def test_fingerprint_survives_rename_and_csv_npz_reencoding(tmp_path):
    X, y = arrays(rows=30, features=3)
    a = load_testset(write_npz(tmp_path / "a.npz", X=X, y=y))
    shutil.copy(tmp_path / "a.npz", tmp_path / "renamed.npz")
    assert load_testset(tmp_path / "renamed.npz").fingerprint == a.fingerprint
    # CSV written by hand (label first, float32 values printed to round-trip), then back to npz.
    rows = [[int(label)] + [repr(float(v)) for v in row] for row, label in zip(X, y)]
    csv_ts = load_testset(write_csv(tmp_path / "t.csv", ["label", "f0", "f1", "f2"], rows))
    assert csv_ts.fingerprint == a.fingerprint
    np.savez(tmp_path / "back.npz", X=csv_ts.X, y=csv_ts.y)
    assert load_testset(tmp_path / "back.npz").fingerprint == a.fingerprint
    # float labels 0.0/1.0/2.0 and float64 features of the same values are the same data
    np.savez(tmp_path / "f64.npz", X=X.astype(np.float64), y=y.astype(np.float64))
    assert load_testset(tmp_path / "f64.npz").fingerprint == a.fingerprint


def test_save_testset_csv_round_trips_fingerprint(tmp_path):
    X, y = arrays(rows=50, features=6, seed=3)
    ts = load_testset(write_npz(tmp_path / "t.npz", X=X * 1e-3, y=y))
    out = save_testset(ts, tmp_path / "out.csv", label_column="target")
    assert (out.stat().st_mode & 0o777) == 0o600
    back = load_testset(out, label_column="target")
    assert back.fingerprint == ts.fingerprint


@pytest.mark.parametrize("change", ["one label", "one feature", "row order"])
def test_fingerprint_changes_with_the_data(tmp_path, change):
    X, y = arrays(rows=20)
    base = load_testset(write_npz(tmp_path / "a.npz", X=X, y=y)).fingerprint
    X2, y2 = X.copy(), y.copy()
    if change == "one label":
        y2[7] = (y2[7] + 1) % 3
    elif change == "one feature":
        X2[3, 1] = np.nextafter(X2[3, 1], np.float32(np.inf))
    else:
        X2, y2 = X2[::-1], y2[::-1]
    assert load_testset(write_npz(tmp_path / "b.npz", X=X2, y=y2)).fingerprint != base


def test_text_labels_same_fingerprint_in_csv_and_npz(tmp_path):
    X, y = arrays(rows=12, features=2)
    names = np.array(["cat", "dog", "a, b"])[y]
    ts = load_testset(write_npz(tmp_path / "t.npz", X=X, y=names.astype("U10")))
    assert ts.y.dtype == np.dtype("<U4")
    save_testset(ts, tmp_path / "t.csv")
    back = load_testset(tmp_path / "t.csv")
    assert back.fingerprint == ts.fingerprint
    assert back.y.tolist() == names.tolist()


def test_csv_label_column_anywhere_and_named_in_config(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["a", "target", "b"], [[1.5, 1, 2], [0.5, 0, -1], [2, 1, 3]])
    ts = load_testset(path, label_column="target")
    np.testing.assert_array_equal(ts.X, np.array([[1.5, 2], [0.5, -1], [2, 3]], np.float32))
    assert ts.y.tolist() == [1, 0, 1]


def test_nan_features_are_allowed_and_canonical(tmp_path):
    X, y = arrays(rows=6)
    X1, X2 = X.copy(), X.copy()
    X1[2, 0] = np.float32("nan")
    X2.view(np.uint32)[2, 0] = 0xFFC00001  # a different NaN bit pattern
    a = load_testset(write_npz(tmp_path / "a.npz", X=X1, y=y))
    b = load_testset(write_npz(tmp_path / "b.npz", X=X2, y=y))
    assert np.isnan(a.X[2, 0]) and a.fingerprint == b.fingerprint


# --- bad input: library (InputError) and CLI (exit 2, one line, no traceback) -------------------

def _case_missing(tmp):
    return tmp / "nope.npz", {}, ["does not exist", "nope.npz"]


def _case_directory(tmp):
    (tmp / "dir.npz").mkdir()
    return tmp / "dir.npz", {}, ["is a directory"]


def _case_extension(tmp):
    p = tmp / "t.parquet"
    p.write_bytes(b"PAR1")
    return p, {}, ["'.parquet'", ".npz, .csv, .enc"]


def _case_npz_without_y(tmp):
    X, _ = arrays()
    return write_npz(tmp / "t.npz", X=X, labels=np.zeros(40)), {}, ["no array 'y'", "'labels'"]


def _case_npz_without_x(tmp):
    _, y = arrays()
    return write_npz(tmp / "t.npz", features=np.zeros((40, 2)), y=y), {}, ["no array 'X'"]


def _case_npz_corrupt(tmp):
    p = tmp / "t.npz"
    p.write_bytes(b"this is not a zip archive at all")
    return p, {}, ["not a readable .npz"]


def _case_npz_pickled(tmp):
    X, _ = arrays(rows=3)
    y = np.array([{"a": 1}, None, 3], dtype=object)
    return write_npz(tmp / "t.npz", X=X, y=y), {}, ["pickled"]


def _case_label_column_absent(tmp):
    p = write_csv(tmp / "t.csv", ["f0", "f1", "class"], [[1, 2, 0], [3, 4, 1]])
    return p, {"label_column": "label"}, ["no label column 'label'", "'f0', 'f1', 'class'"]


def _case_nan_labels_npz(tmp):
    X, y = arrays(rows=10)
    y = y.astype(float)
    y[[4, 8]] = np.nan
    return write_npz(tmp / "t.npz", X=X, y=y), {}, ["2 missing or NaN labels", "first at index 4"]


def _case_missing_labels_csv(tmp):
    rows = [[1, 2, 0], [3, 4, ""], [5, 6, 1], [7, 8, ""], [9, 0, "nan"]]
    p = write_csv(tmp / "t.csv", ["f0", "f1", "label"], rows)
    return p, {}, ["3 missing or NaN labels in column 'label'", "first at data row 2"]


def _case_empty_npz(tmp):
    return write_npz(tmp / "t.npz", X=np.zeros((0, 3), np.float32), y=np.zeros(0)), {}, ["empty (0 examples)"]


def _case_empty_csv(tmp):
    return write_csv(tmp / "t.csv", ["f0", "label"], []), {}, ["empty (0 examples)"]


def _case_zero_byte_csv(tmp):
    p = tmp / "t.csv"
    p.write_bytes(b"")
    return p, {}, ["is empty", "header"]


def _case_length_mismatch(tmp):
    X, y = arrays(rows=10)
    return write_npz(tmp / "t.npz", X=X, y=y[:9]), {}, ["X has 10 rows but y has 9 labels"]


def _case_text_features_csv(tmp):
    p = write_csv(tmp / "t.csv", ["f0", "f1", "label"], [[1, 2, 0], [3, "high", 1]])
    return p, {}, ["must be numeric", "'high' is not a number", "data row 2, column 'f1'"]


def _case_text_features_npz(tmp):
    X = np.array([["a", "b"], ["c", "d"]])
    return write_npz(tmp / "t.npz", X=X, y=np.array([0, 1])), {}, ["not numeric", "<U1"]


def _case_one_dimensional_x(tmp):
    return write_npz(tmp / "t.npz", X=np.zeros(5), y=np.zeros(5)), {}, ["1-D", "2-D feature matrix"]


def _case_ragged_csv(tmp):
    p = tmp / "t.csv"
    p.write_text("f0,f1,label\n1,2,0\n3,1\n", encoding="utf-8")
    return p, {}, ["data row 2 has 2 columns but the header has 3"]


def _case_not_our_enc(tmp):
    p = tmp / "t.enc"
    p.write_bytes(b"random bytes, not a test set")
    return p, {}, ["not an easeml-ci encrypted test set"]


BAD_INPUTS = {
    "missing file": _case_missing,
    "directory instead of file": _case_directory,
    "unknown extension": _case_extension,
    "npz without y": _case_npz_without_y,
    "npz without X": _case_npz_without_x,
    "npz that is not a zip": _case_npz_corrupt,
    "npz with pickled objects": _case_npz_pickled,
    "label column does not exist": _case_label_column_absent,
    "NaN labels (npz)": _case_nan_labels_npz,
    "missing labels (csv)": _case_missing_labels_csv,
    "empty test set (npz)": _case_empty_npz,
    "empty test set (csv header only)": _case_empty_csv,
    "zero-byte csv": _case_zero_byte_csv,
    "X and y lengths differ": _case_length_mismatch,
    "non-numeric features (csv)": _case_text_features_csv,
    "non-numeric features (npz)": _case_text_features_npz,
    "1-D features": _case_one_dimensional_x,
    "ragged csv row": _case_ragged_csv,
    ".enc that is not ours": _case_not_our_enc,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_test_set_is_an_input_error_naming_file_and_problem(tmp_path, case):
    path, kwargs, fragments = BAD_INPUTS[case](tmp_path)
    with pytest.raises(InputError) as info:
        load_testset(path, **kwargs)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_test_set_exits_2_on_the_command_line(tmp_path, case):
    path, kwargs, fragments = BAD_INPUTS[case](tmp_path)
    args = ["testset", "fingerprint", str(path)]
    if "label_column" in kwargs:
        args += ["--label-column", kwargs["label_column"]]
    result = cli(args, env={"EASEML_TESTSET_KEY": None})
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert fragments[0] in lines[0]


def test_fingerprint_command_prints_the_fingerprint(tmp_path):
    X, y = arrays()
    path = write_npz(tmp_path / "t.npz", X=X, y=y)
    result = cli(["testset", "fingerprint", str(path)])
    assert result.exit_code == 0
    assert result.stdout.strip() == load_testset(path).fingerprint


# --- the unlabelled pool ---------------------------------------------------------------------------

def test_pool_from_npz_and_csv(tmp_path):
    X, _ = arrays(rows=8, features=2)
    np.testing.assert_array_equal(load_pool(write_npz(tmp_path / "p.npz", X=X)), X)
    rows = [[repr(float(a)), repr(float(b))] for a, b in X]
    np.testing.assert_array_equal(load_pool(write_csv(tmp_path / "p.csv", ["a", "b"], rows)), X)
    with_labels = [r + [""] for r in rows]  # a label column in a pool is ignored
    got = load_pool(write_csv(tmp_path / "q.csv", ["a", "b", "label"], with_labels))
    np.testing.assert_array_equal(got, X)


@pytest.mark.parametrize("case,fragment", [
    ("no X", "no array 'X'"),
    ("empty", "empty (0 examples)"),
    ("extension", "allowed: .npz, .csv"),
    ("missing", "does not exist"),
])
def test_bad_pool_is_an_input_error(tmp_path, case, fragment):
    if case == "no X":
        path = write_npz(tmp_path / "p.npz", features=np.zeros((3, 2)))
    elif case == "empty":
        path = write_npz(tmp_path / "p.npz", X=np.zeros((0, 2)))
    elif case == "extension":
        path = tmp_path / "p.json"
        path.write_text("{}")
    else:
        path = tmp_path / "none.npz"
    with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_pool(path)


def test_csv_with_bom_crlf_quoted_header_and_padded_labels(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes('\ufeff"f0","f1","label"\r\n1.5,2, 1\r\n"0.5",-1,0 \r\n'.encode("utf-8"))
    ts = load_testset(path)
    np.testing.assert_array_equal(ts.X, np.array([[1.5, 2], [0.5, -1]], np.float32))
    assert ts.y.tolist() == [1, 0] and ts.y.dtype == np.int64


def test_non_integral_and_huge_float_labels_stay_float(tmp_path, recwarn):
    X, _ = arrays(rows=3)
    ts = load_testset(write_npz(tmp_path / "t.npz", X=X, y=np.array([0.5, 1e300, -2.0])))
    assert ts.y.dtype == np.float64 and ts.y.tolist() == [0.5, 1e300, -2.0]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_bool_and_unsigned_labels_are_int64(tmp_path):
    X, _ = arrays(rows=4)
    a = load_testset(write_npz(tmp_path / "a.npz", X=X, y=np.array([True, False, True, True])))
    b = load_testset(write_npz(tmp_path / "b.npz", X=X, y=np.array([1, 0, 1, 1], np.uint8)))
    assert a.y.dtype == b.y.dtype == np.int64 and a.fingerprint == b.fingerprint
