"""Pick the best of k models on fresh unlabelled data, with a stated reliability, labelling rows
only where the surviving candidates disagree (ModelPicker's question, certified).

See ``docs/statistics.md`` §8 for the derivation with its literature; in short:

The promise
-----------
Model i's accuracy on the data's distribution is ``acc_i``; ``b`` is a best model (any fixed one
if several tie). With ``delta = 1 - reliability`` and tolerance ``eps >= 0``::

    P(a pick p is returned with acc_p < acc_b - eps) <= delta

whatever the labels say, whenever :func:`pick` is called and in whatever order labels arrive: rows
are read in the caller's secret order (fixed at registration, independent of the models), the
replay stops at the first row it needs that has no label, and every decision is a function of the
rows before it.

Pairwise e-processes
--------------------
For an ordered pair (i, j) and a row, ``x = 1[i right] - 1[j right]`` in {-1, 0, 1}, mean
``D_ij = acc_i - acc_j``. For a threshold c in {0, -eps}, the mixture of constant bets::

    E_ij^c(t) = sum_g w_g prod_{s active, s <= t} (1 + lam_g (x_s - c)),   lam_g in (0, 1/(1 + c))

is a nonnegative supermartingale under ``D_ij <= c`` as long as the rows at which it is updated
("active" times) are chosen from the past alone: then row s is independent of the choice and
``E[1 + lam (x_s - c) | past] = 1 + lam (D_ij - c) <= 1``. Ville: ``P(sup_t E >= 1/alpha) <= alpha``.
E depends on the data only through the counts of +1, -1 and 0 at its active times, so it is
computed in closed form from three integers. For c = 0 an x = 0 factor is 1, so the pair needs
labels only where i and j disagree.

* ``A_ij = E_ij^0 >= 1/alpha_A``: i is better than j; j is eliminated.
* ``B_ij = E_ij^{-eps} >= 1/alpha_B`` (only for eps > 0): i is not more than eps worse than j.

Which rows are labelled
-----------------------
At each row (in reading order) a leader h is chosen from the past (the survivor right most often
on the rows labelled so far) and the active pairs are (h, j) for the survivors j that still
matter. The row is labelled when some active pair disagrees on it; every active pair is updated
with it (agreeing pairs with x = 0). A pair is never updated at a time it was not active, even if
the row was labelled for another pair: such rows are selected on the pair's own predictions
(features), and the pair's x on them does not have mean ``D_ij``.

Certification and its error
---------------------------
A candidate is picked when it is the only survivor, or (eps > 0) when it is the leader and
``B_hj`` has crossed for every surviving j. A wrong pick needs one of the e-processes with the
best model b on the null side to cross: ``A_ib`` (b eliminated; ``D_ib <= 0`` always) or, with
eps > 0, ``B_pb`` with ``D_pb < -eps``. Only the k - 1 pairs (i, b) are involved, so::

    P(wrong pick) <= (k - 1) (alpha_A + alpha_B) = delta   with alpha_A + alpha_B = delta / (k - 1)

(eps = 0: B is A, ``alpha_A = delta / (k - 1)``; eps > 0: ``ELIMINATION_SHARE`` of it to A).
Errors of tests between two models that are not best cost nothing: they can only remove a
model that is not b.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .sequential import label_request, transcript_queries

ELIMINATION_SHARE = 0.5  # of each pair's alpha for elimination (A) when tolerance > 0
_GRID = 96  # stakes in the mixture: log-spaced on [0.005, 0.98] of the largest safe stake
_FIRST_SCAN = 64
STATUSES = ("picked", "awaiting labels", "exhausted")


@dataclass(frozen=True)
class PickResult:
    """What :func:`pick` says about the rows read so far.

    ``pick`` is the certified candidate (an index into the k rows of ``predictions``) or None;
    ``status`` is "picked", "awaiting labels" (the replay reached a needed row without a label)
    or "exhausted" (every row read, no certificate); ``request`` holds the rows (indices into
    the test set) to label next, in priority order (empty unless awaiting); ``labels_used`` the
    labelled rows the decision read; ``rows_read`` the rows read in order; ``survivors`` the
    candidates not eliminated.

    Labels used, rows read and survivors depend on the labels: like accuracies they are for the
    test set's owner (a private channel), not for the team (docs/design.md §2, §7).
    """

    pick: int | None
    status: str
    survivors: tuple[int, ...]
    labels_used: int
    rows_read: int
    request: tuple[int, ...]
    candidates: int
    reliability: float
    tolerance: float

    @property
    def decided(self) -> bool:
        return self.pick is not None

    @property
    def awaiting(self) -> bool:
        return self.status == "awaiting labels"

    def next_rows(self, count: int | None = None) -> tuple[int, ...]:
        """The first ``count`` rows to label (all requested rows when None)."""
        return self.request if count is None else self.request[:count]

    def to_dict(self) -> dict:
        return {"pick": self.pick, "status": self.status, "survivors": list(self.survivors),
                "labels_used": self.labels_used, "rows_read": self.rows_read,
                "request": list(self.request), "candidates": self.candidates,
                "reliability": self.reliability, "tolerance": self.tolerance}


def pair_alphas(candidates: int, reliability: float, tolerance: float = 0.0) -> tuple[float, float]:
    """``(alpha_A, alpha_B)``: each pair's elimination and within-tolerance budgets.

    The k - 1 pairs against the best model share delta (module docstring); with tolerance 0 the
    two tests are one and ``alpha_B`` is reported equal to ``alpha_A``.
    """
    _check_parameters(candidates, reliability, tolerance)
    per_pair = (1.0 - reliability) / max(candidates - 1, 1)
    if tolerance == 0:
        return per_pair, per_pair
    return ELIMINATION_SHARE * per_pair, (1.0 - ELIMINATION_SHARE) * per_pair


def pick_queries(adaptivity: str, steps: int, candidates: int, other_outcomes: int = 1) -> int:
    """Picks a test set's union bound covers when each released pick is one of k + extra symbols.

    A released answer names one of the ``candidates`` or says "no pick" (``other_outcomes``
    symbols beyond the k: 1 for "no certificate"; 2 if a "labels late" state is visible too), so
    under the adaptive modes the transcript tree is m-ary, ``m = k + other_outcomes``:
    ``sum_{s<H} m^s`` nodes under ``full`` (:func:`conditions.sequential.transcript_queries`),
    H under ``none``. Each pick then runs at ``reliability = 1 - delta / queries``. (``passes``
    has no meaning for a pick, and ``firstChange`` none until "a change" is defined for picks.)
    """
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates must be an integer >= 1, got {candidates!r}")
    if other_outcomes < 0:
        raise ValueError(f"other_outcomes must be >= 0, got {other_outcomes!r}")
    if adaptivity not in ("none", "full"):
        raise ValueError(f"adaptivity for picks must be 'none' or 'full', got {adaptivity!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return transcript_queries(adaptivity, steps, outcomes=max(2, candidates + other_outcomes))


def pick_reliability(reliability: float, adaptivity: str, steps: int, candidates: int, **kw) -> float:
    """The reliability one pick runs at when a test set of ``reliability`` serves ``steps`` picks."""
    return 1.0 - (1.0 - reliability) / pick_queries(adaptivity, steps, candidates, **kw)


def _check_parameters(candidates: int, reliability: float, tolerance: float) -> None:
    if candidates < 1:
        raise ValueError(f"predictions must hold at least one candidate, got {candidates}")
    if isinstance(reliability, bool) or not isinstance(reliability, (int, float)) \
            or not 0 < reliability < 1:
        raise ValueError(f"reliability must be in (0, 1), got {reliability!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")


class StakeMixture:
    """log E for threshold c from counts (plus, minus, zero): the mixture over a stake grid."""

    def __init__(self, c: float):
        top = 0.98 / (1.0 + c)
        lam = np.geomspace(5e-3 * top, top, _GRID)
        self.up = np.log1p(lam * (1.0 - c))
        self.down = np.log1p(-lam * (1.0 + c))
        self.zero = np.log1p(-lam * c)
        self.log_w = -math.log(_GRID)

    def log_e(self, plus, minus, zero) -> np.ndarray:
        plus, minus, zero = (np.asarray(v, dtype=np.float64)[..., None] for v in (plus, minus, zero))
        terms = plus * self.up + minus * self.down + zero * self.zero
        return np.logaddexp.reduce(terms, axis=-1) + self.log_w


def _codes(predictions, labels, known):
    """Predictions and labels as small integers (equal values, equal codes; -1: no model's label)."""
    pred = np.asarray(predictions)
    if pred.ndim != 2:
        raise ValueError(f"predictions must be k x N (one row per candidate), got shape {pred.shape}")
    k, n = pred.shape
    lab = np.asarray(labels)
    known = np.asarray(known)
    if lab.shape != (n,):
        raise ValueError(f"labels must have one entry per row ({n}), got shape {lab.shape}")
    if known.shape != (n,) or known.dtype != bool:
        raise ValueError(f"known must be a boolean mask with one entry per row ({n}), "
                         f"got shape {known.shape} and dtype {known.dtype}")
    try:
        values, inverse = np.unique(pred.ravel(), return_inverse=True)
    except TypeError as exc:
        raise ValueError(f"predictions must be mutually comparable labels: {exc}") from None
    codes = inverse.reshape(k, n).astype(np.int64)
    label_codes = np.full(n, -1, dtype=np.int64)
    if known.any():
        given = lab[known]
        try:
            at = np.searchsorted(values, given)
        except TypeError as exc:
            raise ValueError(f"labels must be comparable with the predictions: {exc}") from None
        at = np.clip(at, 0, len(values) - 1)
        hit = values[at] == given
        label_codes[np.flatnonzero(known)] = np.where(hit, at, -1)
    return codes, label_codes


def _check_order(order, n: int) -> np.ndarray:
    order = np.asarray(order)
    if order.shape != (n,) or not np.issubdtype(order.dtype, np.integer) \
            or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"order must be a permutation of the {n} rows (from the secret fixed at "
                         f"registration, e.g. conditions.sequential.row_order), got shape "
                         f"{order.shape} and dtype {order.dtype}")
    return order.astype(np.int64)


