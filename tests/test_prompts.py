"""Prompt snapshots: a changed word here changes what every model is asked."""

from pathlib import Path

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


@pytest.mark.parametrize("preset_name", list(PRESETS))
def test_training_record_and_scoring_prompt_are_the_same_tokens(tiny_checkpoint, preset_name):
    """What a trained model saw before the level word is exactly what scoring shows it, for every
    trainable preset and task: a D1 record rendered for training vs the scoring prompt, token for
    token. The published script's preset ends its prefix in a space: training refuses it, and the
    test shows why (the rendering differs exactly there)."""
    from qsit.assessor import Assessor
    from qsit.levels import LEVELS
    from qsit.records import IMAGE_MARKER, Record
    from qsit.tokenization import encode
    from qsit.train_config import ConfigError, check_trainable_preset
    from tests.helpers import noise_image

    a = Assessor.from_pretrained(tiny_checkpoint, preset=preset_name)
    image = noise_image(48, 40, seed=3)
    path = Path(tiny_checkpoint).parent / f"render-{preset_name}.png"
    image.save(path)
    for task in a.preset.tasks:
        prompt = a.preset.scoring_prompt(task)
        scoring = a._encode_scoring([a.load(path)], task)["input_ids"][0].tolist()
        for i in range(len(LEVELS)):
            record = Record(id="r", kind="scoring", images=[str(path)], source="t", split="train",
                            messages=[{"role": "user", "content": f"{IMAGE_MARKER}\n{prompt.question}"},
                                      {"role": "assistant", "content": prompt.answer(i)}])
            trained = encode(a.processor, record, [path]).input_ids
            if prompt.answer_prefix.endswith(" "):
                assert trained[:len(scoring) - 1] == scoring[:-1] and trained[len(scoring) - 1] != scoring[-1]
                with pytest.raises(ConfigError, match="scoring published checkpoints only"):
                    check_trainable_preset(preset_name)
                continue
            check_trainable_preset(preset_name)
            assert trained[:len(scoring)] == scoring, (preset_name, task)
            assert trained[len(scoring)] == a.level_token_ids[task][i], (preset_name, task, LEVELS[i])
