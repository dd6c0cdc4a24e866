"""The shared state of the AutoML queue: tenants, candidates, trials, promotions.

Workers never talk to each other; they coordinate only through this store, as ease.ml did.

* SQLite (the default: a file path or ``sqlite:///path``) for one machine. Every write is a
  ``BEGIN IMMEDIATE`` transaction, so two processes never both take the same trial.
* PostgreSQL (``postgresql://...``, driver psycopg 3) when runners on several machines share one
  queue. Taking a trial is ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)``: two
  workers racing for the same trial never block each other, and exactly one wins. An optional
  ``?schema=NAME`` in the URL keeps one queue's tables in their own PostgreSQL schema.

Each tenant has one trial per accepted candidate. A trial is ``queued``, ``running`` (under a lease
with an expiry time that the worker's heartbeat pushes forward), ``done`` or ``failed``. A running
trial whose lease has expired, because its worker was killed or lost its network, goes back to
``queued`` and runs again elsewhere; after ``max_attempts`` expiries it is ``failed``. Every state
change is also appended to ``trial_events`` so that an operator (and the tests) can audit who held
which trial when. Times are the database's clock (seconds since the epoch), never the workers'.
A store opened with ``clock=`` (a callable returning seconds since the epoch) takes every time it
writes or compares (leases, heartbeats, events) from that clock instead: tests move it by hand
rather than sleeping past a lease.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .candidates.catalogue import Candidate
from .errors import StoreError, TenantError
from .datasets.schema import Schema

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 3
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_TABLES = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    schema_json TEXT NOT NULL,
    output TEXT,
    repository TEXT,
    model_path TEXT,
    excluded TEXT NOT NULL,
    only_candidates TEXT,
    margin DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    name TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    spec TEXT NOT NULL,
    added_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id {serial},
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    candidate TEXT NOT NULL,
    status TEXT NOT NULL,
    worker TEXT,
    device TEXT,
    lease_token TEXT,
    lease_expires DOUBLE PRECISION,
    heartbeat DOUBLE PRECISION,
    queued_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    score DOUBLE PRECISION,
    cost DOUBLE PRECISION,
    onnx_path TEXT,
    onnx_sha256 TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    UNIQUE (tenant, candidate)
);
CREATE INDEX IF NOT EXISTS trials_status ON trials (status);
CREATE TABLE IF NOT EXISTS trial_events (
    id {serial},
    trial_id BIGINT NOT NULL,
    worker TEXT,
    lease_token TEXT,
    event TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS promotions (
    id {serial},
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    trial_id BIGINT NOT NULL,
    candidate TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    previous_score DOUBLE PRECISION,
    status TEXT NOT NULL,
    model_path TEXT,
    card_path TEXT,
    pull_request TEXT,
    message TEXT,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS trial_rungs (
    trial_id BIGINT NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    fidelity DOUBLE PRECISION NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    seconds DOUBLE PRECISION,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (trial_id, fidelity)
);
CREATE TABLE IF NOT EXISTS next_choices (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    candidate TEXT,
    ei DOUBLE PRECISION,
    expected_seconds DOUBLE PRECISION,
    ei_per_second DOUBLE PRECISION,
    scheduler TEXT,
    worker TEXT,
    at DOUBLE PRECISION NOT NULL
);
"""


# --------------------------------------------------------------------------------------------
# records


# The tenant's best trial: highest score; among equal scores the one last promoted, then the
# first recorded. Two workers can record equal scores in either commit order, and finished_at is
# taken when each statement runs, not when it commits; without the promoted-first rule the "best"
# could name a tied trial that was never promoted (a tie never promotes: it must beat the last
# promoted score), and `status` would show a best and a promoted model that differ for no reason.
_BEST_ORDER = ("ORDER BY score DESC, CASE WHEN id = (SELECT trial_id FROM promotions WHERE tenant = ? "
               "ORDER BY id DESC LIMIT 1) THEN 0 ELSE 1 END, finished_at ASC, id ASC LIMIT 1")


@dataclass(frozen=True)
class Tenant:
    name: str
    dataset: str
    schema: Schema
    output: str | None
    repository: str | None
    model_path: str | None
    excluded: tuple[str, ...]
    only: tuple[str, ...] | None
    margin: float

    def wants(self, candidate: Candidate) -> bool:
        """Whether ``candidate`` should be queued for this tenant."""
        if candidate.name in self.excluded:
            return False
        if self.only is not None and candidate.name not in self.only:
            return False
        return candidate.accepts(self.schema)


@dataclass(frozen=True)
class Trial:
    id: int
    tenant: str
    candidate: str
    status: str
    attempts: int
    worker: str | None = None
    lease_token: str | None = None
    score: float | None = None
    cost: float | None = None
    onnx_path: str | None = None
    error: str | None = None
    finished_at: float | None = None
    #: Where the trial really trained (``cpu``, ``cuda:0``), as the estimator reported it.
    ran_on: str | None = None
    #: Share of the full budget (rounds, epochs) the trial trained for; None = the whole budget.
    fidelity: float | None = None
    #: The fidelity at which the trial was stopped early at a rung, kept after it is trained again
    #: to the full budget (:meth:`Store.requeue_stopped`); None: never stopped.
    stopped_at: float | None = None


@dataclass(frozen=True)
class TrialChange:
    """One trial as the worker's incremental read sees it (see :meth:`Store.trial_changes`)."""

    id: int
    tenant: str
    candidate: str
    status: str
    attempts: int
    score: float | None
    cost: float | None
    finished_at: float | None
    fidelity: float | None
    changed_at: float | None


@dataclass(frozen=True)
class Claim:
    """A trial this worker now holds; ``token`` proves it on every later write."""

    trial_id: int
    tenant: str
    candidate: str
    token: str
    attempt: int
    #: A trial stopped early and queued again (:meth:`Store.requeue_stopped`): it trains to the
    #: full budget in one go, without rungs.
    retry: bool = False


@dataclass(frozen=True)
class NextChoice:
    """What the scheduler would train next for ``tenant`` once the trial being claimed is out:
    its ``candidate`` (None: nothing left to try), expected improvement, the seconds it is
    expected to take, and so EI per second. Written when a worker schedules, read by the dashboard."""

    tenant: str
    candidate: str | None
    ei: float | None = None
    expected_seconds: float | None = None
    scheduler: str | None = None

    @property
    def ei_per_second(self) -> float | None:
        if self.ei is None or not self.expected_seconds:
            return None
        return float(self.ei) / float(self.expected_seconds)


