"""The AutoML store on SQLite and on the real PostgreSQL server: queueing, leases, promotion.

PostgreSQL is a required part: when the server is not reachable these tests fail, they do not
skip. ``EASEML_TEST_POSTGRES_URL`` overrides the default server; every test uses its own schema.
"""
from __future__ import annotations

import csv
import threading
import time

import numpy as np
import pytest

from automl_runner.candidates.catalogue import Candidate, default_catalogue
from automl_runner.errors import StoreError, TenantError
from automl_runner.datasets.schema import infer_schema
from automl_runner.store import open_store, parse_store_url

from fake_clock import FakeClock


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x1", "x2", "kind", "label"])
        for _ in range(60):
            a, b = rng.normal(), rng.normal()
            w.writerow([round(a, 4), round(b, 4), rng.choice(["p", "q"]), "pos" if a + b > 0 else "neg"])
    return str(path)


@pytest.fixture
def reg_dataset(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "reg.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x", "y"])
        for _ in range(40):
            x = rng.normal()
            w.writerow([x, 3 * x + rng.normal() * 0.1])
    return str(path)


CAT = default_catalogue()
FAST = ["logreg-C1", "gaussian-nb", "decision-tree-d5"]


def _submit(store, name, dataset, target="label", **kw):
    return store.add_tenant(name, dataset, infer_schema(dataset, target), CAT, **kw)


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, kind, target, schema",
    [
        ("queue.db", "sqlite", "queue.db", None),
        ("sqlite:///rel/queue.db", "sqlite", "rel/queue.db", None),
        ("sqlite:////abs/queue.db", "sqlite", "/abs/queue.db", None),
        ("postgresql://u@h:5432/db?schema=q1", "postgresql", "postgresql://u@h:5432/db", "q1"),
        ("postgres://u@h/db?sslmode=disable", "postgresql", "postgres://u@h/db?sslmode=disable", None),
    ],
)
def test_store_url_names_backend_target_and_schema(url, kind, target, schema):
    assert parse_store_url(url) == (kind, target, schema)


@pytest.mark.parametrize("url, fragment", [
    ("mysql://h/db", "unsupported database 'mysql'"),
    ("", "--store is empty"),
    ("postgresql://h/db?schema=a;drop", "not a plain identifier"),
    ("sqlite://host/x", "sqlite:///"),
])
def test_bad_store_url_is_a_clear_error(url, fragment):
    with pytest.raises(StoreError, match=fragment.replace("(", r"\(").replace("?", r"\?")):
        parse_store_url(url)


def test_unreachable_postgres_is_a_store_error():
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        open_store("postgresql://postgres@127.0.0.1:1/test")


def test_submit_queues_every_accepted_candidate_except_excluded(store_url, dataset, reg_dataset):
    with open_store(store_url) as s:
        queued = _submit(s, "alpha", dataset, excluded=["knn-15"])
        cls = {c.name for c in CAT if "classification" in c.tasks}
        # knn-15 excluded; 48 training rows so every other classifier accepts the schema
        assert set(queued) == cls - {"knn-15"}
        queued_r = _submit(s, "beta", reg_dataset, target="y", only=["ridge-a1", "knn-reg-15"])
        assert queued_r == ["ridge-a1", "knn-reg-15"]
        snap = s.snapshot()
        assert set(snap.pending["alpha"]) == set(queued)
        assert snap.running == [] and snap.finished == []
        with pytest.raises(TenantError, match="already exists"):
            _submit(s, "alpha", dataset)
        with pytest.raises(TenantError, match="no candidate named 'nope'"):
            _submit(s, "gamma", dataset, excluded=["nope"])
        with pytest.raises(TenantError, match="--margin must be in"):
            _submit(s, "gamma", dataset, margin=-0.5)
        with pytest.raises(TenantError, match="tenant name"):
            _submit(s, "bad name!", dataset)
        assert [t.name for t in s.tenants()] == ["alpha", "beta"]
        assert s.tenant("alpha").schema.classes == ("neg", "pos")


