"""Verdicts in rounds: labels on demand under ``full``, ``firstChange`` and ``passes`` (issue 17).

A check of a new pair (:func:`run`) reserves its step before the test set is opened, with public
details only (the pair's digest, its round and the round's end, the pull request and head commit
when given), evaluates both models on every row, seals their predictions in the pending store
(:mod:`easeml_ci.testsets.pending`), sends the label request to the private sink, and shows the
team one thing whatever the labels are: verdict ``pending``, "pending: verdict at the end of
round r (YYYY-MM-DD HH:MM UTC)", the budget with the step spent, exit 0. A repeat check of the
same pair spends nothing: the same pending before its round is closed, the released verdict after.

:func:`close` (``easeml-ci round close``, a cron job of the default branch) decides every reserved
step whose round has ended on the labels present (:func:`conditions.rounds.decide_at_round_end`:
a crossing, else the cap's test on a full prefix, else the mode's default), completes each step in
the ledger with its bit (durable), and only then releases the bits. Rounds not ended are left
alone; a step closed once is never decided again. The statistics (why a binary bit, why any
labelled prefix keeps the mode's promise) are in docs/statistics.md §6; what the team sees at
each moment in docs/labels-on-demand.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from conditions import SequentialPlan

from ..errors import ConfigError
from ..ledger import LedgerSpent
from ..models.clock import EvaluationClock
from ..models.digest import pair_digest
from ..testsets import UnlabelledTestSet, crypto
from ..testsets.pending import PendingRecord, PendingStore, default_pending_path
from . import reading_order, schedule, steps
from .registration import admissible_plan, ledger_name, open_ledger_backend, pinned_terms
from .results import CheckResult, ShownClause

PENDING = "pending"


#: Seconds per pending pair that the label-dependent work of ``round close`` and ``round
#: requests`` (each pair decided on its labelled prefix, its private record) is padded to, so that
#: the job's run time does not show where an e-process crossed or whether labels were late. The
#: work takes 9 to 44 ms a pair at the headline plan's 67,070-row cap (docs/labels-on-demand.md);
#: a cap about ten times larger would outrun the pad.
DECISION_TIME_PER_PAIR = 0.5


def decision_clock(pairs: int) -> EvaluationClock:
    """Started before the label-dependent work on ``pairs`` pending pairs; ``pad()`` after it."""
    return EvaluationClock(DECISION_TIME_PER_PAIR * pairs)


def applies(gate: steps.Gate) -> bool:
    """A config with a ``rounds:`` schedule (validated: never under ``none``)."""
    return bool(getattr(gate.cfg, "rounds", None)) and gate.plan.adaptivity != "none"


def schedule_of(terms: dict) -> schedule.RoundSchedule:
    return schedule.RoundSchedule.from_terms(terms["rounds"])


def completion(state: steps.LedgerState, seq: int) -> dict | None:
    """The entry that completed the reserved step ``seq``, or None while it is pending."""
    return next((e for e in state.entries if e.get("kind") == "complete" and e.get("step") == seq),
                None)


def pending_store(gate: steps.Gate, store_path=None) -> PendingStore:
    """Beside the label store, sealed with the owner's key (the test-set key, or the
    reading-order secret of a plaintext test set)."""
    labels = steps.locate_label_store(gate, store_path)  # refused inside the work tree
    key = gate.testset.key() if gate.testset.encrypted else crypto.key_from_env(
        reading_order.ORDER_KEY_ENV, purpose="it seals the pending store of a plaintext test set")
    return PendingStore(default_pending_path(labels), key)


def _clauses(gate: steps.Gate, shown: str) -> tuple[ShownClause, ...]:
    line = gate.cfg.line("condition")
    return tuple(ShownClause(text=c.text, verdict=shown, line=line) for c in gate.plan.clauses)


def _request(plan, order, known, new, old) -> list[int]:
    """The first batch (:data:`conditions.rounds.REQUEST_BATCH` rows per clause): the rows each
    clause reads next, in reading order (its labelled prefix ends at the first of them); later
    batches come from ``round requests`` (:func:`requests`). It depends on the predictions and on
    which rows are labelled, never on a label's value (nor does the time it takes): what the
    owner is asked at a check, and so how the label store grows, says nothing of the labels."""
    from conditions.rounds import request_batch

    return list(request_batch(plan, order, known, new, old))


def _ask(gate: steps.Gate, ts, wanted: list[int], r: int, round_end: str, *, first: bool) -> dict:
    """The private label request for the rows ``wanted`` (indices into the test set)."""
    from conditions import rounds as batches

    ids = [str(ts.ids[i]) for i in wanted]
    return {"row_ids": ids, "count": len(ids),
            "batch": f"{'the first' if first else 'the next'} batch (up to "
                     f"{batches.REQUEST_BATCH} rows per clause); label it, then `easeml-ci round "
                     "requests` sends the next one or says the pair is decided",
            "order": "priority (label the first ones first: the decision reads them in this "
                     "order and stops at its first crossing)",
            "by": f"the end of round {r} ({round_end})",
            "then": f"easeml-ci testset label {gate.testset.given} LABELS.csv (columns "
                    "id,label); the round's close decides on the labels present"}


def run(gate: steps.Gate, state: steps.LedgerState, *, store_path=None, opened=None,
        pull_request: dict | None = None) -> CheckResult:
    """A check of a pair under rounds (see the module docstring)."""
    pair = pair_digest(gate.new, gate.old, gate.cfg.output, gate.workdir)
    earlier = state.step_of_pair(pair)
    if earlier is not None:
        steps.check_terms(gate, state)
        return reveal(gate, state, earlier, repeat=True)
    secret = steps.order_secret(gate, state)
    store = pending_store(gate, store_path)  # the owner's key, before a step is spent
    if opened is None:
        steps.check_terms(gate, state)
        steps.admit(gate, state)
    known_ts = opened if opened is not None else gate.testset.peek()
    if known_ts is not None:  # a plaintext test set: refused before a step is spent
        admissible_plan(gate.cfg, known_ts, gate.testset.given)
        steps.register_if_new(gate, state)  # pins the schema, "on demand", the reading order
    sched = schedule_of(gate.terms)
    r = sched.round_of(schedule.now())
    public = {"pair": pair, "round": r, "round_end": schedule.show(sched.end(r))}
    for key in ("number", "head_sha"):
        if pull_request and pull_request.get(key) is not None:
            public["pr" if key == "number" else "head_sha"] = pull_request[key]
    reserved = steps.reserve(gate, state, details=steps.public_details(gate, **public))
    ts = opened if opened is not None else steps.open_testset(gate, state)
    plan = admissible_plan(gate.cfg, ts, gate.testset.given)
    labels = steps.open_label_store(gate, ts, store_path)
    y, known = labels.label_vector()
    outputs = steps.evaluate(gate, labels.labelled_view(ts, y))
    store.seal(PendingRecord(state.fingerprint, reserved.step, pair, r, outputs.new, outputs.old,
                             model_failed=outputs.failed), rows=len(ts))
    record = {"verdict": PENDING, "pair": pair, "round": r, "round_end": public["round_end"],
              "labels": labels.summary(), **steps.failure_record(outputs)}
    wanted = [] if outputs.failed else _request(plan, reading_order.permutation(
        secret, len(ts)), known, outputs.new, outputs.old)
    if wanted:
        record["label_request"] = _ask(gate, ts, wanted, r, public["round_end"], first=True)
    del ts
    outputs.drop_predictions()
    state.entries = state.ledger.entries()
    steps.deliver_private(gate, steps.private_record(gate, state, reserved, **record))
    result = reveal(gate, state, reserved.entry, repeat=False)
    steps.release(outputs)
    return result


def reveal(gate: steps.Gate, state: steps.LedgerState, entry: dict, *, repeat: bool) -> CheckResult:
    """Pending (the same words whatever the labels), or the bit its round's close released."""
    done = completion(state, entry["seq"])
    budget = state.budget(gate.terms)
    sched = schedule_of(gate.terms)
    if done is None:
        verdict, shown = PENDING, PENDING
        notes = [sched.describe(int(entry["round"]))]
    else:
        verdict = "pass" if done.get("passed") else "fail"
        shown = "undisclosed" if len(gate.plan.clauses) > 1 else verdict
        notes = [f"released at the close of round {entry['round']} ({entry['round_end']})"]
    if repeat:
        notes.append(f"this model pair was checked before (step {entry['seq']}); no step spent")
    result = CheckResult(
        verdict=verdict, clauses=_clauses(gate, shown), budget=budget,
        fingerprint=state.fingerprint, plan=gate.plan, config_path=gate.cfg.display_name,
        gate=gate.cfg.gate_name, step=entry["seq"], ledger=ledger_name(state.ledger.backend),
        history=state.history(), notes=notes)
    result.round = {"round": int(entry["round"]), "ends": entry["round_end"],
                    "status": "pending" if done is None else "released"}
    if not repeat:
        result.alert = steps.alert_if_spent(gate, state.ledger, budget)
    return result


