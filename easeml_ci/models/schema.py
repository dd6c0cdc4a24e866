"""What is known about a test set without its data: its label kind and shape (the schema a
registration pins, against which models are checked before the test set is opened)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..testsets import TestSet

LABEL_KINDS = ("integer", "float", "text")
Progress = Callable[[int, int], None]


# --- what is known about the test set without its data ---------------------------------------

def label_kind_of(y: np.ndarray) -> str:
    """``integer``, ``float`` or ``text``: the kind of a canonical label vector (its dtype only)."""
    kind = np.asarray(y).dtype.kind
    if kind in "biu":
        return "integer"
    if kind == "f":
        return "float"
    if kind in "US":
        return "text"
    raise ValueError(f"labels of dtype {np.asarray(y).dtype} have no label kind")


@dataclass(frozen=True)
class TestSetSchema:
    """The shape of a test set, not its data: what :func:`preflight` checks a model against.

    Any field may be ``None`` (not known yet); the checks that need it then wait for
    :func:`load_predictions`. The encrypted format's clear-text header does not carry these
    (only the fingerprint and sizes), so before decryption they must come from elsewhere, for
    example the test set's registration entry (:meth:`to_dict` / :meth:`from_dict`).
    """

    __test__ = False  # not a pytest class

    n_features: int | None = None
    label_kind: str | None = None
    n_examples: int | None = None
    feature_dtype: Any = np.float32
    source: str | None = None  # names the test set in messages

    def __post_init__(self):
        if self.label_kind is not None and self.label_kind not in LABEL_KINDS:
            raise ValueError(f"label_kind must be one of {', '.join(LABEL_KINDS)} or None, "
                             f"got {self.label_kind!r}")

    @classmethod
    def of(cls, testset: TestSet) -> "TestSetSchema":
        """The schema of a test set; of one labelled on demand (no ``y``), no label kind yet."""
        y = getattr(testset, "y", None)
        return cls(n_features=int(testset.X.shape[1]),
                   label_kind=label_kind_of(y) if y is not None else None,
                   n_examples=len(testset), feature_dtype=testset.X.dtype,
                   source=str(testset.source))

    def to_dict(self) -> dict:
        return {"n_features": self.n_features, "label_kind": self.label_kind,
                "n_examples": self.n_examples, "feature_dtype": np.dtype(self.feature_dtype).str}

    @classmethod
    def from_dict(cls, data: dict) -> "TestSetSchema":
        return cls(n_features=data.get("n_features"), label_kind=data.get("label_kind"),
                   n_examples=data.get("n_examples"),
                   feature_dtype=np.dtype(data.get("feature_dtype", "<f4")))

    @property
    def where(self) -> str:
        return f"the test set {self.source}" if self.source else "the test set"
