"""Hyperparameter spaces of candidate families, and how each family's training budget is cut.

A :class:`FamilySpace` declares, for one family of models, the estimator, its fixed
settings, the hyperparameters the search may vary (:class:`Param`: a range, on a log scale
or not, integer or not, or a list of choices) and its *fidelity*: the one knob that sets how
much of the full training budget a trial spends, as a fraction in (0, 1]:

* ``rounds`` / ``trees`` / ``iterations``: boosting rounds or forest trees (``n_estimators``,
  ``max_iter``), extended in place with ``warm_start``: a trial stopped at 1/3 of its rounds
  has spent about 1/3 of the time, and one continued from 1/3 to 1 resumes (``resumes``);
* ``epochs``: passes of an MLP over the training rows (``partial_fit``, one epoch a call,
  optimiser state kept): resumes too;
* ``rows``: the fraction of the training rows (stratified), for learners that are not
  iterative (linear models, kernel SVMs, k-NN): a larger fraction retrains from scratch.

A configuration is a dict of the varied hyperparameters; its candidate name is
``family/key=value/key=value`` (``config_name``, parsed back by ``parse_name``), so a
configuration is its own catalogue entry and the scheduler's cross-tenant prior is over
family and configuration. ``sample`` draws a deterministic, space-filling set of
configurations (scrambled Sobol points, seeded): the pool the scheduler proposes from
(``multitenant`` and ``multitenant-hb`` choose among a pool's configurations by the GP's
expected improvement per second; ``gp.CandidatePrior.add_like`` places a configuration the
prior has never seen near its family's known configurations).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import SearchSpaceError

FIDELITY_KINDS = ("rounds", "trees", "iterations", "epochs", "rows")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: ``choices``, or a range [low, high] (``log``: sampled on a log scale)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None

    def from_unit(self, u: float):
        """The value at position ``u`` in [0, 1) of the range (or of the list of choices)."""
        if self.choices is not None:
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        lo, hi = float(self.low), float(self.high)
        if self.log:
            v = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:
            v = lo + u * (hi - lo)
        if self.integer:
            return int(min(max(round(v), math.ceil(lo)), math.floor(hi)))
        return float(f"{v:.3g}")

    def to_unit(self, value) -> float:
        """Position of ``value`` in [0, 1] (choices: the centre of its cell)."""
        if self.choices is not None:
            return (self.choices.index(value) + 0.5) / len(self.choices)
        lo, hi, v = float(self.low), float(self.high), float(value)
        if self.log:
            return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (v - lo) / (hi - lo) if hi > lo else 0.5

    def contains(self, value) -> bool:
        if self.choices is not None:
            return value in self.choices
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        if self.integer and v != int(v):
            return False
        return float(self.low) * (1 - 1e-9) <= v <= float(self.high) * (1 + 1e-9)

    def parse(self, text: str):
        if self.choices is not None:
            for c in self.choices:
                if str(c) == text:
                    return c
            raise SearchSpaceError(f"{self.name}={text!r} is not one of {', '.join(map(str, self.choices))}")
        try:
            v = float(text)
        except ValueError:
            raise SearchSpaceError(f"{self.name}={text!r} is not a number") from None
        return int(v) if self.integer else v


@dataclass(frozen=True)
class FamilySpace:
    """A family of candidates: estimator, fixed settings, varied hyperparameters, fidelity."""

    family: str
    estimator: Callable[..., Any]
    params: tuple[Param, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    fidelity: str = "rows"
    #: the estimator argument the fidelity sets (``n_estimators``, ``max_iter``); epochs and
    #: rows need none
    fidelity_param: str | None = None
    #: the full budget in the fidelity's unit (rounds, trees, epochs); rows: unused
    max_budget: int = 1
    scale: bool = True
    tasks: tuple[str, ...] = ("classification",)
    #: maps the configuration's keyword arguments to the estimator's (e.g. ``hidden`` ->
    #: ``hidden_layer_sizes``); None: passed as they are
    adapt: Callable[[dict], dict] | None = None

    def __post_init__(self) -> None:
        if self.fidelity not in FIDELITY_KINDS:
            raise SearchSpaceError(f"family {self.family!r}: fidelity {self.fidelity!r} not in {FIDELITY_KINDS}")

    @property
    def resumes(self) -> bool:
        """Whether a trial continued to a higher fidelity picks up where it stopped."""
        return self.fidelity != "rows"

    def units(self, fidelity: float) -> int:
        """Rounds / trees / epochs at ``fidelity`` (at least 1)."""
        return max(1, int(round(fidelity * self.max_budget)))

    def sample(self, n: int, seed: int = 0) -> list[dict]:
        """``n`` distinct configurations spread over the space (scrambled Sobol, seeded)."""
        if not self.params:
            return [{}]
        from scipy.stats import qmc

        pts = qmc.Sobol(d=len(self.params), scramble=True, seed=seed).random(max(2, 1 << math.ceil(math.log2(4 * n))))
        out, seen = [], set()
        for row in pts:
            config = {p.name: p.from_unit(float(u)) for p, u in zip(self.params, row)}
            key = config_name(self.family, config)
            if key not in seen:
                seen.add(key)
                out.append(config)
            if len(out) == n:
                break
        return out

    def check(self, config: Mapping[str, Any]) -> None:
        names = {p.name for p in self.params}
        extra = sorted(set(config) - names)
        if extra:
            raise SearchSpaceError(f"family {self.family!r} has no hyperparameter {extra[0]!r}; "
                                   f"its space: {', '.join(sorted(names)) or '(none)'}")
        for p in self.params:
            if p.name not in config:
                raise SearchSpaceError(f"family {self.family!r}: configuration lacks {p.name!r}")
            if not p.contains(config[p.name]):
                allowed = p.choices if p.choices is not None else f"[{p.low:g}, {p.high:g}]"
                raise SearchSpaceError(f"family {self.family!r}: {p.name}={config[p.name]!r} outside {allowed}")

    def unit_vector(self, config: Mapping[str, Any]) -> np.ndarray:
        """The configuration as a point of [0, 1]^d (the GP's notion of nearness)."""
        return np.array([p.to_unit(config[p.name]) for p in self.params], dtype=float)

    def build(self, config: Mapping[str, Any], fidelity: float = 1.0, **extra):
        """The estimator (no preprocessing) for ``config`` at ``fidelity``."""
        self.check(config)
        kwargs = dict(self.fixed)
        kwargs.update(config)
        kwargs.update(extra)
        if self.fidelity_param:
            kwargs[self.fidelity_param] = self.units(fidelity)
        if self.adapt is not None:
            kwargs = self.adapt(kwargs)
        return self.estimator(**kwargs)


def config_name(family: str, config: Mapping[str, Any]) -> str:
    """``family/key=value/...`` with the keys sorted; ``family`` alone for an empty space."""
    parts = [family] + [f"{k}={_fmt(config[k])}" for k in sorted(config)]
    return "/".join(parts)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def parse_name(name: str, spaces: Mapping[str, FamilySpace]) -> tuple[FamilySpace, dict]:
    """(family space, configuration) for a candidate name from ``config_name``."""
    family, *parts = name.split("/")
    space = spaces.get(family)
    if space is None:
        raise SearchSpaceError(f"candidate {name!r}: no family {family!r}; known: {', '.join(sorted(spaces))}")
    by_name = {p.name: p for p in space.params}
    config = {}
    for part in parts:
        key, sep, text = part.partition("=")
        if not sep or key not in by_name:
            raise SearchSpaceError(f"candidate {name!r}: {part!r} is not key=value for a hyperparameter of {family!r}")
        config[key] = by_name[key].parse(text)
    space.check(config)
    return space, config


def _mlp_arguments(kwargs: dict) -> dict:
    out = {k: v for k, v in kwargs.items() if k != "hidden"}
    out["hidden_layer_sizes"] = (int(kwargs["hidden"]),)
    return out


def classification_spaces() -> dict[str, FamilySpace]:
    """The built-in classification families with their spaces (used by ``bench/build_curves.py``)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    spaces = [
        FamilySpace("boosting", GradientBoostingClassifier, (
            Param("learning_rate", 0.03, 0.5, log=True),
            Param("max_depth", 2, 5, integer=True),
            Param("subsample", 0.6, 1.0),
        ), {"random_state": 0, "warm_start": True}, "rounds", "n_estimators", 81, scale=False),
        FamilySpace("hist-boosting", HistGradientBoostingClassifier, (
            Param("learning_rate", 0.03, 0.5, log=True),
            Param("max_leaf_nodes", 8, 64, log=True, integer=True),
            Param("l2_regularization", 1e-4, 1.0, log=True),
        ), {"random_state": 0, "warm_start": True, "early_stopping": False}, "iterations", "max_iter", 81,
            scale=False),
        FamilySpace("forest", RandomForestClassifier, (
            Param("max_features", 0.1, 1.0),
            Param("min_samples_leaf", 1, 8, log=True, integer=True),
        ), {"random_state": 0, "warm_start": True}, "trees", "n_estimators", 81, scale=False),
        FamilySpace("extra-trees", ExtraTreesClassifier, (
            Param("max_features", 0.1, 1.0),
            Param("min_samples_leaf", 1, 8, log=True, integer=True),
        ), {"random_state": 0, "warm_start": True}, "trees", "n_estimators", 81, scale=False),
        FamilySpace("mlp", MLPClassifier, (
            Param("hidden", 16, 256, log=True, integer=True),
            Param("alpha", 1e-5, 1e-1, log=True),
            Param("learning_rate_init", 3e-4, 3e-2, log=True),
        ), {"random_state": 0}, "epochs", None, 81, adapt=_mlp_arguments),
        FamilySpace("logreg", LogisticRegression, (Param("C", 1e-3, 100.0, log=True),), {"max_iter": 2000}, "rows"),
        FamilySpace("svc-rbf", SVC, (Param("C", 0.1, 100.0, log=True),), {"kernel": "rbf", "gamma": "scale"}, "rows"),
        FamilySpace("knn", KNeighborsClassifier, (Param("n_neighbors", 3, 30, log=True, integer=True),), {}, "rows"),
        FamilySpace("lda", LinearDiscriminantAnalysis, (), {}, "rows"),
        FamilySpace("gaussian-nb", GaussianNB, (), {}, "rows"),
    ]
    return {s.family: s for s in spaces}


#: How many configurations of each family ``bench/build_curves.py`` samples (the pool).
POOL_SIZES = {"boosting": 4, "hist-boosting": 3, "forest": 3, "extra-trees": 2, "mlp": 3,
              "logreg": 3, "svc-rbf": 2, "knn": 2, "lda": 1, "gaussian-nb": 1}


def pool(spaces: Mapping[str, FamilySpace], sizes: Mapping[str, int] = POOL_SIZES, seed: int = 0) -> list[str]:
    """Candidate names of a deterministic sample of each family's space."""
    names: list[str] = []
    for family, space in spaces.items():
        # a seed per family, so that the families' samples are not the same points of [0, 1]^d
        for config in space.sample(sizes.get(family, 1), seed=seed + zlib.crc32(family.encode()) % 10007):
            names.append(config_name(family, config))
    return names


def rung_fidelities(eta: int = 3, rungs: int = 3) -> tuple[float, ...]:
    """Successive-halving rungs: eta^-(rungs-1), ..., 1/eta, 1 (3, 3: 1/9, 1/3, 1)."""
    return tuple(float(eta) ** -(rungs - 1 - k) for k in range(rungs))


def as_unit_vectors(names: Sequence[str], spaces: Mapping[str, FamilySpace]) -> dict[str, tuple[str, np.ndarray]]:
    """For each parseable name: (family, configuration in [0, 1]^d)."""
    out = {}
    for name in names:
        try:
            space, config = parse_name(name, spaces)
        except SearchSpaceError:
            continue
        out[name] = (space.family, space.unit_vector(config))
    return out
