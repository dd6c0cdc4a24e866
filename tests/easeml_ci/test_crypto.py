"""Encrypted test sets: round trips, fingerprint binding, and every key/tamper failure (exit 2)."""
from __future__ import annotations

import base64
import json
import os
import struct
import threading

import numpy as np
import pytest

from testset_files import KEY_ENV, arrays, cli, new_key, write_npz
from easeml_ci.testsets import crypto
from easeml_ci.errors import InputError
from easeml_ci.testsets import encrypt_testset, load_testset


@pytest.fixture
def key(monkeypatch):
    k = new_key()
    monkeypatch.setenv(KEY_ENV, k)
    return k


@pytest.fixture
def plain(tmp_path):
    X, y = arrays(rows=64, features=5, seed=11)
    return write_npz(tmp_path / "plain.npz", X=X, y=y)


def _encrypt(plain, out, key, chunk_bytes=crypto.DEFAULT_CHUNK_BYTES):
    ts = load_testset(plain)
    encrypt_testset(ts, out, base64.urlsafe_b64decode(key), chunk_bytes=chunk_bytes)
    return ts


# --- round trips --------------------------------------------------------------------------------

def test_keygen_prints_a_fresh_32_byte_key_and_says_to_keep_it_secret():
    first, second = cli(["testset", "keygen"]), cli(["testset", "keygen"])
    assert first.exit_code == 0
    key = first.stdout.strip()
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert key != second.stdout.strip()
    assert "secret" in first.stderr and KEY_ENV in first.stderr


def test_cli_encrypt_then_decrypt_round_trips_and_keeps_the_fingerprint(tmp_path, plain, key):
    enc = tmp_path / "t.enc"
    result = cli(["testset", "encrypt", str(plain), str(enc)], env={KEY_ENV: key})
    assert result.exit_code == 0, result.output
    original = load_testset(plain)
    assert result.stdout.strip() == original.fingerprint
    assert crypto.read_header(enc).fingerprint == original.fingerprint
    raw = enc.read_bytes()
    assert original.X.tobytes()[:64] not in raw  # the features are not in the clear
    for out_name in ("back.npz", "back.csv"):
        out = tmp_path / out_name
        result = cli(["testset", "decrypt", str(enc), str(out)], env={KEY_ENV: key})
        assert result.exit_code == 0, result.output
        assert (out.stat().st_mode & 0o777) == 0o600
        back = load_testset(out)
        np.testing.assert_array_equal(back.X, original.X)
        np.testing.assert_array_equal(back.y, original.y)
        assert back.fingerprint == original.fingerprint


def test_reencryption_under_another_key_keeps_the_fingerprint(tmp_path, plain, key, monkeypatch):
    first = tmp_path / "a.enc"
    second = tmp_path / "b.enc"
    fp = _encrypt(plain, first, key).fingerprint
    other = new_key()
    result = cli(["testset", "encrypt", str(first), str(second), "--key-env", "OTHER_KEY",
                  "--in-key-env", KEY_ENV], env={KEY_ENV: key, "OTHER_KEY": other})
    assert result.exit_code == 0, result.output
    assert first.read_bytes() != second.read_bytes()
    assert crypto.read_header(first).key_id != crypto.read_header(second).key_id
    monkeypatch.setenv("OTHER_KEY", other)
    assert load_testset(second, key_env="OTHER_KEY").fingerprint == fp
    with pytest.raises(InputError, match="wrong key"):
        load_testset(second)  # the old key no longer opens it
    shown = cli(["testset", "fingerprint", str(second)], env={KEY_ENV: None})
    assert shown.exit_code == 0 and shown.stdout.strip() == fp
    assert "header" in shown.stderr  # says it is not verified without the key


def test_many_small_chunks_round_trip(tmp_path, plain, key):
    enc = tmp_path / "t.enc"
    ts = _encrypt(plain, enc, key, chunk_bytes=100)
    header = crypto.read_header(enc)
    assert header.chunks > 10
    back = load_testset(enc)
    assert back.fingerprint == ts.fingerprint
    np.testing.assert_array_equal(back.y, ts.y)


