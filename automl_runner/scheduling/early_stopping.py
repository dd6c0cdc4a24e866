"""The worker's side of early stopping: train a candidate rung by rung and ask whether to go on.

A candidate that declares a *fidelity* (``fidelity``: ``rounds`` / ``trees`` / ``iterations``
grown in place with ``warm_start`` through ``fidelity_param``, ``epochs`` by ``partial_fit``,
or ``rows``: a stratified fraction of the training rows, retrained) is trained to each rung
of its plan in turn (1/9, 1/3, 1 of ``max_budget``); after each rung below 1 its validation
score goes to the scheduler (``Scheduler.should_stop``), which says whether the trial goes
on. A stopped trial returns at once with the model as it stands (a real, exportable model
at fewer rounds), its score, the fidelity it reached and the seconds it spent; the worker
records it and its device takes the next trial.

Candidates without a fidelity, and every scheduler but ``multitenant-hb``, train exactly as
before: one ``fit`` at the full budget.

    plan = early_stopping.plan(scheduler, tenant, candidate, pending_fn)   # None: no rungs
    tr = early_stopping.train(candidate, schema, device, X_tr, y_tr, X_val, y_val, plan)
    # or, as worker.py calls it (decider: None unless the scheduler stops trials early):
    decide = early_stopping.decider(scheduler, tenant, candidate.name, pending_fn)
    tr = early_stopping.train(candidate, schema, device, X_tr, y_tr, X_val, y_val, decide=decide, threads=n)
    tr.estimator, tr.score, tr.fidelity, tr.cost, tr.stopped
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..candidates.catalogue import Candidate, validation_score
from ..candidates.search_space import FamilySpace, config_name

RESUMING = ("rounds", "trees", "iterations", "epochs")


@dataclass(frozen=True)
class IterativeCandidate(Candidate):
    """A catalogue candidate that declares how its training budget is cut (see module docstring)."""

    fidelity: str | None = None
    fidelity_param: str | None = None
    max_budget: int = 1


def fidelity_of(candidate) -> tuple[str | None, str | None, int]:
    """(fidelity kind, fidelity_param, max_budget) a candidate declares; (None, None, 1) if none."""
    return (getattr(candidate, "fidelity", None), getattr(candidate, "fidelity_param", None),
            int(getattr(candidate, "max_budget", 1) or 1))


def candidates_from_space(space: FamilySpace, configs: Sequence[Mapping[str, Any]]) -> list[IterativeCandidate]:
    """Catalogue entries for sampled configurations of a family's space (names from ``config_name``)."""
    out = []
    for config in configs:
        space.check(config)
        kwargs = {**space.fixed, **config}
        if space.fidelity_param:
            kwargs[space.fidelity_param] = space.max_budget
        if space.adapt is not None:
            kwargs = space.adapt(kwargs)
        if space.fidelity == "epochs":
            kwargs.setdefault("max_iter", space.max_budget)  # a plain fit trains the full budget
        out.append(IterativeCandidate(
            name=config_name(space.family, config), family=space.family, estimator=space.estimator,
            hyperparameters=kwargs, tasks=space.tasks, scale=space.scale,
            fidelity=space.fidelity, fidelity_param=space.fidelity_param, max_budget=space.max_budget,
        ))
    return out


@dataclass
class Plan:
    """Rungs a trial reports at, and the question asked at each one below 1."""

    rungs: list[float]
    #: decide(fidelity, score, seconds so far) -> True to go on to the next rung
    decide: Callable[[float, float, float], bool]


def plan(scheduler, tenant: str, candidate, pending_fn: Callable[[], Mapping[str, Sequence[str]]]) -> Plan | None:
    """The rung plan for a trial, or None (train once, as before).

    None unless the scheduler stops trials early (``early_stopping``) and the candidate declares
    a fidelity that resumes. A candidate already stopped once for this tenant runs to the end.
    ``pending_fn`` returns the queue's pending trials ({tenant: [candidates]}) at decision time.
    """
    if not getattr(scheduler, "early_stopping", False):
        return None
    kind, _param, _budget = fidelity_of(candidate)
    if kind not in RESUMING:
        return None
    decide = decider(scheduler, tenant, candidate.name, pending_fn)
    if decide is None:
        return None
    from .successive_halving import RUNGS

    return Plan(list(getattr(scheduler, "rung_fidelities", RUNGS)), decide)


