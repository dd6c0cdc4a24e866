"""Per-worker thread caps: W workers on W cores must not each start W threads.

scikit-learn's BLAS/OpenMP pools (through threadpoolctl), PyTorch's intra-op pool, onnxruntime's
sessions (the export check) and XGBoost's ``n_jobs`` (passed by the catalogue through the
candidate's ``thread_parameter``) all default to every core of the machine. With two workers on
two cores that is four busy threads fighting over two cores, and the pair ran slower than one
worker alone. :func:`cap_threads` caps them all for this process; the default cap is one thread
per worker (run as many workers as cores).
"""
from __future__ import annotations

import importlib.util
import os

#: Environment variables that the native pools read when they start (set before they load).
_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

_limiter = None
_cap: int | None = None


def current_cap() -> int | None:
    """The cap set by :func:`cap_threads` in this process, or None."""
    return _cap


def cap_threads(threads: int) -> int:
    """Cap every thread pool this process uses at ``threads``; returns the cap."""
    global _limiter, _cap
    threads = max(1, int(threads))
    for var in _ENV:
        os.environ[var] = str(threads)
    from threadpoolctl import threadpool_limits

    _limiter = threadpool_limits(limits=threads)  # kept: the limit holds while it lives
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # only settable before the first parallel work; intra-op is what counts
            pass
    _cap = threads
    return threads