# --- closing a round --------------------------------------------------------------------------

@dataclass
class Released:
    """One pair's verdict as the close releases it (public: the bit and the step's details)."""

    step: int
    pair: str
    round: int
    verdict: str  # "pass" | "fail" | "not released" (the test set retired before it)
    pr: int | None = None
    head_sha: str | None = None
    new: str | None = None
    old: str | None = None

    def to_dict(self) -> dict:
        return {"step": self.step, "pair": self.pair, "round": self.round,
                "verdict": self.verdict, "pr": self.pr, "head_sha": self.head_sha,
                "new": self.new, "old": self.old}


@dataclass
class RoundClose:
    """What ``round close`` released: every step of an ended round, in ledger order."""

    released: list[Released]
    not_released: list[Released]     # steps of ended rounds the retired test set cannot answer
    pending: int                     # reserved steps whose round has not ended
    budget: object
    fingerprint: str
    ledger: str
    config_path: str
    gate: str
    alert: dict | None = None
    private_sink: str | None = None
    notes: list[str] = field(default_factory=list)
    exit_code: int = 0               # fixed: nothing the team reads may depend on the labels
    #: steps an earlier close completed (their bits are in the ledger): the Action re-posts a
    #: commit status that close did not get to post
    released_before: list[Released] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"released": [r.to_dict() for r in self.released],
                "released_before": [r.to_dict() for r in self.released_before],
                "not_released": [r.to_dict() for r in self.not_released], "pending": self.pending,
                "budget": self.budget.to_dict(), "testset": {"fingerprint": self.fingerprint},
                "ledger": self.ledger, "config": self.config_path, "gate": self.gate,
                "alert": self.alert, "notes": self.notes, "exit_code": self.exit_code}


