"""The offline corpus: distortions, pseudo-MOS properties, and a small end-to-end build."""

import json
from dataclasses import replace

import numpy as np
import pytest

from data_builders.common import BuildError
from data_builders.distortions import DISTORTIONS, REGIONS, apply, region_mask
from data_builders.synthetic import SyntheticConfig, build_synthetic, pseudo_mos_ladder, similarity
from qsit.levels import LEVELS
from qsit.records import iter_jsonl


@pytest.fixture(scope="module")
def photo_array():
    from PIL import Image
    from sklearn.datasets import load_sample_image

    img = Image.fromarray(load_sample_image("china.jpg")).resize((96, 64))
    return np.asarray(img, dtype=np.float64) / 255


def test_paper_distortions_and_exposure_are_all_there():
    assert len(DISTORTIONS) == 17
    for key in ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic", "pixelate", "jpeg",
                "overexposure", "underexposure"):
        assert key in DISTORTIONS


@pytest.mark.parametrize("key", sorted(DISTORTIONS))
def test_each_distortion_is_valid_deterministic_and_hurts_more_at_5_than_1(photo_array, key):
    a = apply(photo_array, key, 1, np.random.default_rng(0))
    b = apply(photo_array, key, 1, np.random.default_rng(0))
    z = apply(photo_array, key, 5, np.random.default_rng(0))
    assert a.shape == photo_array.shape and z.min() >= 0 and z.max() <= 1
    assert np.array_equal(a, b)
    assert similarity(photo_array, z) < similarity(photo_array, a) < 1.0


