"""Prompt snapshots: a changed word here changes what every model is asked."""

import pytest

from qsit.prompts import PRESETS, get_preset, multiple_choice_question, user_turn


def test_qsit_scoring_prompt_snapshot():
    p = get_preset("qsit").scoring_prompt("quality")
    assert p.question == "Assume you are an image quality evaluator. How would you rate the quality of this image?"
    assert p.answer_prefix == "The quality of the image is"
    assert p.answer(3) == "The quality of the image is good."


def test_official_qsit_script_preset_snapshot():
    p = get_preset("qsit-official").scoring_prompt("quality")
    assert p.question == (
        "Assume you are an image quality evaluator. \nYour rating should be chosen from the following five "
        "categories: Excellent, Good, Fair, Poor, and Bad (from high to low). \n"
        "How would you rate the quality of this image?"
    )
    assert p.answer_prefix == "The quality of this image is "
    assert p.level_words == ("Bad", "Poor", "Fair", "Good", "Excellent")
    assert p.answer(4) == "The quality of this image is Excellent."


def test_aesthetics_variant_snapshot():
    p = get_preset("qsit").scoring_prompt("aesthetics")
    assert p.question.endswith("How is the aesthetics of the image?")
    assert p.answer_prefix == "The aesthetics of the image is"


def test_preset_versions_are_unique():
    versions = [p.version for p in PRESETS.values()]
    assert len(set(versions)) == len(versions)


def test_unknown_preset_and_task_suggest_what_exists():
    with pytest.raises(ValueError, match="Did you mean qsit"):
        get_preset("qsti")
    with pytest.raises(ValueError, match="tasks: quality"):
        get_preset("qsit-official").scoring_prompt("aesthetics")


def test_multiple_choice_snapshot():
    assert multiple_choice_question("Is the image blurry?", ["Yes", "No"]) == "Is the image blurry?\nA. Yes\nB. No\n"
    with pytest.raises(ValueError, match="2 to 4"):
        multiple_choice_question("q", ["only one"])


def test_rendered_chat_prompt_snapshot(assessor):
    prompt = get_preset("qsit").scoring_prompt("quality")
    text = assessor.processor.apply_chat_template([user_turn(prompt.question)], add_generation_prompt=True)
    assert text + prompt.answer_prefix == (
        "<|im_start|>user <image>\nAssume you are an image quality evaluator. How would you rate the quality "
        "of this image?<|im_end|><|im_start|>assistant\nThe quality of the image is"
    )