def _verdict(plan, order, record: PendingRecord, y, known):
    """:func:`conditions.rounds.decide_at_round_end` on the labels present: what the close
    releases, and what ``round requests`` asks the next batch from."""
    from conditions.rounds import decide_at_round_end

    return decide_at_round_end(plan, order, y, known, record.new, record.old)


def _released(entry: dict, done: dict) -> Released:
    """A step completed in the ledger, as the close released it."""
    return Released(entry["seq"], entry["pair"], int(entry["round"]),
                    "pass" if done.get("passed") else "fail", entry.get("pr"),
                    entry.get("head_sha"), entry.get("new"), entry.get("old"))


def _decide(plan, order, record: PendingRecord | None, y, known) -> tuple[bool, dict]:
    """The bit and the private account of one pending pair at its round's end."""
    if record is None:  # its check died after the reservation: spent, and a fail
        return False, {"verdict": "fail", "by": "no pending record (the check did not finish)"}
    if record.model_failed:
        return False, {"verdict": "fail", "by": "model failed"}
    made = _verdict(plan, order, record, y, known)
    return made.passed, {"verdict": "pass" if made.passed else "fail", "clauses": [
        {"text": c.text, "status": s.status, "rows": s.rows, "labels": s.labels, "by": s.by}
        for c, s in zip(plan.clauses, made.decision.clauses)]}


def _pending_steps(config, testset: str | None, *, key_env: str, workdir, backend, progress,
                   without_rounds: str) -> tuple[steps.Gate, steps.LedgerState, list[dict]]:
    """The steps of the round close and the requests before any label is read: validate (no
    model), the ledger read and verified, the terms checked; returns the gate, the ledger state
    and its pending steps (reserved in a round, not completed). ``without_rounds``: what a config
    without a schedule means for the caller (exit 2)."""
    workdir = Path(workdir)
    cfg = steps.config_of(config)
    if not getattr(cfg, "rounds", None):
        raise ConfigError(f"{cfg.display_name}: no `rounds:` schedule, so {without_rounds}; add "
                          "one (every, start, labelling) before registering the test set")
    source = steps.testset_source(cfg, testset, workdir, configured=cfg.testset, key_env=key_env,
                                  missing="no test set: pass --testset PATH or set `testset:` in "
                                          "the config")
    gate = steps.validate(cfg, plan=cfg.checked_plan(), terms=pinned_terms(cfg), testset=source,
                          models={}, workdir=workdir, progress=progress)
    state = steps.read_ledger(gate, backend or open_ledger_backend(cfg), register=False)
    steps.check_terms(gate, state)
    pending = [e for e in state.entries if e.get("kind") == "step" and e.get("reserved")
               and "round" in e and completion(state, e["seq"]) is None]
    return gate, state, pending


