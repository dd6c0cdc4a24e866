"""Registration: the terms a test set is registered with, and where its ledger lives.

A test set certifies only under the terms its owner registered it with (docs/design.md §4):
the plan terms that fix the budget, and the settings that decide what the team sees and where
the budget is kept. This module says what those terms are for a config, refuses a config that
differs, and opens the ledger a config names, failing closed where a budget would not last.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import ConfigError, TestSetTooSmall, UsageError
from ..ledger import Budget, Ledger, open_backend


ON_DEMAND = "on-demand"  # the register entry's "labels" note of a test set labelled on demand

#: Terms pinned only when the config sets them (absent from older registrations).
OPTIONAL_TERMS = ("evaluation_time", "rounds")

#: Terms every registration since issue 20 pins, defaults included: a config that drops one of
#: these keys gets the default, which must not widen the gate, so the default is pinned too.
#: A registration made before them lacks them and stays valid (nothing to compare).
VERDICT_TERMS = ("name", "method", "output", "pool", "label_column", "alerts", "old_model")

#: Pinned permissions: what the registration allows a run to ask for, not a config value.
#: ``underpowered``: whether ``--underpowered`` may widen the tolerances (:func:`check_underpowered`).
PERMISSIONS = ("underpowered",)


def pinned_terms(cfg, *, underpowered: bool = False) -> dict:
    """The terms fixed at registration, as stored in the ledger's register entry.

    Beside the plan terms that fix the budget, everything else that shapes a verdict or decides
    what the team sees and where the budget is kept: ``show_metrics``, the private sink (as a
    digest: a webhook URL is a secret, and the ledger may sit on a branch the team can read), the
    ledger's location, the gate's ``name`` (its commit status and private records carry it),
    the test ``method``, the ``output`` rule, the ``pool`` the alert ranks
    from, the ``label_column``, the ``alerts`` (the webhook as a digest, the issue on or off), the
    old-model policy (``old_model``: ``base`` unless ``allow_any_old_model: true``), whether
    ``--underpowered`` may widen the tolerances (``underpowered``: this run's request, pinned
    when it registers) and, when set, ``evaluation_time`` (dropping it would reopen the timing
    channel it closes).
    """
    terms = {"condition": str(cfg.formula), "reliability": cfg.reliability, "mode": cfg.mode,
             "adaptivity": cfg.adaptivity, "steps": cfg.steps, "passes": cfg.passes,
             "show_metrics": bool(cfg.show_metrics), "private_sink": _digest(cfg.private_sink),
             "ledger": ledger_location(cfg.ledger) if cfg.ledger_explicit
             else "default",
             "name": cfg.gate_name, "method": cfg.method,
             "output": cfg.output.as_config() if cfg.output is not None else None,
             "pool": cfg.pool, "label_column": cfg.label_column,
             "alerts": {"webhook": _digest(cfg.webhook), "issue": bool(cfg.alert_issue)},
             "old_model": "any" if cfg.allow_any_old_model else "base",
             "underpowered": bool(underpowered)}
    for key in OPTIONAL_TERMS:  # pinned only when set, so a test set registered before the
        if getattr(cfg, key, None) is not None:  # key existed stays valid
            terms[key] = getattr(cfg, key)
    return terms


def meter_terms(cfg, plan) -> dict:
    """The terms pinned in the meter test set's register entry (``kind: meter``)."""
    gate_terms = pinned_terms(cfg)
    terms = {"kind": "meter", "edges": list(plan.ranges.edges), "tolerance": plan.ranges.tolerance,
             "reliability": plan.reliability, "adaptivity": plan.adaptivity, "steps": plan.steps,
             "private_sink": gate_terms["private_sink"] if plan.adaptivity == "none" else None,
             "ledger": gate_terms["ledger"]}
    return _with_shared_terms(terms, gate_terms)


def pick_terms(cfg, plan) -> dict:
    """The terms pinned in a pick test set's register entry (``kind: pick``)."""
    gate_terms = pinned_terms(cfg)
    terms = {"kind": "pick", "reliability": plan.reliability, "tolerance": plan.tolerance,
             "adaptivity": plan.adaptivity, "steps": plan.steps, "candidates": plan.candidates,
             "private_sink": gate_terms["private_sink"], "ledger": gate_terms["ledger"]}
    return _with_shared_terms(terms, gate_terms)