def test_add_candidate_queues_it_for_matching_tenants_only(store_url, dataset, reg_dataset):
    from sklearn.linear_model import LogisticRegression

    with open_store(store_url) as s:
        _submit(s, "alpha", dataset, only=FAST)
        _submit(s, "beta", reg_dataset, target="y", only=["ridge-a1"])
        _submit(s, "gamma", dataset, only=FAST, excluded=[])
        new = Candidate("logreg-new", "linear", LogisticRegression, {"C": 3.0})
        # `only` restricts a tenant to its list; alpha and gamma chose lists, so they skip it
        assert s.add_candidate(new) == []
        _submit(s, "delta", dataset, excluded=["logreg-C1"])
        assert s.add_candidate(new) == ["delta"]
        assert s.add_candidate(new) == []  # idempotent: already queued
        big = Candidate("needs-1000-rows", "linear", LogisticRegression, {}, min_train_rows=1000)
        assert s.add_candidate(big) == []
        assert "logreg-new" in s.snapshot().pending["delta"]
        assert s.candidate_spec("logreg-new")["hyperparameters"] == {"C": 3.0}




def test_injected_clock_is_the_store_time(store_url):
    clock = FakeClock()
    with open_store(store_url, clock=clock) as s, open_store(store_url) as real:
        assert s.now() == clock.t
        clock.advance(12.5)
        assert s.now() == clock.t
        assert abs(real.now() - time.time()) < 60  # without one: the database's clock


def test_claim_is_exclusive_and_lease_expiry_requeues(store_url, dataset):
    clock = FakeClock()
    with open_store(store_url, clock=clock) as a, open_store(store_url, clock=clock) as b:
        _submit(a, "alpha", dataset, only=FAST)
        c1 = a.try_claim("alpha", "logreg-C1", "w1", "cpu", lease_seconds=30)
        assert c1 is not None and c1.attempt == 1
        assert b.try_claim("alpha", "logreg-C1", "w2", "cpu") is None
        assert ("alpha", "logreg-C1") not in {(t, c) for t, cs in b.snapshot().pending.items() for c in cs}
        clock.advance(29)
        assert a.heartbeat(c1, lease_seconds=0.4)  # within the lease: extended from now
        clock.advance(0.39)
        assert b.requeue_expired() == 0  # not yet: 0.01 s of the lease left
        clock.advance(0.02)
        assert b.requeue_expired() == 1
        assert not a.heartbeat(c1)  # the lease is gone
        c2 = b.try_claim("alpha", "logreg-C1", "w2", "cpu", lease_seconds=30)
        assert c2 is not None and c2.attempt == 2 and c2.token != c1.token
        # the first worker finishes late: its result is refused, the new holder's is kept
        assert not a.complete(c1, "w1", 0.5, 1.0, None, None)
        assert b.complete(c2, "w2", 0.8, 1.0, "/x.onnx", "ab")
        t = {tr.candidate: tr for tr in a.trials("alpha")}["logreg-C1"]
        assert (t.status, t.score, t.worker, t.attempts) == ("done", 0.8, "w2", 2)
        kinds = [e[3] for e in a.events(t.id)]
        assert kinds == ["claimed", "expired", "claimed", "lost", "done"]


def test_late_result_is_kept_when_nobody_retook_the_trial(store_url, dataset):
    clock = FakeClock()
    with open_store(store_url, clock=clock) as s:
        _submit(s, "alpha", dataset, only=FAST)
        c = s.try_claim("alpha", "gaussian-nb", "w1", "cpu", lease_seconds=0.2)
        clock.advance(0.35)
        assert s.requeue_expired() == 1
        assert s.complete(c, "w1", 0.7, 0.1, None, None)
        assert {t.candidate: t.status for t in s.trials()}["gaussian-nb"] == "done"


def test_release_and_max_attempts(store_url, dataset):
    clock = FakeClock()
    with open_store(store_url, clock=clock) as s:
        _submit(s, "alpha", dataset, only=FAST)
        c = s.try_claim("alpha", "decision-tree-d5", "w1", "cpu")
        assert s.release(c, "w1")
        t = {t.candidate: t for t in s.trials()}["decision-tree-d5"]
        assert (t.status, t.attempts) == ("queued", 0)
        for attempt in range(1, 3):
            c = s.try_claim("alpha", "decision-tree-d5", f"w{attempt}", "cpu", lease_seconds=0.1)
            assert c.attempt == attempt
            clock.advance(0.2)
            assert s.requeue_expired(max_attempts=2) == 1
        t = {t.candidate: t for t in s.trials()}["decision-tree-d5"]
        assert t.status == "failed" and "lease expired on 2 attempts" in t.error
        assert s.retry_failed("alpha") == 1
        assert {t.candidate: t.status for t in s.trials()}["decision-tree-d5"] == "queued"