@dataclass
class _Opened:
    """What the close and the requests decide from, opened only when a pending step needs it."""

    store: PendingStore
    ts: UnlabelledTestSet      # decrypted
    plan: SequentialPlan       # the plan its size admits
    y: np.ndarray              # the labels present, and which rows have one
    known: np.ndarray
    order: np.ndarray          # the secret reading order


def _open_for_decisions(gate: steps.Gate, state: steps.LedgerState, label_store) -> _Opened:
    """The reading order's secret (checked against the registration before anything is
    opened), the pending store, the test set, its admissible plan and the labels present."""
    secret = steps.order_secret(gate, state)
    store = pending_store(gate, label_store)
    ts = steps.open_testset(gate, state)
    plan = admissible_plan(gate.cfg, ts, gate.testset.given)
    y, known = steps.open_label_store(gate, ts, label_store).label_vector()
    return _Opened(store, ts, plan, y, known, reading_order.permutation(secret, len(ts)))


def close(config, testset: str | None = None, *, key_env: str = "EASEML_TESTSET_KEY",
          workdir: Path = Path("."), backend=None, label_store=None, progress=None,
          at: datetime | None = None) -> RoundClose:
    """Close every ended round of the config's test set (see the module docstring)."""
    gate, state, open_steps = _pending_steps(
        config, testset, key_env=key_env, workdir=workdir, backend=backend, progress=progress,
        without_rounds="there is no round to close")
    cfg = gate.cfg
    sched, at = schedule_of(gate.terms), at or schedule.now()
    due = [e for e in open_steps if sched.ended(int(e["round"]), at)]
    released: list[Released] = []
    unreleased: list[Released] = []  # reserved before the test set retired: spent, no verdict
    accounts: list[dict] = []  # the private sink's: how each was decided
    if due:
        opened = _open_for_decisions(gate, state, label_store)
        clock = decision_clock(len(due))
        decided = []  # every record opened and decided before anything is written
        for entry in due:
            record = opened.store.open(state.fingerprint, entry["seq"], entry["pair"])
            decided.append((entry, *_decide(opened.plan, opened.order, record, opened.y,
                                            opened.known)))
        clock.pad()  # the decisions end at a fixed moment, whatever they read
        for entry, passed, account in decided:  # each completed durably, then all released
            out = Released(entry["seq"], entry["pair"], int(entry["round"]),
                           "pass" if passed else "fail", entry.get("pr"), entry.get("head_sha"),
                           entry.get("new"), entry.get("old"))
            try:
                state.ledger.complete_step(entry["seq"], passed=passed, terms=gate.terms,
                                           details={"round": out.round, "by": "round close"})
                released.append(out)
            except LedgerSpent:  # an earlier pass retired the test set: this bit is not counted
                out.verdict = "not released"
                account = {"verdict": out.verdict, "by": "the test set retired before this "
                                                         "step's close"}
                unreleased.append(out)
            accounts.append({"gate": cfg.gate_name, "testset": state.fingerprint,
                             "step": out.step, "round": out.round, "pair": out.pair,
                             "new": out.new, "old": out.old, "closed": True, **account})
        for account in accounts:
            steps.deliver_private(gate, account)
        del opened
    state.entries = state.ledger.entries()
    budget = state.budget(gate.terms)
    done_now = {r.step for r in released}
    before = [_released(e, completion(state, e["seq"])) for e in state.entries
              if e.get("kind") == "step" and e.get("reserved") and "round" in e
              and e["seq"] not in done_now and completion(state, e["seq"]) is not None]
    result = RoundClose(released=released, not_released=unreleased,
                        pending=len(open_steps) - len(due), budget=budget,
                        fingerprint=state.fingerprint, ledger=ledger_name(state.ledger.backend),
                        config_path=cfg.display_name, gate=cfg.gate_name,
                        released_before=before)
    if unreleased:
        result.notes.append("a pair whose step was reserved before the test set retired gets no "
                            "verdict: its step is spent")
    result.alert = steps.alert_if_spent(gate, state.ledger, budget) if released else None
    return result


# --- the next label requests --------------------------------------------------------------------

