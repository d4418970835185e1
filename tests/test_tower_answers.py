"""scripts/probe_tower_answers.py: LLVisionQA answered by the perception heads, rules and end to end."""

import json

import numpy as np
import pytest

from tests.helpers import load_script
from tests.test_perception import stage1

INDEX = {"zoom blur": 0, "gaussian noise": 1, "fog": 2}  # the heads' classes; 'none' is the last, 3


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_tower_answers")


def tiles(*rows):
    """Tile distortion probabilities, one row per tile, normalised."""
    p = np.array(rows, dtype=float)
    return p / p.sum(1, keepdims=True)


def ask(question, candidates, correct, kind):
    return {"question": question, "candidates": candidates, "correct_ans": correct, "type": kind}


def test_what_reads_the_list_where_the_free_answer_does_not(probe):
    # noise is likeliest, but it is not offered: the list's likeliest is the blur
    p = tiles([0.3, 0.5, 0.1, 0.1], [0.3, 0.5, 0.1, 0.1])
    q = ask("What is the most obvious distortion in the image?", ["zoom blur", "fog", "pixelation"], "zoom blur", 1)
    assert probe.answer(q, p, np.array([50.0, 50.0]), (1, 2), INDEX) == "zoom blur"
    assert probe.likeliest_of_all(probe.damage_probabilities(p), INDEX) == "gaussian noise"


def test_yes_for_a_damage_about_as_likely_as_the_likeliest(probe):
    p = tiles([0.4, 0.35, 0.05, 0.2])
    mos = np.array([50.0])
    yes_no = lambda name: ask(f"Is there {name} in the image?", ["Yes", "No"], "Yes", 0)  # noqa: E731
    assert probe.answer(yes_no("zoom blur"), p, mos, (1, 1), INDEX) == "Yes"
    assert probe.answer(yes_no("gaussian noise"), p, mos, (1, 1), INDEX) == "Yes"  # 0.35 >= half of 0.4
    assert probe.answer(yes_no("fog"), p, mos, (1, 1), INDEX) == "No"
    assert probe.answer(yes_no("frost"), p, mos, (1, 1), INDEX) is None  # a damage the heads do not know
    clean = tiles([0.04, 0.03, 0.01, 0.92])  # the likeliest damage of a clean image is not there
    assert probe.answer(yes_no("zoom blur"), clean, mos, (1, 1), INDEX) == "No"


def test_the_damaged_half_or_the_whole_image(probe):
    clean, damaged = [0.01, 0.01, 0.01, 0.97], [0.9, 0.03, 0.03, 0.04]
    q = ask("Which part of the image is affected by zoom blur?", ["whole image", "top part", "right part",
                                                                    "left part"], "right part", 1)
    right_side = tiles(clean, damaged, clean, damaged)  # a 2×2 grid, row by row
    assert probe.answer(q, right_side, np.full(4, 50.0), (2, 2), INDEX) == "right part"
    everywhere = tiles(damaged, damaged, damaged, damaged)
    assert probe.answer(q, everywhere, np.full(4, 50.0), (2, 2), INDEX) == "whole image"
    bottom = tiles(clean, clean, clean, damaged, damaged, damaged)  # 2 rows of 3
    assert probe.damaged_part(bottom, (2, 3), ["top part", "bottom part", "left part"]) == "bottom part"


def test_how_follows_the_level_of_the_tiles_pseudo_mos(probe):
    p = tiles([0.5, 0.1, 0.1, 0.3])
    overall = ask("How is the overall quality of the image?", ["poor", "excellent", "bad", "fair"], "poor", 2)
    assert probe.answer(overall, p, np.array([30.0, 34.0]), (1, 2), INDEX) == "poor"
    assert probe.answer(overall, p, np.array([95.0, 99.0]), (1, 2), INDEX) == "excellent"
    severe = ask("How severe is the zoom blur in the image?", ["slight", "noticeable", "severe", "mild"], "severe", 2)
    assert probe.answer(severe, p, np.array([10.0]), (1, 1), INDEX) == "severe"  # a bad image: severe
    assert probe.answer(severe, p, np.array([70.0]), (1, 1), INDEX) == "mild"  # good: mild
    assert [probe.level_index(m) for m in (0, 20, 20.5, 79.9, 80, 100)] == [0, 0, 1, 3, 3, 4]


def test_tally_counts_by_kind_and_the_free_what(probe):
    qs = [ask("Is there fog in the image?", ["Yes", "No"], "No", 0),
          ask("What is the most obvious distortion in the image?", ["fog", "zoom blur"], "fog", 1),
          ask("Which part of the image is affected by fog?", ["whole image", "top part"], "top part", 1)]
    result = probe.tally(qs, ["no", "fog", None], [None, "fog", None])
    assert result["by_kind"] == {"yes-no": {"right": 1, "asked": 1}, "what": {"right": 1, "asked": 1},
                                 "where": {"right": 0, "asked": 1}}
    assert result["what_without_the_list"] == 1 and result["right"] == 2 and result["asked"] == 3


@pytest.mark.slow
def test_heads_of_a_perception_stage_answer_a_corpus(probe, small_corpus, tmp_path):
    from qsit.recipe import run

    final = run(stage1(small_corpus, tmp_path / "p", "perception.steps=6"), progress=False).final
    results = probe.main(["--model", str(final), "--corpus", str(small_corpus), "--sets", "tests",
                          "--out", str(tmp_path / "o")])
    questions = json.loads((small_corpus / "tests" / "llvisionqa.json").read_text())
    written = json.loads((tmp_path / "o" / "answers.json").read_text())
    assert written == results
    tally = results["tests"]
    assert tally["asked"] == len(questions) == sum(v["asked"] for v in tally["by_kind"].values())
    assert 0 <= tally["right"] <= tally["asked"]
    with pytest.raises(SystemExit, match="perception_heads"):
        probe.main(["--model", str(small_corpus), "--corpus", str(small_corpus), "--out", str(tmp_path / "x")])
