"""Gaussian-process models of candidate quality, one per tenant, updated incrementally.

A tenant's qualities over the candidate catalogue are modelled as a draw from
N(mu, K): ``mu[c]`` is candidate c's mean quality and ``K`` the covariance of candidate
qualities, both learned from *other* tenants' results (the prior). Observing a few of a
tenant's candidates then moves the posterior of all of them: a tenant on which a linear
model does well will probably do well with the other linear models, and a dataset that is
hard for one candidate is hard for all (the large common component of ``K``).

Cost of an update. The scheduler asks for posteriors far more often than results arrive,
and only the tenant that got a result changes, so each tenant keeps

* ``L``: the Cholesky factor of ``K[S, S] + noise * I`` over its observed candidates S,
* ``V = L^{-1} K[S, :]`` and ``alpha = L^{-1} (y - mu[S])``,
* the posterior mean ``mu + V.T @ alpha`` and variance ``diag(K) - sum(V**2, axis=0)``.

A new observation appends one row to each of them (a rank-one extension of the factor,
``O(n^2 + n C)`` for n observations and C candidates); nothing is refitted. A tenant's
prior mean can be shifted (``shift_prior_mean``, used when there is no prior and
candidate effects are learned online): only alpha and the mean are recomputed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular

# Observations are validation scores, themselves noisy at about this standard deviation
# (a few hundred validation examples); it also keeps K[S, S] well conditioned when two
# candidates are near duplicates.
DEFAULT_NOISE_SD = 0.01

# Without a prior: qualities around 0.75 with a large shared tenant-level component
# (sd 0.15, "how hard is this dataset") and an independent candidate-level one (sd 0.08).
FALLBACK_MEAN = 0.75
FALLBACK_TENANT_SD = 0.15
FALLBACK_CANDIDATE_SD = 0.08

# Fewer prior tenants than this and an empirical covariance says nothing useful.
MIN_PRIOR_TENANTS = 3


# Below this many prior tenants leave-one-out selection is itself too noisy: Ledoit-Wolf.
MIN_CALIBRATION_TENANTS = 8
CALIBRATION_OBSERVED = (1, 3, 6)
CALIBRATION_CLIP = (0.2, 3.0)
SHRINKAGE_GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def _fill(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means of q (tenants x candidates, NaN = missing) and q with NaN set to them."""
    with warnings.catch_warnings():  # a candidate no tenant ran yet: all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(q, axis=0)
        overall = np.nanmean(q) if np.isfinite(q).any() else FALLBACK_MEAN
    mean = np.where(np.isnan(mean), overall, mean)
    return mean, np.where(np.isnan(q), mean[None, :], q)


def _floor(cov: np.ndarray) -> np.ndarray:
    # A floor on every variance: a candidate that scored the same on every prior tenant
    # still need not score that on the next one.
    floor = (0.25 * DEFAULT_NOISE_SD) ** 2 + 1e-4
    return cov + np.diag(np.maximum(floor - np.diag(cov), 0.0))


def _constant_correlation(cov: np.ndarray) -> np.ndarray:
    """Ledoit and Wolf's (2003) shrinkage target: own variances, one average correlation."""
    sd = np.sqrt(np.maximum(np.diag(cov), 1e-12))
    corr = cov / np.outer(sd, sd)
    c = cov.shape[0]
    rbar = (corr.sum() - c) / (c * (c - 1)) if c > 1 else 0.0
    target = rbar * np.outer(sd, sd)
    np.fill_diagonal(target, np.diag(cov))
    return target


def _ledoit_wolf(x: np.ndarray) -> np.ndarray:
    from sklearn.covariance import ledoit_wolf

    return ledoit_wolf(x)[0]