def test_decryption_writes_nothing_to_disk(tmp_path, plain, key, monkeypatch):
    enc = tmp_path / "t.enc"
    _encrypt(plain, enc, key)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.chdir(scratch)
    before = sorted(p.name for p in tmp_path.iterdir())
    ts = load_testset(enc)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list(scratch.iterdir()) == []
    assert isinstance(ts.X.base, (bytearray, memoryview, np.ndarray))  # views of the buffer
    assert not isinstance(ts.X.base, np.memmap)


def test_no_command_accepts_the_key_as_an_argument(tmp_path, plain, key):
    result = cli(["testset", "encrypt", str(plain), str(tmp_path / "t.enc"), "--key", key])
    assert result.exit_code == 2 and "No such option" in result.output


def test_encrypt_refuses_to_overwrite_without_force(tmp_path, plain, key):
    enc = tmp_path / "t.enc"
    enc.write_bytes(b"keep me")
    result = cli(["testset", "encrypt", str(plain), str(enc)], env={KEY_ENV: key})
    assert result.exit_code == 2 and "--force" in result.stderr
    assert enc.read_bytes() == b"keep me"
    result = cli(["testset", "encrypt", str(plain), str(enc), "--force"], env={KEY_ENV: key})
    assert result.exit_code == 0 and crypto.is_encrypted(enc)


# --- failures -------------------------------------------------------------------------------------

def _flip_byte(path, offset_from_end=20):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def _swap_header_fingerprint(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12:12 + length])
    header["fingerprint"] = "0" * 64
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    assert len(raw) == length
    path.write_bytes(data[:12] + raw + data[12 + length:])


def _swap_chunks(path):
    header = crypto.read_header(path)
    data = path.read_bytes()
    size = crypto.NONCE_BYTES + header.chunk_bytes + crypto.TAG_BYTES
    start = header.data_offset
    a, b = data[start:start + size], data[start + size:start + 2 * size]
    path.write_bytes(data[:start] + b + a + data[start + 2 * size:])


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-1])


def _drop_last_chunk(path):
    header = crypto.read_header(path)
    size = crypto.NONCE_BYTES + header.chunk_bytes + crypto.TAG_BYTES
    data = path.read_bytes()
    last = len(data) - ((len(data) - header.data_offset) - (header.chunks - 1) * size)
    path.write_bytes(data[:last])


def _append(path):
    path.write_bytes(path.read_bytes() + b"\0" * 32)


