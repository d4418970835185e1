"""scripts/probe_tower_readout.py: read-outs of a frozen tower's features, end to end on a small corpus."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_tower_readout")


def test_photo_and_damage_come_from_the_corpus_layout(probe):
    path = "synthetic/images/train/photo-mate-Garden_c3/motion_blur_left_s2.png"
    assert probe.photo_of(path) == "photo-mate-Garden"
    assert probe.damage_of(path) == "motion_blur_left_s2"
    assert probe.photo_of("images/test/scene9000_c0/pristine.png") == "scene9000"
    assert probe.severity_of(path) == 2 and probe.severity_of("images/test/x_c0/pristine.png") == 0


def test_oracle_predicts_the_training_mean_of_each_damage(probe):
    train = [(f"images/train/a_c0/{d}.png", None, m) for d, m in
             [("jpeg_s1", 80.0), ("jpeg_s1", 90.0), ("jpeg_s5", 40.0), ("pristine", 100.0), ("snow_s3", 20.0)]]
    # test images whose pseudo-MOS rises with their damage's training mean: rank-perfect
    test = [("images/test/b_c0/jpeg_s1.png", None, 70.0), ("images/test/b_c0/jpeg_s5.png", None, 30.0),
            ("images/test/b_c0/pristine.png", None, 100.0), ("images/test/b_c0/snow_s3.png", None, 10.0),
            ("images/test/b_c0/fog_s2.png", None, 50.0)]  # a damage never seen in training: left out
    oracle = probe.oracle_of_damage(train, test)
    assert oracle["n"] == 4
    assert oracle["srcc"] == pytest.approx(1.0)


def test_given_the_true_damage_a_read_out_orders_the_test(probe):
    rng = np.random.default_rng(0)
    damages = ["pristine", "jpeg_s1", "jpeg_s3", "jpeg_s5", "snow_s2", "snow_s4"]
    true_mos = {"pristine": 100.0, "jpeg_s1": 80.0, "jpeg_s3": 60.0, "jpeg_s5": 30.0, "snow_s2": 50.0, "snow_s4": 20.0}
    rows = lambda split, n: [(f"images/{split}/p{i}_c0/{d}.png", None, true_mos[d] + rng.normal(0, 1))  # noqa: E731
                             for i in range(n) for d in damages]
    train, test = rows("train", 20), rows("test", 5)
    # features that know nothing of the damage: only the truth can order the test images
    X, Xt = rng.normal(size=(len(train), 4)), rng.normal(size=(len(test), 4))
    truth = probe.given_truth(X, train, Xt, test, train)
    assert truth["damage"]["srcc"] > 0.9
    assert truth["severity"]["srcc"] > 0.4  # severity alone confuses jpeg_s3 with snow_s2 and the like


def test_severity_is_ordered_within_ladders_and_across_images(probe):
    assert probe.distortion_of("images/test/a_c0/motion_blur_left_s2.png") == "motion_blur"
    assert probe.distortion_of("images/test/a_c0/jpeg_s5.png") == "jpeg"
    assert probe.distortion_of("images/test/a_c0/pristine.png") == "pristine"
    rng = np.random.default_rng(1)
    # a feature that is the severity plus the photo's own offset: within one crop the order is exact,
    # across photos the offsets blur it
    rows = lambda split, n: [(f"images/{split}/p{i}_c0/{d}_s{s}.png", None, 0.0, s + off)  # noqa: E731
                             for i, off in enumerate(rng.uniform(-2, 2, n)) for d in ("jpeg", "fog_left")
                             for s in range(1, 6)]
    train, test = rows("train", 60), rows("test", 6)
    X, Xt = np.array([[r[3]] for r in train]), np.array([[r[3]] for r in test])
    order = probe.severity_ordering(X, [r[:3] for r in train], Xt, [r[:3] for r in test])
    assert order["ladders"] == 12 and set(order["by_distortion"]) == {"jpeg", "fog"}
    assert order["within_ladders"] > 0.85
    assert order["across_images"] < order["within_ladders"] - 0.15
    assert all(r["ladders"] == 6 and r["across"] < r["within"] for r in order["by_distortion"].values())


def test_a_constant_read_out_has_no_correlation(probe):
    assert probe.correlation([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == {"srcc": None, "plcc": None, "mean": None}


def test_teacher_features_pool_the_early_blocks(probe, teacher_weights):
    teacher = probe.load_teacher(teacher_weights)
    image = Path(__file__).resolve().parent.parent / "examples" / "hopper.jpg"
    features = probe.teacher_features(teacher, image)
    # mean and spread of each channel of blocks 1, 3 and 6 (16, 24 and 32 channels)
    assert features.shape == (2 * (16 + 24 + 32),)
    assert np.isfinite(features).all() and features[16:32].min() >= 0  # spreads are not negative


@pytest.mark.slow
def test_probe_runs_on_a_small_corpus(probe, small_corpus, tiny_checkpoint, teacher_weights, tmp_path):
    assert probe.main(["--model", str(tiny_checkpoint), "--corpus", str(small_corpus), "--n-train", "80",
                       "--teacher-weights", str(teacher_weights), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "readout.json").read_text())
    assert result["train_images"] == 80
    tables = [result["readouts"], result["teacher"]["readouts"], result["teacher"]["with_tower"]]
    for readout in (r for table in tables for r in table.values()):
        for split in ("val", "photos_left_out", "test"):
            assert readout[split]["srcc"] is None or -1.0 <= readout[split]["srcc"] <= 1.0
    curve = result["test_by_photos"]["curve"]
    assert max(int(k) for k in curve) == result["train_photos"]
    assert result["oracle_of_damage"]["n"] > 0
    assert set(result["tower_given_truth"]) == {"severity", "damage"}
    assert result["severity_ordering"]["ladders"] > 0 and result["severity_ordering"]["by_distortion"]
    assert (tmp_path / "readout_photos.png").stat().st_size > 0
