"""The steps every answer of the gate runs through, in the order that is the guarantee.

See docs/design.md#the-pipeline for why the order is what it is. In short: everything a user
can get wrong is refused before the test set is identified (:func:`validate_*`); the test set's
identity and its ledger are read and checked before it is opened (:func:`read_ledger`,
:func:`admit`); the test set is opened once (:func:`open_testset`); the models run on it
(:func:`evaluate`); each kind of answer decides in memory; the step is reserved durably before
the test set is opened (:func:`reserve`: a run killed after that has spent it) and completed
with the decision (:func:`complete`); only then does anything about the answer leave the gate
(each answer's ``reveal``, with :func:`deliver_private` and :func:`alert_if_spent`).

An answer (:mod:`.check`, :mod:`.on_demand`, :mod:`.meter`) is a composition of these steps
with a ``decide`` and a ``reveal`` of its own. The hand-off objects are :class:`Gate` (what
validation resolved), :class:`LedgerState` (what the ledger said), :class:`Evaluation` (the
models' outputs), :class:`Reserved` (the step spent) and :class:`Committed` (the step completed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..config import GateConfig, load_config
from ..errors import BudgetExhausted, ConfigError, ModelFailedOnTestSet, TestSetTooSmall, UsageError
from ..ledger import Budget, Ledger, LedgerSpent
from ..ledger.budget import compute as compute_budget
from ..models import (GIT_PREFIX, TestSetSchema, evaluate_on_testset, locate, preflight,
                      runs_on_testset)
from ..models import clock as evaluation_clock
from ..testsets import TestSet, TestSetSource, UnlabelledTestSet
from . import reading_order
from .registration import (ON_DEMAND, check_pinned, check_underpowered, ledger_key, ledger_name,
                           pinned_terms, registration_note, testset_schema)

if TYPE_CHECKING:  # loaded by the steps that use them: a labelled check without a private
    # sink opens no label store, and raises no alert until its budget is spent
    from ..testsets.labels import LabelStore
    from .private_sink import PrivateSink

Progress = Callable[[str], None]

__all__ = [
    "Committed", "Evaluation", "Gate", "LedgerState", "Progress", "Reserved", "admit",
    "alert_if_spent", "check_terms", "labelled_on_demand", "complete", "config_of", "deliver_private", "evaluate",
    "locate_label_store", "new_testset_alert", "open_label_store", "open_testset", "order_secret",
    "preflight_models", "read_ledger", "register_if_new", "reserve", "resolve",
    "private_record", "release", "require_rows", "spent", "testset_source", "validate", "validate_pair", "validate_sink",
]


# --- validate: nothing opened yet -------------------------------------------------------------

def config_of(config: GateConfig | str | Path) -> GateConfig:
    """A loaded config, or the config at a path."""
    return load_config(config) if isinstance(config, (str, Path)) else config


def resolve(spec: str, workdir: Path) -> Path:
    """A command-line path, from ``workdir``."""
    path = Path(spec)
    return path if path.is_absolute() else workdir / path


def validate_sink(cfg: GateConfig, workdir: Path, *, needed: bool) -> PrivateSink | None:
    """The private sink, refused up front if the team could read it (needed under `none`)."""
    if not needed and not cfg.private_sink:
        return None
    from . import private_sink

    return private_sink.validate(cfg.private_sink, workdir, cfg.line("private_sink"))


def preflight_models(cfg: GateConfig, specs: dict[str, tuple[str | None, str]], workdir: Path
                     ) -> dict[str, Any]:
    """Each model (role -> (spec, flag)) checked without the test set: file, git ref, graph,
    input and output on synthetic rows (models.preflight)."""
    models = {}
    for role, (spec, flag) in specs.items():
        if not spec:
            continue
        if not str(spec).startswith(GIT_PREFIX) and not resolve(spec, workdir).is_file():
            raise UsageError(f"{flag}: model {spec} does not exist or is not a file")
        models[role] = preflight(locate(spec, workdir), repo=workdir, output=cfg.output)
    return models


def testset_source(cfg: GateConfig, given: str | None, workdir: Path, *,
                   configured: str | None, key_env: str, missing: str) -> TestSetSource:
    """The test set named on the command line (from ``workdir``) or in the config (from the
    config's folder); ``missing`` is the message when neither names one."""
    if given:
        path, name = resolve(str(given), workdir), str(given)
    elif configured:
        path, name = cfg.resolve(configured), str(configured)
    else:
        raise UsageError(missing)
    return TestSetSource(path, name, label_column=cfg.label_column, key_env=key_env)


def validate(cfg: GateConfig, *, plan, terms: dict, testset: TestSetSource,
             models: dict[str, tuple[str | None, str]], workdir: Path,
             progress: Progress | None = None, next_step: str | None = None) -> "Gate":
    """The gate for one answer: the private sink (needed under `none`) and every model
    (role -> (spec, flag); roles "new" and "old" for a check) checked before anything is opened."""
    specs = {role: str(spec) for role, (spec, _flag) in models.items() if spec}
    return Gate(cfg=cfg, plan=plan, terms=terms, testset=testset, specs=specs,
                models=preflight_models(cfg, models, workdir),
                sink=validate_sink(cfg, workdir, needed=plan.adaptivity == "none"
                                   or bool(getattr(cfg, "rounds", None))),  # rounds: requests
                workdir=workdir, progress=progress or (lambda _message: None), next_step=next_step)


def validate_pair(config, new: str, old: str | None, testset: str | None, workdir: Path, *,
                  key_env: str, progress: Progress | None = None,
                  underpowered: bool = False) -> "Gate":
    """A check of a model pair (``old`` only when the condition uses o or d): everything that
    can be checked without the test set or a model run (exit 2). ``underpowered``: the run asks
    to widen the tolerances to a small test set (a permission the registration pins)."""
    cfg = config_of(config)
    comparing = cfg.formula.variables & {"o", "d"}
    if comparing and not old:
        raise UsageError(f"--old is required: the condition `{cfg.formula}` uses "
                         f"{', '.join(sorted(comparing))}, which compare the new model with the "
                         "old one")
    source = testset_source(cfg, testset, workdir, configured=cfg.testset, key_env=key_env,
                            missing="no test set: pass --testset PATH or set `testset:` in the config")
    if cfg.pool and not cfg.resolve(cfg.pool).is_file():
        raise ConfigError(f"{cfg.where('pool')}: {cfg.resolve(cfg.pool)} does not exist or is not "
                         "a file; the new-test-set alert ranks the label request from it")
    return validate(cfg, plan=cfg.checked_plan(), terms=pinned_terms(cfg, underpowered=underpowered),
                    testset=source,
                    models={"new": (new, "--new"), "old": (old if comparing else None, "--old")},
                    workdir=workdir, progress=progress)


@dataclass
class Gate:
    """What validation resolved; every later step trusts it and nothing else."""

    cfg: GateConfig
    plan: Any                      # conditions.Plan (a check) or conditions.meter.MeterPlan
    terms: dict                    # what the registration pins
    testset: TestSetSource
    specs: dict[str, str]          # role -> the model as given (a path from workdir, or git:)
    models: dict                   # role -> the model preflight opened
    sink: PrivateSink | None
    workdir: Path
    progress: Progress = field(default=lambda _message: None)
    next_step: str | None = None   # the alert's request, when not the gate's `testset register`
    opened: Any = None             # the test set, when the owner's registration had to open it

    @property
    def new(self) -> str:
        """The new model of a check (the first model of any other answer)."""
        return self.specs.get("new") or next(iter(self.specs.values()), None)

    @property
    def old(self) -> str | None:
        return self.specs.get("old")

    @property
    def withheld(self) -> bool:
        """Under `adaptivity: none` the team sees no answer; the private sink gets it."""
        return self.plan.adaptivity == "none"


# --- budget: the test set's identity and its ledger, before it is opened ---------------------

@dataclass
class LedgerState:
    """The ledger of the gate's test set as read before the test set is opened."""

    ledger: Ledger
    entries: list[dict]
    fingerprint: str
    registration: dict | None

    def budget(self, terms: dict) -> Budget:
        return compute_budget(self.entries, terms)

    def step_of_pair(self, pair: str) -> dict | None:
        """The step an earlier check of this model pair spent (labels on demand), or None."""
        return next((e for e in self.entries if e.get("kind") == "step" and e.get("pair") == pair),
                    None)

    def history(self, *more: dict) -> list[str]:
        """The times of the spent steps (public: the team sees when checks ran)."""
        return [str(e["time"]) for e in [*self.entries, *more]
                if e.get("kind") == "step" and e.get("time")]


def read_ledger(gate: Gate, backend, *, register: bool) -> LedgerState:
    """The test set's fingerprint (an encrypted file's header; a plaintext file is read), its
    ledger verified, and its registration.

    ``register=False`` (every run but one the owner asked to register) refuses a test set its
    owner has not registered. The ledger is authenticated with the test set's ledger key
    (:func:`.registration.ledger_key`); a backend that can say whether its ledger can be
    rewritten from outside (``check_protected``: the repository ledger's branch rules) is
    asked first, and refuses (exit 2) before anything is opened."""
    key = ledger_key(gate.testset)  # a missing key is exit 2 before anything else
    protected = getattr(backend, "check_protected", None)
    if protected is not None:
        protected()
    probe = getattr(backend, "check_writable", None)
    if probe is not None:  # a ledger we could not write would waste the evaluation: ask first
        probe()
    if not gate.testset.encrypted:
        gate.progress(f"loading test set {gate.testset.given}")
    fingerprint = gate.testset.fingerprint()
    ledger = Ledger(backend, fingerprint, key)
    entries = ledger.entries()
    registered = ledger.registration(entries)
    if registered is None and not register:
        raise UsageError(
            f"test set {gate.testset.given} ({fingerprint[:12]}) is not registered in "
            f"{ledger_name(backend)}: a check cannot start a budget. Its owner registers it "
            "once with `easeml-ci testset register PATH` (or a run of the Action with the input "
            "`register: true` on the default branch); a test set a pull request added is refused")
    return LedgerState(ledger, entries, fingerprint, registered)


def labelled_on_demand(gate: Gate, state: LedgerState) -> bool:
    """A plaintext unlabelled test set, or one registered as labelled on demand (answered by
    :mod:`.on_demand`)."""
    return (isinstance(gate.testset.peek(), UnlabelledTestSet)
            or bool(state.registration) and state.registration.get("labels") == ON_DEMAND)


def check_terms(gate: Gate, state: LedgerState) -> None:
    """The config's terms against the registered ones, and the models against the test set's
    schema (feature count, label kind), before it is opened: a plaintext file was read to
    fingerprint it; an encrypted one's schema was pinned at registration (the header has none)."""
    registered = state.registration
    check_pinned(gate.cfg, registered, state.fingerprint, gate.terms)
    check_underpowered(gate.cfg, registered, state.fingerprint,
                       bool(gate.terms.get("underpowered")))
    ts = gate.testset.peek()
    if ts is not None:
        schema = TestSetSchema.of(ts)
    elif registered is not None and registered.get("schema"):
        schema = TestSetSchema.from_dict(registered["schema"])
    else:
        return  # an encrypted test set registered before schemas were pinned: checked after
    for model in gate.models.values():
        model.check(schema)


def order_secret(gate: Gate, state: LedgerState) -> bytes:
    """The secret the test set's reading order is drawn from (:mod:`.reading_order`), checked
    against the registration before the test set is opened."""
    return reading_order.secret(gate.testset, state.registration)


def admit(gate: Gate, state: LedgerState, *, spends_step: bool = True) -> Budget:
    """The budget before this answer; a spent one refuses (with the alert) unless the answer
    spends no step."""
    before = state.budget(gate.terms)
    if not before.active and spends_step:
        raise spent(gate, state.ledger, before)
    return before


def new_testset_alert(gate: Gate, ledger: Ledger, budget: Budget) -> dict:
    """The new-test-set alert for a spent or retired budget, dispatched once per event."""
    from . import alert

    return alert.raise_alert(
        cfg=gate.cfg, plan=gate.plan, budget=budget, ledger=ledger, workdir=gate.workdir,
        models={"new": gate.new, "old": gate.old}, progress=gate.progress,
        next_step=gate.next_step)


def spent(gate: Gate, ledger: Ledger, budget: Budget) -> BudgetExhausted:
    """The refusal of a spent budget, its alert raised."""
    return BudgetExhausted(budget, new_testset_alert(gate, ledger, budget), ledger.fingerprint)


def alert_if_spent(gate: Gate, ledger: Ledger, budget: Budget) -> dict | None:
    """The alert when this answer spent the last step (or retired the test set)."""
    return None if budget.active else new_testset_alert(gate, ledger, budget)


# --- open: the test set, once ------------------------------------------------------------------

def open_testset(gate: Gate, state: LedgerState) -> TestSet | UnlabelledTestSet:
    """Decrypt (or hand over) the test set; only after the step is reserved (:func:`reserve`),
    or for the owner's registration (:func:`register_if_new`).

    An encrypted test set that is registered is not hashed again: its fingerprint is its
    header's, which AES-GCM binds into every chunk under the owner's key, and its registration
    re-hashed the plaintext (docs/threat-model.md, row 9b). One being registered
    is re-hashed, and refused if its header claims another fingerprint."""
    if gate.opened is not None:  # the owner's registration opened it (register_if_new)
        ts, gate.opened = gate.opened, None
        return ts
    if gate.testset.encrypted:
        gate.progress(f"loading test set {gate.testset.given}")
    return gate.testset.load(trust_header=state.registration is not None)


def locate_label_store(gate: Gate, store_path=None) -> Path:
    """Where the label store of a test set labelled on demand is: ``store_path`` (from the
    workdir), or the default beside the test set; refused inside the repository (exit 2), before
    anything is registered or spent (:func:`..testsets.labels.store_location`)."""
    from ..testsets.labels import store_location  # only a test set labelled on demand has one

    return store_location(store_path, gate.testset.path, gate.workdir)


def open_label_store(gate: Gate, ts: UnlabelledTestSet, store_path=None) -> LabelStore:
    """The label store of a test set labelled on demand (:func:`locate_label_store`), sealed
    with the test-set key when the test set is encrypted."""
    from ..testsets.labels import LabelStore

    return LabelStore.open(locate_label_store(gate, store_path), ts, gate.testset.key())


def require_rows(gate: Gate, rows: int, needed: int, advice: str) -> None:
    """Refuse a test set smaller than the plan needs (exit 3), before anything is evaluated."""
    if rows < needed:
        raise TestSetTooSmall(f"test set {gate.testset.given}: need {needed} labelled examples, "
                              f"have {rows}; {advice}")


def register_if_new(gate: Gate, state: LedgerState,
                    admissible: Callable[[Any], None] | None = None,
                    note: dict | None = None) -> None:
    """A run its owner asked to register (``register=True``) registers a new test set, before
    its step is reserved: the note pins the schema (and "labels on demand" for a test set
    without labels). An encrypted test set is opened for it, as ``testset register`` opens it;
    no model has run on it, and :func:`open_testset` hands that copy on. ``admissible(ts)``
    refuses a test set the answer cannot use before anything is registered."""
    if state.registration is not None:
        return
    ts = gate.testset.peek()
    if ts is None:
        ts = gate.opened = open_testset(gate, state)
    if admissible is not None:
        admissible(ts)
    pinned = registration_note(ts) if isinstance(ts, UnlabelledTestSet) else {
        "schema": testset_schema(ts)}
    if isinstance(ts, UnlabelledTestSet):  # read in the order drawn from a pinned secret
        pinned.update(reading_order.note(gate.testset.encrypted, gate.testset.given))
    pinned.update(note or {})
    state.registration = state.ledger.register(gate.terms, by="check", note=pinned)
    write_anchor = getattr(state.ledger.backend, "write_anchor", None)
    if write_anchor is not None:
        write_anchor(state.fingerprint, state.registration)
    state.entries = state.ledger.entries()


# --- evaluate: the models on the test set -------------------------------------------------------

@dataclass
class Evaluation:
    """The models' outputs on the test set (role -> predictions), or the failure of one of them
    (a counted fail)."""

    outputs: dict = field(default_factory=dict)
    failure: ModelFailedOnTestSet | None = None
    clock: Any = None              # the evaluation clock (models.clock), when there was one

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def new(self):
        return self.outputs.get("new")

    @property
    def old(self):
        return self.outputs.get("old")

    def drop_predictions(self) -> None:
        """Drop the predictions (they are as large as the test set) once decided."""
        self.outputs = {}


def evaluate(gate: Gate, ts: TestSet) -> Evaluation:
    """Every model's predictions on ``ts``, in the order of ``gate.specs``.

    The ONNX models run in a child process (:mod:`..models.child`), killed at the deadline or on
    Ctrl-C. A model that fails on the test data, overruns the deadline or dies is a fixed-text
    :class:`ModelFailedOnTestSet`, shown as a fail (docs/threat-model.md, "Model failures on the
    test set"). With ``evaluation_time`` (the runner default included) the runs take exactly
    that long together, whatever they do (:mod:`..models.clock`); prediction files run nothing
    on the test data and need no clock."""
    seconds = gate.cfg.evaluation_time
    timed = seconds is not None and runs_on_testset(gate.models.values())
    if timed:  # one line for all: a time between them would show when one ended
        names = [f"{role} model {spec}" for role, spec in gate.specs.items()]
        gate.progress("evaluating " + " and ".join(names)
                      + f" (evaluation_time: {seconds:g} s, whatever they do)")
    else:
        gate.progress("evaluating " + " and ".join(f"{role} model {spec}"
                                                   for role, spec in gate.specs.items()))
    clock = evaluation_clock.EvaluationClock(seconds) if timed else None
    models = {role: gate.models[role] for role in gate.specs}
    try:
        evaluation = Evaluation(outputs=evaluate_on_testset(models, ts, clock=clock), clock=clock)
    except ModelFailedOnTestSet as failure:
        evaluation = Evaluation(failure=failure, clock=clock)
    if clock is not None:  # not on bad input or Ctrl-C: those stop at once
        clock.pad()
    return evaluation


def release(evaluation: Evaluation) -> None:
    """Under a clock, wait until the moment the answer is released (the deadline plus
    :data:`..models.clock.RELEASE_MARGIN`): the last step of every answer that evaluated, after
    its decision, commit and reveal, so that what the team sees (the verdict printed, the
    process's exit) comes at a fixed time however the run ended."""
    if evaluation.clock is not None:
        evaluation.clock.release()


# --- reserve and complete: the step, durably -----------------------------------------------------

@dataclass(frozen=True)
class Reserved:
    """The step spent before the test set is opened, and the budget with it spent."""

    entry: dict
    budget: Budget

    @property
    def step(self) -> int:
        return self.entry["seq"]


@dataclass(frozen=True)
class Committed(Reserved):
    """The step (its reservation's entry) completed, and the budget after it: only a committed
    step's answer may show (the type says which a function needs)."""


def reserve(gate: Gate, state: LedgerState, *, details: dict) -> Reserved:
    """Spend the step durably before the test set is opened: a run killed, cancelled, timed out
    or out of disk from here on has spent it (docs/design.md#the-pipeline).

    ``details`` go into the step's entry, which the team can read: known before the test set is
    opened, so nothing label-dependent. A spent budget refuses (with the alert)."""
    try:
        entry, after = state.ledger.reserve_step(terms=gate.terms, details=details)
    except LedgerSpent as exc:  # another answer took the last step since admit
        raise spent(gate, state.ledger, exc.budget) from None
    return Reserved(entry, after)


def complete(gate: Gate, state: LedgerState, reserved: Reserved, *, passed: bool | None,
             details: dict | None = None) -> Committed:
    """The decision completes the reserved step, durably; only after this may anything about
    the answer show. ``passed`` is the released bit (None when nothing is released);
    ``details``: public, what the answer released with it. A test set that other answers
    retired meanwhile refuses: the bit would be one the budget does not count."""
    try:
        _, after = state.ledger.complete_step(reserved.step, passed=passed, terms=gate.terms,
                                              details=details)
    except LedgerSpent as exc:
        raise spent(gate, state.ledger, exc.budget) from None
    return Committed(reserved.entry, after)


# --- reveal: what leaves the gate ----------------------------------------------------------------

def deliver_private(gate: Gate, record: dict) -> str | None:
    """Send ``record`` (the owner's eyes only) to the private sink; returns where it went."""
    if gate.sink is None:
        return None
    gate.sink.deliver(record)
    return gate.sink.describe()


def private_record(gate: Gate, state: LedgerState, done: Committed, **more) -> dict:
    """A record for the private sink about the step ``done``."""
    return {"gate": gate.cfg.gate_name, "testset": state.fingerprint, "step": done.step,
            "time": done.entry["time"], "new": gate.new, "old": gate.old, **more}


def failure_record(evaluation: Evaluation) -> dict:
    """A model's failure on the test data, for the private sink only (it may quote features)."""
    failure = evaluation.failure
    return {"model_failed": {"model": failure.spec, "detail": failure.detail}} if failure else {}


def public_details(gate: Gate, **more) -> dict:
    """The step entry's public fields (the ledger may sit where the team reads it)."""
    return {"new": gate.new, "old": gate.old, **more}