def _select(q: np.ndarray, noise: float, seed: int = 0) -> tuple[float, float]:
    """Shrinkage intensity and variance scale with the best leave-one-out predictive fit.

    Each prior tenant in turn is predicted by a model estimated from the others (sample
    covariance shrunk by ``lam`` towards the constant-correlation target) after observing
    1, 3 or 6 of its candidates at random, as the scheduler will use the prior. For each
    intensity on a grid, the held-out errors' Gaussian log likelihood at its best
    variance scale s^2 = mean(z^2) is -1/2 sum(log v) - n/2 log(mean z^2) (+ const), z the
    standardised errors and v the predicted variances; the best intensity wins, with its
    s. With many prior tenants the plain sample covariance predicts best, with few a
    shrunk one does.
    """
    rng = np.random.default_rng(seed)
    sum_log_v = np.zeros(len(SHRINKAGE_GRID))
    sum_z2 = np.zeros(len(SHRINKAGE_GRID))
    n = 0
    for i in range(q.shape[0]):
        have = np.flatnonzero(~np.isnan(q[i]))
        if have.size < 2:
            continue
        mean, filled = _fill(np.delete(q, i, axis=0))
        sample = np.cov(filled, rowvar=False, ddof=1)
        target = _constant_correlation(sample)
        k = min(CALIBRATION_OBSERVED[i % len(CALIBRATION_OBSERVED)], have.size - 1)
        obs = rng.choice(have, size=k, replace=False)
        rest = np.setdiff1d(have, obs)
        n += rest.size
        for g, lam in enumerate(SHRINKAGE_GRID):
            cov = _floor((1 - lam) * sample + lam * target)
            factor = cho_factor(cov[np.ix_(obs, obs)] + noise * np.eye(k), lower=True)
            cross = cov[np.ix_(obs, rest)]
            m = mean[rest] + cross.T @ cho_solve(factor, q[i, obs] - mean[obs])
            v = np.maximum(np.diag(cov)[rest] - np.sum(cross * cho_solve(factor, cross), axis=0), 1e-12)
            sum_log_v[g] += float(np.sum(np.log(v)))
            sum_z2[g] += float(np.sum((q[i, rest] - m) ** 2 / v))
    if n == 0:
        return 0.5, 1.0
    ms = sum_z2 / n
    score = -0.5 * sum_log_v - 0.5 * n * np.log(ms)
    g = int(np.argmax(score))
    return SHRINKAGE_GRID[g], float(np.clip(np.sqrt(ms[g]), *CALIBRATION_CLIP))


