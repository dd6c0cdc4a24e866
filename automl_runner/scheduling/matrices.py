"""Quality-and-cost matrices and learning curves: loading and checking them, splitting them.

A matrix is a CSV with the header ``tenant,candidate,quality,cost``: one row per trial,
``quality`` the validation score (higher is better) and ``cost`` the training time in
seconds. The real matrices under ``automl_runner/data/`` come from ``bench/build_matrices.py``.

A learning-curve matrix adds the column ``fidelity``: header
``tenant,candidate,fidelity,quality,cost`` (optionally ``resumes``), one row per
(tenant, candidate, fidelity). ``fidelity`` in (0, 1] is the fraction of the full training
budget (boosting rounds, forest trees, epochs, or training rows), ``quality`` the validation
score of the model trained that far and ``cost`` the seconds to train it that far from
nothing. Every (tenant, candidate) needs a row at fidelity 1: those rows are the plain
matrix (``LearningCurves.full``). ``resumes`` (1/0, true/false; default 0) says whether a
trial continued from a lower fidelity picks up where it stopped (warm-started rounds,
trees, epochs: continuing costs the difference of the two costs) or retrains from scratch
(training-row fractions: it costs the whole cost at the higher fidelity). It is a property of
the candidate and must agree on all its rows. ``load_any`` reads either format; a plain
matrix becomes learning curves with only fidelity 1. ``bench/build_curves.py`` builds
``automl_runner/data/real_curves.csv``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import MatrixError

COLUMNS = ("tenant", "candidate", "quality", "cost")
CURVE_COLUMNS = ("tenant", "candidate", "fidelity", "quality", "cost")
#: fidelities closer than this are the same rung (CSV files carry 1/9 as 0.111111)
FIDELITY_TOL = 1e-4
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


@dataclass
class QualityMatrix:
    """Per tenant, per candidate: quality and cost (seconds)."""

    rows: list[tuple[str, str, float, float]] = field(default_factory=list)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.quality: dict[str, dict[str, float]] = {}
        self.cost: dict[str, dict[str, float]] = {}
        for tenant, cand, q, c in self.rows:
            self.quality.setdefault(tenant, {})[cand] = float(q)
            self.cost.setdefault(tenant, {})[cand] = float(c)

    @property
    def tenants(self) -> list[str]:
        return list(self.quality)

    @property
    def candidates(self) -> list[str]:
        seen: dict[str, None] = {}
        for _t, cand, _q, _c in self.rows:
            seen.setdefault(cand)
        return list(seen)

    def best(self, tenant: str) -> float:
        return max(self.quality[tenant].values())

    def subset(self, tenants: Iterable[str]) -> "QualityMatrix":
        keep = set(tenants)
        return QualityMatrix([r for r in self.rows if r[0] in keep], source=self.source)

    def without(self, tenants: Iterable[str]) -> "QualityMatrix":
        drop = set(tenants)
        return QualityMatrix([r for r in self.rows if r[0] not in drop], source=self.source)

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for tenant, cand, q, c in self.rows:
                w.writerow([tenant, cand, f"{q:.6g}", f"{c:.6g}"])

    def __len__(self) -> int:
        return len(self.rows)


def load_matrix(path: str | Path) -> QualityMatrix:
    """Read and check a matrix CSV; any problem raises MatrixError naming file:line and column."""
    path = Path(path)
    f = _open_csv(path)
    rows: list[tuple[str, str, float, float]] = []
    seen: dict[tuple[str, str], int] = {}
    with f:
        reader, names, pos = _read_header(path, f, COLUMNS)
        try:
            for line, record in enumerate(reader, start=2):
                if not record or all(not x.strip() for x in record):
                    continue
                if len(record) < len(names):
                    raise MatrixError(path, f"expected {len(names)} fields, got {len(record)}", line=line)
                tenant = record[pos["tenant"]].strip()
                cand = record[pos["candidate"]].strip()
                for col, val in (("tenant", tenant), ("candidate", cand)):
                    if not val:
                        raise MatrixError(path, f"column {col} is empty", line=line)
                q = _number(path, line, "quality", record[pos["quality"]])
                c = _number(path, line, "cost", record[pos["cost"]])
                if c < 0:
                    raise MatrixError(path, f"column cost must be >= 0 seconds, got {c:g}", line=line)
                key = (tenant, cand)
                if key in seen:
                    raise MatrixError(path, f"duplicate row for tenant {tenant!r}, candidate {cand!r} "
                        f"(first on line {seen[key]})", line=line)
                seen[key] = line
                rows.append((tenant, cand, q, c))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MatrixError(path, f"not a readable CSV line: {exc}", line=reader.line_num) from None
    if not rows:
        raise MatrixError(path, "no rows after the header")
    return QualityMatrix(rows, source=str(path))


def _open_csv(path: Path):
    try:
        return open(path, newline="")
    except OSError as exc:
        raise MatrixError(path, f"cannot read matrix file: {exc.strerror or exc}") from None


def _read_header(path: Path, f, columns) -> tuple:
    """The CSV reader past its header, the header's names, and each required column's index;
    an empty, unreadable or incomplete header is a MatrixError naming the file and line 1."""
    reader = csv.reader(f)
    try:
        header = next(reader)
    except StopIteration:
        raise MatrixError(path, f"empty file; expected the header {','.join(columns)}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise MatrixError(path, f"not a readable CSV file: {exc}", line=1) from None
    names = [h.strip() for h in header]
    missing = [c for c in columns if c not in names]
    if missing:
        raise MatrixError(path, f"missing column(s) {', '.join(missing)}; "
            f"the header must name {','.join(columns)}, got {','.join(names) or '(nothing)'}", line=1)
    return reader, names, {c: names.index(c) for c in columns}


def _number(path: Path, line: int, col: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MatrixError(path, f"column {col} must be a number, got {text.strip()!r}", line=line) from None
    if not math.isfinite(value):
        raise MatrixError(path, f"column {col} must be finite, got {text.strip()!r}", line=line)
    return value


def synthetic(
    tenants: int = 40,
    candidates: int = 30,
    families: int = 6,
    seed: int = 0,
) -> QualityMatrix:
    """A matrix with correlated candidate qualities and costs, shaped like the real ones.

    Each tenant (dataset) has a difficulty level and a low-dimensional "character"; each
    candidate belongs to a family (linear, trees, k-NN, ...) that responds to that
    character, plus its own hyperparameter effect. So qualities are correlated across
    candidates (strongly within a family) and across tenants by the common level. Cost:
    log seconds = dataset size + family cost + candidate cost + noise; the expensive
    families are somewhat better on average, as in practice.
    """
    rng = np.random.default_rng(seed)
    k = 3
    fam = np.arange(candidates) % families
    fam_load = rng.normal(0, 1, (families, k))
    cand_load = fam_load[fam] + rng.normal(0, 0.35, (candidates, k))
    fam_cost = rng.normal(0, 1.2, families)
    fam_quality = 0.02 * fam_cost  # pricier families a little better on average
    cand_cost = fam_cost[fam] + rng.normal(0, 0.5, candidates)
    cand_bias = fam_quality[fam] + rng.normal(0, 0.015, candidates)
    rows = []
    for t in range(tenants):
        level = rng.uniform(0.62, 0.95)
        character = rng.normal(0, 1, k)
        head = 1.0 - level
        spread = rng.uniform(0.02, 0.06)
        size = rng.normal(0.0, 1.0)
        for c in range(candidates):
            q = level + spread * float(cand_load[c] @ character) / math.sqrt(k) + cand_bias[c]
            q += rng.normal(0, 0.006)
            q = float(np.clip(q, 0.3, min(1.0, level + head * 0.9 + 0.02)))
            cost = math.exp(size + cand_cost[c] + rng.normal(0, 0.25))
            rows.append((f"s{t:03d}", f"model{c:02d}", round(q, 6), round(cost, 6)))
    return QualityMatrix(rows, source=f"synthetic(seed={seed})")


def split_tenants(matrix: QualityMatrix, n: int, rng: np.random.Generator) -> tuple[QualityMatrix, QualityMatrix]:
    """``n`` tenants drawn at random to schedule, and the rest as their prior."""
    names = matrix.tenants
    if n > len(names) - 1:
        raise ValueError(f"need at least {n + 1} tenants to schedule {n} with a prior, have {len(names)}")
    chosen = [names[i] for i in rng.choice(len(names), size=n, replace=False)]
    return matrix.subset(chosen), matrix.without(chosen)


def bundled(name: str) -> QualityMatrix:
    """A committed matrix from ``automl_runner/data/`` by file stem (e.g. ``real``)."""
    return load_matrix(DATA_DIR / f"{name}.csv")


def as_rows(matrix: QualityMatrix | Sequence[tuple[str, str, float, float]] | None):
    if matrix is None:
        return None
    return matrix.rows if isinstance(matrix, QualityMatrix) else list(matrix)


# -- learning curves -------------------------------------------------------------------

CurveRow = tuple  # (tenant, candidate, fidelity, quality, cost, resumes)


@dataclass
class LearningCurves:
    """Per tenant and candidate: (fidelity, quality, cost) points, fidelity 1 always among them."""

    rows: list[CurveRow] = field(default_factory=list)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.rows = [tuple(r) + (False,) * (6 - len(r)) for r in self.rows]
        self.points: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
        self.resumes: dict[str, bool] = {}
        for tenant, cand, f, q, c, resumes in self.rows:
            self.points.setdefault(tenant, {}).setdefault(cand, []).append((float(f), float(q), float(c)))
            self.resumes[cand] = bool(resumes)
        for per in self.points.values():
            for pts in per.values():
                pts.sort()

    @property
    def tenants(self) -> list[str]:
        return list(self.points)

    @property
    def candidates(self) -> list[str]:
        return list(self.resumes)

    def full(self) -> QualityMatrix:
        """The plain matrix: the rows at fidelity 1."""
        return QualityMatrix(
            [(t, c, q, cost) for t, c, f, q, cost, _r in self.rows if abs(f - 1.0) <= FIDELITY_TOL],
            source=self.source,
        )

    def fidelities(self, tenant: str, cand: str) -> list[float]:
        return [f for f, _q, _c in self.points[tenant][cand]]

    def at(self, tenant: str, cand: str, fidelity: float) -> tuple[float, float]:
        """(quality, cost) at ``fidelity`` (a fidelity the curve has; KeyError otherwise)."""
        for f, q, c in self.points[tenant][cand]:
            if abs(f - fidelity) <= FIDELITY_TOL:
                return q, c
        raise KeyError((tenant, cand, fidelity))

    def subset(self, tenants: Iterable[str]) -> "LearningCurves":
        keep = set(tenants)
        return LearningCurves([r for r in self.rows if r[0] in keep], source=self.source)

    def without(self, tenants: Iterable[str]) -> "LearningCurves":
        drop = set(tenants)
        return LearningCurves([r for r in self.rows if r[0] not in drop], source=self.source)

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CURVE_COLUMNS + ("resumes",))
            for tenant, cand, fid, q, c, resumes in self.rows:
                w.writerow([tenant, cand, f"{fid:.6g}", f"{q:.6g}", f"{c:.6g}", int(bool(resumes))])

    def __len__(self) -> int:
        return len(self.rows)


def curves_from_matrix(matrix: QualityMatrix) -> LearningCurves:
    return LearningCurves([(t, c, 1.0, q, cost, False) for t, c, q, cost in matrix.rows], source=matrix.source)


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def load_any(path: str | Path) -> LearningCurves:
    """A learning-curve CSV (header with ``fidelity``) or a plain matrix, as learning curves."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            first = f.readline()
    except OSError as exc:
        raise MatrixError(path, f"cannot read matrix file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise MatrixError(path, f"not a readable CSV file: {exc}", line=1) from None
    if "fidelity" in [h.strip() for h in first.strip().split(",")]:
        return load_curves(path)
    return curves_from_matrix(load_matrix(path))


def load_curves(path: str | Path) -> LearningCurves:
    """Read and check a learning-curve CSV; any problem raises MatrixError naming file:line and column."""
    path = Path(path)
    f = _open_csv(path)
    rows: list[CurveRow] = []
    seen: dict[tuple[str, str, float], int] = {}
    first_line: dict[tuple[str, str], int] = {}
    resumes_of: dict[str, tuple[bool, int]] = {}
    with f:
        reader, names, pos = _read_header(path, f, CURVE_COLUMNS)
        res_pos = names.index("resumes") if "resumes" in names else None
        try:
            for line, record in enumerate(reader, start=2):
                if not record or all(not x.strip() for x in record):
                    continue
                if len(record) < len(names):
                    raise MatrixError(path, f"expected {len(names)} fields, got {len(record)}", line=line)
                tenant = record[pos["tenant"]].strip()
                cand = record[pos["candidate"]].strip()
                for col, val in (("tenant", tenant), ("candidate", cand)):
                    if not val:
                        raise MatrixError(path, f"column {col} is empty", line=line)
                fid = _number(path, line, "fidelity", record[pos["fidelity"]])
                if not 0 < fid <= 1:
                    raise MatrixError(path, f"column fidelity must be in (0, 1] (a fraction of the full budget), "
                        f"got {record[pos['fidelity']].strip()}", line=line)
                q = _number(path, line, "quality", record[pos["quality"]])
                c = _number(path, line, "cost", record[pos["cost"]])
                if c < 0:
                    raise MatrixError(path, f"column cost must be >= 0 seconds, got {c:g}", line=line)
                resumes = False
                if res_pos is not None:
                    text = record[res_pos].strip().lower()
                    if text not in _TRUE + _FALSE:
                        raise MatrixError(path, f"column resumes must be 1 or 0 (true or false), got {record[res_pos].strip()!r}", line=line)
                    resumes = text in _TRUE
                    known = resumes_of.setdefault(cand, (resumes, line))
                    if known[0] != resumes:
                        raise MatrixError(path, f"column resumes is {int(resumes)} for candidate {cand!r}, "
                            f"but {int(known[0])} on line {known[1]}; a candidate resumes or not on every row", line=line)
                key = (tenant, cand, round(fid / FIDELITY_TOL))
                if key in seen:
                    raise MatrixError(path, f"duplicate row for tenant {tenant!r}, candidate {cand!r}, fidelity {fid:g} "
                        f"(first on line {seen[key]})", line=line)
                seen[key] = line
                first_line.setdefault((tenant, cand), line)
                rows.append((tenant, cand, fid, q, c, resumes))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MatrixError(path, f"not a readable CSV line: {exc}", line=reader.line_num) from None
    if not rows:
        raise MatrixError(path, "no rows after the header")
    full = {(t, c) for t, c, fid, *_ in rows if abs(fid - 1.0) <= FIDELITY_TOL}
    for key, line in first_line.items():
        if key not in full:
            raise MatrixError(path, f"tenant {key[0]!r}, candidate {key[1]!r} has no row with fidelity 1 "
                "(the full budget); every curve must end there", line=line)
    return LearningCurves(rows, source=str(path))


def split_curves(curves: LearningCurves, n: int, rng: np.random.Generator) -> tuple[LearningCurves, LearningCurves]:
    """``n`` tenants drawn at random to schedule, and the rest as their prior (as ``split_tenants``)."""
    names = curves.tenants
    if n > len(names) - 1:
        raise ValueError(f"need at least {n + 1} tenants to schedule {n} with a prior, have {len(names)}")
    chosen = [names[i] for i in rng.choice(len(names), size=n, replace=False)]
    return curves.subset(chosen), curves.without(chosen)


def synthetic_curves(tenants: int = 40, candidates: int = 12, seed: int = 0,
                     fidelities: Sequence[float] = (1 / 27, 1 / 9, 1 / 3, 1.0)) -> LearningCurves:
    """``synthetic`` with learning curves: even-numbered candidates resume (cost grows with
    fidelity), odd ones do not (trained on a fraction of the rows, cost about that fraction);
    the score climbs to its final value as q_f = q_1 - g (1 - f)^2 + noise, g per trial."""
    base = synthetic(tenants=tenants, candidates=candidates, seed=seed)
    rng = np.random.default_rng(seed + 1)
    order = {c: i for i, c in enumerate(base.candidates)}
    rows = []
    for tenant, cand, q1, c1 in base.rows:
        resumes = order[cand] % 2 == 0
        gap = rng.uniform(0.0, 0.3)
        for f in fidelities:
            if f >= 1.0:
                rows.append((tenant, cand, 1.0, q1, c1, resumes))
                continue
            q = float(np.clip(q1 - gap * (1 - f) ** 2 + rng.normal(0, 0.01), 0.0, 1.0))
            rows.append((tenant, cand, float(f), round(q, 6), round(c1 * f, 6), resumes))
    return LearningCurves(rows, source=f"synthetic_curves(seed={seed})")
