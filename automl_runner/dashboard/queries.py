"""Every read the dashboard makes: the queue's store and the test-set ledgers. Read-only.

This is the one module of the dashboard that imports the rest of the project (the store, the
ledger, the gate's config), so a move of those modules is fixed here alone. Each page costs a
fixed number of aggregate queries over the store's indexes (never one query per tenant or a read
of every trial): the overview reads one page of tenants, a tenant page one page of its trials.
"""
from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from automl_runner.store import open_store

#: Trial columns a tenant's table may be sorted by (API name -> SQL expression).
TRIAL_SORTS = {"id": "id", "candidate": "candidate", "status": "status", "score": "score",
               "cost": "cost", "finished": "finished_at", "device": "COALESCE(ran_on, device)"}
#: Tenant columns the overview may be sorted by.
TENANT_SORTS = {"name": "name", "created": "created_at"}
MAX_PAGE_SIZE = 500
#: Rung scores a tenant page reads at most (a tenant's trials times their rungs, 1/9, 1/3, 1).
MAX_CURVE_POINTS = 6000
CARD_BYTES = 64 * 1024
LOG_TAIL = 50

_TRIAL_COLS = ("id, tenant, candidate, status, worker, device, ran_on, attempts, queued_at, started_at, "
               "finished_at, heartbeat, lease_expires, score, cost, fidelity, stopped_at, error")
_TRIAL_KEYS = [c.strip() for c in _TRIAL_COLS.split(",")]


class NotFound(LookupError):
    """A tenant, trial or test set the store or ledger does not hold (HTTP 404)."""


class BadQuery(ValueError):
    """A query parameter outside what is allowed (HTTP 400); the message names both."""


def _page_args(page: Any, per_page: Any, sort: Any, order: Any, sorts: dict, default: str) -> tuple:
    try:
        page_n = int(page if page not in (None, "") else 1)
        size = int(per_page if per_page not in (None, "") else 50)
    except (TypeError, ValueError):
        raise BadQuery(f"page and per_page must be whole numbers, got page={page!r}, per_page={per_page!r}")
    if page_n < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise BadQuery(f"page must be >= 1 and per_page in 1..{MAX_PAGE_SIZE}, got page={page_n}, per_page={size}")
    sort = sort or default
    if sort not in sorts:
        raise BadQuery(f"sort must be one of {', '.join(sorts)}, got {sort!r}")
    order = (order or "asc").lower()
    if order not in ("asc", "desc"):
        raise BadQuery(f"order must be asc or desc, got {order!r}")
    return page_n, size, sort, order


def _marks(items: Sequence) -> str:
    return ", ".join("?" for _ in items)


