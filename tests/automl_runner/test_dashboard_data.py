"""A queue with real trials for the dashboard's tests (no tests here): tenants submitted through
the store, trials claimed, completed, stopped early and promoted with a model card, exactly as
workers record them, plus a gate config whose ledger holds spent steps."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from automl_runner.candidates.catalogue import default_catalogue
from automl_runner.datasets.schema import infer_schema
from automl_runner.store import NextChoice, open_store
from ledger_test_key import KEY as LEDGER_KEY  # noqa: E402

HOSTILE_COLUMN = '<script>alert("col")</script>'
HOSTILE_CATEGORY = '"><img src=x onerror=alert(1)>'
HOSTILE_CARD = "# card\n<script>document.title='pwned'</script>\n<img src=x onerror=alert('card')>\n"
CAT = default_catalogue()
#: The rungs each of alpha's finished trials reached: decision-tree-d5 stopped at 25 %.
RUNGS = {"logreg-C1": [(1.0, 0.81, 1.5)], "gaussian-nb": [(0.25, 0.8, 0.4), (1.0, 0.875, 1.5)],
         "decision-tree-d5": [(0.0625, 0.55, 0.1), (0.25, 0.7, 1.5)]}
NEXT_CHOICE = NextChoice("alpha", "random-forest-100", ei=0.0125, expected_seconds=2.5, scheduler="multitenant")


def write_dataset(path: Path, hostile: bool = False) -> str:
    rng = np.random.default_rng(3)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x1", HOSTILE_COLUMN if hostile else "x2", "kind", "label"])
        for _ in range(60):
            a, b = rng.normal(), rng.normal()
            kind = rng.choice([HOSTILE_CATEGORY, "q"]) if hostile else rng.choice(["p", "q"])
            w.writerow([round(a, 4), round(b, 4), kind, "pos" if a + b > 0 else "neg"])
    return str(path)


def build_queue(url: str, tmp: Path, clock=None) -> dict:
    """Two tenants: ``alpha`` (3 done, one of them stopped early, 1 running on cuda:0, a promoted
    best with a hostile card) and ``beta`` (a hostile schema, nothing run yet). Returns facts."""
    store = open_store(url, clock=clock)
    try:
        store.add_tenant("alpha", write_dataset(tmp / "alpha.csv"), infer_schema(str(tmp / "alpha.csv"), "label"),
                         CAT, only=["logreg-C1", "gaussian-nb", "decision-tree-d5", "knn-15", "random-forest-100"])
        store.add_tenant("beta", write_dataset(tmp / "beta.csv", hostile=True),
                         infer_schema(str(tmp / "beta.csv"), "label", categorical=["kind"]),
                         CAT, only=["logreg-C1", "gaussian-nb"])
        scores = {"logreg-C1": 0.81, "gaussian-nb": 0.875, "decision-tree-d5": 0.7}
        ids = {}
        for cand, score in scores.items():
            claim = store.try_claim("alpha", cand, "w-cpu", "cpu")
            fid = 0.25 if cand == "decision-tree-d5" else None
            assert store.complete(claim, "w-cpu", score, 1.5, None, None, ran_on="cpu", fidelity=fid,
                                  rungs=RUNGS[cand])
            ids[cand] = claim.trial_id
        # the worker that claims knn-15 records what the scheduler would train after it
        running = store.try_claim("alpha", "knn-15", "w-gpu", "cuda:0", next_choice=NEXT_CHOICE)
        store.heartbeat(running)
        card = tmp / "alpha-card.md"
        card.write_text(HOSTILE_CARD)
        promo = store.begin_promotion("alpha", ids["gaussian-nb"])
        assert promo is not None
        store.finish_promotion(promo.id, "opened", model_path=str(tmp / "m.onnx"), card_path=str(card),
                               pull_request="https://github.com/acme/models/pull/7")
        return {"best_trial": ids["gaussian-nb"], "running_trial": running.trial_id,
                "stopped_trial": ids["decision-tree-d5"]}
    finally:
        store.close()


def build_ledger(tmp: Path) -> dict:
    """A gate config and a file ledger with one registered test set and three spent steps."""
    from easeml_ci.ledger import Ledger, open_backend

    cfg = tmp / ".easeml.yml"
    cfg.write_text("condition: n - o > 0.02 +/- 0.05\nreliability: 0.999\nmode: fp-free\n"
                   "adaptivity: full\nsteps: 8\nalerts:\n  webhook: https://hooks.example.com/services/SECRET-HOOK-PATH\n"
                   "private_sink: private/verdicts.jsonl\n")
    fp = "ab" * 32
    led = Ledger(open_backend({"backend": "file", "path": ".easeml/ledger"}, base=tmp), fp, LEDGER_KEY)
    terms = {"condition": "n - o > 0.02 +/- 0.05", "reliability": 0.999, "mode": "fp-free",
             "adaptivity": "full", "steps": 8, "passes": None}
    led.register(terms)
    for passed, pr in ((False, 11), (True, 12), (False, 13)):
        led.record_step(passed=passed, terms=terms, details={"new": f"models/pr{pr}.onnx", "pull_request": pr})
    return {"config": str(cfg), "fingerprint": fp, "used": 3, "remaining": 5,
            "bits": ["fail", "pass", "fail"]}


def build_owner(tmp: Path) -> dict:
    """A gate labelled on demand (adaptivity none): an encrypted test set, its key, a ledger with the
    test set registered, and a private sink file (outside any repository) holding label requests:
    pair p1 asked twice (the later request wins), p2 asked and then decided (nothing pending), p3
    on another test set, and verdict text that must never reach a page."""
    from easeml_ci.ledger import Ledger, open_backend
    from easeml_ci.testsets import crypto, encrypt_testset, testset_from_arrays

    os.environ["_DASH_KEY_PARSE"] = key = crypto.generate_key()
    try:
        key_bytes = crypto.key_from_env("_DASH_KEY_PARSE")
    finally:
        del os.environ["_DASH_KEY_PARSE"]
    rng = np.random.default_rng(5)
    ts = testset_from_arrays(rng.normal(size=(40, 3)), rng.integers(0, 2, 40), tmp / "ts.npz")
    encrypt_testset(ts, tmp / "testset.enc", key_bytes)
    sink = tmp / "owner-only" / "sink.jsonl"
    sink.parent.mkdir()
    cfg = tmp / "owner.yml"
    cfg.write_text("condition: n - o > 0.02 +/- 0.05\nreliability: 0.999\nmode: fp-free\nadaptivity: none\n"
                   f"steps: 4\ntestset: {tmp / 'testset.enc'}\nprivate_sink: {sink}\n"
                   "ledger:\n  backend: file\n  path: .easeml/owner-ledger\n")
    fp = ts.fingerprint
    led = Ledger(open_backend({"backend": "file", "path": ".easeml/owner-ledger"}, base=tmp), fp, LEDGER_KEY)
    led.register({"condition": "n - o > 0.02 +/- 0.05", "reliability": 0.999, "mode": "fp-free",
                  "adaptivity": "none", "steps": 4, "passes": None})

    def req(pair, step, time, ids, testset=fp):
        return {"testset": testset, "pair": pair, "step": step, "time": time, "new": f"models/{pair}.onnx",
                "old": "models/main.onnx", "verdict": "undecided",
                "clauses": [{"text": SINK_SECRET, "status": "undecided"}],
                "label_request": {"row_ids": ids, "count": len(ids), "order": "priority"}}

    records = [req("p1" + "0" * 62, 1, "2026-12-01T10:00:00Z", ["req-a1", "req-a2"]),
               req("p2" + "0" * 62, 2, "2026-12-01T11:00:00Z", ["req-b9"]),
               {"testset": fp, "pair": "p2" + "0" * 62, "step": 2, "verdict": "pass", "clauses": [{"text": SINK_SECRET}]},
               req("p1" + "0" * 62, 1, "2026-12-02T09:00:00Z", ["req-a7", "req-a3", "req-a5"]),
               req("p3" + "0" * 62, 1, "2026-12-02T09:30:00Z", ["req-c1"], testset="cd" * 32)]
    sink.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    return {"owner_config": str(cfg), "owner_fingerprint": fp, "key": key, "sink": str(sink),
            "pending": [{"pair": "p1" + "0" * 10, "row_ids": ["req-a7", "req-a3", "req-a5"], "count": 3}]}


SINK_SECRET = "SINK-ONLY-clause-text"


def status_json(url: str) -> dict:
    from click.testing import CliRunner

    from automl_runner.cli import main

    res = CliRunner().invoke(main, ["status", "--store", url, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)