TAMPERING = {
    "a flipped ciphertext bit": (_flip_byte, "modified or is truncated"),
    "a swapped header fingerprint": (_swap_header_fingerprint, "modified or is truncated"),
    "reordered chunks": (_swap_chunks, "modified or is truncated"),
    "a truncated file": (_truncate, "modified or is truncated"),
    "a dropped last chunk": (_drop_last_chunk, "modified or is truncated"),
    "appended bytes": (_append, "modified or is truncated"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_fails_authentication(tmp_path, plain, key, case):
    enc = tmp_path / "t.enc"
    _encrypt(plain, enc, key, chunk_bytes=256)
    tamper, fragment = TAMPERING[case]
    tamper(enc)
    with pytest.raises(InputError, match=fragment) as info:
        load_testset(enc)
    assert "t.enc" in str(info.value)
    result = cli(["testset", "decrypt", str(enc), str(tmp_path / "out.npz")], env={KEY_ENV: key})
    assert result.exit_code == 2 and "failed authentication" in result.stderr
    assert not (tmp_path / "out.npz").exists()


KEY_PROBLEMS = {
    "missing key": (None, [KEY_ENV, "is not set"]),
    "empty key": ("  ", [KEY_ENV, "is not set"]),
    "not base64": ("not*base64*at*all!", [KEY_ENV, "not URL-safe base64"]),
    "wrong length": (base64.urlsafe_b64encode(b"x" * 16).decode(), [KEY_ENV, "16 bytes"]),
    "wrong key": ("WRONG", ["wrong key", KEY_ENV, "t.enc"]),
}


@pytest.mark.parametrize("case", list(KEY_PROBLEMS))
def test_key_problems_are_clear_input_errors(tmp_path, plain, key, case, monkeypatch):
    enc = tmp_path / "t.enc"
    _encrypt(plain, enc, key)
    value, fragments = KEY_PROBLEMS[case]
    if value == "WRONG":
        value = new_key()
    if value is None:
        monkeypatch.delenv(KEY_ENV)
    else:
        monkeypatch.setenv(KEY_ENV, value)
    with pytest.raises(InputError) as info:
        load_testset(enc)
    for fragment in fragments:
        assert fragment in str(info.value)
    if value is not None and value.strip():
        assert value not in str(info.value)  # never echo the key
    result = cli(["testset", "decrypt", str(enc), str(tmp_path / "out.csv")],
                 env={KEY_ENV: value})
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and fragments[0] in result.stderr


def test_encrypt_without_a_key_names_the_variable(tmp_path, plain):
    result = cli(["testset", "encrypt", str(plain), str(tmp_path / "t.enc"), "--key-env", "MY_KEY"],
                 env={"MY_KEY": None})
    assert result.exit_code == 2 and "MY_KEY is not set" in result.stderr
    assert not (tmp_path / "t.enc").exists()


def test_decrypt_of_a_plain_file_or_to_a_bad_extension_is_refused(tmp_path, plain, key):
    result = cli(["testset", "decrypt", str(plain), str(tmp_path / "o.npz")], env={KEY_ENV: key})
    assert result.exit_code == 2 and "not an easeml-ci encrypted test set" in result.stderr
    enc = tmp_path / "t.enc"
    _encrypt(plain, enc, key)
    result = cli(["testset", "decrypt", str(enc), str(tmp_path / "o.parquet")], env={KEY_ENV: key})
    assert result.exit_code == 2 and "allowed: .npz, .csv" in result.stderr


def test_header_is_readable_without_key_and_encrypted_file_is_found_by_content(tmp_path, plain, key,
                                                                                 monkeypatch):
    enc = tmp_path / "t.enc"
    fp = _encrypt(plain, enc, key).fingerprint
    renamed = tmp_path / "secret-data.bin"
    os.rename(enc, renamed)
    monkeypatch.delenv(KEY_ENV)
    assert crypto.read_header(renamed).fingerprint == fp
    monkeypatch.setenv(KEY_ENV, key)
    assert load_testset(renamed).fingerprint == fp


def test_a_forged_size_in_the_header_is_refused_before_allocating(tmp_path, plain, key):
    enc = tmp_path / "t.enc"
    _encrypt(plain, enc, key)
    data = enc.read_bytes()
    (length,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12:12 + length])
    header["plaintext_bytes"] = 10 ** 15  # 1 PB: allocating it would fail loudly
    header["chunks"] = -(-10 ** 15 // header["chunk_bytes"])
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    enc.write_bytes(data[:8] + struct.pack("<I", len(raw)) + raw + data[12 + length:])
    with pytest.raises(InputError, match="modified or is truncated"):
        load_testset(enc)


def test_an_unknown_format_version_is_named(tmp_path, plain, key):
    enc = tmp_path / "t.enc"
    _encrypt(plain, enc, key)
    data = enc.read_bytes()
    (length,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12:12 + length])
    header["version"] = 99
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    enc.write_bytes(data[:8] + struct.pack("<I", len(raw)) + raw + data[12 + length:])
    with pytest.raises(InputError, match="format version 99"):
        load_testset(enc)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 100, 129, 4096, crypto.DEFAULT_CHUNK_BYTES])
def test_any_chunking_decrypts_to_separate_feature_and_label_buffers(tmp_path, plain, key, chunk_bytes):
    enc = tmp_path / "t.enc"
    original = _encrypt(plain, enc, key, chunk_bytes=chunk_bytes)
    back = load_testset(enc)
    assert back.fingerprint == original.fingerprint
    np.testing.assert_array_equal(back.X, original.X)
    np.testing.assert_array_equal(back.y, original.y)
    assert not np.shares_memory(back.X, back.y)  # dropping X frees the features, keeps y


def _encrypt_raw(path, parts, key, fingerprint=None):
    import hashlib

    blob = b"".join(bytes(p) for p in parts)
    fp = fingerprint or hashlib.sha256(blob).hexdigest()
    crypto.encrypt_to_file([blob], len(blob), fp, base64.urlsafe_b64decode(key), path)


@pytest.mark.parametrize("case", ["float64 features", "nonzero padding", "float labels that are integers",
                                  "not a test set", "extra bytes"])