#: The gate's terms that shape a meter's or a pick's answer too: how a model's output becomes a
#: label, which column holds the labels, and where the new-test-set alert goes (and the pool it
#: ranks from). Pinned with their defaults, as for the gate; absent from a meter or pick
#: registration made before them, which stays valid (nothing to compare).
SHARED_TERMS = ("name", "output", "pool", "label_column", "alerts")


def _with_shared_terms(terms: dict, gate_terms: dict) -> dict:
    terms.update({key: gate_terms[key] for key in SHARED_TERMS})
    for key in OPTIONAL_TERMS:  # pinned when set (the gate's rule)
        if key in gate_terms:
            terms[key] = gate_terms[key]
    return terms


#: The config key that sets a term, where its name differs.
CONFIG_KEYS = {"old_model": "allow_any_old_model"}


def _shown_term(key: str, value) -> str:
    """A term's value in a message: never a secret (a webhook shows as the digest the ledger
    pins, which anyone who reads the ledger already has; the private sink not even so)."""
    if key == "private_sink" and value:
        return "(a secret, not shown)"
    if key == "alerts" and isinstance(value, dict):  # the webhook by its digest, as pinned
        hook = value.get("webhook") or "none"
        return f"{{webhook: {hook}, issue: {str(value.get('issue')).lower()}}}"
    return f"'{value}'" if isinstance(value, str) else repr(value)


def check_underpowered(cfg, registered: dict | None, fingerprint: str, requested: bool) -> None:
    """Refuse ``--underpowered`` (the Action's ``underpowered`` input) unless the registration
    allows it (``testset register --underpowered`` pins ``underpowered: true``), before the
    test set is opened.

    Widening a tolerance keeps an fp-free gate's first edge (a model at or below the threshold
    still passes with probability at most delta) but moves an fn-free gate's: there a model as
    bad as t - 2 eps' passes, so a registration from before this term existed allows it only
    under fp-free."""
    if not requested or registered is None:  # registering now: the request is what is pinned
        return
    pinned = registered.get("terms", {})
    allowed = pinned.get("underpowered", pinned.get("mode", cfg.mode) == "fp-free")
    if allowed:
        return
    why = ("it was registered with underpowered false" if "underpowered" in pinned else
           f"it was registered under {pinned.get('mode')} before underpowered was pinned, and "
           "under fn-free a wider tolerance lets a worse model pass")
    raise UsageError(
        f"--underpowered (the Action's underpowered input): test set {fingerprint[:12]} may not "
        f"be decided at a wider tolerance: {why}. Label more examples, or register a new test "
        "set with `easeml-ci testset register --underpowered` to allow it")


def _digest(value: str | None) -> str | None:
    if not value:
        return None
    return "sha256:" + hashlib.sha256(str(value).strip().encode()).hexdigest()[:16]


def ledger_location(spec: dict) -> str:
    """A configured ledger location, as pinned: ``file:PATH`` or ``github:REPO@BRANCH/PATH``.

    A config without ``ledger:`` pins ``default``: the repository ledger inside GitHub Actions,
    ``.easeml/ledger`` beside the config elsewhere."""
    if spec.get("backend", "file") == "github":
        return (f"github:{spec.get('repository') or '(this repository)'}@"
                f"{spec.get('branch') or 'easeml-ledger'}/{spec.get('path') or 'ledger'}")
    return f"file:{spec.get('path') or '.easeml/ledger'}"


def ledger_name(backend) -> str:
    where = getattr(backend, "where", None)
    if where:
        return f"the repository ledger {where}"
    directory = getattr(backend, "directory", None)
    return f"the file ledger {directory}" if directory is not None else repr(backend)


