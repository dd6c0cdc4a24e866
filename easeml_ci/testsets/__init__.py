"""Test sets: their canonical form and fingerprint, files (plaintext and encrypted), and labels.

* :mod:`.canonical` — the canonical form of labelled and unlabelled test sets (the fingerprint);
* :mod:`.readers` and :mod:`.writers` — their files: ``.npz``, CSV, encrypted;
* :mod:`.source` — :class:`TestSetSource`, a file asked once what it is (encrypted? fingerprint?);
* :mod:`.crypto` — the encrypted file format (AES-GCM, chunked, header bound into every chunk);
* :mod:`.labels` — the append-only label store of a test set labelled on demand.
"""
from .source import TestSetSource
from .canonical import (
    ALLOWED_SUFFIXES,
    ENCRYPTED_SUFFIX,
    PLAIN_SUFFIXES,
    TestSet,
    UnlabelledTestSet,
    fingerprint_arrays,
    fingerprint_unlabelled,
    testset_from_arrays,
    unlabelled_from_arrays,
)
from .readers import (
    is_unlabelled_file,
    load_any_testset,
    load_encrypted,
    load_own_testset,
    load_partly_labelled_csv,
    load_plaintext,
    load_pool,
    load_testset,
    load_unlabelled_testset,
    testset_fingerprint,
)
from .writers import (
    encrypt_testset,
    encrypt_unlabelled_testset,
    save_pool,
    save_testset,
    save_unlabelled_testset,
)

__all__ = [
    "ALLOWED_SUFFIXES", "ENCRYPTED_SUFFIX", "PLAIN_SUFFIXES", "TestSet", "TestSetSource",
    "UnlabelledTestSet", "encrypt_testset", "encrypt_unlabelled_testset", "fingerprint_arrays",
    "fingerprint_unlabelled", "is_unlabelled_file", "load_any_testset", "load_encrypted", "load_own_testset",
    "load_partly_labelled_csv", "load_plaintext", "load_pool", "load_testset",
    "load_unlabelled_testset", "save_pool", "save_testset", "save_unlabelled_testset",
    "testset_fingerprint", "testset_from_arrays", "unlabelled_from_arrays",
]