@dataclass(frozen=True)
class Snapshot:
    """What a scheduler needs for one decision, read in one go."""

    pending: dict[str, list[str]]
    running: list[tuple[int, str, str, int]]  # (trial id, tenant, candidate, attempts)
    finished: list[Trial]  # done trials finished since the watermark given


@dataclass(frozen=True)
class Promotion:
    id: int
    tenant: str
    trial_id: int
    candidate: str
    score: float
    previous_score: float | None
    status: str
    model_path: str | None = None
    card_path: str | None = None
    pull_request: str | None = None
    message: str | None = None


@dataclass
class TenantStatus:
    name: str
    task: str
    metric: str
    best_candidate: str | None
    best_score: float | None
    done: int
    running: int
    queued: int
    failed: int
    running_candidates: list[str] = field(default_factory=list)
    queue: list[str] = field(default_factory=list)
    promoted_candidate: str | None = None
    promoted_score: float | None = None
    pull_request: str | None = None
    promotion_status: str | None = None
    #: Why the queue stopped choosing this tenant (its dataset changed), or None.
    paused: str | None = None
    #: Trials done per device they really ran on, e.g. {"cpu": 3, "cuda:0": 5}.
    ran_on: dict[str, int] = field(default_factory=dict)
    #: Candidates whose trial was stopped early at a rung -> the fidelity it was stopped at
    #: (kept after the trial is trained again to the full budget).
    stopped_early: dict[str, float] = field(default_factory=dict)
    #: Those of them since trained again to the full budget (:meth:`Store.requeue_stopped`).
    retried: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------
# dialects


class _Dialect:
    name = "?"
    now = ""
    serial = ""

    def sql(self, text: str) -> str:
        return text


class _SQLite(_Dialect):
    name = "sqlite"
    # julianday has millisecond resolution; good enough for leases of seconds.
    now = "((julianday('now') - 2440587.5) * 86400.0)"
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"


class _Postgres(_Dialect):
    name = "postgresql"
    now = "extract(epoch from clock_timestamp())::double precision"
    serial = "BIGSERIAL PRIMARY KEY"

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s")


def driver_errors(name: str) -> tuple[type[BaseException], ...]:
    """The DB-API exception class ``name`` ("IntegrityError", "OperationalError", ...) of both
    drivers, for an ``except`` that must catch it whichever database the store runs on."""
    try:
        import psycopg
    except ImportError:  # a SQLite-only install: no PostgreSQL errors can occur
        return (getattr(sqlite3, name),)
    return (getattr(sqlite3, name), getattr(psycopg, name))