@dataclass
class RoundRequests:
    """What ``round requests`` tells the team: which pending steps got a private message (a
    function of the ledger and the clock), never whether a pair is decided or what was asked."""

    steps: list[int]                 # reserved steps whose round has not ended, in ledger order
    awaiting_close: int              # reserved steps whose round has ended (the close's)
    fingerprint: str
    ledger: str
    config_path: str
    gate: str
    private_sink: str | None
    notes: list[str] = field(default_factory=list)
    exit_code: int = 0               # fixed: nothing the team reads may depend on the labels

    def to_dict(self) -> dict:
        return {"steps": self.steps, "requests_sent": len(self.steps),
                "awaiting_close": self.awaiting_close,
                "testset": {"fingerprint": self.fingerprint}, "ledger": self.ledger,
                "config": self.config_path, "gate": self.gate, "private_sink": self.private_sink,
                "notes": self.notes, "exit_code": self.exit_code}


def _next_account(gate, fingerprint: str, opened: _Opened, entry: dict,
                  record: PendingRecord | None) -> dict:
    """The private message of one pending step: decided (no more labels), or the next batch."""
    from conditions.rounds import next_request

    seq, r = entry["seq"], int(entry["round"])
    account = {"gate": gate.cfg.gate_name, "testset": fingerprint, "step": seq,
               "round": r, "round_end": entry["round_end"], "pair": entry["pair"],
               "new": entry.get("new"), "old": entry.get("old"), "requests": True}
    wanted: tuple[int, ...] = ()
    if record is None:
        why = " (its check did not finish: it closes as a fail)"
    elif record.model_failed:
        why = " (a model failed: it closes as a fail)"
    else:
        why = ""
        plan, order, known = opened.plan, opened.order, opened.known
        wanted = next_request(plan, _verdict(plan, order, record, opened.y, known), order, known,
                              record.new, record.old)
    if wanted:
        return {**account, "decided": False, "label_request": _ask(
            gate, opened.ts, list(wanted), r, entry["round_end"], first=False)}
    return {**account, "decided": True,
            "note": f"decided, no more labels for step {seq}{why}; the verdict is released at the "
                    f"close of round {r} ({entry['round_end']})"}


def requests(config, testset: str | None = None, *, key_env: str = "EASEML_TESTSET_KEY",
             workdir: Path = Path("."), backend=None, label_store=None, progress=None,
             at: datetime | None = None) -> RoundRequests:
    """Send the owner, for every pending step whose round has not ended, the next batch of rows
    to label, or "decided, no more labels", through the private sink only.

    Each pair is decided on the labelled prefix by the function the close uses
    (:func:`conditions.rounds.decide_at_round_end`), and the next batch is
    :func:`conditions.rounds.next_request`. What this returns (and so the command's stdout, JSON
    and exit code) is a function of the ledger and the clock, and so is its run time: the
    label-dependent work (9 to 44 ms per pair at 67,070 rows) is padded to
    :data:`DECISION_TIME_PER_PAIR` a pair."""
    gate, state, open_steps = _pending_steps(
        config, testset, key_env=key_env, workdir=workdir, backend=backend, progress=progress,
        without_rounds="no check is pending and there is nothing to request")
    cfg = gate.cfg
    sched, at = schedule_of(gate.terms), at or schedule.now()
    live = [e for e in open_steps if not sched.ended(int(e["round"]), at)]
    if live:
        opened = _open_for_decisions(gate, state, label_store)
        clock = decision_clock(len(live))
        accounts = [_next_account(gate, state.fingerprint, opened, e,
                                  opened.store.open(state.fingerprint, e["seq"], e["pair"]))
                    for e in live]  # every record opened before anything is sent
        for account in accounts:
            steps.deliver_private(gate, account)
        clock.pad()  # the label-dependent work ends at a fixed moment (DECISION_TIME_PER_PAIR)
        del opened
    result = RoundRequests(steps=[e["seq"] for e in live], awaiting_close=len(open_steps) - len(live),
                           fingerprint=state.fingerprint, ledger=ledger_name(state.ledger.backend),
                           config_path=cfg.display_name, gate=cfg.gate_name,
                           private_sink=gate.sink.describe() if gate.sink else None)
    if result.awaiting_close:
        result.notes.append(f"{result.awaiting_close} pending step(s) of ended rounds await the "
                            "round close (`easeml-ci round close`)")
    return result


__all__ = ["PENDING", "Released", "RoundClose", "RoundRequests", "applies", "close", "completion",
           "requests", "reveal", "run"]