def decider(scheduler, tenant: str, candidate: str,
            pending_fn: Callable[[], Mapping[str, Sequence[str]]]) -> Callable[[float, float, float], bool] | None:
    """The rung question for ``train(..., decide=...)``, or None (train once, as before).

    None unless the scheduler stops trials early, and for a candidate already stopped once for
    this tenant (chosen again, it runs to the end). ``candidate`` is the candidate's name.
    """
    if not getattr(scheduler, "early_stopping", False):
        return None
    if candidate in getattr(scheduler, "stopped", {}).get(tenant, {}):
        return None

    def decide(fidelity: float, score: float, spent: float) -> bool:
        return not scheduler.should_stop(tenant, candidate, fidelity, score, spent, pending_fn())

    return decide


@dataclass
class Trained:
    estimator: Any
    score: float
    fidelity: float
    cost: float
    stopped: bool
    rungs: list[tuple[float, float, float]] = field(default_factory=list)


def _stratified(y: np.ndarray, fraction: float) -> np.ndarray:
    """The first ceil(fraction * n_c) rows of each class c of a fixed shuffle (nested across fractions)."""
    rng = np.random.default_rng(0)
    labels = np.unique(y)
    if labels.size > max(50, len(y) // 2):  # a regression target: a plain fraction of a shuffle
        idx = rng.permutation(len(y))
        return np.sort(idx[: max(2, int(np.ceil(fraction * len(y))))])
    keep = []
    for c in labels:
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        keep.append(idx[: max(min(2, len(idx)), int(np.ceil(fraction * len(idx))))])
    return np.sort(np.concatenate(keep))


def train(candidate: Candidate, schema, device: str, X_tr, y_tr, X_val, y_val, plan: Plan | None = None, *,
          decide: Callable[[float, float, float], bool] | None = None, rungs: Sequence[float] | None = None,
          threads: int | None = None) -> Trained:
    """Train ``candidate`` (rung by rung when ``plan`` says so); see the module docstring.

    ``decide`` (from ``decider``) and ``rungs`` (default 1/9, 1/3, 1) are the other way to give
    a plan; it applies only to candidates whose fidelity resumes. ``threads``: passed on to
    ``candidate.build`` (the worker's thread cap) when given.
    """
    kind, param, budget = fidelity_of(candidate)
    if plan is None and decide is not None and kind in RESUMING:
        from .successive_halving import RUNGS

        plan = Plan(list(rungs or RUNGS), decide)
    build_kw = {"threads": threads} if threads is not None else {}
    if plan is None or kind is None or len(plan.rungs) < 2:
        t0 = time.perf_counter()
        est = candidate.build(schema, device, **build_kw).fit(X_tr, y_tr)
        cost = time.perf_counter() - t0
        score = validation_score(schema, y_val, est.predict(X_val))
        return Trained(est, score, 1.0, cost, False, [(1.0, score, cost)])
    rungs = sorted(float(f) for f in plan.rungs)
    history: list[tuple[float, float, float]] = []
    if kind == "rows":
        spent = 0.0
        for k, f in enumerate(rungs):
            idx = _stratified(np.asarray(y_tr), f) if f < 1 else np.arange(len(y_tr))
            t0 = time.perf_counter()
            est = candidate.build(schema, device, **build_kw).fit(X_tr[idx], np.asarray(y_tr)[idx])
            spent += time.perf_counter() - t0
            score = validation_score(schema, y_val, est.predict(X_val))
            history.append((f, score, spent))
            if k < len(rungs) - 1 and not plan.decide(f, score, spent):
                return Trained(est, score, f, spent, True, history)
        return Trained(est, score, 1.0, spent, False, history)
    pipe = candidate.build(schema, device, **build_kw)
    t0 = time.perf_counter()
    features, model = pipe.steps[0][1], pipe.steps[-1][1]
    Xf = features.fit_transform(X_tr)
    spent = time.perf_counter() - t0
    Xv = features.transform(X_val)
    classes = np.unique(y_tr) if schema.task == "classification" else None
    if kind != "epochs":
        model.set_params(warm_start=True)
    epochs = 0
    for k, f in enumerate(rungs):
        units = max(1, int(round(f * budget)))
        t0 = time.perf_counter()
        if kind == "epochs":
            while epochs < units:
                if classes is not None:
                    model.partial_fit(Xf, y_tr, classes=classes)
                else:
                    model.partial_fit(Xf, y_tr)
                epochs += 1
        else:
            model.set_params(**{param: units})
            model.fit(Xf, y_tr)  # warm_start: grows what is there
        spent += time.perf_counter() - t0
        score = validation_score(schema, y_val, model.predict(Xv))
        history.append((f, score, spent))
        if k < len(rungs) - 1 and not plan.decide(f, score, spent):
            return Trained(pipe, score, f, spent, True, history)
    return Trained(pipe, score, 1.0, spent, False, history)