class Queue:
    """The store, read through one connection per serving thread (a store is not thread-safe)."""

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()
        self.store()  # fail now (exit 2 from the CLI) on a bad URL, not on the first request

    def store(self):
        st = getattr(self._local, "store", None)
        if st is None:
            st = self._local.store = open_store(self.url, create=False, must_exist=True)
        return st

    def read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        st = self.store()
        cur = st.conn.cursor()
        try:
            cur.execute(st.dialect.sql(sql), tuple(params))
            return list(cur.fetchall())
        finally:
            cur.close()

    def now(self) -> float:
        return self.store().now()

    def has_table(self, table: str) -> bool:
        """Whether the store has ``table`` (a store no writer has opened since it was added has not:
        the dashboard never migrates, so it reads such a store as it is)."""
        known = getattr(self._local, "tables", None)
        if known is None:
            known = self._local.tables = set()
        if table in known:
            return True
        st = self.store()
        if st.kind == "sqlite":
            found = self.read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        else:
            found = self.read("SELECT 1 FROM information_schema.tables WHERE table_name = ? "
                              "AND table_schema = current_schema()", (table,))
        if found:
            known.add(table)
        return bool(found)

    # -- the overview -------------------------------------------------------------------------
    def totals(self) -> dict:
        by_status = {s: int(n) for s, n in self.read("SELECT status, COUNT(*) FROM trials GROUP BY status")}
        tenants = int(self.read("SELECT COUNT(*) FROM tenants")[0][0])
        stopped = int(self.read("SELECT COUNT(*) FROM trials WHERE stopped_at IS NOT NULL")[0][0])
        return {"tenants": tenants, "done": by_status.get("done", 0), "running": by_status.get("running", 0),
                "queued": by_status.get("queued", 0), "failed": by_status.get("failed", 0),
                "stopped_early": stopped}

    def tenants(self, page=None, per_page=None, sort=None, order=None, names: Sequence[str] | None = None) -> dict:
        """One page of tenants, each with what `easeml-automl status --json` says of it."""
        page, size, sort, order = _page_args(page, per_page, sort, order, TENANT_SORTS, "name")
        if names is None:
            rows = self.read(f"SELECT name, schema_json, paused, repository FROM tenants "
                             f"ORDER BY {TENANT_SORTS[sort]} {order}, name LIMIT ? OFFSET ?",
                             (size, (page - 1) * size))
        else:
            rows = self.read(f"SELECT name, schema_json, paused, repository FROM tenants WHERE name IN ({_marks(names)}) "
                             "ORDER BY name", tuple(names)) if names else []
        total = int(self.read("SELECT COUNT(*) FROM tenants")[0][0])
        return {"page": page, "per_page": size, "sort": sort, "order": order, "total": total,
                "pages": max(1, math.ceil(total / size)), "tenants": self._summaries(rows)}

    def _summaries(self, rows: list[tuple]) -> list[dict]:
        names = [r[0] for r in rows]
        if not names:
            return []
        inn, p = _marks(names), tuple(names)
        counts: dict[str, dict[str, int]] = {}
        for t, st, n in self.read(f"SELECT tenant, status, COUNT(*) FROM trials WHERE tenant IN ({inn}) "
                                  "GROUP BY tenant, status", p):
            counts.setdefault(t, {})[st] = int(n)
        stopped = {t: int(n) for t, n in self.read(
            f"SELECT tenant, COUNT(*) FROM trials WHERE tenant IN ({inn}) AND stopped_at IS NOT NULL GROUP BY tenant", p)}
        running: dict[str, list[dict]] = {}
        for t, cand, dev, worker in self.read(
                f"SELECT tenant, candidate, device, worker FROM trials WHERE tenant IN ({inn}) AND status = 'running' "
                "ORDER BY id", p):
            running.setdefault(t, []).append({"candidate": cand, "device": dev, "worker": worker})
        last = {r[0]: r for r in self.read(
            "SELECT tenant, candidate, score, status, pull_request, trial_id FROM promotions WHERE id IN "
            f"(SELECT MAX(id) FROM promotions WHERE tenant IN ({inn}) GROUP BY tenant)", p)}
        # The best trial as the store's `status` ranks it: score, then the last promoted, then
        # the first finished, then the first recorded.
        best: dict[str, tuple] = {}
        for t, cand, score, tid in self.read(
                "SELECT tenant, candidate, score, id FROM (SELECT t.tenant, t.candidate, t.score, t.id, ROW_NUMBER() "
                "OVER (PARTITION BY t.tenant ORDER BY t.score DESC, CASE WHEN t.id = lp.trial_id THEN 0 ELSE 1 END, "
                "t.finished_at ASC, t.id ASC) AS rank FROM trials t LEFT JOIN promotions lp ON lp.tenant = t.tenant "
                "AND lp.id = (SELECT MAX(id) FROM promotions p WHERE p.tenant = t.tenant) "
                f"WHERE t.status = 'done' AND t.tenant IN ({inn})) ranked WHERE rank = 1", p):
            best[t] = (cand, float(score), int(tid))
        nxt: dict[str, dict] = {}
        if self.has_table("next_choices"):
            for t, cand, ei, secs, rate, sched, at in self.read(
                    "SELECT tenant, candidate, ei, expected_seconds, ei_per_second, scheduler, at FROM next_choices "
                    f"WHERE tenant IN ({inn})", p):
                nxt[t] = {"candidate": cand, "ei": None if ei is None else float(ei),
                          "expected_seconds": None if secs is None else float(secs),
                          "ei_per_second": None if rate is None else float(rate), "scheduler": sched,
                          "at": float(at)}
        out = []
        for name, schema_json, paused, repository in rows:
            schema = json.loads(schema_json)
            c, b, lp = counts.get(name, {}), best.get(name), last.get(name)
            out.append({
                "name": name, "task": schema.get("task"),
                "metric": "accuracy" if schema.get("task") == "classification" else "r2",
                "best_candidate": b[0] if b else None, "best_score": b[1] if b else None,
                "best_trial": b[2] if b else None,
                "done": c.get("done", 0), "running": c.get("running", 0), "queued": c.get("queued", 0),
                "failed": c.get("failed", 0), "stopped_early": stopped.get(name, 0),
                "running_trials": running.get(name, []),
                "promoted_candidate": lp[1] if lp else None, "promoted_score": float(lp[2]) if lp else None,
                "promotion_status": lp[3] if lp else None, "pull_request": lp[4] if lp else None,
                "promoted_trial": int(lp[5]) if lp else None,
                "paused": paused, "repository": repository,
                # None: no worker has scheduled for this tenant yet ("not scheduled yet");
                # a candidate of None: nothing left to try when it last scheduled.
                "next_choice": nxt.get(name),
            })
        return out

    # -- one tenant ---------------------------------------------------------------------------
    def tenant(self, name: str, page=None, per_page=None, sort=None, order=None) -> dict:
        page, size, sort, order = _page_args(page, per_page, sort, order, TRIAL_SORTS, "id")
        rows = self.read("SELECT name, schema_json, paused, repository, dataset, fingerprint, created_at, margin "
                         "FROM tenants WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no tenant {name!r} in the store")
        summary = self._summaries([rows[0][:4]])[0]
        schema = json.loads(rows[0][1])
        nulls_last = f"CASE WHEN {TRIAL_SORTS[sort]} IS NULL THEN 1 ELSE 0 END, "
        trials = [dict(zip(_TRIAL_KEYS, r)) for r in self.read(
            f"SELECT {_TRIAL_COLS} FROM trials WHERE tenant = ? ORDER BY {nulls_last}{TRIAL_SORTS[sort]} {order}, id "
            "LIMIT ? OFFSET ?", (name, size, (page - 1) * size))]
        n = int(self.read("SELECT COUNT(*) FROM trials WHERE tenant = ?", (name,))[0][0])
        done = self.read("SELECT finished_at, score, candidate, id FROM trials WHERE tenant = ? AND status = 'done' "
                         "AND score IS NOT NULL AND finished_at IS NOT NULL ORDER BY finished_at, id", (name,))
        stopped = self.read("SELECT id, candidate, stopped_at, fidelity, score, status FROM trials WHERE tenant = ? "
                            "AND stopped_at IS NOT NULL ORDER BY id", (name,))
        curves: dict[int, dict] = {}
        if self.has_table("trial_rungs"):
            for tid, cand, f, sc, stopped_at in self.read(
                    "SELECT r.trial_id, t.candidate, r.fidelity, r.score, t.stopped_at FROM trial_rungs r "
                    "JOIN trials t ON t.id = r.trial_id WHERE t.tenant = ? ORDER BY r.trial_id, r.fidelity LIMIT ?",
                    (name, MAX_CURVE_POINTS)):
                c = curves.setdefault(int(tid), {"trial": int(tid), "candidate": cand, "stopped_at":
                                                 None if stopped_at is None else float(stopped_at), "rungs": []})
                c["rungs"].append([float(f), float(sc)])
        return {
            **summary,
            "curves": list(curves.values()),
            "dataset": rows[0][4], "fingerprint": rows[0][5], "created_at": rows[0][6], "margin": rows[0][7],
            "schema": {"target": schema.get("target"), "task": schema.get("task"), "n_rows": schema.get("n_rows"),
                       "classes": schema.get("classes", []), "features": schema.get("features", []),
                       "ignored": schema.get("ignored", []), "fingerprint": schema.get("fingerprint")},
            "trials": {"page": page, "per_page": size, "sort": sort, "order": order, "total": n,
                       "pages": max(1, math.ceil(n / size)), "rows": trials},
            "progress": [{"at": float(a), "score": float(s), "candidate": c, "trial": int(i)} for a, s, c, i in done],
            "stopped": [{"trial": int(i), "candidate": c, "stopped_at": float(at),
                         "fidelity": None if f is None else float(f), "score": None if s is None else float(s),
                         "retried": st == "done" and f is None} for i, c, at, f, s, st in stopped],
        }

    # -- one trial ----------------------------------------------------------------------------
    def trial(self, trial_id: int) -> dict:
        rows = self.read(f"SELECT {_TRIAL_COLS} FROM trials WHERE id = ?", (int(trial_id),))
        if not rows:
            raise NotFound(f"no trial {trial_id} in the store")
        trial = dict(zip(_TRIAL_KEYS, rows[0]))
        spec = self.read("SELECT family, spec FROM candidates WHERE name = ?", (trial["candidate"],))
        trial["family"] = spec[0][0] if spec else None
        trial["hyperparameters"] = json.loads(spec[0][1]) if spec else None
        # The log's tail: the trial's recorded events, newest last (lease tokens are not shown).
        trial["log"] = [{"at": float(at), "worker": w, "event": ev} for at, w, ev in reversed(self.read(
            "SELECT at, worker, event FROM trial_events WHERE trial_id = ? ORDER BY id DESC LIMIT ?",
            (int(trial_id), LOG_TAIL)))]
        promo = self.read("SELECT status, pull_request, card_path, model_path FROM promotions WHERE trial_id = ? "
                          "ORDER BY id DESC LIMIT 1", (int(trial_id),))
        trial["promotion"] = None
        trial["model_card"] = None
        if promo:
            trial["promotion"] = {"status": promo[0][0], "pull_request": promo[0][1]}
            trial["model_card"] = _read_card(promo[0][2])
        return trial

    # -- workers ------------------------------------------------------------------------------
    def workers(self) -> dict:
        now = self.now()
        held: dict[str, dict] = {}
        for worker, dev, tid, tenant, cand, hb, lease in self.read(
                "SELECT worker, device, id, tenant, candidate, heartbeat, lease_expires FROM trials "
                "WHERE status = 'running' ORDER BY worker, id"):
            w = held.setdefault(worker or "?", {"worker": worker, "devices": [], "holds": [],
                                                 "heartbeat": None, "lease_expires": None})
            if dev and dev not in w["devices"]:
                w["devices"].append(dev)
            w["holds"].append({"trial": int(tid), "tenant": tenant, "candidate": cand, "device": dev,
                               "heartbeat": hb, "lease_expires": lease,
                               "lease_left": None if lease is None else float(lease) - now})
            if hb is not None and (w["heartbeat"] is None or hb > w["heartbeat"]):
                w["heartbeat"] = float(hb)
            if lease is not None and (w["lease_expires"] is None or lease < w["lease_expires"]):
                w["lease_expires"] = float(lease)
        past = {}
        for worker, n, last in self.read("SELECT worker, COUNT(*), MAX(finished_at) FROM trials "
                                         "WHERE status IN ('done', 'failed') AND worker IS NOT NULL GROUP BY worker"):
            past[worker] = (int(n), None if last is None else float(last))
        out = []
        for name in sorted(set(held) | set(past)):
            w = held.get(name) or {"worker": name, "devices": [], "holds": [], "heartbeat": None, "lease_expires": None}
            n, last = past.get(name, (0, None))
            w.update(finished=n, last_finished=last,
                     heartbeat_age=None if w["heartbeat"] is None else now - w["heartbeat"])
            out.append(w)
        return {"now": now, "workers": out}