def check_pinned(cfg, registered: dict | None, fingerprint: str, terms: dict | None = None) -> None:
    """Refuse a config whose budget terms differ from those the test set was registered with.

    ``terms``: the terms in force (default: the gate's, :func:`pinned_terms`); the meter passes
    its own (``kind: meter``). A test set registered for one kind is refused by the other.
    """
    if registered is None:
        return
    pinned = registered.get("terms", {})
    terms = pinned_terms(cfg) if terms is None else terms
    if pinned.get("kind", "gate") != terms.get("kind", "gate"):
        raise ConfigError(
            f"test set {fingerprint[:12]} is registered for the {pinned.get('kind', 'gate')}, not "
            f"the {terms.get('kind', 'gate')}: their budgets count different answers, so one test "
            "set cannot serve both; give each its own test set")
    terms = dict(terms)
    for key in OPTIONAL_TERMS:  # pinned when set: a config that drops it differs
        if key in pinned and key not in terms:
            terms[key] = None
    for key, now in terms.items():
        if key in PERMISSIONS:
            continue
        if key in pinned and pinned[key] != now:
            shown = (lambda v: _shown_term(key, v))
            key_line = CONFIG_KEYS.get(key, key)
            if key == "alerts":
                differs = [k for k in ("webhook", "issue")
                           if (pinned[key] or {}).get(k) != (now or {}).get(k)]
                key_line = f"alerts.{differs[0]}" if differs else key
                if differs and cfg.line(key_line) is None:
                    key_line = f"alerts.{differs[0]} (config or Action input)"
            if terms.get("kind") == "meter" and cfg.line(f"meter.{key}"):
                key_line = f"meter.{key}"
            raise ConfigError(
                f"{cfg.where(key_line)} is {shown(now)}, but test set {fingerprint[:12]} was "
                f"registered with {key} {shown(pinned[key])}; the terms are fixed when a test set "
                "is registered: put the registered value back, or label a new test set and "
                "register that one (`easeml-ci testset register NEW_PATH`)")


def open_ledger_backend(cfg, env: dict | None = None, *, repository: bool = False):
    """The ledger backend for ``cfg`` here, failing closed where a budget would not last.

    Inside GitHub Actions (``GITHUB_ACTIONS=true``) a runner's disk is thrown away, so a budget
    kept there resets on every run: a config without ``ledger:`` uses the repository ledger, and
    a file ledger is accepted only at an absolute path outside the workspace (a self-hosted
    runner's persistent disk). Elsewhere the config's ledger, relative to the config's folder.
    ``repository=True`` (an owner registering from their machine) means the ledger the Action
    will use.
    """
    env = os.environ if env is None else env
    spec = dict(cfg.ledger)
    if repository and not cfg.ledger_explicit:
        spec = {"backend": "github", "branch": "easeml-ledger"}
    if env.get("GITHUB_ACTIONS") == "true":
        if not cfg.ledger_explicit:
            spec = {"backend": "github", "branch": "easeml-ledger"}
        if spec.get("backend", "file") == "file":
            path = Path(str(spec.get("path", ""))).expanduser()
            workspace = Path(env.get("GITHUB_WORKSPACE") or ".").resolve()
            if not path.is_absolute() or path.resolve() == workspace or \
                    workspace in path.resolve().parents:
                raise ConfigError(
                    f"{cfg.where('ledger.path' if cfg.line('ledger.path') else 'ledger')}: "
                    f"the file ledger {str(spec.get('path'))!r} is inside the runner's workspace, "
                    "which GitHub Actions throws away after the job: every run would start a "
                    "fresh budget and no verdict could be certified. Drop the `ledger:` key to "
                    "use the repository ledger (the job needs `permissions: contents: write`), "
                    "or, on a self-hosted runner, set ledger.path to an absolute path outside "
                    "the workspace")
    return open_backend(spec, base=cfg.ledger_base())


def registered(backend, fingerprint: str) -> bool:
    """Whether the test set ``fingerprint`` has a registration in ``backend``'s ledger."""
    return Ledger(backend, fingerprint).registration() is not None


LEDGER_KEY_ENV = "EASEML_LEDGER_KEY"


def ledger_key(source) -> bytes:
    """The key a test set's ledger entries are MAC'd under (easeml_ci.ledger.auth): derived
    from the test-set key of an encrypted test set (``source`` a TestSetSource), else the
    separate ``EASEML_LEDGER_KEY``. Read before anything is opened; a missing or malformed key
    is an InputError naming the variable (exit 2)."""
    from ..testsets import crypto

    if source.encrypted:
        return crypto.derive_key(source.key(), "ledger")
    return crypto.key_from_env(LEDGER_KEY_ENV, purpose=(
        f"the ledger key of the plaintext test set {source.given}: its budget ledger is "
        "authenticated with it, so nobody without it can rewrite the budget; make one with "
        "`easeml-ci testset keygen` and keep it where only the gate's job and the owner read it"))


