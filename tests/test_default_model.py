"""The embedded default model, qsit-tiny: it loads with no --model, its scores follow the maths,
it ranks damage on a photo it never saw, and the model card's figures come from it."""

import json
from pathlib import Path

import numpy as np
import pytest

from qsit.assessor import DEFAULT_MODEL_DIR, resolve_model
from qsit.cli import main
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parent.parent
FIGURES = DEFAULT_MODEL_DIR / "figures.json"


@pytest.fixture(scope="module")
def default_assessor():
    from qsit.assessor import Assessor

    return Assessor.from_pretrained(resolve_model(None), device="cpu")


def test_the_default_model_is_shipped_and_chosen_without_model(monkeypatch):
    monkeypatch.delenv("QSIT_MODEL", raising=False)
    assert resolve_model(None) == str(DEFAULT_MODEL_DIR)
    weights = list(DEFAULT_MODEL_DIR.glob("*.safetensors"))
    assert weights and sum(w.stat().st_size for w in weights) <= 30 * 2**20
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").is_file() and (DEFAULT_MODEL_DIR / "ATTRIBUTION.md").is_file()
    info = json.loads((DEFAULT_MODEL_DIR / "qsit_model.json").read_text())
    # its last stage (the fourth) trained on scoring and descriptions; D3 was in the mix before it
    assert info["preset"] == "qsit" and info["stage"] == "chat"
    assert {"scoring", "interpreting"} <= set(info["kinds"])


def test_scores_are_the_expectation_over_level_probabilities(default_assessor):
    [r] = default_assessor.score([ROOT / "examples" / "hopper.jpg"])
    p = np.array(list(r.probabilities.values()))
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    assert r.score == pytest.approx(float(p @ np.arange(1, 6)), abs=1e-5)


def test_clean_scores_above_heavy_blur_and_noise(default_assessor):
    from evals.targets import default_unseen_photo, monotonicity

    result = monotonicity(default_assessor, default_unseen_photo())
    for key in ("defocus_blur", "gaussian_noise"):
        assert result["distortions"][key]["scores"][-1] < result["clean"] - 0.5, key


def test_a_random_damage_is_scored_as_the_mean_of_its_draws(default_assessor):
    from evals.targets import default_unseen_photo, monotonicity

    result = monotonicity(default_assessor, default_unseen_photo(), draws=3)
    noise = result["distortions"]["gaussian_noise"]
    assert [len(d) for d in noise["draw_scores"]] == [3, 3, 3]
    assert len({round(s, 6) for s in noise["draw_scores"][0]}) == 3  # three different noise patterns
    assert noise["scores"] == pytest.approx([float(np.mean(d)) for d in noise["draw_scores"]])
    assert noise["draws_monotonic"] in (0, 1 / 3, 2 / 3, 1)
    blur = result["distortions"]["defocus_blur"]  # nothing random: scored once
    assert "draw_scores" not in blur and blur["draws_monotonic"] == float(blur["monotonic"])