def test_non_canonical_plaintext_is_refused(tmp_path, key, case):
    from easeml_ci.testsets import canonical as ts_mod

    X = np.arange(6, dtype=np.float32).reshape(3, 2)
    y = np.array([0, 1, 1], dtype="<i8")
    parts = ts_mod.canonical_parts(X, y)
    if case == "float64 features":
        X64 = X.astype("<f8")
        parts = [ts_mod._preamble(X64, y), X64.tobytes(), b"\0" * ts_mod.pad(X64.nbytes), y.tobytes()]
    elif case == "nonzero padding":
        parts[2] = b"\1" * len(parts[2])
    elif case == "float labels that are integers":
        yf = y.astype("<f8")
        parts = ts_mod.canonical_parts(X, yf)
    elif case == "not a test set":
        parts = [b"hello, world\n" * 10]
    else:
        parts.append(b"\0" * 8)
    enc = tmp_path / "t.enc"
    _encrypt_raw(enc, parts, key)
    with pytest.raises(InputError, match="not an easeml-ci test set|canonical"):
        load_testset(enc)


def test_a_header_fingerprint_that_does_not_match_the_content_is_refused(tmp_path, key):
    from easeml_ci.testsets import canonical as ts_mod

    X = np.ones((2, 2), np.float32)
    y = np.array([0, 1], dtype="<i8")
    enc = tmp_path / "t.enc"
    _encrypt_raw(enc, ts_mod.canonical_parts(X, y), key, fingerprint="f" * 64)
    with pytest.raises(InputError, match="does not match the fingerprint"):
        load_testset(enc)


def test_derive_key_is_hkdf_sha256_and_separates_purposes():
    import hashlib
    import hmac

    from easeml_ci.testsets.crypto import derive_key

    key = bytes(range(32))
    # RFC 5869 by hand: extract with an all-zero salt, then one expand block (32 bytes).
    prk = hmac.new(b"\0" * 32, key, hashlib.sha256).digest()
    expected = hmac.new(prk, b"easeml-ci/ledger" + b"\x01", hashlib.sha256).digest()
    assert derive_key(key, "ledger") == expected
    assert derive_key(key, "ledger") != derive_key(key, "reading-order")
    assert derive_key(key, "ledger") != derive_key(bytes(32), "ledger")
    with pytest.raises(ValueError):
        derive_key(key, "")


def test_the_ordered_hasher_gives_the_digest_of_the_spans_in_order_however_they_are_merged():
    """Spans handed over (merged on the worker when they follow each other in one buffer) and
    spans hashed on the caller's thread in between hash to the SHA-256 of the bytes in order."""
    import hashlib

    from easeml_ci.testsets.canonical import OrderedHasher

    rng = np.random.default_rng(3)
    first, second = (memoryview(rng.integers(0, 256, n, dtype=np.uint8)) for n in (10_000, 7_000))
    hasher, expected = OrderedHasher(), hashlib.sha256()
    for start in range(0, 6_000, 1_000):  # adjacent spans of one buffer
        hasher.hand_over(first, start, start + 1_000)
        expected.update(first[start:start + 1_000])
    hasher.hash_here(b"scratch chunk")  # waits for the spans before it
    expected.update(b"scratch chunk")
    hasher.hand_over(second, 0, 3_000)  # another buffer: not merged with the first's spans
    hasher.hand_over(first, 6_000, 10_000)  # not adjacent to what precedes it
    expected.update(second[:3_000])
    expected.update(first[6_000:])
    assert hasher.hexdigest() == expected.hexdigest()
    assert not [t for t in threading.enumerate() if t.name == "easeml-hash"]  # the worker ended


def test_the_ordered_hasher_raises_a_worker_failure_on_the_callers_thread():
    from easeml_ci.testsets.canonical import OrderedHasher

    hasher = OrderedHasher()
    hasher.hand_over(object(), 0, 1)  # not a buffer: the worker's update fails
    with pytest.raises(TypeError):
        hasher.hexdigest()
    assert not [t for t in threading.enumerate() if t.name == "easeml-hash"]


# --- a registered test set's check: its fingerprint from the authenticated header ------------------