def candidate_ledger_keys(key_env: str = "EASEML_TESTSET_KEY") -> list[bytes]:
    """The ledger keys this environment holds (for reading ledgers without their test set):
    the one derived from ``key_env``'s test-set key, and ``EASEML_LEDGER_KEY``."""
    from ..errors import InputError
    from ..testsets import crypto

    keys = []
    for env, derive in ((key_env, True), (LEDGER_KEY_ENV, False)):
        if not os.environ.get(env):
            continue
        try:
            key = crypto.key_from_env(env)
        except InputError:
            continue
        keys.append(crypto.derive_key(key, "ledger") if derive else key)
    return keys


def register(cfg, backend, fingerprint: str, terms: dict, note: dict, *, given: str,
             key: bytes) -> tuple[str, Budget]:
    """The owner starts a test set's ledger under ``terms`` (or finds it registered under the
    same terms), its entries MAC'd under ``key``. Returns ("registered" | "already registered",
    the budget). A spent or retired test set is refused: renaming or re-encrypting it does not
    give its budget back. A backend that keeps a registration anchor (the repository ledger)
    writes it (:meth:`anchor`)."""
    ledger = Ledger(backend, fingerprint, key)
    entries = ledger.entries()
    existing = ledger.registration(entries)
    if existing is None:
        entry = ledger.register(terms, by="register", note=note)
        write_anchor = getattr(backend, "write_anchor", None)
        if write_anchor is not None:
            write_anchor(fingerprint, entry)
        return "registered", ledger.budget()
    check_pinned(cfg, existing, fingerprint, terms)
    budget = ledger.budget(entries=entries)
    if not budget.active:
        raise UsageError(f"test set {given} ({fingerprint[:12]}) is already {budget.status}; "
                         "renaming or re-encrypting it does not reset its budget, label a new one")
    return "already registered", budget


def testset_schema(ts) -> dict:
    """What a registration pins about the test set's shape (no data): the models are checked
    against it before an encrypted test set is opened (:func:`.steps.read_ledger`)."""
    from ..models import TestSetSchema

    return TestSetSchema.of(ts).to_dict()


# --- test sets labelled on demand ------------------------------------------------------------

def refuse_adaptive(cfg, testset: str) -> None:
    """Labels on demand under an adaptive mode only in rounds (exit 2 otherwise): the team would
    see a verdict at a time that depends on when the labels sufficed. With ``rounds:`` every
    pending pair is decided at its round's end, a time set by the schedule (gate/rounds.py)."""
    if cfg.adaptivity == "none" or getattr(cfg, "rounds", None):
        return
    passes = f" with passes {cfg.passes}" if cfg.passes is not None else ""
    raise ConfigError(
        f"{cfg.where('adaptivity')} is '{cfg.adaptivity}'{passes}, but test set {testset} is "
        "labelled on demand: whether a check decides or awaits labels depends on the labels, and "
        "under an adaptive mode the team would see it as an outcome the budget does not count. "
        "Set a `rounds:` schedule (every, start, labelling: verdicts released at each round's "
        "end, docs/labels-on-demand.md), or use `adaptivity: none` (verdicts and label requests "
        "go to the private sink), or label every row and register a labelled test set "
        "(features and a label column)")


def admissible_plan(cfg, ts, name: str):
    """The sequential plan for ``ts``; refuses an adaptive mode (exit 2) and a test set with
    fewer rows than the plan's cap (exit 3)."""
    refuse_adaptive(cfg, name)
    plan = cfg.checked_sequential_plan()
    if len(ts) < plan.rows:
        raise TestSetTooSmall(
            f"test set {name}: labelled on demand, it needs {plan.rows} rows "
            f"(features and ids; labels only where a decision asks), has {len(ts)}; add rows")
    return plan


def registration_note(ts) -> dict:
    """The register entry's note for a test set labelled on demand."""
    return {"labels": ON_DEMAND, "schema": testset_schema(ts)}
