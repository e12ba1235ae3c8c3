"""95% intervals over held-out cases: a seeded cluster bootstrap (cases resampled, their slices pooled) and ROC AUC.

Why a cluster bootstrap: slices of one case are not independent (same anatomy, same lesions), so resampling
slices would make a run's figure look far more certain than it is. Each bootstrap replicate draws the cases with
replacement and recomputes the statistic on all slices of the drawn cases, exactly as the point estimate is
computed on all slices of all cases; so the point estimate equals what the bundle itself reports (e.g. MONAI
`MeanDice` = nan-mean over slices). The generator is `np.random.default_rng(seed)`: same inputs and seed, same
interval. Paired differences reuse one case draw for both models, which is what makes "+0.25" meaningful.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

#: Bootstrap replicates and level; 2000 replicates put the Monte-Carlo error of a 95% bound near 0.005 Dice.
N_BOOT = 2000
LEVEL = 0.95

Statistic = Callable[[list[np.ndarray]], float]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided interval, and how many cases (clusters) carried it."""

    value: float
    low: float
    high: float
    cases: int

    def format(self, digits: int = 3, signed: bool = False) -> str:
        """`0.452 [0.381, 0.520]` (`signed`: `+0.052 [-0.011, +0.120]`, for differences), or `n/a` when missing."""
        if not np.isfinite(self.value):
            return "n/a"
        f = f"{'+' if signed else ''}.{digits}f"
        return f"{self.value:{f}} [{self.low:{f}}, {self.high:{f}}]"

    def as_dict(self) -> dict[str, float | int | None]:
        """The interval as JSON (NaN -> None)."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, float | int | None]) -> Interval:
        """Back from `as_dict` (None -> NaN)."""
        nan = float("nan")
        return cls(*(nan if d.get(k) is None else float(d[k]) for k in ("value", "low", "high")), int(d["cases"] or 0))


def pooled_nanmean(groups: list[np.ndarray]) -> float:
    """Mean of every finite value of every group (NaN = the metric is undefined there, e.g. no infection)."""
    values = np.concatenate([np.asarray(g, float).ravel() for g in groups]) if groups else np.zeros(0)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney U statistic (ties count half); NaN when one class is absent."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pooled_auc(groups: list[np.ndarray]) -> float:
    """ROC AUC over the pooled rows of (score, label) groups, each an (n, 2) array."""
    rows = np.concatenate([np.asarray(g, float).reshape(-1, 2) for g in groups]) if groups else np.zeros((0, 2))
    return roc_auc(rows[:, 0], rows[:, 1])


def _bounds(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile bounds of the finite bootstrap replicates (NaN when none is finite)."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))


def _has_value(values: np.ndarray) -> bool:
    """Whether a case holds at least one finite value."""
    return bool(np.isfinite(np.asarray(values, float)).any())


def _draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) case indices drawn with replacement from a seeded generator."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def cluster_bootstrap(
    groups: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    statistic: Statistic = pooled_nanmean,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """`statistic` of all cases with a percentile interval from resampling whole cases (groups) with replacement.

    Cases whose values are all NaN still take part in the draw (they are held-out cases too), they just add no
    value; `cases` counts the cases that do."""
    arrays = list(groups.values()) if isinstance(groups, Mapping) else list(groups)
    if not arrays:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    value = statistic(arrays)
    reps = np.array([statistic([arrays[i] for i in draw]) for draw in _draws(len(arrays), n_boot, seed)])
    low, high = _bounds(reps, level)
    used = sum(_has_value(a) for a in arrays)
    return Interval(value, low, high, used)


def paired_difference(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    statistic: Statistic = pooled_nanmean,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """statistic(a) - statistic(b) over the cases both hold, with an interval from one shared case draw per
    replicate (a paired cluster bootstrap: case difficulty cancels); `cases` counts those with values in both."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    xa, xb = [a[k] for k in keys], [b[k] for k in keys]
    value = statistic(xa) - statistic(xb)
    reps = np.array(
        [statistic([xa[i] for i in d]) - statistic([xb[i] for i in d]) for d in _draws(len(keys), n_boot, seed)]
    )
    low, high = _bounds(reps, level)
    both = sum(_has_value(a[k]) and _has_value(b[k]) for k in keys)
    return Interval(value, low, high, both)
