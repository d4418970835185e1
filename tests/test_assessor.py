"""The Assessor on a tiny LLaVA-OneVision checkpoint of the real classes."""

import json

import numpy as np
import pytest

from qsit.assessor import Assessor, ModelLoadError, resolve_level_token_ids
from qsit.levels import LEVELS
from qsit.prompts import ScoringPrompt
from qsit.reference import reference_level_logits
from tests.helpers import noise_image

# Sizes chosen to give different anyres grids, hence different token counts per row.
SIZES = [(40, 70), (100, 50), (64, 64), (300, 200), (33, 90), (128, 400)]


def images():
    return [noise_image(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]


def test_level_tokens_are_the_first_subtoken_after_the_prefix(assessor):
    tok = assessor.tokenizer
    ids = assessor.level_token_ids["quality"]
    assert len(set(ids)) == 5
    prefix = tok("The quality of the image is", add_special_tokens=False)["input_ids"]
    for word, tid in zip(LEVELS, ids, strict=True):
        full = tok(f"The quality of the image is {word}", add_special_tokens=False)["input_ids"]
        assert full[: len(prefix)] == prefix and full[len(prefix)] == tid
        assert tok.convert_ids_to_tokens(tid).lstrip("Ġ").startswith(word[:1])


def test_official_preset_uses_bare_capitalised_tokens_like_the_script(tiny_checkpoint):
    a = Assessor.from_pretrained(tiny_checkpoint, preset="qsit-official")
    # The published script: ids_ = [id_[0] for id_ in tokenizer(["Excellent", ...])["input_ids"]].
    script = [a.tokenizer(w)["input_ids"][0] for w in ["Bad", "Poor", "Fair", "Good", "Excellent"]]
    assert a.level_token_ids["quality"] == script


def test_indistinct_level_tokens_fail_with_their_names(assessor):
    clash = ScoringPrompt(question="q", answer_prefix="The quality of the image is",
                          level_words=("zzq1", "zzq2", "zzq3", "zzq4", "zzq5"))
    with pytest.raises(ModelLoadError, match="distinct tokens.*'zzq1'"):
        resolve_level_token_ids(assessor.tokenizer, clash)


def test_score_result_is_consistent(assessor):
    (r,) = assessor.score([noise_image(50, 80)])
    p = np.array([r.probabilities[w] for w in LEVELS])
    assert list(r.probabilities) == list(LEVELS)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    assert r.score == pytest.approx(float(p @ np.arange(1, 6)), abs=1e-9)
    assert r.level == LEVELS[int(p.argmax())]
    assert r.spread == pytest.approx(float(np.sqrt(p @ (np.arange(1, 6) - r.score) ** 2)), abs=1e-9)
    assert 1 <= r.score <= 5 and r.score_range == (1.0, 5.0) and r.higher_is_better
    assert json.loads(json.dumps(r.to_dict()))["score"] == r.score


def test_batched_scoring_equals_one_by_one(assessor):
    ims = images()
    batched = assessor.score(ims, batch_size=len(ims))
    single = [assessor.score([im])[0] for im in ims]
    for b, s in zip(batched, single, strict=True):
        assert b.score == pytest.approx(s.score, abs=1e-5)
        for w in LEVELS:
            assert b.probabilities[w] == pytest.approx(s.probabilities[w], abs=1e-5)
    # A random model still tells these images apart, so the check above is not vacuous.
    assert np.ptp([r.score for r in single]) > 1e-3


@pytest.fixture(scope="module")
def spaced_assessor(tmp_path_factory):
    """A tiny checkpoint whose vocabulary keeps the space apart (qsit-tiny's ``space_token``)."""
    from qsit.tiny import TinyConfig, build_tiny_checkpoint

    return Assessor.from_pretrained(build_tiny_checkpoint(tmp_path_factory.mktemp("spaced") / "ckpt",
                                                          TinyConfig(space_token=True)))


def test_with_the_space_apart_an_answer_begins_with_the_token_its_option_holds(assessor, spaced_assessor):
    listed = "How is the overall quality of the image?\nA. excellent\nB. poor\n"
    for a, copied in ((assessor, False), (spaced_assessor, True)):
        ids = a.tokenizer(listed, add_special_tokens=False)["input_ids"]
        answer = a.tokenizer("poor", add_special_tokens=False)["input_ids"]
        assert (answer[0] in ids) is copied
        assert a.tokenizer.decode(ids) == listed
    assert spaced_assessor.tokenizer.convert_ids_to_tokens(answer) == ["poor"]


@pytest.mark.parametrize("which", ["assessor", "spaced_assessor"])
def test_scoring_reads_the_level_where_training_answers_put_it(which, request):
    from qsit.conversation import segments
    from qsit.prompts import user_turn

    a = request.getfixturevalue(which)
    prompt = a.preset.scoring_prompt("quality")
    scored = a.tokenizer(a._prompt([user_turn(prompt.question)], a.scoring_prefixes["quality"]),
                         add_special_tokens=False)["input_ids"]
    for i, level_id in enumerate(a.level_token_ids["quality"]):
        turns = [{"role": "user", "content": f"<image>\n{prompt.question}"},
                 {"role": "assistant", "content": prompt.answer(i)}]
        trained = a.tokenizer("".join(text for text, _ in segments(a.processor, turns)),
                              add_special_tokens=False)["input_ids"]
        assert trained[: len(scored)] == scored and trained[len(scored)] == level_id
    spaced = which == "spaced_assessor"
    assert a.scoring_prefixes["quality"].endswith(" ") is spaced


def test_a_space_token_checkpoint_scores_like_any_other(spaced_assessor):
    ims = images()
    results = spaced_assessor.score(ims, batch_size=3)
    for r, im in zip(results, ims, strict=True):
        p = np.array([r.probabilities[w] for w in LEVELS])
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        assert r.score == pytest.approx(float(p @ np.arange(1, 6)), abs=1e-9)
        np.testing.assert_allclose(spaced_assessor.level_logits([im])[0], reference_level_logits(spaced_assessor, im),
                                   atol=1e-4)
    assert np.ptp([r.score for r in results]) > 1e-3


def test_one_forward_pass_matches_the_published_generate_loop(tiny_checkpoint):
    a = Assessor.from_pretrained(tiny_checkpoint, preset="qsit-official")
    ims = images()
    ours = a.level_logits(ims)
    for row, im in zip(ours, ims, strict=True):
        np.testing.assert_allclose(row, reference_level_logits(a, im), atol=1e-4)


def test_batch_size_does_not_change_results(assessor):
    ims = images()
    a = [r.score for r in assessor.score(ims, batch_size=1)]
    b = [r.score for r in assessor.score(ims, batch_size=4)]
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        assessor.score(ims, batch_size=0)


def test_views_average_the_probabilities_of_the_image_and_its_flips(assessor):
    from PIL import Image

    ims = images()[:3]
    one = assessor.score(ims)
    four = assessor.score(ims, views=4, batch_size=5)  # a batch boundary inside an image's views
    flips = (None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180)
    for im, r1, r4 in zip(ims, one, four, strict=True):
        each = [assessor.score([im if t is None else im.transpose(t)])[0] for t in flips]
        mean = np.mean([list(r.probabilities.values()) for r in each], axis=0)
        np.testing.assert_allclose(list(r4.probabilities.values()), mean, atol=1e-5)
        assert r4.score == pytest.approx(float(mean @ np.arange(1, 6)), abs=1e-5)
        assert r4.score != pytest.approx(r1.score, abs=1e-4)  # the flips are other inputs to this model
        assert r4.image == r1.image and any("4 views" in n for n in r4.notes)
    assert not any("views" in n for n in one[0].notes)
    assert assessor.score([], views=2) == []
    with pytest.raises(ValueError, match="views"):
        assessor.score(ims, views=5)


def test_aesthetics_task_uses_its_own_prompt(assessor):
    im = noise_image(60, 60)
    q = assessor.score([im], task="quality")[0]
    a = assessor.score([im], task="aesthetics")[0]
    assert a.task == "aesthetics" and q.score != a.score
    with pytest.raises(ValueError, match="no scoring task 'sharpness'"):
        assessor.score([im], task="sharpness")


def test_explain_chat_and_assess(assessor, photo):
    text = assessor.explain(photo, max_new_tokens=6)
    assert text == assessor.chat(photo, [{"role": "user", "content": assessor.preset.describe_question}],
                                 max_new_tokens=6)
    history = [
        {"role": "user", "content": "Describe the quality."},
        {"role": "assistant", "content": text or "It is fine."},
        {"role": "user", "content": "Is it blurry?"},
    ]
    reply = assessor.reply(photo, history, max_new_tokens=4)
    assert reply.finish_reason in ("stop", "length")
    pieces = assessor.stream_chat(photo, history, max_new_tokens=4)
    streamed = []
    while True:
        try:
            streamed.append(next(pieces))
        except StopIteration as end:
            assert end.value == reply.finish_reason
            break
    assert "".join(streamed) == reply.text
    result = assessor.assess(photo, max_new_tokens=6)
    assert result.explanation == text
    assert result.result == assessor.score([photo])[0]  # the Assessment holds the ScoreResult itself
    assert (result.score, result.level, result.notes) == (result.result.score, result.result.level, ())
    assert result.to_dict() == {**result.result.to_dict(), "explanation": text, "model": result.model,
                                "prompt_version": "qsit-1"}
    assert result.prompt_version == "qsit-1" and result.model.endswith("ckpt")


def test_chat_history_is_validated(assessor, photo):
    with pytest.raises(ValueError, match="end with a user turn"):
        assessor.chat(photo, [])
    with pytest.raises(ValueError, match="role 'user' or 'assistant'"):
        assessor.chat(photo, [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])


def test_loading_errors_name_the_model(tmp_path):
    with pytest.raises(ModelLoadError, match="no-such-dir"):
        Assessor.from_pretrained(tmp_path / "no-such-dir")
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="'qwen2' checkpoint"):
        Assessor.from_pretrained(tmp_path)