def test_model_card_rows_recomputed_from_the_checkpoint(default_assessor):
    """The unseen-photo rows of the card (clean score and every distortion × severity), to 1e-3."""
    from evals.targets import default_unseen_photo, monotonicity

    shipped = json.loads(FIGURES.read_text())["monotonicity"]
    now = monotonicity(default_assessor, default_unseen_photo())
    assert now["clean"] == pytest.approx(shipped["clean"], abs=1e-3)
    for key, d in shipped["distortions"].items():
        assert now["distortions"][key]["scores"] == pytest.approx(d["scores"], abs=1e-3)
        assert now["distortions"][key]["monotonic"] == d["monotonic"]
    card = (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"{shipped['clean']:.2f}" in card


def test_readme_main_command_scores_the_blurred_photo_below_the_clean_one(capsys, monkeypatch):
    monkeypatch.delenv("QSIT_MODEL", raising=False)
    photos = [str(ROOT / "examples" / name) for name in ("hopper_blur.jpg", "hopper.jpg", "hopper_noise.jpg")]
    assert main(["assess", *photos, "--format", "json", "--max-new-tokens", "96"]) == 0
    blurred, clean, noisy = json.loads(capsys.readouterr().out)
    assert blurred["score"] < clean["score"] - 0.3 and noisy["score"] < clean["score"] - 0.3
    # Readable sentences ending in the model's own conclusion; the damaged photos' name their damage.
    from evals.targets import names_family
    from qsit.levels import concluded_level

    assert all(concluded_level(a["explanation"]) for a in (blurred, clean, noisy))
    assert names_family(noisy["explanation"], "noise") and names_family(blurred["explanation"], "blur")


def test_a_normal_run_shows_no_library_loading_bars(capsys, monkeypatch):
    monkeypatch.delenv("QSIT_MODEL", raising=False)
    assert main(["assess", str(ROOT / "examples" / "hopper.jpg"), "--max-new-tokens", "4"]) == 0
    err = capsys.readouterr().err
    assert "qsit: loading" in err and "Loading weights" not in err


def evaluation_script():
    return load_script("evaluate_default_model")


def test_the_check_on_a_folder_of_unseen_photos(default_assessor, tmp_path):
    import shutil

    script = evaluation_script()
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("hopper.jpg", "china.jpg"):
        shutil.copy(ROOT / "examples" / name, photos / name)
    (photos / "notes.txt").write_text("not a photo")  # skipped: only image files are checked
    many = script.unseen_photos_check(default_assessor, photos, tmp_path)
    assert many["photos"] == 2 and set(many["per_photo"]) == {"hopper.jpg", "china.jpg"}
    assert 0 <= many["all_monotonic"] <= 2 and all(0 <= n <= 2 for n in many["monotonic"].values())
    clean = [p["clean"] for p in many["per_photo"].values()]
    assert many["clean"]["min"] == min(clean) and many["clean"]["max"] == max(clean)
    assert (tmp_path / "unseen_photos.png").stat().st_size > 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="has no images"):
        script.photos_in(tmp_path / "empty")


def test_the_evaluation_splits_the_score_miss_by_corpus_photo_and_damage():
    script = evaluation_script()
    samples = [{"img_path": f"images/test/{photo}_c{c}/{damage}.png", "gt_score": mos, "score": 1 + mos / 25 + bias}
               for photo, bias in (("coffee", 0.0), ("gravel", -0.8)) for c in range(2)
               for damage, mos in (("pristine", 100.0), ("jpeg_s3", 55.0), ("motion_blur_left_s2", 70.0))]
    miss = script.score_misses(samples)
    assert set(miss["by_photo"]["groups"]) == {"coffee", "gravel"}
    assert set(miss["by_damage"]["groups"]) == {"pristine", "jpeg", "motion_blur"}
    assert miss["by_photo"]["groups"]["gravel"]["residual"] > 0 > miss["by_photo"]["groups"]["coffee"]["residual"]
    assert miss["by_photo"]["overall"] < 0.95 and miss["by_photo"]["offsets_removed"] > 0.99  # ties aside, exact
    assert script.score_misses(samples[:2]) == {}
    targets = json.loads((ROOT / "qsit" / "assets" / "qsit-tiny" / "figures.json").read_text())
    targets["iqa"].update(miss)
    line = next(x for x in script.markdown(targets).splitlines() if "mean offset taken away" in x)
    assert f"would reach {miss['by_photo']['offsets_removed']:.3f}" in line and "pristine images sit +" in line


def test_the_evaluation_scores_colourful_clean_images_in_grey_too(default_assessor, tmp_path):
    from PIL import Image

    from evals.targets import colour_reliance
    from qsit.images import grey_image

    script = evaluation_script()
    photo = Image.open(ROOT / "examples" / "hopper.jpg").convert("RGB")
    grey_photo = tmp_path / "grey.png"
    grey_image(photo).save(grey_photo)
    result = colour_reliance(default_assessor, [ROOT / "examples" / "hopper.jpg", grey_photo])
    assert result["n"] == 1 and result["left_out_grey"] == 1  # a grey photo's grey view is itself
    colour, grey = (r.score for r in default_assessor.score([photo, grey_image(photo)]))
    assert result["colour"] == pytest.approx(colour) and result["grey"] == pytest.approx(grey)
    assert result["difference"] == pytest.approx(grey - colour)
    # the clean images are found among the scored test images by name
    samples = [{"img_path": "images/test/coffee_c0/pristine.png"}, {"img_path": "images/test/coffee_c0/jpeg_s3.png"}]
    assert script.pristine_test_images(samples, tmp_path) == [tmp_path / "images/test/coffee_c0/pristine.png"]
    targets = json.loads(FIGURES.read_text())
    targets["colour"] = result
    line = next(x for x in script.markdown(targets).splitlines() if "in grey" in x)
    assert f"score {colour:.2f} in colour and {grey:.2f} in grey" in line
