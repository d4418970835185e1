"""D2: rule-based and LLM-written interpreting data; the LLM path runs the real openai client
against a real HTTP server on loopback."""

import random
import socket
from collections import Counter

import pytest

from data_builders.common import BuildError
from data_builders.d2 import (
    Defect,
    KnownQuality,
    LetterBalancer,
    LLMQuestionWriter,
    LLMUnreachable,
    balance_yes_no,
    qa_problems,
    qa_records,
    read_feedback,
    rule_based_qa,
)
from evals.llvisionqa import parse_answer
from tests.llm_server import ScriptedLLM

ABSENT = ["gaussian noise", "motion blur", "jpeg compression artifacts", "fog", "overexposure", "pixelation"]


def blurred_left():
    return KnownQuality("a red temple roof under a blue sky", "poor", (
        Defect("motion blur", 4, region="left part", cause="The camera moved.", fix="Use a tripod."),
        Defect("gaussian noise", 1),
    ))


def test_rule_based_qa_states_the_known_defects():
    qa = rule_based_qa(blurred_left(), ABSENT, random.Random(0))
    assert qa_problems(qa) == []
    assert qa.description == ("The image shows a red temple roof under a blue sky. The left part of the image "
                              "suffers from strong motion blur. The image suffers from slight gaussian noise. "
                              "Overall, the quality of the image is poor.")
    by_q = {q.question: q for q in qa.questions}
    assert by_q["Is there motion blur in the image?"].answer == "Yes"
    assert by_q["Which part of the image is affected by motion blur?"].answer == "left part"
    assert by_q["How severe is the motion blur in the image?"].answer == "strong"
    no = [q for q in qa.questions if q.type == "yes-no" and q.answer == "No"]
    assert len(no) == 1 and "motion blur" not in no[0].question and "gaussian noise" not in no[0].question
    assert ("How could this be fixed or avoided?", "Use a tripod.") in qa.conversation


def test_pristine_image_gets_a_positive_description():
    qa = rule_based_qa(KnownQuality("a cat", "excellent"), ABSENT, random.Random(0))
    assert "no visible noise" in qa.description and qa.description.endswith("is excellent.")
    assert Counter(q.answer for q in qa.questions if q.type == "yes-no") == {"Yes": 1, "No": 1}


def test_without_content_the_description_speaks_of_quality_only():
    damaged = rule_based_qa(KnownQuality(None, "poor", blurred_left().defects), ABSENT, random.Random(0))
    assert damaged.description == ("The left part of the image suffers from strong motion blur. The image suffers "
                                   "from slight gaussian noise. Overall, the quality of the image is poor.")
    clean = rule_based_qa(KnownQuality(None, "excellent"), ABSENT, random.Random(0))
    assert clean.description.startswith("The image is sharp and well exposed") and qa_problems(clean) == []


def test_records_balance_letters_and_yes_no():
    rng = random.Random(1)
    qas = {f"img{i}": rule_based_qa(blurred_left() if i % 3 else KnownQuality("a cat", "good"), ABSENT, rng)
           for i in range(12)}
    balanced, dropped = balance_yes_no(qas, seed=0)
    answers = Counter(q.answer for qa in balanced.values() for q in qa.questions if q.type == "yes-no")
    assert answers["Yes"] == answers["No"] and dropped == 0
    balancer = LetterBalancer(seed=0)
    records = [r for k, qa in balanced.items() for r in qa_records(k, f"syn/{k}.png", qa, "synthetic", "train",
                                                                    balancer)]
    mcq = [r for r in records if r.meta.get("task") == "mcq" and r.meta["type"] != "yes-no"]
    letters = Counter(r.meta["correct"] for r in mcq)
    assert set(letters) == set("ABCD") and max(letters.values()) - min(letters.values()) <= 1
    first = next(r for r in mcq if "most obvious distortion" in r.messages[0]["content"])
    assert first.messages[0]["content"].startswith("<image>\nWhat is the most obvious distortion in the image?\nA. ")
    assert first.messages[1]["content"].startswith(f"{first.meta['correct']}. ")
    yes_no = [r for r in records if r.meta.get("task") == "mcq" and r.meta["type"] == "yes-no"]
    by_answer_and_letter = Counter((r.messages[1]["content"].split(". ")[1], r.meta["correct"]) for r in yes_no)
    assert by_answer_and_letter == {("Yes", "A"): 6, ("Yes", "B"): 6, ("No", "A"): 6, ("No", "B"): 6}
    for r in yes_no:  # the letter written is the one in front of the answer in this question
        assert f"\n{r.meta['correct']}. {r.messages[1]['content'].split('. ')[1]}\n" in r.messages[0]["content"]
    chat = next(r for r in records if r.meta.get("task") == "conversation" and r.id.startswith("img1/"))
    assert len(chat.messages) >= 6 and chat.messages[0]["content"].startswith("<image>\n")


