"""The one helper that replaces files: all or nothing, private from the first byte, durable."""
import os
import stat

import pytest

from easeml_ci import atomic


def test_replaces_the_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_a_failure_midway_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_write(path, "w") as fh:
            fh.write("half of the new")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_a_private_file_is_private_while_it_is_written(tmp_path):
    path = tmp_path / "secret.npz"
    with atomic.atomic_write(path, "wb", perms=0o600) as fh:
        fh.write(b"x")
        (temporary,) = [p for p in tmp_path.iterdir()]
        assert temporary.parent == path.parent  # same folder: the rename is atomic
        assert stat.S_IMODE(os.stat(temporary).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_two_writers_never_share_a_temporary_file(tmp_path):
    path = tmp_path / "f"
    with atomic.atomic_write(path) as one, atomic.atomic_write(path) as two:
        assert one.name != two.name
        one.write(b"1")
        two.write(b"2")
    assert path.read_bytes() == b"1"  # the last to finish wins, whole


def test_only_write_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w', got 'a'"):
        with atomic.atomic_write(tmp_path / "f", "a"):
            pass