@dataclass
class CandidatePrior:
    """Mean and covariance of candidate qualities for a tenant nobody has observed yet.

    Candidates the prior has never seen can be added later (``add``): one is modelled as
    the average known candidate plus an independent part of the average candidate-specific
    variance, so a tenant's level still carries over to it.
    """

    names: list[str] = field(default_factory=list)
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    noise: float = DEFAULT_NOISE_SD**2
    learned: bool = False  # True when mean/cov come from other tenants' results
    shrinkage: float | None = None  # chosen intensity, when selected by cross-validation
    scale: float = 1.0  # variance calibration applied (sd multiplier)

    def __post_init__(self) -> None:
        self.index = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def fallback(cls, names: Sequence[str] = ()) -> "CandidatePrior":
        prior = cls()
        for name in names:
            prior.add(name)
        return prior

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, str, float, float]],
        calibrate: bool = True,
        noise: float | None = None,
    ) -> "CandidatePrior":
        """Learn mean and covariance from (tenant, candidate, quality, cost) rows.

        A candidate missing for a tenant is filled with that candidate's mean first. The
        covariance is the sample covariance over tenants shrunk towards a constant-
        correlation target, the intensity chosen by leave-one-tenant-out prediction (see
        ``_select``), then kernel and noise scaled by s^2 so that those held-out
        predictions have standardised errors of mean square 1. Scaling both leaves every
        posterior mean unchanged and multiplies every posterior variance by s^2: it fixes
        the model's *confidence*, which expected improvement depends on. With fewer than
        MIN_CALIBRATION_TENANTS prior tenants (or ``calibrate=False``): Ledoit-Wolf,
        unscaled.
        """
        tenants: dict[str, int] = {}
        names: dict[str, int] = {}
        cells: list[tuple[int, int, float]] = []
        for tenant, candidate, quality, _cost in rows:
            t = tenants.setdefault(tenant, len(tenants))
            c = names.setdefault(candidate, len(names))
            cells.append((t, c, float(quality)))
        q = np.full((len(tenants), len(names)), np.nan)
        for t, c, y in cells:
            q[t, c] = y
        if len(tenants) < MIN_PRIOR_TENANTS:
            prior = cls.fallback(list(names))
            if cells:  # still use what the few rows say about the level of each candidate
                prior.mean = np.nanmean(q, axis=0)
            return prior
        noise = DEFAULT_NOISE_SD**2 if noise is None else noise
        mean, filled = _fill(q)
        if calibrate and len(tenants) >= MIN_CALIBRATION_TENANTS:
            lam, scale = _select(q, noise)
            sample = np.cov(filled, rowvar=False, ddof=1)
            cov = _floor((1 - lam) * sample + lam * _constant_correlation(sample))
            s2 = scale**2
            prior = cls(names=list(names), mean=mean, cov=cov * s2, noise=noise * s2, learned=True)
            prior.shrinkage, prior.scale = lam, scale
            return prior
        prior = cls(names=list(names), mean=mean, cov=_floor(_ledoit_wolf(filled)), noise=noise, learned=True)
        return prior

    def add(self, name: str, like: dict[int, float] | None = None) -> int:
        """Index of candidate ``name``, adding it (see class docstring) when new.

        ``like``: weights over known candidates (indices) that the new one resembles, e.g. the
        nearby configurations of its family (``add_like``). It is then modelled as their
        weighted average plus an independent part, f_new = sum_i w_i f_i + e: mean sum w_i mu_i,
        covariances K w, variance w'Kw + var(e), positive semi-definite by construction.
        """
        i = self.index.get(name)
        if i is not None:
            return i
        c = len(self.names)
        if like and c:
            idx = np.array(list(like), dtype=int)
            w = np.array([like[k] for k in like], dtype=float)
            w = w / w.sum()
            m = float(self.mean[idx] @ w)
            cross = self.cov[:, idx] @ w
            own = (FALLBACK_CANDIDATE_SD / 2) ** 2 if self.learned else FALLBACK_CANDIDATE_SD**2
            var = float(w @ self.cov[np.ix_(idx, idx)] @ w) + own
            return self._append(name, m, cross, var)
        if c == 0:
            m = FALLBACK_MEAN
            var = FALLBACK_TENANT_SD**2 + FALLBACK_CANDIDATE_SD**2
            cross = np.zeros(0)
        elif self.learned:
            # The new candidate is modelled as the average known candidate plus an
            # independent part: f_new = mean_c f_c + e. Its covariances are then the row
            # means of K and the matrix stays positive semi-definite by construction.
            m = float(np.mean(self.mean))
            cross = self.cov.mean(axis=1)
            shared = float(cross.mean())
            own = max(float(np.mean(np.diag(self.cov))) - shared, (FALLBACK_CANDIDATE_SD / 2) ** 2)
            var = shared + own
        else:
            m = FALLBACK_MEAN
            var = FALLBACK_TENANT_SD**2 + FALLBACK_CANDIDATE_SD**2
            cross = np.full(c, FALLBACK_TENANT_SD**2)
        return self._append(name, m, cross, var)

    def add_like(self, name: str, family: str, point, known: dict[str, tuple[str, np.ndarray]],
                 length: float = 0.3) -> int:
        """Add configuration ``name`` of ``family`` at ``point`` (its hyperparameters in [0, 1]^d).

        ``known``: for candidate names, (family, point). The new configuration is modelled
        after the prior's configurations of the same family, weighted by
        exp(-|point - p_i|^2 / (2 length^2)) (``add`` with ``like``); with none of its family in
        the prior, as the average known candidate.
        """
        if name in self.index:
            return self.index[name]
        point = np.asarray(point, dtype=float)
        like = {}
        for other, (fam, p) in known.items():
            j = self.index.get(other)
            if j is None or fam != family or np.shape(p) != point.shape:
                continue
            like[j] = math.exp(-float(np.sum((np.asarray(p) - point) ** 2)) / (2 * length**2))
        total = sum(like.values())
        return self.add(name, like if total > 1e-12 else None)

    def _append(self, name: str, m: float, cross: np.ndarray, var: float) -> int:
        c = len(self.names)
        cov = np.empty((c + 1, c + 1))
        cov[:c, :c] = self.cov
        cov[c, :c] = cross
        cov[:c, c] = cross
        cov[c, c] = var
        self.cov = cov
        self.mean = np.append(self.mean, m)
        self.names.append(name)
        self.index[name] = c
        return c

    def __len__(self) -> int:
        return len(self.names)