def test_multiple_choice_answers_in_words_are_the_right_option_by_the_benchmark_rules():
    rng = random.Random(1)
    qas = {f"img{i}": rule_based_qa(blurred_left() if i % 3 else KnownQuality("a cat", "good"), ABSENT, rng)
           for i in range(6)}

    def records(style):
        return [r for k, qa in qas.items()
                for r in qa_records(k, f"syn/{k}.png", qa, "synthetic", "train", LetterBalancer(seed=0), mcq_answers=style)]

    by_letter, by_words = records("letter"), records("words")
    assert [r.id for r in by_letter] == [r.id for r in by_words]
    mcq = 0
    for a, b in zip(by_letter, by_words, strict=True):
        assert a.messages[0] == b.messages[0] and a.meta == b.meta  # same question, options and order
        if b.meta.get("task") != "mcq":
            assert a.messages == b.messages
            continue
        mcq += 1
        options = [line[3:] for line in b.messages[0]["content"].splitlines()[2:]]
        answer = b.messages[1]["content"]
        assert answer in options and a.messages[1]["content"] == f"{b.meta['correct']}. {answer}"
        assert parse_answer(answer, options) == parse_answer(a.messages[1]["content"], options) == b.meta["correct"]
    assert mcq >= 24
    with pytest.raises(BuildError, match="letter"):
        qa_records("k", "syn/k.png", qas["img0"], "synthetic", "train", LetterBalancer(seed=0), mcq_answers="Letter")


def test_unbalanced_yes_no_is_downsampled():
    qa = rule_based_qa(blurred_left(), [], random.Random(0))  # nothing absent → no "No" question
    balanced, dropped = balance_yes_no({"a": qa, "b": rule_based_qa(blurred_left(), ABSENT, random.Random(1))}, 0)
    answers = Counter(q.answer for x in balanced.values() for q in x.questions if q.type == "yes-no")
    assert answers["Yes"] == answers["No"] == 1 and dropped == 1


def test_llm_writer_validates_retries_caches_and_lists_failures(tmp_path):
    feedback = {k: f"{tag} The image is blurry and dark. Overall, the quality is poor."
                for k, tag in zip("abcde", ["[ok]", "[malformed-once]", "[429-once]", "[500]", "[invalid]"],
                                  strict=True)}
    with ScriptedLLM() as llm:
        writer = LLMQuestionWriter(base_url=llm.base_url, model="judge", cache_dir=tmp_path / "cache",
                                   concurrency=3, attempts=2, max_retries=1, timeout=5)
        done, failed = writer.write_all(list(feedback.items()), progress=False)
        assert sorted(done) == ["a", "b", "c"]
        assert done["a"].description == feedback["a"] and len(done["a"].questions) == 4
        assert "HTTP 500" in failed["d"]
        assert "not among the options" in failed["e"]
        assert llm.calls["[malformed-once]"] == 2 and llm.calls["[429-once]"] == 2
        assert llm.calls["[500]"] == 2 * 2  # (1 + max_retries) client tries × 2 attempts
        before = llm.calls.copy()
        # A rerun (e.g. after an interruption) asks again only for what is not cached.
        done2, failed2 = writer.write_all(list(feedback.items()), progress=False)
        assert done2.keys() == done.keys() and failed2.keys() == failed.keys()
        for tag in ("[ok]", "[malformed-once]", "[429-once]"):
            assert llm.calls[tag] == before[tag]


def test_unreachable_endpoint_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    writer = LLMQuestionWriter(base_url=f"http://127.0.0.1:{port}/v1", model="m", cache_dir=tmp_path,
                               max_retries=0, timeout=2)
    with pytest.raises(LLMUnreachable, match=f"cannot reach the LLM endpoint http://127.0.0.1:{port}/v1"):
        writer.write_all([("a", "The image is fine.")], progress=False)


def test_read_feedback_reports_bad_items(tmp_path):
    p = tmp_path / "fb.jsonl"
    p.write_text('{"image": "a.jpg", "feedback": "Sharp. Overall good."}\n{"image": "b.jpg"}\nnot json\n')
    items, problems = read_feedback(p)
    assert [i["id"] for i in items] == ["a"]
    assert sorted(x.split(": ", 1)[0].rsplit(":", 1)[1] for x in problems.lines()) == ["2", "3"]