def _gate_folder(tmp_path, key, *, fingerprint=None):
    """A gate folder with an encrypted 1,000-row test set (its header claiming ``fingerprint``
    when given), a right and a wrong prediction file and a config."""
    from easeml_ci.testsets import canonical

    X, y = arrays(rows=1000, features=3, seed=5, classes=2)
    ts = canonical.testset_from_arrays(X, y, "ts")
    if fingerprint is None:
        encrypt_testset(ts, tmp_path / "ts.enc", base64.urlsafe_b64decode(key))
    else:
        _encrypt_raw(tmp_path / "ts.enc", canonical.canonical_parts(ts.X, ts.y), key, fingerprint)
    np.save(tmp_path / "good.npy", ts.y)
    (tmp_path / ".easeml.yml").write_text("condition: n > 0.6 +/- 0.1\nreliability: 0.9\nsteps: 4\n")
    return ts


@pytest.fixture
def hashed(monkeypatch):
    """How many byte spans the test-set readers hash (on the worker or in place)."""
    from easeml_ci.testsets import canonical

    spans = []
    hand_over, hash_here = canonical.OrderedHasher.hand_over, canonical.OrderedHasher.hash_here

    def counted_hand_over(self, buffer, start, end):
        spans.append(end - start)
        return hand_over(self, buffer, start, end)

    def counted_hash_here(self, data):
        spans.append(len(data))
        return hash_here(self, data)

    monkeypatch.setattr(canonical.OrderedHasher, "hand_over", counted_hand_over)
    monkeypatch.setattr(canonical.OrderedHasher, "hash_here", counted_hash_here)
    return spans


def test_a_registered_test_sets_check_does_not_hash_it_again_and_its_registration_did(
        tmp_path, key, hashed):
    from easeml_ci.gate.check import run_check

    ts = _gate_folder(tmp_path, key)
    size = crypto.read_header(tmp_path / "ts.enc").plaintext_bytes
    first = run_check(tmp_path / ".easeml.yml", "good.npy", None, "ts.enc", workdir=tmp_path)
    assert sum(hashed) == size  # registering it (register=True, a new test set) hashed every byte
    hashed.clear()
    second = run_check(tmp_path / ".easeml.yml", "good.npy", None, "ts.enc", workdir=tmp_path,
                       register=False)
    assert hashed == []
    assert (first.verdict, second.verdict) == ("pass", "pass")
    assert first.fingerprint == second.fingerprint == ts.fingerprint
    assert second.budget.used == 2


def test_a_header_that_lies_about_the_fingerprint_is_refused_before_it_is_registered(tmp_path, key):
    from easeml_ci.gate.check import run_check

    _gate_folder(tmp_path, key, fingerprint="f" * 64)
    with pytest.raises(InputError, match="does not match the fingerprint"):
        run_check(tmp_path / ".easeml.yml", "good.npy", None, "ts.enc", workdir=tmp_path)
    assert not (tmp_path / ".easeml").exists()  # no ledger: nothing registered, nothing spent
    result = cli(["testset", "register", str(tmp_path / "ts.enc"), "--config",
                  str(tmp_path / ".easeml.yml")], env={KEY_ENV: key})
    assert result.exit_code == 2 and "does not match the fingerprint" in result.stderr


def test_a_registered_test_set_changed_on_disk_is_refused_without_the_re_hash(tmp_path, key):
    from easeml_ci.gate.check import run_check

    _gate_folder(tmp_path, key)
    run_check(tmp_path / ".easeml.yml", "good.npy", None, "ts.enc", workdir=tmp_path)
    enc = tmp_path / "ts.enc"
    raw = bytearray(enc.read_bytes())
    raw[-40] ^= 1  # one bit of the last chunk's ciphertext
    enc.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="failed authentication"):
        run_check(tmp_path / ".easeml.yml", "good.npy", None, "ts.enc", workdir=tmp_path,
                  register=False)


def test_load_encrypted_without_the_re_hash_gives_the_same_test_set(tmp_path, plain, key, hashed):
    from easeml_ci.testsets import load_encrypted

    enc = tmp_path / "t.enc"
    original = _encrypt(plain, enc, key, chunk_bytes=256)
    hashed.clear()
    trusted = load_encrypted(enc, KEY_ENV, rehash=False)
    assert hashed == []
    assert trusted.fingerprint == original.fingerprint
    assert np.array_equal(trusted.X, original.X) and np.array_equal(trusted.y, original.y)
    assert not [t for t in threading.enumerate() if t.name == "easeml-hash"]
