"""scripts/finetune_cnn_baseline.py: the fine-tuned CNN baseline, end to end on a small corpus."""

import json

import numpy as np
import pytest

from tests.helpers import interrupt_after_first, load_script


@pytest.fixture(scope="module")
def baseline():
    return load_script("finetune_cnn_baseline")


def test_batches_hold_one_shape_each_and_every_image_once(baseline):
    shapes = [(3, 224, 224), (3, 140, 224), (3, 224, 224), (3, 86, 224), (3, 140, 224), (3, 224, 224)]
    for rng in (None, np.random.default_rng(0)):
        batches = baseline.same_size_batches(shapes, 2, rng)
        assert sorted(i for b in batches for i in b) == list(range(len(shapes)))
        assert all(len(b) <= 2 and len({shapes[i] for i in b}) == 1 for b in batches)


def test_the_test_set_comes_from_its_own_file_and_training_from_d1(baseline, small_corpus):
    images = baseline.corpus_images(small_corpus)
    tests = json.loads((small_corpus / "tests" / "iqa.json").read_text())
    assert len(images["test"]) == len(tests)
    assert all(f.is_file() for rows in images.values() for f, _ in rows)
    assert {f.parent.parent.name for f, _ in images["train"]} == {"train"}
    assert {f.parent.parent.name for f, _ in images["test"]} == {"test"}


@pytest.mark.slow
def test_fine_tunes_and_scores_each_epoch(baseline, small_corpus, teacher_weights, tmp_path):
    result = baseline.main(["--corpus", str(small_corpus), "--weights", str(teacher_weights), "--epochs", "2",
                            "--batch-size", "8", "--out", str(tmp_path)])
    assert [row["epoch"] for row in result["epochs"]] == [1, 2]
    for row in result["epochs"]:
        for split in ("val", "test"):
            assert -1.0 <= row[split]["srcc"] <= 1.0 and -1.0 <= row[split]["plcc"] <= 1.0
    assert json.loads((tmp_path / "log.json").read_text()) == result
    predictions = np.load(tmp_path / "test_predictions_epoch2.npy")
    assert predictions.shape == (result["images"]["test"],) and np.isfinite(predictions).all()
    assert (tmp_path / "curve.png").stat().st_size > 0


@pytest.mark.slow
def test_an_interrupted_run_resumes_at_its_last_epoch(baseline, small_corpus, tmp_path, monkeypatch):
    args = ["--corpus", str(small_corpus), "--epochs", "2", "--batch-size", "8", "--limit", "24"]
    whole = baseline.main(args + ["--out", str(tmp_path / "whole")])
    with pytest.raises(KeyboardInterrupt), interrupt_after_first(monkeypatch, baseline, "save_state"):
        baseline.main(args + ["--out", str(tmp_path / "cut")])
    assert not (tmp_path / "cut" / "log.json").exists()
    resumed = baseline.main(args + ["--out", str(tmp_path / "cut")])
    assert resumed["epochs"] == whole["epochs"]  # the second epoch continues exactly where the first stopped
    with pytest.raises(SystemExit, match="other settings"):
        baseline.main(args[:-1] + ["12", "--out", str(tmp_path / "cut")])