def pick(predictions, labels, known, reliability: float = 0.95, tolerance: float = 0.0, *,
         order, first_batch: int = 64, growth: float = 0.5) -> PickResult:
    """Certify a best model among the k rows of ``predictions`` (see the module docstring).

    ``predictions`` is k x N (any label type, compared with ==); ``labels[r]`` is row r's label
    where ``known[r]``; ``order`` is the secret reading order (a permutation of the N rows fixed
    at registration: never derive it from the models, the predictions or anything public).
    ``first_batch`` and ``growth`` size the label request (:func:`conditions.sequential.label_request`).

    With probability at least ``reliability`` a returned pick is a best model on the data's
    distribution, or within ``tolerance`` of its accuracy.
    """
    codes, label_codes = _codes(predictions, labels, known)
    k, n = codes.shape
    _check_parameters(k, reliability, tolerance)
    order = _check_order(order, n)
    return _Race(codes[:, order], label_codes[order], np.asarray(known)[order], order,
                 float(reliability), float(tolerance)).run(first_batch, growth)


class _Race:
    """The replay: rows in reading order, one leader and its active pairs at a time."""

    def __init__(self, p, y, known, order, reliability, tolerance):
        self.p, self.y, self.known, self.order = p, y, known, order
        self.k, self.n = p.shape
        self.reliability, self.tolerance = reliability, tolerance
        alpha_a, alpha_b = pair_alphas(self.k, reliability, tolerance)
        self.level_a, self.level_b = math.log(1 / alpha_a), math.log(1 / alpha_b)
        self.mix_a = StakeMixture(0.0)
        self.mix_b = StakeMixture(-tolerance) if tolerance > 0 else None
        self.wins = np.zeros((self.k, self.k), dtype=np.int64)  # i right, j wrong, at active times
        self.zero = np.zeros((self.k, self.k), dtype=np.int64)  # x = 0 at active times
        self.close = np.zeros((self.k, self.k), dtype=bool)  # B_ij crossed
        self.alive = np.ones(self.k, dtype=bool)
        self.right = np.zeros(self.k, dtype=np.int64)  # right on the labelled rows read
        self.labels = 0

    def _leader(self) -> int:
        score = np.where(self.alive, self.right, -1)
        return int(np.argmax(score))

    def _partners(self, h: int) -> np.ndarray:
        partners = self.alive.copy()
        partners[h] = False
        if self.mix_b is not None:
            partners &= ~self.close[h]
        return np.flatnonzero(partners)

    def _disagree(self, h: int, partners: np.ndarray, start: int, stop: int) -> np.ndarray:
        return (self.p[partners, start:stop] != self.p[h, start:stop]).any(axis=0)

    def _next_needed(self, h: int, partners: np.ndarray, pos: int) -> int:
        width = _FIRST_SCAN
        while pos < self.n:
            stop = min(self.n, pos + width)
            hit = np.flatnonzero(self._disagree(h, partners, pos, stop))
            if len(hit):
                return pos + int(hit[0])
            pos, width = stop, width * 4
        return self.n

    def _result(self, status, pick, rows, request=()):
        return PickResult(pick, status, tuple(int(i) for i in np.flatnonzero(self.alive)),
                          self.labels, int(rows), tuple(int(r) for r in request), self.k,
                          self.reliability, self.tolerance)

    def _certified(self, h: int) -> bool:
        if self.alive.sum() == 1:
            return True
        if self.mix_b is None:
            return False
        others = self.alive.copy()
        others[h] = False
        return bool(self.close[h, others].all())

    def _update_close(self, h: int, partners: np.ndarray) -> None:
        if self.mix_b is None or not len(partners):
            return
        log_b = self.mix_b.log_e(self.wins[h, partners], self.wins[partners, h], self.zero[h, partners])
        self.close[h, partners] |= log_b >= self.level_b

    def run(self, first_batch: int, growth: float) -> PickResult:
        pos = 0
        while True:
            h = self._leader()
            if self._certified(h):
                return self._result("picked", h, pos)
            partners = self._partners(h)
            t = self._next_needed(h, partners, pos)
            if t > pos:  # rows on which every active pair agrees: x = 0, no label needed
                self.zero[h, partners] += t - pos
                self.zero[partners, h] += t - pos
                self._update_close(h, partners)
                if self._certified(h):
                    return self._result("picked", h, t)
            if t >= self.n:
                return self._result("exhausted", None, self.n)
            if not self.known[t]:
                need = np.zeros(self.n, dtype=bool)
                need[t:] = self._disagree(h, partners, t, self.n)
                at = label_request(need, self.known, t, self.labels, first_batch, growth)
                return self._result("awaiting labels", None, t, self.order[at])
            self._read(h, partners, t)
            pos = t + 1

    def _read(self, h: int, partners: np.ndarray, t: int) -> None:
        right = self.p[:, t] == self.y[t]
        self.labels += 1
        self.right += right
        rh, rj = right[h], right[partners]
        self.wins[h, partners] += rh & ~rj
        self.wins[partners, h] += rj & ~rh
        same = rj == rh
        self.zero[h, partners] += same
        self.zero[partners, h] += same
        moved = partners[rh != rj]  # only pairs with x != 0 on this row gain evidence
        if len(moved):
            w_hj, w_jh = self.wins[h, moved], self.wins[moved, h]
            beaten = self.mix_a.log_e(w_hj, w_jh, 0) >= self.level_a  # h better than j
            beats = self.mix_a.log_e(w_jh, w_hj, 0) >= self.level_a  # j better than h
            self.alive[moved[beaten]] = False
            if beats.any():
                self.alive[h] = False
        self._update_close(h, partners[self.alive[partners]])