def test_concurrent_claims_take_each_trial_exactly_once(store_url, dataset):
    with open_store(store_url) as s:
        _submit(s, "alpha", dataset)
        _submit(s, "beta", dataset)
        pairs = [(t, c) for t, cs in s.snapshot().pending.items() for c in cs]
    got: dict[int, list] = {}
    errors = []

    def grab(i):
        try:
            st = open_store(store_url, create=False)
            got[i] = []
            for t, c in pairs:  # everybody races for every trial in the same order
                cl = st.try_claim(t, c, f"w{i}", "cpu")
                if cl is not None:
                    got[i].append((t, c))
            st.close()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    claimed = [p for v in got.values() for p in v]
    assert sorted(claimed) == sorted(pairs)  # all taken, none twice
    with open_store(store_url) as s:
        assert all(t.status == "running" and t.attempts == 1 for t in s.trials())


def test_promotion_needs_the_best_trial_and_the_margin(store_url, dataset):
    with open_store(store_url) as s:
        _submit(s, "alpha", dataset, only=FAST + ["knn-5"], margin=0.05)

        def finish(cand, score):
            c = s.try_claim("alpha", cand, "w", "cpu")
            assert s.complete(c, "w", score, 0.1, None, None)
            return c.trial_id

        t1 = finish("logreg-C1", 0.70)
        p1 = s.begin_promotion("alpha", t1)
        assert p1 is not None and p1.previous_score is None
        t2 = finish("gaussian-nb", 0.73)  # better, but by less than the margin
        assert s.begin_promotion("alpha", t2) is None
        t3 = finish("decision-tree-d5", 0.90)
        assert s.begin_promotion("alpha", t1) is None  # no longer the best
        p3 = s.begin_promotion("alpha", t3)
        assert p3.score == 0.90 and p3.previous_score == 0.70
        assert s.begin_promotion("alpha", t3) is None  # never twice
        s.finish_promotion(p3.id, "written", model_path="/m.onnx")
        st = {r.name: r for r in s.status()}["alpha"]
        assert (st.best_candidate, st.best_score, st.done, st.queued) == ("decision-tree-d5", 0.90, 3, 1)
        assert (st.promoted_candidate, st.promotion_status) == ("decision-tree-d5", "written")
        assert st.queue == ["knn-5"]


def test_a_tie_recorded_later_with_an_earlier_clock_does_not_displace_the_promoted_best(store_url, dataset):
    # Two workers finish with equal scores; the one that commits second took its finished_at
    # first (the CI flake this pins down): the promoted trial stays the tenant's best.
    with open_store(store_url) as s:
        _submit(s, "alpha", dataset, only=FAST)
        a = s.try_claim("alpha", "gaussian-nb", "w1", "cpu")
        b = s.try_claim("alpha", "logreg-C1", "w2", "cpu")
        assert s.complete(a, "w1", 0.75, 0.1, None, None)
        promo = s.begin_promotion("alpha", a.trial_id)
        assert promo is not None
        assert s.complete(b, "w2", 0.75, 0.1, None, None)
        with s._tx() as cur:  # b's clock read before a's
            s._exec(cur, "UPDATE trials SET finished_at = finished_at - 60 WHERE id = ?", (b.trial_id,))
        assert s.begin_promotion("alpha", b.trial_id) is None  # a tie never promotes
        assert s.best_trial("alpha").id == a.trial_id == s.last_promotion("alpha").trial_id
        st = {r.name: r for r in s.status()}["alpha"]
        assert st.best_candidate == st.promoted_candidate == "gaussian-nb"
        # a strictly better result still wins and is promoted
        c = s.try_claim("alpha", "decision-tree-d5", "w1", "cpu")
        assert s.complete(c, "w1", 0.80, 0.1, None, None)
        assert s.best_trial("alpha").id == c.trial_id
        assert s.begin_promotion("alpha", c.trial_id).previous_score == 0.75


def test_workers_registering_the_catalogue_at_once_do_not_collide(store_url, dataset):
    """Every worker registers its catalogue on start; on a fresh store they all insert at once."""
    with open_store(store_url) as s:
        # alpha was submitted where only half the catalogue was installed
        half = [c for c in CAT if c.name not in ("lda", "knn-5", "ridge-a1")]
        schema = infer_schema(dataset, "label")
        s.add_tenant("alpha", dataset, schema, half)
        assert "lda" not in {t.candidate for t in s.trials()}
    errors = []
    barrier = threading.Barrier(4)

    def register():
        try:
            st = open_store(store_url)
            barrier.wait()
            st.sync_catalogue(CAT)
            st.close()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with open_store(store_url) as s:
        assert sorted(s.candidate_names()) == sorted(c.name for c in CAT)
        assert sorted(t.candidate for t in s.trials()) == sorted(c.name for c in CAT if c.accepts(schema))
