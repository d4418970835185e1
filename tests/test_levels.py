"""Eq. 1 (score → level) and eq. 4/5 (level logits → score), checked exactly."""

import math

import numpy as np
import pytest

from qsit.levels import (
    LEVELS,
    expected_score,
    level_probabilities,
    level_thresholds,
    opinion_spread,
    scores_to_levels,
    soft_level_target,
    to_unit_interval,
)


def test_levels_are_bt500_low_to_high():
    assert LEVELS == ("bad", "poor", "fair", "good", "excellent")


def test_eq1_boundaries_belong_to_the_lower_interval():
    # [0, 100] → thresholds 20, 40, 60, 80; an upper bound is inside its interval.
    assert list(level_thresholds(0, 100)) == [20, 40, 60, 80]
    got = scores_to_levels([0, 20, 20.000001, 40, 40.5, 60, 79.9, 80, 80.1, 100], low=0, high=100)
    assert got == ["bad", "bad", "poor", "poor", "fair", "fair", "good", "good", "excellent", "excellent"]


def test_eq1_range_defaults_to_min_and_max_of_the_scores():
    # m = 10, M = 60 → thresholds 20, 30, 40, 50; the minimum maps to bad, the maximum to excellent.
    assert scores_to_levels([10, 20, 25, 30, 45, 50.5, 60]) == [
        "bad", "bad", "poor", "poor", "good", "excellent", "excellent"
    ]


def test_eq1_on_koniq_like_scale_matches_hand_computed_thresholds():
    scores = np.array([3.91, 88.39, 50.0, 23.4, 61.3])
    low, high = scores.min(), scores.max()
    t = [low + i / 5 * (high - low) for i in range(1, 5)]
    expected = [LEVELS[sum(s > x for x in t)] for s in scores]
    assert scores_to_levels(scores) == expected


@pytest.mark.parametrize(
    "scores, kwargs, message",
    [
        ([1.0, float("nan")], {}, "NaN or infinite"),
        ([1.0, float("inf")], {}, "NaN or infinite"),
        ([3.0, 3.0, 3.0], {}, "two distinct"),
        ([1.0, 2.0], {"low": 5, "high": 5}, "low < high"),
        ([1.0, 2.0], {"low": 6, "high": 5}, "low < high"),
        ([1.0, 120.0], {"low": 0, "high": 100}, "outside"),
        ([], {}, "no scores"),
    ],
)
def test_eq1_bad_input_names_the_problem(scores, kwargs, message):
    with pytest.raises(ValueError, match=message):
        scores_to_levels(scores, **kwargs)


def test_a_single_score_is_fine_with_a_nominal_range():
    assert scores_to_levels([55.0], low=0, high=100) == ["fair"]


def test_eq5_expected_score_by_hand():
    logits = [0.0, 1.0, 2.0, 3.0, 4.0]
    e = [math.exp(x) for x in logits]
    z = sum(e)
    want = sum((i + 1) * v / z for i, v in enumerate(e))
    assert expected_score(logits) == pytest.approx(want, abs=1e-12)


def test_eq5_equal_logits_give_the_middle_and_one_hot_gives_the_level():
    assert expected_score([7.0] * 5) == pytest.approx(3.0)
    assert expected_score([0, 0, 0, 0, 1e4]) == pytest.approx(5.0)
    assert expected_score([1e4, 0, 0, 0, 0]) == pytest.approx(1.0)


def test_eq5_is_stable_for_large_logits():
    big = np.array([1000.0, 1001.0, 1002.0, 1003.0, 1004.0])
    assert expected_score(big) == pytest.approx(expected_score(big - 1000.0), abs=1e-12)
    assert np.isfinite(expected_score(big * 50))


def test_eq5_batch_equals_rows():
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(7, 5)) * 3
    scores = expected_score(batch)
    assert scores.shape == (7,)
    for row, s in zip(batch, scores, strict=True):
        assert expected_score(row) == pytest.approx(s, abs=1e-12)


def test_two_level_good_poor_case():
    # Q-Bench's binary softmax: weights default to 1, 2.
    p_good = 1 / (1 + math.exp(-1.5))
    assert expected_score([0.0, 1.5]) == pytest.approx(1 + p_good)


def test_qsit_script_weights_on_unit_interval():
    logits = np.array([0.3, -1.0, 2.0, 0.5, 1.1])
    # The published script orders Excellent..Bad with weights 1..0.
    p = level_probabilities(logits)
    script = float(np.inner(p[::-1], [1, 0.75, 0.5, 0.25, 0]))
    assert to_unit_interval(expected_score(logits)) == pytest.approx(script, abs=1e-12)


def test_temperature_sharpens_and_flattens():
    logits = [0, 0, 0, 0, 2.0]
    assert expected_score(logits, temperature=0.1) > expected_score(logits) > expected_score(logits, temperature=10)
    with pytest.raises(ValueError, match="temperature"):
        expected_score(logits, temperature=0)


def test_weights_must_match_levels_and_logits_must_be_finite():
    with pytest.raises(ValueError, match="one weight per level"):
        expected_score([0, 1, 2], weights=[1, 2])
    with pytest.raises(ValueError, match="NaN"):
        expected_score([0, float("nan"), 1])
    with pytest.raises(ValueError, match="at least two levels"):
        expected_score([1.0])


def test_spread_is_the_std_of_the_opinion_distribution():
    assert opinion_spread([0, 0, 1, 0, 0]) == pytest.approx(0.0)
    assert opinion_spread([0.5, 0, 0, 0, 0.5]) == pytest.approx(2.0)
    p = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    v = np.arange(1, 6)
    assert opinion_spread(p) == pytest.approx(math.sqrt(p @ (v - p @ v) ** 2))


def test_a_soft_level_target_keeps_the_score_that_eq1_drops():
    scores = np.random.default_rng(0).uniform(0, 100, 500)
    targets = np.array([soft_level_target(s, 0, 100) for s in scores])
    assert np.allclose(targets.sum(1), 1) and (targets >= 0).all()
    # Σ p·i is the score's place on the level scale, and the likeliest level is eq. 1's level
    assert np.allclose(targets @ np.arange(1, 6), np.clip(0.5 + 5 * scores / 100, 1, 5))
    assert [LEVELS[i] for i in targets.argmax(1)] == scores_to_levels(scores, 0, 100)
    assert (np.count_nonzero(targets, axis=1) <= 2).all()


@pytest.mark.parametrize(("score", "expected"), [
    (90, [0, 0, 0, 0, 1]), (100, [0, 0, 0, 0, 1]), (0, [1, 0, 0, 0, 0]), (10, [1, 0, 0, 0, 0]),
    (50, [0, 0, 1, 0, 0]), (80, [0, 0, 0, 0.5, 0.5]), (75, [0, 0, 0, 0.75, 0.25])])
def test_soft_level_targets_by_hand(score, expected):
    assert soft_level_target(score, 0, 100) == pytest.approx(expected)


def test_a_soft_level_target_needs_a_range():
    with pytest.raises(ValueError, match="low < high"):
        soft_level_target(50, 100, 100)
