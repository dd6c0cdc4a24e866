#!/usr/bin/env python
"""Build the demo's data: a synthetic classification task, three ONNX models, a test set
(plain and encrypted) and an unlabelled pool.

Models (scikit-learn, exported with skl2onnx, ``zipmap`` off so the label output is a plain
int64 tensor), with roughly these accuracies on held-out validation data (printed when built):

  old.onnx    logistic regression       ~0.77   (the model in production)
  new.onnx    MLP (64, 64)              ~0.96   (the pull request that should pass)
  worse.onnx  decision tree, depth 2    ~0.68   (the pull request that should fail)

so with the default sizes a condition such as ``n - o > 0.02 +/- 0.02`` (new beats old by
~0.19 >> 0.06) or ``n > 0.8 +/- 0.05`` passes for new.onnx and fails for worse.onnx at the
demo's reliability (e.g. 0.999, adaptivity full, 8 steps needs 62,246 examples for the former:
the default --rows 100000 covers it).

Files written to OUTDIR: testset.npz (X, y: the owner's plaintext copy), testset.enc (the same,
AES-256-GCM; key from $EASEML_TESTSET_KEY, or a fresh key written to OUTDIR/key.txt with mode
0600), pool.npz (X only: unlabelled examples for the label request), old.onnx, new.onnx,
worse.onnx. Deterministic for a given --seed (up to the random encryption nonce).
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import click
import numpy as np


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rows", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Test-set examples (n - o > 0.02 +/- 0.02 at reliability 0.999, full, 8 steps "
                   "needs 62,246).")
@click.option("--pool-rows", default=20_000, show_default=True, type=click.IntRange(min=1),
              help="Unlabelled pool examples.")
@click.option("--features", default=20, show_default=True, type=click.IntRange(min=8),
              help="Feature columns.")
@click.option("--seed", default=7, show_default=True, type=int, help="Random seed of the data.")
@click.option("--key-env", default="EASEML_TESTSET_KEY", show_default=True,
              help="Environment variable with the key for testset.enc (generated when unset).")
def main(outdir: Path, rows: int, pool_rows: int, features: int, seed: int, key_env: str) -> None:
    """Build demo models and data in OUTDIR (see the module docstring for what and why)."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.tree import DecisionTreeClassifier
    from skl2onnx import to_onnx

    from easeml_ci.testsets import crypto
    from easeml_ci.testsets import encrypt_testset, load_testset

    started = time.perf_counter()
    outdir.mkdir(parents=True, exist_ok=True)
    n_train, n_valid = 10_000, 5_000
    X, y = make_classification(
        n_samples=n_train + n_valid + rows + pool_rows, n_features=features, n_informative=8,
        n_redundant=4, n_clusters_per_class=3, class_sep=1.2, flip_y=0.02, random_state=seed)
    X = X.astype(np.float32)
    cut = np.cumsum([n_train, n_valid, rows])
    train, valid, test, pool = np.split(np.arange(len(y)), cut)

    models = {
        "old": LogisticRegression(max_iter=1000),
        "new": MLPClassifier((64, 64), max_iter=300, early_stopping=True, random_state=seed),
        "worse": DecisionTreeClassifier(max_depth=2, random_state=seed),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model in models.items():
            model.fit(X[train], y[train])
            onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
            (outdir / f"{name}.onnx").write_bytes(onx.SerializeToString())
            click.echo(f"{name + '.onnx':<11} {type(model).__name__:<24} validation accuracy "
                       f"{model.score(X[valid], y[valid]):.3f} (validation split, not the test set)",
                       err=True)

    np.savez(outdir / "testset.npz", X=X[test], y=y[test])
    np.savez(outdir / "pool.npz", X=X[pool])
    key_text = os.environ.get(key_env, "").strip()
    if not key_text:
        key_text = crypto.generate_key()
        key_file = outdir / "key.txt"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key_text + "\n")
        click.echo(f"{key_env} was not set: wrote a new key to {key_file}; use it with\n"
                   f"  export {key_env}=$(cat {key_file})", err=True)
        os.environ[key_env] = key_text
    ts = load_testset(outdir / "testset.npz")
    encrypt_testset(ts, outdir / "testset.enc", crypto.key_from_env(key_env))
    click.echo(f"test set: {len(ts)} examples x {ts.n_features} features -> testset.npz, "
               f"testset.enc (fingerprint {ts.fingerprint[:16]}...); pool: {pool_rows} examples "
               f"-> pool.npz; {time.perf_counter() - started:.1f} s", err=True)


if __name__ == "__main__":
    sys.exit(main())