class TenantGP:
    """Posterior over one tenant's candidate qualities, kept up to date incrementally."""

    def __init__(self, prior: CandidatePrior):
        self.prior = prior
        self.observed: list[int] = []
        self.y: list[float] = []
        self._L = np.zeros((0, 0))
        self._V = np.zeros((0, len(prior)))
        self._alpha = np.zeros(0)
        self._shift = np.zeros(len(prior))  # tenant-specific offset of the prior mean
        self._mean = prior.mean.copy()
        self._var = np.diag(prior.cov).copy()

    def _mu(self) -> np.ndarray:
        return self.prior.mean + self._shift

    def shift_prior_mean(self, shift: np.ndarray) -> None:
        """Use ``prior.mean + shift`` as this tenant's prior mean from now on.

        The factorisation does not depend on the mean: only alpha and the posterior mean
        are recomputed, O(n^2 + nC).
        """
        self._sync()
        self._shift = np.asarray(shift, dtype=float).copy()
        mu = self._mu()
        if self.observed:
            resid = np.asarray(self.y) - mu[self.observed]
            self._alpha = solve_triangular(self._L, resid, lower=True)
            self._mean = mu + self._V.T @ self._alpha
        else:
            self._mean = mu.copy()

    # -- candidates added to the prior after this tenant was created -----------------
    def _sync(self) -> None:
        c_old, c_new = self._V.shape[1], len(self.prior)
        if c_old == c_new:
            return
        new = np.arange(c_old, c_new)
        k_sn = self.prior.cov[np.ix_(self.observed, new)]
        v_new = (
            solve_triangular(self._L, k_sn, lower=True) if self.observed else np.zeros((0, new.size))
        )
        self._V = np.hstack([self._V, v_new])
        self._shift = np.append(self._shift, np.zeros(new.size))
        self._mean = np.append(self._mean, self.prior.mean[new] + v_new.T @ self._alpha)
        self._var = np.append(self._var, np.diag(self.prior.cov)[new] - np.sum(v_new**2, axis=0))

    def observe(self, c: int, quality: float, noise: float | None = None) -> None:
        """Condition on candidate index ``c`` having scored ``quality`` (a rank-one step).

        ``noise``: this observation's noise variance, when it is not the prior's (a score
        extrapolated from a partial trial is known less precisely than a measured one).
        """
        self._sync()
        K, S = self.prior.cov, self.observed
        k_sc = K[S, c]
        l_row = solve_triangular(self._L, k_sc, lower=True) if S else np.zeros(0)
        noise = self.prior.noise if noise is None else float(noise)
        d2 = K[c, c] + noise - float(l_row @ l_row)
        d = math.sqrt(max(d2, 1e-12))
        n = len(S)
        L = np.zeros((n + 1, n + 1))
        L[:n, :n] = self._L
        L[n, :n] = l_row
        L[n, n] = d
        v_row = (K[c, :] - l_row @ self._V) / d
        a = (quality - self.prior.mean[c] - self._shift[c] - float(l_row @ self._alpha)) / d
        self._L = L
        self._V = np.vstack([self._V, v_row])
        self._alpha = np.append(self._alpha, a)
        self._mean = self._mean + v_row * a
        self._var = self._var - v_row**2
        self.observed.append(c)
        self.y.append(float(quality))

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance of every candidate's quality (cached arrays)."""
        self._sync()
        return self._mean, np.maximum(self._var, 1e-12)

    def fantasy_variance(self, running: Sequence[int]) -> np.ndarray:
        """Posterior variance after also observing ``running`` at any values.

        A GP's variance does not depend on the observed values, so this is the variance
        under the "kriging believer" fantasy (running trials return their posterior mean):
        the mean is unchanged and candidates correlated with a running one lose the
        exploration value that trial is about to deliver.
        """
        mean_var = self.posterior()[1]
        if not running:
            return mean_var
        K, R = self.prior.cov, list(running)
        # Covariances conditional on the real observations: K_{.R|S} and K_{RR|S}.
        cross = K[:, R] - self._V.T @ self._V[:, R]
        schur = cross[R, :] + self.prior.noise * np.eye(len(R))
        factor = cho_factor(schur, lower=True)
        reduction = np.sum(cross * cho_solve(factor, cross.T).T, axis=1)
        return np.maximum(mean_var - reduction, 1e-12)


def direct_posterior(prior: CandidatePrior, observed: Sequence[int], y: Sequence[float],
                     noises: Sequence[float] | None = None):
    """Posterior mean and variance by one dense solve (the reference the tests compare to)."""
    K, mu = prior.cov, prior.mean
    S = list(observed)
    if not S:
        return mu.copy(), np.diag(K).copy()
    noise = np.full(len(S), prior.noise) if noises is None else np.asarray(noises, dtype=float)
    kss = K[np.ix_(S, S)] + np.diag(noise)
    factor = cho_factor(kss, lower=True)
    ks = K[S, :]
    mean = mu + ks.T @ cho_solve(factor, np.asarray(y) - mu[S])
    var = np.diag(K) - np.sum(ks * cho_solve(factor, ks), axis=0)
    return mean, var