def test_regional_distortion_leaves_the_other_side_alone(photo_array):
    y = apply(photo_array, "gaussian_noise", 5, np.random.default_rng(0), region="left part")
    w = photo_array.shape[1]
    assert np.abs(y[:, : w // 3] - photo_array[:, : w // 3]).mean() > 0.05
    assert np.allclose(y[:, -w // 3:], photo_array[:, -w // 3:])
    for region in REGIONS:
        m = region_mask(10, 20, region)
        assert m.min() == 0 and m.max() == 1
    with pytest.raises(ValueError, match="unknown distortion 'haze'"):
        apply(photo_array, "haze", 1, np.random.default_rng(0))


def test_pseudo_mos_is_strictly_decreasing_along_severity_even_if_similarity_is_not():
    ladder = pseudo_mos_ladder([0.95, 0.7, 0.8, 0.6, 0.61])
    assert all(a > b for a, b in zip([100.0, *ladder], ladder, strict=False))
    assert ladder[0] == pytest.approx(100 * 0.95**3, abs=1e-3)


def test_small_corpus_end_to_end(tmp_path):
    cfg = SyntheticConfig(size=48, crops_per_photo=1, ladders_per_crop=1, train_scenes=2, test_scenes=1, seed=3)
    manifest = build_synthetic(tmp_path, cfg, progress=False)
    assert manifest["images"] == (18 + 3) * 6
    d1 = list(iter_jsonl(tmp_path / "d1" / "records.jsonl"))
    d2 = list(iter_jsonl(tmp_path / "d2" / "records.jsonl"))
    d3 = list(iter_jsonl(tmp_path / "d3" / "records.jsonl"))
    assert {r.kind for r in d1} == {"scoring"} and {r.kind for r in d2} == {"interpreting"}
    assert {r.kind for r in d3} == {"general"} and not any(r.split == "test" for r in d3)
    for r in d1[:10]:
        assert (tmp_path / r.images[0].removeprefix("synthetic/")).is_file()
    # Held-out photos never reach training; the test sets use only them and the test scenes.
    test_images = {r.images[0] for r in d1 if r.split == "test"}
    train_images = {r.images[0] for r in d1 if r.split != "test"}
    assert not any(k in p for p in train_images for k in ("coffee", "cameraman", "gravel", "dahlia"))
    iqa = json.loads((tmp_path / "tests" / "iqa.json").read_text())
    assert {f"synthetic/{x['img_path']}" for x in iqa} == test_images
    qa = json.loads((tmp_path / "tests" / "llvisionqa.json").read_text())
    for q in qa:
        assert q["correct_ans"] in q["candidates"] and q["type"] in (0, 1, 2) and q["concern"] in (0, 1, 2)
    assert {q["type"] for q in qa} == {0, 1, 2}
    desc = json.loads((tmp_path / "tests" / "lldescribe.json").read_text())
    assert desc and all(d["golden_description"].startswith("The image shows") for d in desc)
    # Scoring answers follow the levels of eq. 1 and the D2 descriptions state the same level.
    level = {r.images[0]: r.meta["level"] for r in d1}
    for r in d2:
        if r.meta.get("task") == "describe":
            assert r.messages[1]["content"].endswith(f"the quality of the image is {level[r.images[0]]}.")
    assert set(r.meta["level"] for r in d1) <= set(LEVELS)
    # Deterministic from the seed.
    again = tmp_path / "again"
    build_synthetic(again, cfg, progress=False)
    assert (again / "d1" / "records.jsonl").read_text() == (tmp_path / "d1" / "records.jsonl").read_text()


def test_a_folder_of_photos_builds_a_corpus_with_held_out_photos(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    base = Image.fromarray(load_sample_image("flower.jpg"))
    for i in range(5):  # five distinct crops; the fifth by path (sub/p2.jpg) is held out for the tests
        base.crop((i * 40, 0, i * 40 + 200, 160)).save(folder / ("sub" if i == 2 else "") / f"p{i}.jpg")
    (folder / "notes.txt").write_text("not a photo")
    out = tmp_path / "corpus"
    m = build_synthetic(out, SyntheticConfig(size=48, crops_per_photo=1, ladders_per_crop=1, train_scenes=0,
                                             test_scenes=0, val_fraction=0, photos=str(folder),
                                             package_photos=False), progress=False)
    assert sorted(p.name for p in (out / "photos" / "train").iterdir()) == [
        "photo-p0.png", "photo-p1.png", "photo-p3.png", "photo-p4.png"]
    assert [p.name for p in (out / "photos" / "test").iterdir()] == ["photo-sub-p2.png"]
    assert m["splits"] == {"train": 24, "val": 0, "test": 6}
    tests = json.loads((out / "tests" / "iqa.json").read_text())
    assert {t["img_path"].split("/")[2] for t in tests} == {"photo-sub-p2_c0"}


def test_descriptions_without_content_keep_everything_else(tmp_path):
    cfg = SyntheticConfig(size=48, crops_per_photo=1, ladders_per_crop=1, train_scenes=1, test_scenes=1, seed=3)
    build_synthetic(tmp_path / "with", cfg, progress=False)
    build_synthetic(tmp_path / "without", replace(cfg, content_in_descriptions=False), progress=False)

    def records(corpus, kind):
        return {r.id: r for r in iter_jsonl(tmp_path / corpus / kind / "records.jsonl")}

    with_d2, without_d2 = records("with", "d2"), records("without", "d2")
    assert with_d2.keys() == without_d2.keys()
    described = 0
    for key, r in without_d2.items():
        for before, after in zip((m["content"] for m in with_d2[key].messages), (m["content"] for m in r.messages),
                                 strict=True):
            if before.startswith("The image shows"):  # the description, alone or opening a conversation
                described += 1
                assert not after.startswith("The image shows")
                assert before.endswith(after.removeprefix("The image is").removeprefix("The image"))
            else:
                assert after == before  # questions and answers do not depend on the caption
    assert described >= sum(r.meta.get("task") == "describe" for r in without_d2.values()) > 0
    assert records("with", "d1") == records("without", "d1") and records("with", "d3") == records("without", "d3")


def test_a_missing_photos_folder_is_a_clear_error(tmp_path, capsys):
    from qsit.cli import main

    assert main(["build", "synthetic", "--out", str(tmp_path / "c"), "--photos", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "photos folder" in err and "does not exist" in err


def test_photos_for_training_only_leave_the_test_sets_as_they_were(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    folder = tmp_path / "photos"
    folder.mkdir()
    base = Image.fromarray(load_sample_image("flower.jpg"))
    for i in range(5):
        base.crop((i * 40, 0, i * 40 + 200, 160)).save(folder / f"p{i}.jpg")
    cfg = SyntheticConfig(size=48, crops_per_photo=1, ladders_per_crop=1, train_scenes=1, test_scenes=1,
                          val_fraction=0, package_photos=False)
    build_synthetic(tmp_path / "alone", cfg, progress=False)
    m = build_synthetic(tmp_path / "more", replace(cfg, photos=str(folder), photos_test_every=0), progress=False)
    assert sorted(p.name for p in (tmp_path / "more" / "photos" / "train").iterdir()) == [
        "photo-p0.png", "photo-p1.png", "photo-p2.png", "photo-p3.png", "photo-p4.png", "scene1000.png"]
    assert m["splits"]["train"] == 6 * 6 and m["splits"]["test"] == 6
    assert ((tmp_path / "more" / "tests" / "iqa.json").read_text()
            == (tmp_path / "alone" / "tests" / "iqa.json").read_text())
    with pytest.raises(Exception, match="photos_test_every"):
        replace(cfg, photos_test_every=-1)


def test_severity_words_from_the_level_agree_with_the_conclusion(tmp_path):
    from data_builders.d2 import SEVERITY_WORDS

    cfg = SyntheticConfig(size=48, crops_per_photo=1, ladders_per_crop=1, train_scenes=1, test_scenes=1, seed=3,
                          content_in_descriptions=False)
    build_synthetic(tmp_path / "param", cfg, progress=False)
    build_synthetic(tmp_path / "level", replace(cfg, severity_words="level"), progress=False)

    def described(corpus):
        out = {}
        for r in iter_jsonl(tmp_path / corpus / "d2" / "records.jsonl"):
            if r.meta.get("task") == "describe" and "suffers from" in r.messages[1]["content"]:
                text = r.messages[1]["content"]
                word = text.split("suffers from ")[1].split()[0]
                out[r.images[0]] = (word, text.rsplit(" ", 1)[1].rstrip("."))
        return out

    by_level, by_param = described("level"), described("param")
    assert by_level.keys() == by_param.keys() and len(by_level) > 10
    # excellent → slight … bad → severe, for every damaged image
    assert all(SEVERITY_WORDS.index(word) == 4 - LEVELS.index(level) for word, level in by_level.values())
    assert any(SEVERITY_WORDS.index(word) != 4 - LEVELS.index(level) for word, level in by_param.values())
    with pytest.raises(BuildError, match="severity_words must be one of distortion, level"):
        SyntheticConfig(severity_words="pixels")


def test_family_choices_need_the_list_to_answer_and_leave_the_rest_as_it_was(tmp_path):
    from data_builders.distortions import FAMILY_NAMES

    cfg = SyntheticConfig(size=48, crops_per_photo=1, ladders_per_crop=1, train_scenes=1, test_scenes=1, seed=3,
                          mcq_answers="words")
    build_synthetic(tmp_path / "plain", cfg, progress=False)
    m = build_synthetic(tmp_path / "family", replace(cfg, family_choices=True), progress=False)
    assert m["config"]["family_choices"] is True

    def files(corpus, folder):
        return {p.name: p.read_text() for p in (tmp_path / corpus / folder).glob("*.json*")
                if p.name != "manifest.json"}  # which names its own folder

    for folder in ("tests", "dev", "d1", "d3"):
        assert files("plain", folder) == files("family", folder), folder
    plain = {r.id: r for r in iter_jsonl(tmp_path / "plain" / "d2" / "records.jsonl")}
    family = {r.id: r for r in iter_jsonl(tmp_path / "family" / "d2" / "records.jsonl")}
    added = {k: r for k, r in family.items() if k not in plain}
    assert all(family[k] == r for k, r in plain.items())  # every other record unchanged
    distorted = [r for r in iter_jsonl(tmp_path / "plain" / "d1" / "records.jsonl")
                 if r.split != "test" and r.meta.get("mos", 100) < 100]
    assert len(added) == len(distorted) > 10
    by_family_word = {w: f for f, w in FAMILY_NAMES.items()}
    by_name = {d.name: d.family for d in DISTORTIONS.values()}
    worded = {"family": 0, "name": 0}
    for r in added.values():
        assert r.split != "test" and r.meta["choice_only"] and r.meta["task"] == "mcq"
        question, answer = r.messages[0]["content"], r.messages[1]["content"]
        options = [line[3:] for line in question.splitlines()[2:]]
        assert len(options) == 4 and answer in options
        families = [by_family_word.get(o) or by_name[o] for o in options]
        assert len(set(families)) == 4  # one option per family: the list alone says which words to use
        key = max((k for k in DISTORTIONS if r.images[0].rsplit("/", 1)[1].startswith(f"{k}_")), key=len)
        assert families[options.index(answer)] == DISTORTIONS[key].family
        worded["family" if answer in by_family_word else "name"] += 1
    assert min(worded.values()) > 0


def test_a_damaged_image_name_reads_back_as_its_damage():
    from data_builders.distortions import DISTORTIONS, REGIONS
    from data_builders.synthetic import damage_in_name, damaged_image_name

    for key in DISTORTIONS:  # motion_blur must not read as a region-less "blur", nor "_left" stay on
        for region in (None, *REGIONS):
            assert damage_in_name(f"images/test/x_c0/{damaged_image_name(key, region, 4)}") == (key, 4)
    assert damaged_image_name("motion_blur", "left part", 2) == "motion_blur_left_s2.png"
    assert damage_in_name("images/test/x_c0/pristine.png") == (None, 0)
