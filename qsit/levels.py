"""The five rating levels and the maths that joins them to numeric scores.

Q-Align trains a model to *say* one of five levels (ITU-R BT.500) instead of a
number, and reads a number back from the model's probabilities over those
levels:

* training, eq. 1 — a MOS becomes a level by splitting [m, M] into five equal
  intervals (``scores_to_levels``);
* inference, eq. 4/5 — a closed-set softmax over the level-token logits and
  the probability-weighted mean of the level values (``expected_score``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

LEVELS: tuple[str, ...] = ("bad", "poor", "fair", "good", "excellent")
"""Level words from low to high quality; level ``LEVELS[i]`` has value ``i + 1``."""

SCORE_RANGE: tuple[float, float] = (1.0, float(len(LEVELS)))
"""The range of ``expected_score`` with the default weights: 1 (bad) .. 5 (excellent)."""


def level_value(level: str) -> int:
    """The value of a level word (any casing): bad 1 … excellent 5."""
    try:
        return LEVELS.index(level.lower()) + 1
    except ValueError:
        raise ValueError(f"unknown level {level!r}; the levels are {', '.join(LEVELS)}") from None


def level_thresholds(low: float, high: float, n_levels: int = len(LEVELS)) -> np.ndarray:
    """The inner interval boundaries ``m + i/n·(M - m)`` for ``i = 1 .. n-1`` (eq. 1)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"score range must be finite, got low={low}, high={high}")
    if low >= high:
        raise ValueError(f"score range needs low < high, got low={low}, high={high}")
    i = np.arange(1, n_levels)
    return low + i / n_levels * (high - low)


def scores_to_levels(
    scores: Sequence[float] | np.ndarray,
    low: float | None = None,
    high: float | None = None,
    levels: Sequence[str] = LEVELS,
) -> list[str]:
    """Map scores to level words by eq. 1 of Q-Align.

    ``L(s) = levels[i]`` when ``m + (i-1)/n·(M-m) < s <= m + i/n·(M-m)``; the lowest
    score ``m`` itself maps to the first level. ``low``/``high`` (m, M) default to
    the min/max of ``scores`` — pass the training split's scores, or give the
    nominal range of the scale (e.g. 0, 100 for KonIQ) explicitly.

    >>> scores_to_levels([0, 20, 20.01, 50, 100])
    ['bad', 'bad', 'poor', 'fair', 'excellent']
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no scores given")
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} score(s) are NaN or infinite (first at position {first}: {values[first]})"
        )
    if (low is None or high is None) and np.unique(values).size < 2:
        raise ValueError(
            "need at least two distinct scores to derive the range; pass low/high for the nominal range"
        )
    low = float(values.min()) if low is None else float(low)
    high = float(values.max()) if high is None else float(high)
    thresholds = level_thresholds(low, high, len(levels))
    outside = (values < low) | (values > high)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{int(outside.sum())} score(s) fall outside [{low}, {high}] "
            f"(first at position {first}: {values[first]})"
        )
    # searchsorted(side="left") counts thresholds strictly below s, which is
    # exactly the "(lower, upper]" interval rule of eq. 1.
    index = np.searchsorted(thresholds, values, side="left")
    return [levels[i] for i in index]


def level_probabilities(level_logits, temperature: float = 1.0) -> np.ndarray:
    """Closed-set softmax over the level logits (last axis), numerically stable."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = np.asarray(level_logits, dtype=np.float64)
    if logits.ndim == 0 or logits.shape[-1] < 2:
        raise ValueError(f"need logits for at least two levels on the last axis, got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("level logits contain NaN or infinite values")
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def default_weights(n_levels: int) -> np.ndarray:
    """Level values 1..n, low → high (eq. 5)."""
    return np.arange(1, n_levels + 1, dtype=np.float64)


def expected_score(level_logits, weights=None, temperature: float = 1.0):
    """Eq. 4/5: softmax over the level logits, then the probability-weighted level value.

    ``level_logits`` holds one logit per level on its last axis, ordered low →
    high like ``weights`` (default 1..n, so five levels give 1..5 and the
    Q-Bench good/poor pair gives 1..2). A single vector gives a float, a batch
    of shape (B, n) gives an array of B scores.
    """
    probs = level_probabilities(level_logits, temperature)
    w = default_weights(probs.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (probs.shape[-1],):
        raise ValueError(f"need one weight per level ({probs.shape[-1]}), got shape {w.shape}")
    score = probs @ w
    return float(score) if np.ndim(score) == 0 else score


def opinion_spread(probabilities, weights=None) -> np.ndarray | float:
    """Standard deviation of the predicted opinion distribution over the level values."""
    p = np.asarray(probabilities, dtype=np.float64)
    w = default_weights(p.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = p @ w
    var = p @ (w**2) - mean**2
    std = np.sqrt(np.clip(var, 0.0, None))
    return float(std) if np.ndim(std) == 0 else std


def soft_level_target(score: float, low: float, high: float, n_levels: int = len(LEVELS)) -> np.ndarray:
    """Level probabilities (bad … excellent) whose expectation Σ p·i is the score's place on the 1..n scale.

    Eq. 1 puts a score in one of n equal intervals; here the score's position is read at the
    interval's centre (level i's centre → i, the range's ends clipped to 1 and n) and shared
    between the two nearest levels, so a training target keeps what the level word drops: a
    score near the top of "good" asks for some "excellent" too (the idea of DeQA-Score's score
    distributions, Zhu et al. 2025, with no opinion spread to draw on: the narrowest such target).
    """
    if not low < high:
        raise ValueError(f"score range needs low < high, got low={low}, high={high}")
    position = float(np.clip(0.5 + n_levels * (score - low) / (high - low), 1.0, n_levels))
    below = min(int(np.floor(position)), n_levels - 1)
    target = np.zeros(n_levels)
    target[below - 1] = below + 1 - position
    target[below] = position - below
    return target


def to_unit_interval(score, n_levels: int = len(LEVELS)):
    """Rescale a 1..n score to 0..1 (the convention of Q-SiT's published IQA script)."""
    return (np.asarray(score, dtype=np.float64) - 1.0) / (n_levels - 1)


CONCLUSION = re.compile(r"quality of the image is (\w+)", re.IGNORECASE)


def concluded_level(text: str) -> str | None:
    """The level an explanation concludes with ("Overall, the quality of the image is good.")."""
    found = [m.lower() for m in CONCLUSION.findall(text)]
    found = [w for w in found if w in LEVELS]
    return found[-1] if found else None