def test_stream_chat_surfaces_generation_errors(assessor, photo):
    # An invalid generate argument fails inside the worker thread; the caller must see it, not hang.
    with pytest.raises(ValueError):
        list(assessor.stream_chat(photo, [{"role": "user", "content": "Is it blurry?"}], max_new_tokens=-3))


def test_checkpoint_description_chooses_the_preset_and_a_mismatch_is_noted(tiny_checkpoint, tmp_path, photo):
    import shutil

    from qsit.model_info import MODEL_INFO_FILE, read_model_info

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    assert read_model_info(ckpt) is None and Assessor.from_pretrained(ckpt).preset.name == "qsit"
    (ckpt / MODEL_INFO_FILE).write_text(json.dumps({"format": 1, "preset": "qalign"}))
    trained = Assessor.from_pretrained(ckpt)
    assert trained.preset.name == "qalign" and trained.notes == ()
    assert trained.score([photo])[0].notes == ()
    other = Assessor.from_pretrained(ckpt, preset="qsit")
    assert other.preset.name == "qsit"
    (note,) = other.score([photo])[0].notes
    assert "'qsit'" in note and "'qalign'" in note
    assert other.assess(photo, max_new_tokens=2).notes == (note,)
    assert Assessor.from_pretrained(ckpt, preset="qalign").notes == ()
    (ckpt / MODEL_INFO_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=MODEL_INFO_FILE):
        read_model_info(ckpt)


def test_stream_pieces_join_to_the_stripped_reply_and_finish_reasons():
    from qsit.assessor import finish_reason, stripped_pieces

    assert list(stripped_pieces(["\n", " ", "\n"])) == []  # an empty reply streams nothing
    assert list(stripped_pieces(["\n", "The", " image", " ", "\n", "is", " dark", ".\n"])) == [
        "The", " image", " \nis", " dark", "."]
    assert finish_reason([5, 6, 2], end_ids={2}, max_new_tokens=3) == "stop"  # ended on the last allowed token
    assert finish_reason([5, 6, 7], end_ids={2}, max_new_tokens=3) == "length"
    assert finish_reason([5, 2], end_ids={2}, max_new_tokens=3) == "stop"
