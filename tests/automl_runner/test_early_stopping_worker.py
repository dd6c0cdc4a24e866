"""early_stopping.train: rung by rung, stop or go on, and the model it returns is the real one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification

from automl_runner.candidates.catalogue import export_onnx, onnx_predict, validation_score
from automl_runner.scheduling.early_stopping import Plan, candidates_from_space, decider, plan, train
from automl_runner.scheduling.matrices import LearningCurves
from automl_runner.datasets.schema import Dataset, Feature, Schema
from automl_runner.candidates.search_space import classification_spaces
from automl_runner.scheduling.successive_halving import RUNGS, MultiTenantHBScheduler


def _data(n=300, d=6, k=3):
    X, y = make_classification(n_samples=n, n_features=d, n_informative=4, n_classes=k, random_state=0)
    schema = Schema(source="t", fingerprint="t", target="y", task="classification",
                    features=tuple(Feature(f"x{j}", "numeric") for j in range(d)), n_rows=n,
                    classes=tuple(str(c) for c in range(k)), label_kind="int", validation_fraction=0.3, seed=0)
    return schema, Dataset(schema, X, y).split()


def _cand(family, **config):
    return candidates_from_space(classification_spaces()[family], [config])[0]


class Recorder:
    def __init__(self, answers):
        self.answers = list(answers)
        self.asked = []

    def __call__(self, f, score, spent):
        self.asked.append((f, score, spent))
        return self.answers.pop(0)


def test_going_on_at_every_rung_gives_the_plain_full_model():
    schema, (Xtr, Xva, ytr, yva) = _data()
    cand = _cand("boosting", learning_rate=0.1, max_depth=3, subsample=1.0)
    rec = Recorder([True, True])
    tr = train(cand, schema, "cpu", Xtr, ytr, Xva, yva, Plan(list(RUNGS), rec))
    plain = cand.build(schema, "cpu").fit(Xtr, ytr)
    assert not tr.stopped and tr.fidelity == 1.0
    assert [a[0] for a in rec.asked] == pytest.approx([1 / 9, 1 / 3])  # asked below 1 only
    assert tr.estimator.steps[-1][1].n_estimators_ == 81
    assert np.array_equal(tr.estimator.predict(Xva), plain.predict(Xva))
    assert tr.score == pytest.approx(validation_score(schema, yva, plain.predict(Xva)))
    assert [h[0] for h in tr.rungs] == pytest.approx(list(RUNGS))
    assert all(b[2] >= a[2] for a, b in zip(tr.rungs, tr.rungs[1:]))  # seconds add up


def test_stopping_at_the_first_rung_returns_that_model_and_it_exports():
    schema, (Xtr, Xva, ytr, yva) = _data()
    cand = _cand("boosting", learning_rate=0.1, max_depth=3, subsample=1.0)
    tr = train(cand, schema, "cpu", Xtr, ytr, Xva, yva, Plan(list(RUNGS), Recorder([False])))
    assert tr.stopped and tr.fidelity == pytest.approx(1 / 9)
    assert tr.estimator.steps[-1][1].n_estimators_ == 9
    assert tr.score == pytest.approx(validation_score(schema, yva, tr.estimator.predict(Xva)))
    blob = export_onnx(tr.estimator, schema, Xva)
    assert np.array_equal(onnx_predict(blob, Xva).astype(int), tr.estimator.predict(Xva.astype(np.float32)))


@pytest.mark.parametrize("family, config, attr, expect", [
    ("forest", {"max_features": 0.5, "min_samples_leaf": 1}, "n_estimators", 27),
    ("hist-boosting", {"learning_rate": 0.1, "max_leaf_nodes": 16, "l2_regularization": 0.01}, "max_iter", 27),
])
def test_trees_and_iterations_grow_in_place(family, config, attr, expect):
    schema, (Xtr, Xva, ytr, yva) = _data()
    tr = train(_cand(family, **config), schema, "cpu", Xtr, ytr, Xva, yva, Plan(list(RUNGS), Recorder([True, False])))
    assert tr.stopped and tr.fidelity == pytest.approx(1 / 3)
    assert getattr(tr.estimator.steps[-1][1], attr) == expect


def test_mlp_epochs_by_partial_fit():
    schema, (Xtr, Xva, ytr, yva) = _data()
    cand = _cand("mlp", hidden=16, alpha=1e-4, learning_rate_init=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = train(cand, schema, "cpu", Xtr, ytr, Xva, yva, Plan(list(RUNGS), Recorder([True, False])))
    assert len(tr.estimator.steps[-1][1].loss_curve_) == 27 and tr.fidelity == pytest.approx(1 / 3)


def test_without_a_plan_it_is_one_plain_fit():
    schema, (Xtr, Xva, ytr, yva) = _data()
    cand = _cand("logreg", C=1.0)
    tr = train(cand, schema, "cpu", Xtr, ytr, Xva, yva, None)
    assert not tr.stopped and tr.fidelity == 1.0 and len(tr.rungs) == 1


def test_plan_only_for_an_early_stopping_scheduler_and_a_resumable_candidate():
    from automl_runner.scheduling.registry import make_scheduler

    gbm = _cand("boosting", learning_rate=0.1, max_depth=3, subsample=1.0)
    logreg = _cand("logreg", C=1.0)
    hb = MultiTenantHBScheduler(curves=LearningCurves([("p", gbm.name, 1.0, 0.9, 1.0, True)]))
    assert plan(make_scheduler("multitenant"), "A", gbm, dict) is None
    assert plan(hb, "A", logreg, dict) is None  # rows: no rungs (retraining would cost more)
    p = plan(hb, "A", gbm, lambda: {"B": ["x"]})
    assert p is not None and p.rungs == pytest.approx(list(RUNGS))
    hb.observe_partial("A", gbm.name, 1 / 9, 0.5, 1.0)
    assert plan(hb, "A", gbm, dict) is None  # stopped once: runs to the end when chosen again


def test_the_decider_form_the_worker_uses():
    from automl_runner.scheduling.registry import make_scheduler

    schema, (Xtr, Xva, ytr, yva) = _data()
    gbm = _cand("boosting", learning_rate=0.1, max_depth=3, subsample=1.0)
    hb = MultiTenantHBScheduler(curves=LearningCurves([("p", gbm.name, 1.0, 0.9, 1.0, True)]))
    assert decider(make_scheduler("multitenant"), "A", gbm.name, dict) is None
    asked = []
    hb.should_stop = lambda *a: asked.append(a) or True  # stop at the first rung
    tr = train(gbm, schema, "cpu", Xtr, ytr, Xva, yva, decide=decider(hb, "A", gbm.name, lambda: {"B": ["x"]}))
    assert tr.stopped and tr.fidelity == pytest.approx(1 / 9)
    assert asked[0][:3] == ("A", gbm.name, pytest.approx(1 / 9)) and asked[0][5] == {"B": ["x"]}
    # a candidate that does not resume ignores decide: one fit
    tr = train(_cand("logreg", C=1.0), schema, "cpu", Xtr, ytr, Xva, yva, decide=lambda *a: False)
    assert not tr.stopped and tr.fidelity == 1.0