def _read_card(path: str | None) -> dict | None:
    """The promoted model's card as text (shown escaped), or why it cannot be read."""
    if not path:
        return None
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(CARD_BYTES + 1)
    except OSError as exc:
        return {"path": p.name, "text": None, "missing": f"cannot read the card ({exc.strerror or exc})"}
    text = data[:CARD_BYTES].decode("utf-8", errors="replace")
    return {"path": p.name, "text": text, "truncated": len(data) > CARD_BYTES, "missing": None}


# ----------------------------------------------------------------------------------------------
# the test sets' ledgers


@dataclass
class Ledgers:
    """The ledgers named by a gate's config: budgets, verdict bits, alerts, the next label request.

    Only what the team may see: the ledger's public entries (the verdict bit, or nothing under
    adaptivity ``none``). The webhook and the key are never shown; the private sink is read only
    with ``sink_key_env`` (the owner's opt-in: the environment variable holding the test-set
    key, which must open the config's test set), and then only for the pending label requests
    of a test set (:meth:`pending_label_requests`): row ids and counts, never its path, verdicts
    or anything else it holds."""

    config_path: str
    sink_key_env: str | None = None

    def __post_init__(self):
        from easeml_ci.config import load_config

        self.cfg = load_config(self.config_path)
        self.sink_path: Path | None = None
        if self.sink_key_env:
            self.sink_path = self._owner_sink()

    def _owner_sink(self) -> Path:
        """The private sink file, once the key in ``sink_key_env`` proved the owner; else UsageError."""
        from easeml_ci.errors import UsageError
        from easeml_ci.testsets.crypto import key_from_env

        env = self.sink_key_env
        key_from_env(env, purpose="--private-sink-key-env: the owner's view of pending label requests")
        sink = (self.cfg.private_sink or "").strip()
        if not sink or "://" in sink:
            raise UsageError(f"--private-sink-key-env {env}: the config's private_sink must be a file "
                             f"(a webhook keeps nothing to read); it is {'a webhook' if sink else 'not set'}")
        if self.cfg.testset:
            from easeml_ci.testsets import testset_fingerprint

            path = Path(self.cfg.testset)
            if not path.is_absolute():
                path = Path(self.config_path).resolve().parent / path
            _fp, verified = testset_fingerprint(str(path), label_column=self.cfg.label_column, key_env=env)
            if not verified:
                raise UsageError(f"--private-sink-key-env {env}: the key does not open the test set {self.cfg.testset}")
        return Path(sink).expanduser()

    def pending_label_requests(self, fingerprint: str) -> list[dict] | None:
        """The latest label request of each model pair still waiting for labels on test set
        ``fingerprint``, newest first; None without the owner's opt-in (``sink_key_env``).

        A pair's later record without a request (its decision made) ends its wait."""
        if self.sink_path is None:
            return None
        latest: dict[str, dict] = {}
        try:
            fh = self.sink_path.open("r", encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        except OSError as exc:
            return [{"problem": f"cannot read the private sink ({exc.strerror or type(exc).__name__})"}]
        with fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(rec, dict) or str(rec.get("testset", "")).lower() != fingerprint.lower():
                    continue
                pair = str(rec.get("pair") or f"{rec.get('new')}|{rec.get('old')}")
                req = rec.get("label_request")
                if isinstance(req, dict) and isinstance(req.get("row_ids"), list):
                    ids = [str(i) for i in req["row_ids"]]
                    latest[pair] = {"pair": pair[:12], "new": rec.get("new"), "old": rec.get("old"),
                                    "step": rec.get("step"), "time": rec.get("time"),
                                    "row_ids": ids, "count": len(ids)}
                else:
                    latest.pop(pair, None)
        return sorted(latest.values(), key=lambda r: str(r.get("time") or ""), reverse=True)

    def _backend(self):
        from easeml_ci.ledger import open_backend

        return open_backend(self.cfg.ledger, base=self.cfg.ledger_base())

    def label_request(self) -> dict:
        """What the next test set needs: the plan's sizes for the configured condition."""
        plan = self.cfg.plan()
        return {"condition": self.cfg.condition, "reliability": self.cfg.reliability,
                "test_examples": int(plan.test_examples), "labels": int(plan.labels),
                "pool": bool(self.cfg.pool)}

    def testsets(self) -> dict:
        from easeml_ci.ledger import Ledger, LedgerCorrupt

        backend = self._backend()
        lister = getattr(backend, "fingerprints", None)
        fps = lister() if lister else []
        out = []
        for fp in fps:
            led = Ledger(backend, fp)
            try:
                entries = led.entries()
                problem = None
            except LedgerCorrupt as exc:
                entries, problem = led.unverified_entries(), str(exc)
            out.append(_testset(led, entries, problem, self.cfg))
        return {"name": self.cfg.name, "ledger": self.cfg.ledger.get("backend", "file"),
                "label_request": self.label_request(), "testsets": out}

    def testset(self, fingerprint: str) -> dict:
        for ts in self.testsets()["testsets"]:
            if ts["fingerprint"] == fingerprint.lower():
                return ts
        raise NotFound(f"no ledger for test set {fingerprint!r}")


def _testset(led, entries: list[dict], problem: str | None, cfg) -> dict:
    fp = led.fingerprint
    reg = led.registration(entries)
    # the pinned terms win; the config's only for a test set not registered yet
    terms = {"adaptivity": cfg.adaptivity, "steps": cfg.steps, "passes": cfg.passes}
    budget = led.budget(terms, entries=entries).to_dict()
    from easeml_ci.ledger.budget import steps_with_verdicts

    steps, alerts = [], {}
    for e in steps_with_verdicts(entries):  # a reserved step with its completion's verdict
        kind = e.get("kind")
        passed = e.get("passed") if kind == "step" else None
        steps.append({"index": len(steps) + 1, "time": e.get("time"), "torn": kind == "torn",
                      "verdict": "torn" if kind == "torn" else
                      ("withheld" if passed is None else ("pass" if passed else "fail")),
                      "pull_request": e.get("pull_request") or e.get("pr"),
                      "model": e.get("new"), "underpowered": bool(e.get("underpowered"))})
    for e in entries:
        kind = e.get("kind")
        if kind == "alert":
            alerts[e.get("event")] = {"event": e.get("event"), "time": e.get("time"), "state": "claimed"}
        elif kind == "alert-result":
            alerts[e.get("event")] = {"event": e.get("event"), "time": e.get("time"),
                                      "state": "delivered" if e.get("delivered") else "failed"}
    return {"fingerprint": fp, "registered": reg is not None, "verified": problem is None, "problem": problem,
            "condition": (reg or {}).get("terms", {}).get("condition"), **budget,
            "steps": steps, "alerts": list(alerts.values())}


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