def parse_store_url(url: str | os.PathLike) -> tuple[str, str, str | None]:
    """(kind, target, pg schema) for a store URL: ``sqlite``/path or ``postgresql``/conninfo."""
    url = os.fspath(url) if url is not None else ""
    if not url or not url.strip():
        raise StoreError("--store is empty; give a file path, sqlite:///PATH or postgresql://...")
    url = url.strip()
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = None
        rest = []
        for k, v in query:
            if k == "schema":
                schema = v
            else:
                rest.append((k, v))
        if schema is not None and not SCHEMA_NAME.match(schema):
            raise StoreError(f"--store: schema {schema!r} is not a plain identifier (letters, digits, _)")
        return "postgresql", urlunsplit(parts._replace(query=urlencode(rest))), schema
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if path.startswith("///"):
            path = path[3:] if not path.startswith("////") else path[3:]
        elif path.startswith("//"):
            raise StoreError(f"--store {url!r}: a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
        if not path:
            raise StoreError(f"--store {url!r} names no file")
        return "sqlite", path, None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
        scheme = url.split("://", 1)[0]
        raise StoreError(
            f"--store: unsupported database {scheme!r}; use a file path, sqlite:///PATH or postgresql://..."
        )
    return "sqlite", url, None


def open_store(url: str | os.PathLike, *, create: bool = True, must_exist: bool = False,
               clock: Callable[[], float] | None = None) -> "Store":
    """Connect to the store at ``url`` (creating its tables when ``create``).

    ``clock``: see :class:`Store`; None (the default) means the database server's clock.

    ``must_exist``: refuse a SQLite file that is not there yet (a typo in a read-only command
    would otherwise create an empty queue and report that it is empty).
    """
    kind, target, schema = parse_store_url(url)
    if must_exist and kind == "sqlite" and not os.path.exists(target):
        raise StoreError(f"--store: SQLite file {target!r} does not exist; `easeml-automl submit` creates it")
    store = Store(kind, target, schema, url=os.fspath(url), clock=clock)
    if create:
        store.init()
    return store


def store_exists(url: str | os.PathLike) -> bool:
    """Whether the store at ``url`` is already there (a PostgreSQL store: assumed, its database is)."""
    kind, target, _ = parse_store_url(url)
    return kind != "sqlite" or os.path.exists(target)


def check_model_path(model_path: str) -> None:
    """Refuse a ``--model-path`` that leaves the repository's model files: it must be relative,
    without ``..``, and outside ``.git/`` and ``.github/`` (a promotion must never write a
    workflow or git metadata into the tenant's repository)."""
    parts = model_path.replace("\\", "/").split("/")
    # what a checkout on any system makes of a name: case folded, trailing dots and spaces gone
    seen = [p.lower().rstrip(". ") for p in parts]
    if (not model_path or model_path.startswith("/") or re.match(r"^[A-Za-z]:", model_path)
            or any(p in ("", ".", "..") for p in parts) or ".git" in seen or seen[0] == ".github"
            or re.search(r"[\x00-\x1f\x7f]", model_path)):
        raise TenantError(
            f"--model-path {model_path!r}: expected a relative path inside the repository such as "
            "models/<tenant>.onnx, without '..', empty or '.' parts, control characters or a .git "
            "folder, and outside .github/"
        )


class Store:
    """One connection to the queue's database. Not shared between threads: open one per thread."""

    def __init__(self, kind: str, target: str, pg_schema: str | None = None, *, url: str = "",
                 clock: Callable[[], float] | None = None):
        self.url = url
        #: Seconds since the epoch for every time the store writes or compares; None: the
        #: database's own clock, the one clock all workers share (see the module docstring).
        self.clock = clock
        self.kind = kind
        self._lock = threading.Lock()
        if kind == "sqlite":
            self.dialect: _Dialect = _SQLite()
            d = os.path.dirname(os.path.abspath(target))
            if not os.path.isdir(d):
                raise StoreError(f"--store: directory {d!r} for the SQLite file does not exist")
            try:
                self.conn = sqlite3.connect(target, timeout=60.0, isolation_level=None, check_same_thread=False)
                self.conn.execute("PRAGMA busy_timeout = 60000")
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"--store {target!r} is not a usable SQLite database ({exc})")
        else:
            try:
                import psycopg
            except ImportError:
                raise StoreError("--store: a PostgreSQL store needs the psycopg driver; "
                                 "pip install 'easeml-ci[automl]'") from None

            self.dialect = _Postgres()
            try:
                self.conn = psycopg.connect(target, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise StoreError(f"--store: cannot connect to PostgreSQL ({msg})")
            if pg_schema:
                self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{pg_schema}"')
                self.conn.execute(f'SET search_path TO "{pg_schema}"')
            # Plan each query for its values: a cached generic plan of `changed_at >= $1` guesses a
            # third of the table and scans it all, where the worker's read wants a few rows.
            self.conn.execute("SET plan_cache_mode = force_custom_plan")
        self.pg_schema = pg_schema

    # -- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _q(self, text: str) -> str:
        now = self.dialect.now if self.clock is None else \
            f"CAST({float(self.clock()):.6f} AS DOUBLE PRECISION)"
        return self.dialect.sql(text.replace("{now}", now))

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A write transaction: BEGIN IMMEDIATE on SQLite (one writer at a time), plain on PG."""
        with self._lock:
            if self.kind == "sqlite":
                cur = self.conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                else:
                    cur.execute("COMMIT")
            else:
                with self.conn.transaction():
                    with self.conn.cursor() as cur:
                        yield cur

    def _exec(self, cur, text: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._q(text), tuple(params))
        return cur

    def _read(self, text: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            cur = self.conn.cursor()
            try:
                cur.execute(self._q(text), tuple(params))
                return list(cur.fetchall())
            finally:
                cur.close()

    def init(self) -> None:
        ddl = _TABLES.replace("{serial}", self.dialect.serial)
        statements = [s.strip() for s in ddl.split(";") if s.strip()]
        with self._tx() as cur:
            if self.kind == "postgresql":
                # Concurrent CREATE TABLE IF NOT EXISTS can still collide on PG's catalogue.
                cur.execute("SELECT pg_advisory_xact_lock(7432101)")
            for s in statements:
                cur.execute(s)
            self._migrate(cur)

    # -- additive schema changes ---------------------------------------------------------------
    # The store has no schema version: each change below is applied when missing, so opening an
    # existing store (any older release) adds it once, and opening it again changes nothing.
    # New tables (trial_rungs, next_choices) are CREATE TABLE IF NOT EXISTS in _TABLES, which
    # init() runs on every open: an older store gains them the first time a writer opens it.

    #: (table, column, type) added after the first release.
    _ADDED_COLUMNS = (
        ("trials", "ran_on", "TEXT"),
        ("trials", "fidelity", "DOUBLE PRECISION"),
        ("trials", "changed_at", "DOUBLE PRECISION"),
    ("trials", "stopped_at", "DOUBLE PRECISION"),
        ("tenants", "paused", "TEXT"),
        ("tenants", "changed_at", "DOUBLE PRECISION"),
        #: GitHub's id of the tenant's repository, pinned at its first pull request (pin_repository).
        ("tenants", "repository_id", "BIGINT"),
    )
    #: Indexes of the hot queries: a tenant's trials by status (status, promotion), what changed
    #: since the last decision (the worker's incremental read), a trial's events.
    _ADDED_INDEXES = (
        "CREATE INDEX IF NOT EXISTS trials_tenant_status ON trials (tenant, status)",
        "CREATE INDEX IF NOT EXISTS trials_changed ON trials (changed_at)",
        "CREATE INDEX IF NOT EXISTS tenants_changed ON tenants (changed_at)",
        "CREATE INDEX IF NOT EXISTS trial_events_trial ON trial_events (trial_id)",
        "CREATE INDEX IF NOT EXISTS promotions_tenant ON promotions (tenant, id)",
        "CREATE INDEX IF NOT EXISTS trials_stopped ON trials (tenant) WHERE stopped_at IS NOT NULL",
    )

    def _columns(self, cur, table: str) -> set[str]:
        if self.kind == "sqlite":
            cur.execute(f"PRAGMA table_info({table})")
            return {r[1] for r in cur.fetchall()}
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "AND table_schema = current_schema()", (table,))
        return {r[0] for r in cur.fetchall()}

    def _migrate(self, cur) -> None:
        """Add the columns, indexes and triggers of later releases to a store that lacks them."""
        have: dict[str, set[str]] = {}
        for table, column, kind in self._ADDED_COLUMNS:
            cols = have.setdefault(table, self._columns(cur, table))
            if column not in cols:
                cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                cols.add(column)
                if column == "changed_at":  # rows of an older store: their last known change
                    when = "COALESCE(finished_at, started_at, queued_at)" if table == "trials" else "created_at"
                    cur.execute(f"UPDATE {table} SET changed_at = {when}")
        for ddl in self._ADDED_INDEXES:
            cur.execute(ddl)
        # `changed_at` is stamped by the database on every insert and status change, whichever
        # statement makes it: the worker reads only what changed since its last decision.
        if self.kind == "sqlite":
            now = self.dialect.now
            for table, col in (("trials", "status"), ("tenants", "paused")):
                key = "id" if table == "trials" else "name"
                cur.execute(f"CREATE TRIGGER IF NOT EXISTS {table}_inserted AFTER INSERT ON {table} BEGIN "
                            f"UPDATE {table} SET changed_at = {now} WHERE {key} = NEW.{key}; END")
                cur.execute(f"CREATE TRIGGER IF NOT EXISTS {table}_changed AFTER UPDATE OF {col} ON {table} "
                            f"WHEN NEW.{col} IS NOT OLD.{col} BEGIN "
                            f"UPDATE {table} SET changed_at = {now} WHERE {key} = NEW.{key}; END")
        else:
            cur.execute("CREATE OR REPLACE FUNCTION easeml_automl_touch() RETURNS trigger AS $$ BEGIN "
                        "NEW.changed_at := extract(epoch from clock_timestamp())::double precision; RETURN NEW; "
                        "END $$ LANGUAGE plpgsql")
            for table, col in (("trials", "status"), ("tenants", "paused")):
                cur.execute(f"CREATE OR REPLACE TRIGGER {table}_touch BEFORE INSERT OR UPDATE OF {col} ON {table} "
                            "FOR EACH ROW EXECUTE FUNCTION easeml_automl_touch()")

    def drop_all(self) -> None:
        """Remove the queue's tables (or its whole PostgreSQL schema). For tests and resets."""
        with self._tx() as cur:
            if self.kind == "postgresql" and self.pg_schema:
                cur.execute(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE')
            else:
                for t in ("trial_rungs", "next_choices", "trial_events", "promotions", "trials", "candidates",
                          "tenants"):
                    cur.execute(f"DROP TABLE IF EXISTS {t}")

    def now(self) -> float:
        """The store's time now: the injected clock's, else the database's (seconds since the epoch)."""
        return float(self._read("SELECT {now}")[0][0])

    def _event(self, cur, trial_id: int, worker: str | None, token: str | None, event: str) -> None:
        self._exec(cur, "INSERT INTO trial_events (trial_id, worker, lease_token, event, at) VALUES (?, ?, ?, ?, {now})",
                   (trial_id, worker, token, event))

    # -- candidates and tenants -------------------------------------------------------------
    # Both inserts below race between workers that start at once (each registers the catalogue
    # it knows): ON CONFLICT DO NOTHING makes the loser a no-op instead of a unique violation.
    def _upsert_candidate(self, cur, cand: Candidate) -> bool:
        spec = json.dumps(cand.spec(), sort_keys=True)
        self._exec(cur, "INSERT INTO candidates (name, family, spec, added_at) VALUES (?, ?, ?, {now}) "
                   "ON CONFLICT (name) DO NOTHING", (cand.name, cand.family, spec))
        if cur.rowcount == 1:
            return True
        self._exec(cur, "UPDATE candidates SET family = ?, spec = ? WHERE name = ? AND spec <> ?",
                   (cand.family, spec, cand.name, spec))
        return False

    def _queue(self, cur, tenant: str, candidate: str) -> bool:
        self._exec(cur, "INSERT INTO trials (tenant, candidate, status, queued_at, attempts) "
                   "VALUES (?, ?, 'queued', {now}, 0) ON CONFLICT (tenant, candidate) DO NOTHING",
                   (tenant, candidate))
        return cur.rowcount == 1

    def add_candidate(self, candidate: Candidate) -> list[str]:
        """Register a candidate and queue it for every tenant whose schema it accepts.

        This is the paper's knowledge-base maintenance: a new model becomes a pending trial for
        every matching tenant, and the scheduler decides when (if ever) it is worth training.
        Returns the tenants it was queued for.
        """
        queued = []
        tenants = self.tenants()
        with self._tx() as cur:
            self._upsert_candidate(cur, candidate)
            for t in tenants:
                if t.wants(candidate) and self._queue(cur, t.name, candidate.name):
                    queued.append(t.name)
        return queued

    def sync_catalogue(self, catalogue: Iterable[Candidate]) -> dict[str, list[str]]:
        """:meth:`add_candidate` for each candidate; returns candidate -> tenants newly queued.

        Reads the tenants once and writes in one transaction: a worker starting on a queue of
        1,000 tenants registers 50 candidates in one pass, not 50 reads of every tenant."""
        out: dict[str, list[str]] = {}
        tenants = self.tenants()
        with self._tx() as cur:
            for c in catalogue:
                self._upsert_candidate(cur, c)
                q = [t.name for t in tenants if t.wants(c) and self._queue(cur, t.name, c.name)]
                if q:
                    out[c.name] = q
        return out

    def candidate_names(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM candidates ORDER BY name")]

    def candidate_spec(self, name: str) -> dict | None:
        rows = self._read("SELECT spec FROM candidates WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def add_tenant(
        self,
        name: str,
        dataset: str,
        schema: Schema,
        catalogue: Iterable[Candidate],
        *,
        output: str | None = None,
        repository: str | None = None,
        model_path: str | None = None,
        excluded: Iterable[str] = (),
        only: Iterable[str] | None = None,
        margin: float = 0.01,
        replace: bool = False,
    ) -> list[str]:
        """Register a tenant and queue every candidate it accepts; returns the queued names."""
        if not TENANT_NAME.match(name or ""):
            raise TenantError(
                f"--name {name!r}: a tenant name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if not (margin >= 0.0 and margin < 1.0):
            raise TenantError(f"--margin must be in [0, 1), got {margin}")
        if repository is not None and not re.match(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", repository):
            raise TenantError(f"--repository {repository!r}: expected OWNER/NAME")
        if model_path is not None:
            check_model_path(model_path)
        catalogue = list(catalogue)
        names = {c.name for c in catalogue}
        excluded = tuple(excluded)
        for opt, group in (("--exclude", excluded), ("--only", tuple(only or ()))):
            for e in group:
                if e not in names:
                    shown = ", ".join(sorted(names))
                    raise TenantError(f"{opt}: no candidate named {e!r}; candidates are {shown}")
        only_t = tuple(only) if only else None
        tenant = Tenant(name, os.path.abspath(dataset), schema, output, repository, model_path, excluded, only_t, margin)
        try:
            return self._add_tenant(tenant, catalogue, replace)
        except driver_errors("IntegrityError") as exc:  # a concurrent submit of the same name won the race
            raise TenantError(f"tenant {name!r} already exists; use --replace to submit it again") from exc

    def _add_tenant(self, tenant: Tenant, catalogue: list[Candidate], replace: bool) -> list[str]:
        name, schema = tenant.name, tenant.schema
        output, repository, model_path = tenant.output, tenant.repository, tenant.model_path
        excluded, only_t, margin = tenant.excluded, tenant.only, tenant.margin
        with self._tx() as cur:
            if output is not None:
                self._check_own_folder(cur, name, output)
            self._exec(cur, "SELECT repository, repository_id FROM tenants WHERE name = ?", (name,))
            existing = cur.fetchone()
            repository_id = None
            if existing is not None:
                if not replace:
                    raise TenantError(f"tenant {name!r} already exists; use --replace to submit it again")
                registered, repository_id = existing
                if (registered or "").lower() != (repository or "").lower():
                    shown = "no repository" if repository is None else f"--repository {repository}"
                    raise TenantError(
                        f"tenant {name!r} is registered with repository {registered or '(none)'}; its pull "
                        f"requests go only there, so --replace with {shown} is refused; submit the data "
                        "under a new --name to send its models elsewhere")
                self._exec(cur, "DELETE FROM trial_events WHERE trial_id IN (SELECT id FROM trials WHERE tenant = ?)", (name,))
                self._exec(cur, "DELETE FROM trials WHERE tenant = ?", (name,))
                self._exec(cur, "DELETE FROM promotions WHERE tenant = ?", (name,))
                self._exec(cur, "DELETE FROM tenants WHERE name = ?", (name,))
            self._exec(
                cur,
                "INSERT INTO tenants (name, dataset, fingerprint, schema_json, output, repository, model_path, excluded, "
                "only_candidates, margin, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {now})",
                (name, tenant.dataset, schema.fingerprint, schema.to_json(), output, repository, model_path,
                 json.dumps(list(excluded)), json.dumps(list(only_t)) if only_t is not None else None, float(margin)),
            )
            if repository_id is not None:  # a resubmit keeps the repository GitHub's id pinned
                self._exec(cur, "UPDATE tenants SET repository_id = ? WHERE name = ?", (repository_id, name))
            queued = []
            for c in catalogue:
                self._upsert_candidate(cur, c)
                if tenant.wants(c) and self._queue(cur, name, c.name):
                    queued.append(c.name)
        return queued

    def _check_own_folder(self, cur, name: str, output: str) -> None:
        """Refuse an output folder that is, holds or lies inside another tenant's folder: each
        tenant's files go to its own folder only (automl_runner.folders)."""
        from .folders import overlaps

        mine = os.path.normpath(os.path.abspath(output))
        self._exec(cur, "SELECT name, output FROM tenants WHERE output IS NOT NULL AND name <> ?", (name,))
        for other, theirs in cur.fetchall():
            theirs = os.path.normpath(os.path.abspath(theirs))
            if overlaps(mine, theirs):
                raise TenantError(f"--output {output}: tenant {other!r} writes to {theirs}; each tenant's output "
                                  "folder must be its own (not the same as, inside or around another's)")

    def pin_repository(self, name: str, repository_id: int) -> int:
        """Pin GitHub's id of tenant ``name``'s repository at its first pull request; returns the id
        pinned (``repository_id`` the first time, the earlier one after)."""
        with self._tx() as cur:
            self._exec(cur, "UPDATE tenants SET repository_id = ? WHERE name = ? AND repository_id IS NULL",
                       (int(repository_id), name))
            self._exec(cur, "SELECT repository_id FROM tenants WHERE name = ?", (name,))
            row = cur.fetchone()
        if row is None or row[0] is None:
            raise TenantError(f"no tenant named {name!r}")
        return int(row[0])

    def _tenant_from_row(self, r) -> Tenant:
        return Tenant(
            name=r[0], dataset=r[1], schema=Schema.from_json(r[2]), output=r[3], repository=r[4], model_path=r[5],
            excluded=tuple(json.loads(r[6])), only=tuple(json.loads(r[7])) if r[7] is not None else None, margin=float(r[8]),
        )

    _TENANT_COLS = "name, dataset, schema_json, output, repository, model_path, excluded, only_candidates, margin"

    def tenants(self) -> list[Tenant]:
        return [self._tenant_from_row(r) for r in self._read(f"SELECT {self._TENANT_COLS} FROM tenants ORDER BY name")]

    def tenant(self, name: str) -> Tenant:
        rows = self._read(f"SELECT {self._TENANT_COLS} FROM tenants WHERE name = ?", (name,))
        if not rows:
            known = ", ".join(t.name for t in self.tenants()) or "none"
            raise TenantError(f"no tenant named {name!r}; tenants: {known}")
        return self._tenant_from_row(rows[0])

    # -- the queue --------------------------------------------------------------------------
    def requeue_expired(self, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
        """Put running trials whose lease expired back in the queue (or fail them). Returns how many."""
        with self._tx() as cur:
            self._exec(cur, "SELECT id, worker, lease_token, attempts FROM trials WHERE status = 'running' AND lease_expires < {now}")
            rows = cur.fetchall()
            for tid, worker, token, attempts in rows:
                if attempts >= max_attempts:
                    self._exec(cur, "UPDATE trials SET status = 'failed', error = ?, lease_token = NULL, finished_at = {now} "
                               "WHERE id = ? AND status = 'running' AND lease_token = ?",
                               (f"lease expired on {attempts} attempts (last worker {worker})", tid, token))
                else:
                    self._exec(cur, "UPDATE trials SET status = 'queued', lease_token = NULL, lease_expires = NULL "
                               "WHERE id = ? AND status = 'running' AND lease_token = ?", (tid, token))
                if cur.rowcount:
                    self._event(cur, tid, worker, token, "expired")
        return len(rows)

    def snapshot(self, since: float | None = None, seen: set[int] | frozenset = frozenset()) -> Snapshot:
        # Queued and running come from ONE query: read separately, a trial requeued in between
        # would be in neither list, and a scheduler told it runs would never see it queued.
        pending: dict[str, list[str]] = {}
        running = []
        for tid, tenant, cand, st, attempts in self._read(
                "SELECT id, tenant, candidate, status, attempts FROM trials WHERE status IN ('queued', 'running') "
                "ORDER BY tenant, id"):
            if st == "queued":
                pending.setdefault(tenant, []).append(cand)
            else:
                running.append((tid, tenant, cand, attempts))
        running.sort()
        q = ("SELECT id, tenant, candidate, status, attempts, worker, score, cost, onnx_path, finished_at "
             "FROM trials WHERE status = 'done'")
        params: tuple = ()
        if since is not None:
            q += " AND finished_at >= ?"
            params = (since,)
        finished = [Trial(id=r[0], tenant=r[1], candidate=r[2], status=r[3], attempts=r[4], worker=r[5], score=r[6],
                          cost=r[7], onnx_path=r[8], finished_at=r[9]) for r in self._read(q + " ORDER BY finished_at, id", params)
                    if r[0] not in seen]
        return Snapshot(pending, running, finished)  # type: ignore[arg-type]

    def try_claim(self, tenant: str, candidate: str, worker: str, device: str,
                  lease_seconds: float = DEFAULT_LEASE_SECONDS, *,
                  next_choice: NextChoice | None = None) -> Claim | None:
        """Take the queued trial (tenant, candidate) under a new lease; None if another worker has it.

        ``next_choice``: the scheduler's choice for the tenant after this one, recorded in the
        same transaction when the claim succeeds (:meth:`next_choices`)."""
        token = uuid.uuid4().hex
        with self._tx() as cur:
            if self.kind == "postgresql":
                self._exec(cur,
                    "UPDATE trials SET status = 'running', worker = ?, device = ?, lease_token = ?, "
                    "lease_expires = {now} + ?, heartbeat = {now}, started_at = {now}, attempts = attempts + 1, error = NULL "
                    "WHERE id = (SELECT id FROM trials WHERE tenant = ? AND candidate = ? AND status = 'queued' "
                    "FOR UPDATE SKIP LOCKED) RETURNING id, attempts, fidelity",
                    (worker, device, token, float(lease_seconds), tenant, candidate))
            else:
                self._exec(cur,
                    "UPDATE trials SET status = 'running', worker = ?, device = ?, lease_token = ?, "
                    "lease_expires = {now} + ?, heartbeat = {now}, started_at = {now}, attempts = attempts + 1, error = NULL "
                    "WHERE tenant = ? AND candidate = ? AND status = 'queued' RETURNING id, attempts, fidelity",
                    (worker, device, token, float(lease_seconds), tenant, candidate))
            row = cur.fetchone()
            if row is None:
                return None
            self._event(cur, row[0], worker, token, "claimed")
            if next_choice is not None:
                self._record_next_choice(cur, next_choice, worker)
        # A queued trial with a fidelity below 1 is one stopped early and queued again for a full run.
        retry = row[2] is not None and float(row[2]) < 1.0
        return Claim(trial_id=int(row[0]), tenant=tenant, candidate=candidate, token=token, attempt=int(row[1]),
                     retry=retry)

    def heartbeat(self, claim: Claim, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> bool:
        """Extend the lease; False when it was lost (expired and requeued or taken by another)."""
        with self._tx() as cur:
            self._exec(cur, "UPDATE trials SET lease_expires = {now} + ?, heartbeat = {now} "
                       "WHERE id = ? AND status = 'running' AND lease_token = ?",
                       (float(lease_seconds), claim.trial_id, claim.token))
            return cur.rowcount == 1

    def complete(self, claim: Claim, worker: str, score: float, cost: float,
                 onnx_path: str | None, onnx_sha256: str | None, *, ran_on: str | None = None,
                 fidelity: float | None = None,
                 rungs: Sequence[tuple[float, float, float | None]] | None = None) -> bool:
        """Record a finished trial. Accepted while this worker holds the lease, or when the lease
        expired and nobody has taken the trial again yet (the work is done; no need to redo it).

        ``ran_on``: the device the model really trained on; ``fidelity``: the share of the full
        budget it trained for when it was stopped early (None: all of it). A trial stopped early
        also keeps that fidelity in ``stopped_at``, which outlives its retry (see
        :meth:`requeue_stopped`). The lease ends here: the worker's device is free at once.

        ``rungs``: (fidelity, validation score, seconds so far) at each rung the trial reached,
        kept in ``trial_rungs`` (a retry's rung 1 joins the rungs of its stopped run)."""
        if fidelity is not None and not float(fidelity) < 1.0:
            fidelity = None  # the whole budget
        stopped = None if fidelity is None else float(fidelity)
        with self._tx() as cur:
            self._exec(cur,
                "UPDATE trials SET status = 'done', score = ?, cost = ?, onnx_path = ?, onnx_sha256 = ?, "
                "finished_at = {now}, worker = ?, lease_token = NULL, lease_expires = NULL, error = NULL, "
                "ran_on = ?, fidelity = ?, stopped_at = COALESCE(?, stopped_at) "
                "WHERE id = ? AND ((status = 'running' AND lease_token = ?) OR status = 'queued')",
                (float(score), float(cost), onnx_path, onnx_sha256, worker, ran_on,
                 stopped, stopped, claim.trial_id, claim.token))
            ok = cur.rowcount == 1
            self._event(cur, claim.trial_id, worker, claim.token, "done" if ok else "lost")
            if ok:
                for f, sc, sec in rungs or ():
                    self._exec(cur, "INSERT INTO trial_rungs (trial_id, fidelity, score, seconds, at) "
                               "VALUES (?, ?, ?, ?, {now}) ON CONFLICT (trial_id, fidelity) DO UPDATE SET "
                               "score = excluded.score, seconds = excluded.seconds, at = excluded.at",
                               (claim.trial_id, float(f), float(sc), None if sec is None else float(sec)))
        return ok

    def _record_next_choice(self, cur, choice: NextChoice, worker: str | None) -> None:
        self._exec(cur, "INSERT INTO next_choices (tenant, candidate, ei, expected_seconds, ei_per_second, scheduler, "
                   "worker, at) VALUES (?, ?, ?, ?, ?, ?, ?, {now}) ON CONFLICT (tenant) DO UPDATE SET "
                   "candidate = excluded.candidate, ei = excluded.ei, expected_seconds = excluded.expected_seconds, "
                   "ei_per_second = excluded.ei_per_second, scheduler = excluded.scheduler, worker = excluded.worker, "
                   "at = excluded.at",
                   (choice.tenant, choice.candidate, None if choice.ei is None else float(choice.ei),
                    None if choice.expected_seconds is None else float(choice.expected_seconds),
                    choice.ei_per_second, choice.scheduler, worker))

    def record_next_choice(self, choice: NextChoice, worker: str | None = None) -> None:
        """Record (replace) the scheduler's next choice for ``choice.tenant``."""
        with self._tx() as cur:
            self._record_next_choice(cur, choice, worker)

    def next_choices(self) -> dict[str, tuple]:
        """{tenant: (candidate, ei, expected seconds, ei per second, scheduler, worker, at)}."""
        return {r[0]: tuple(r[1:]) for r in self._read(
            "SELECT tenant, candidate, ei, expected_seconds, ei_per_second, scheduler, worker, at FROM next_choices")}

    def rungs(self, trial_id: int) -> list[tuple[float, float, float | None]]:
        """(fidelity, score, seconds) at each rung trial ``trial_id`` reached, lowest first."""
        return [(float(f), float(s), None if sec is None else float(sec)) for f, s, sec in self._read(
            "SELECT fidelity, score, seconds FROM trial_rungs WHERE trial_id = ? ORDER BY fidelity", (int(trial_id),))]

    def fail(self, claim: Claim, worker: str, error: str) -> bool:
        """Mark a trial failed for good (training or export raised); it is not retried."""
        with self._tx() as cur:
            self._exec(cur,
                "UPDATE trials SET status = 'failed', error = ?, finished_at = {now}, lease_token = NULL, lease_expires = NULL "
                "WHERE id = ? AND status = 'running' AND lease_token = ?",
                (error[:2000], claim.trial_id, claim.token))
            ok = cur.rowcount == 1
            self._event(cur, claim.trial_id, worker, claim.token, "failed" if ok else "lost")
        return ok

    def release(self, claim: Claim, worker: str) -> bool:
        """Give a trial back to the queue at once (worker stopping); the attempt is not counted."""
        with self._tx() as cur:
            self._exec(cur,
                "UPDATE trials SET status = 'queued', lease_token = NULL, lease_expires = NULL, "
                "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
                "WHERE id = ? AND status = 'running' AND lease_token = ?",
                (claim.trial_id, claim.token))
            ok = cur.rowcount == 1
            if ok:
                self._event(cur, claim.trial_id, worker, claim.token, "released")
        return ok

    def requeue_stopped(self, tenant: str | None = None, worker: str | None = None) -> list[tuple[str, str]]:
        """Queue again the trials stopped early of each tenant (of ``tenant`` only, when given)
        that has no trial queued or running; returns the (tenant, candidate) pairs queued.

        A trial stopped at a rung (done with a fidelity below 1) is over while its tenant has
        anything else to try; once it has nothing, its stopped trials go back to its queue, so
        every candidate a tenant accepts ends with a model trained to the full budget, as
        ``simulate`` replays it. The requeued row keeps its stopped fidelity and score until the
        retry records its own, and :meth:`try_claim` gives it out as a ``retry`` (to train to
        the full budget without rungs). The check and the update are one statement, so calling
        this again, or from several workers at once, queues each trial once.
        """
        q = ("UPDATE trials SET status = 'queued', lease_token = NULL, lease_expires = NULL, attempts = 0, "
             "queued_at = {now} "
             "WHERE status = 'done' AND stopped_at IS NOT NULL AND fidelity < 1 "
             "AND NOT EXISTS (SELECT 1 FROM trials busy WHERE busy.tenant = trials.tenant "
             "AND busy.status IN ('queued', 'running')) "
             "AND tenant NOT IN (SELECT name FROM tenants WHERE paused IS NOT NULL)")
        params: tuple = ()
        if tenant is not None:
            q += " AND tenant = ?"
            params = (tenant,)
        with self._tx() as cur:
            self._exec(cur, q + " RETURNING id, tenant, candidate", params)
            rows = sorted(cur.fetchall())
            for tid, _t, _c in rows:
                self._event(cur, tid, worker, None, "requeued")
        return [(t, c) for _id, t, c in rows]

    def retry_failed(self, tenant: str | None = None) -> int:
        """Queue failed trials again (after fixing what made them fail)."""
        with self._tx() as cur:
            if tenant:
                self._exec(cur, "UPDATE trials SET status = 'queued', attempts = 0, error = NULL WHERE status = 'failed' AND tenant = ?", (tenant,))
            else:
                self._exec(cur, "UPDATE trials SET status = 'queued', attempts = 0, error = NULL WHERE status = 'failed'")
            return cur.rowcount

    # -- what changed (the worker's incremental read) and paused tenants ------------------------
    _CHANGE_COLS = "id, tenant, candidate, status, attempts, score, cost, finished_at, fidelity, changed_at"

    def trial_changes(self, since: float | None = None) -> list[TrialChange]:
        """Trials inserted or whose status changed at or after ``since`` (database time), oldest
        first; every trial when ``since`` is None. Served by the ``changed_at`` index, so a
        decision costs what changed since the last one, not the size of the queue."""
        q = f"SELECT {self._CHANGE_COLS} FROM trials"
        params: tuple = ()
        if since is not None:
            q += " WHERE changed_at >= ?"
            params = (float(since),)
        return [TrialChange(*r) for r in self._read(q + " ORDER BY changed_at, id", params)]

    def tenant_trials(self, tenant: str) -> list[TrialChange]:
        """Every trial of one tenant, as :meth:`trial_changes` gives them."""
        return [TrialChange(*r) for r in self._read(
            f"SELECT {self._CHANGE_COLS} FROM trials WHERE tenant = ? ORDER BY id", (tenant,))]

    def tenant_changes(self, since: float | None = None) -> list[tuple[str, float, str | None, float]]:
        """(name, created_at, paused reason, changed_at) of tenants submitted, re-submitted,
        paused or resumed at or after ``since``; every tenant when ``since`` is None."""
        q = "SELECT name, created_at, paused, changed_at FROM tenants"
        params: tuple = ()
        if since is not None:
            q += " WHERE changed_at >= ?"
            params = (float(since),)
        return [(r[0], float(r[1]), r[2], float(r[3] or 0.0)) for r in self._read(q + " ORDER BY changed_at", params)]

    def db_clock(self) -> float:
        """The database's own clock (seconds since the epoch), the one ``changed_at`` is stamped with."""
        return float(self._read("SELECT " + self.dialect.now)[0][0])

    def pause_tenant(self, tenant: str, reason: str, fingerprint: str | None = None) -> bool:
        """Stop the queue choosing ``tenant`` until it is submitted again (``submit --replace``).

        With ``fingerprint``, only while the tenant is still the submission that failed: a
        tenant re-submitted in the meantime is not paused for its old dataset's fault."""
        q = "UPDATE tenants SET paused = ? WHERE name = ? AND paused IS NULL"
        params: tuple = (reason[:2000], tenant)
        if fingerprint is not None:
            q += " AND fingerprint = ?"
            params += (fingerprint,)
        with self._tx() as cur:
            self._exec(cur, q, params)
            return cur.rowcount == 1

    def paused_tenants(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self._read("SELECT name, paused FROM tenants WHERE paused IS NOT NULL")}

    # -- reading ----------------------------------------------------------------------------
    def trials(self, tenant: str | None = None) -> list[Trial]:
        q = ("SELECT id, tenant, candidate, status, attempts, worker, lease_token, score, cost, onnx_path, error, finished_at, "
             "ran_on, fidelity, stopped_at "
             "FROM trials")
        params: tuple = ()
        if tenant is not None:
            q += " WHERE tenant = ?"
            params = (tenant,)
        return [Trial(*r) for r in self._read(q + " ORDER BY tenant, id", params)]

    def events(self, trial_id: int | None = None) -> list[tuple]:
        """(trial id, worker, token, event, time) rows in the order they happened."""
        q = "SELECT trial_id, worker, lease_token, event, at FROM trial_events"
        params: tuple = ()
        if trial_id is not None:
            q += " WHERE trial_id = ?"
            params = (trial_id,)
        return [tuple(r) for r in self._read(q + " ORDER BY id", params)]

    def best_trial(self, tenant: str) -> Trial | None:
        rows = self._read(
            "SELECT id, tenant, candidate, status, attempts, worker, lease_token, score, cost, onnx_path, error, finished_at, "
             "ran_on, fidelity, stopped_at "
            "FROM trials WHERE tenant = ? AND status = 'done' " + _BEST_ORDER, (tenant, tenant))
        return Trial(*rows[0]) if rows else None

    def status(self) -> list[TenantStatus]:
        """One row per tenant, from a fixed number of queries (not a few per tenant)."""
        out = []
        counts: dict[str, dict[str, int]] = {}
        for tenant, st, n in self._read("SELECT tenant, status, COUNT(*) FROM trials GROUP BY tenant, status"):
            counts.setdefault(tenant, {})[st] = int(n)
        running: dict[str, list[str]] = {}
        queued: dict[str, list[str]] = {}
        for tenant, cand, st in self._read("SELECT tenant, candidate, status FROM trials WHERE status IN ('running', 'queued') ORDER BY id"):
            (running if st == "running" else queued).setdefault(tenant, []).append(cand)
        ran_on: dict[str, dict[str, int]] = {}
        for tenant, dev, n in self._read("SELECT tenant, COALESCE(ran_on, 'unrecorded'), COUNT(*) FROM trials "
                                         "WHERE status = 'done' GROUP BY tenant, COALESCE(ran_on, 'unrecorded')"):
            ran_on.setdefault(tenant, {})[dev] = int(n)
        last: dict[str, Promotion] = {
            r[1]: Promotion(*r) for r in self._read(
                f"SELECT {self._PROMO_COLS} FROM promotions WHERE id IN (SELECT MAX(id) FROM promotions GROUP BY tenant)")}
        # The best trial of every tenant in one query, in the order of _BEST_ORDER.
        best: dict[str, tuple[str, float]] = {}
        for tenant, cand, score in self._read(
                "SELECT tenant, candidate, score FROM (SELECT t.tenant, t.candidate, t.score, ROW_NUMBER() OVER ("
                "PARTITION BY t.tenant ORDER BY t.score DESC, CASE WHEN t.id = lp.trial_id THEN 0 ELSE 1 END, "
                "t.finished_at ASC, t.id ASC) AS rank FROM trials t LEFT JOIN promotions lp ON lp.tenant = t.tenant "
                "AND lp.id = (SELECT MAX(id) FROM promotions p WHERE p.tenant = t.tenant) "
                "WHERE t.status = 'done') ranked WHERE rank = 1"):
            best[tenant] = (cand, float(score))
        stopped: dict[str, dict[str, float]] = {}
        retried: dict[str, list[str]] = {}
        for tenant, cand, at, st, fid in self._read(
                "SELECT tenant, candidate, stopped_at, status, fidelity FROM trials WHERE stopped_at IS NOT NULL "
                "ORDER BY id"):
            stopped.setdefault(tenant, {})[cand] = float(at)
            if st == "done" and fid is None:
                retried.setdefault(tenant, []).append(cand)
        paused = self.paused_tenants()
        for t in self.tenants():
            b = best.get(t.name)
            lp = last.get(t.name)
            c = counts.get(t.name, {})
            out.append(TenantStatus(
                name=t.name, task=t.schema.task, metric="accuracy" if t.schema.task == "classification" else "r2",
                best_candidate=b[0] if b else None, best_score=b[1] if b else None,
                done=c.get("done", 0), running=c.get("running", 0), queued=c.get("queued", 0), failed=c.get("failed", 0),
                running_candidates=running.get(t.name, []), queue=queued.get(t.name, []),
                promoted_candidate=lp.candidate if lp else None, promoted_score=lp.score if lp else None,
                pull_request=lp.pull_request if lp else None, promotion_status=lp.status if lp else None,
                paused=paused.get(t.name), ran_on=ran_on.get(t.name, {}),
                stopped_early=stopped.get(t.name, {}), retried=retried.get(t.name, []),
            ))
        return out

    # -- promotions -------------------------------------------------------------------------
    _PROMO_COLS = "id, tenant, trial_id, candidate, score, previous_score, status, model_path, card_path, pull_request, message"

    def last_promotion(self, tenant: str) -> Promotion | None:
        rows = self._read(f"SELECT {self._PROMO_COLS} FROM promotions WHERE tenant = ? ORDER BY id DESC LIMIT 1", (tenant,))
        return Promotion(*rows[0]) if rows else None

    def promotions(self, tenant: str | None = None) -> list[Promotion]:
        q = f"SELECT {self._PROMO_COLS} FROM promotions"
        params: tuple = ()
        if tenant:
            q += " WHERE tenant = ?"
            params = (tenant,)
        return [Promotion(*r) for r in self._read(q + " ORDER BY id", params)]

    def begin_promotion(self, tenant: str, trial_id: int, *, picked: bool = False) -> Promotion | None:
        """Reserve a promotion of ``trial_id`` if it is the tenant's best and beats the last
        promoted score by at least the tenant's margin (strictly better when the margin is 0).

        ``picked``: the trial was certified best on fresh data (`easeml-automl pick`), which
        outranks the validation scores: it is promoted when it is a done trial of the tenant and
        not already the last promotion.

        Serialised per tenant (row lock on PG, BEGIN IMMEDIATE on SQLite), so two workers that
        finish at once never promote twice nor promote the worse of two results last.
        """
        with self._tx() as cur:
            if self.kind == "postgresql":
                self._exec(cur, "SELECT margin FROM tenants WHERE name = ? FOR UPDATE", (tenant,))
            else:
                self._exec(cur, "SELECT margin FROM tenants WHERE name = ?", (tenant,))
            row = cur.fetchone()
            if row is None:
                return None
            margin = float(row[0])
            if picked:
                self._exec(cur, "SELECT id, candidate, score FROM trials WHERE tenant = ? AND id = ? "
                           "AND status = 'done'", (tenant, int(trial_id)))
            else:
                self._exec(cur, "SELECT id, candidate, score FROM trials WHERE tenant = ? AND status = 'done' "
                           + _BEST_ORDER, (tenant, tenant))
            best = cur.fetchone()
            if best is None or int(best[0]) != int(trial_id):
                return None
            self._exec(cur, "SELECT score, trial_id FROM promotions WHERE tenant = ? ORDER BY id DESC LIMIT 1",
                       (tenant,))
            last = cur.fetchone()
            prev = float(last[0]) if last else None
            score = float(best[2])
            if picked and last is not None and int(last[1]) == int(trial_id):
                return None  # already the promoted model
            if not picked and prev is not None and not (score > prev and score - prev >= margin - 1e-12):
                return None
            self._exec(cur, "INSERT INTO promotions (tenant, trial_id, candidate, score, previous_score, status, created_at) "
                       "VALUES (?, ?, ?, ?, ?, 'pending', {now}) RETURNING id", (tenant, trial_id, best[1], score, prev))
            pid = int(cur.fetchone()[0])
        return Promotion(pid, tenant, int(trial_id), best[1], score, prev, "pending")

    def finish_promotion(self, promotion_id: int, status: str, *, model_path: str | None = None,
                         card_path: str | None = None, pull_request: str | None = None, message: str | None = None) -> None:
        with self._tx() as cur:
            self._exec(cur, "UPDATE promotions SET status = ?, model_path = ?, card_path = ?, pull_request = ?, message = ? "
                       "WHERE id = ?", (status, model_path, card_path, pull_request, message, promotion_id))
