"""Evals: exact answer-matching rules, category bookkeeping, correlation maths, judge parsing,
and each eval end to end on a tiny checkpoint (with a loopback judge for LLDescribe)."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy.stats import kendalltau, pearsonr, spearmanr

from evals.iqa import load_iqa_list, run_iqa
from evals.lldescribe import JUDGE_PROMPTS, JUDGE_VERSION, DescribeItem, Judge, parse_judgment, run_lldescribe
from evals.llvisionqa import (
    LLVisionQAItem,
    compare_lmms_eval,
    load_questions,
    official_rule_correct,
    parse_answer,
    read_lmms_eval_samples,
    run_llvisionqa,
    score,
    to_lmms_eval_samples,
)
from qsit.metrics import correlations
from qsit.prompts import QUESTION_TYPES, Question
from tests.helpers import noise_image
from tests.llm_server import ScriptedLLM

# ---------------------------------------------------------------- IQA maths


def test_correlations_match_scipy_and_a_hand_case():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 2 * x + rng.normal(size=50)
    r = correlations(x, y)
    assert r["srcc"] == pytest.approx(spearmanr(x, y)[0]) and r["plcc"] == pytest.approx(pearsonr(x, y)[0])
    assert r["krcc"] == pytest.approx(kendalltau(x, y)[0]) and r["n"] == 50
    hand = correlations([1, 2, 3, 4], [1, 3, 2, 4])
    assert hand["srcc"] == pytest.approx(0.8) and hand["krcc"] == pytest.approx(4 / 6)


def test_logistic_fit_linearises_a_monotone_relation():
    x = np.linspace(1, 5, 40)
    y = 100 / (1 + np.exp(-(x - 3) * 3))
    raw, fitted = correlations(x, y), correlations(x, y, fit="logistic4")
    assert raw["srcc"] == pytest.approx(1.0) and fitted["plcc"] > 0.999 > raw["plcc"]
    assert correlations(x, y, fit="logistic5")["plcc"] > 0.999


@pytest.mark.parametrize("pred, gt, msg", [
    ([1, 2], [1, 2], "at least 3"),
    ([1, 1, 1], [1, 2, 3], "predictions are constant"),
    ([1, 2, 3], [5, 5, 5], "targets are constant"),
    ([1, 2, 3], [1, 2], "3 predictions but 2 targets"),
    ([1, 2, float("nan")], [1, 2, 3], "NaN"),
])
def test_correlation_input_errors(pred, gt, msg):
    with pytest.raises(ValueError, match=msg):
        correlations(pred, gt)


# ---------------------------------------------------------------- LLVisionQA rules

YES_NO = ("Yes", "No")
FOUR = ("blur", "noise", "fog", "jpeg compression artifacts")


@pytest.mark.parametrize("output, candidates, expected", [
    ("A", YES_NO, "A"), ("  B\n", YES_NO, "B"), ("B.", YES_NO, "B"), ("C. fog", FOUR, "C"),
    ("(D) jpeg compression artifacts", FOUR, "D"), ("no", YES_NO, "B"), ("Noise.", FOUR, "B"),
    ("I think so.\nA\n", YES_NO, "A"), ("", YES_NO, None), ("C", YES_NO, None),
    ("The answer is probably B", YES_NO, None), ("Maybe noise or fog", FOUR, None),
])
def test_answer_matching_rules(output, candidates, expected):
    assert parse_answer(output, candidates) == expected


def q(i, type_code, concern, correct="Yes", cands=YES_NO):
    return LLVisionQAItem(str(i), f"{i}.png", Question(QUESTION_TYPES[type_code], "Is it?", correct, tuple(cands)),
                          concern)


def test_score_bookkeeping_by_type_and_concern():
    qs = [q(0, 0, 0), q(1, 0, 1, "No"), q(2, 1, 2, "fog", FOUR), q(3, 2, 3, "blur", FOUR), q(4, 2, 0, "noise", FOUR)]
    outs = ["A", "A", "C. fog", "gibberish", "B"]
    r = score(qs, outs)
    assert r["overall"] == {"accuracy": 3 / 5, "correct": 3, "n": 5}
    assert r["by_type"]["yes-no"] == {"accuracy": 0.5, "correct": 1, "n": 2}
    assert r["by_type"]["what"]["accuracy"] == 1.0 and r["by_type"]["how"]["accuracy"] == 0.5
    assert r["by_concern"]["distortion"]["n"] == 2 and r["by_concern"]["in-context other"]["correct"] == 0
    assert r["unparsed"] == 1 and r["graded"] == 5
    assert r["unparsed_by_type"] == {"yes-no": 0, "what": 0, "how": 1}


def test_yes_no_by_option_order_separates_letters_from_words():
    from evals.targets import yes_no_by_option_order

    # a model that learned "A. Yes / B. No" and answers by its words, never reading the options
    def row(candidates, answer, output):
        letter = "AB"[candidates.index(answer)]
        return {"type": 0, "candidates": candidates, "correct_ans": answer, "raw_output": output,
                "correct_generate": parse_answer(output, candidates) == letter}

    rows = [row(["Yes", "No"], "Yes", "A. Yes"), row(["Yes", "No"], "No", "B. No"),
            row(["No", "Yes"], "Yes", "A. Yes"), row(["No", "Yes"], "No", "B. No"),
            row(["No", "Yes"], "No", "A. Yes"), {"type": 1, "candidates": ["fog", "blur"], "correct_ans": "fog",
                                                 "raw_output": "A. fog", "correct_generate": True}]
    r = yes_no_by_option_order(rows)
    assert r == {"No/Yes": {"n": 3, "by_letter": 1 / 3, "by_word": 2 / 3},  # the last is right by luck
                 "Yes/No": {"n": 2, "by_letter": 1.0, "by_word": 1.0}}


def test_letter_and_words_tells_a_wrong_letter_from_a_wrong_answer():
    from evals.targets import letter_and_words

    what = ["zoom blur", "motion blur", "fog", "noise"]

    def row(kind, candidates, answer, output):
        letter = "ABCD"[candidates.index(answer)]
        return {"type": kind, "candidates": candidates, "correct_ans": answer, "raw_output": output,
                "correct_generate": parse_answer(output, candidates) == letter}

    rows = [row(1, what, "zoom blur", "A. zoom blur"),    # right
            row(1, what, "zoom blur", "B. zoom blur"),    # right words, wrong letter
            row(1, what, "zoom blur", "C. motion blur"),  # wrong
            row(1, what, "fog", "fog"),                   # words only
            row(0, ["No", "Yes"], "Yes", "A. Yes")]       # wrong letter
    r = letter_and_words(rows)
    assert r["what"] == {"n": 4, "by_letter": 0.5, "by_words": 0.75}
    assert r["yes-no"] == {"n": 1, "by_letter": 0.0, "by_words": 1.0}


def test_yes_no_confusion_shows_answers_that_ignore_the_question():
    from evals.targets import yes_no_confusion

    def row(truth, output):
        return {"type": 0, "candidates": ["Yes", "No"], "correct_ans": truth, "raw_output": output}

    # says "yes" to one in two questions, whether or not the named damage is there
    rows = [row("Yes", "A. Yes"), row("Yes", "B. No"), row("No", "A. Yes"), row("No", "B. No"),
            {"type": 1, "candidates": ["fog", "blur"], "correct_ans": "fog", "raw_output": "A. yes"}]
    assert yes_no_confusion(rows) == {"yes_when_present": 0.5, "yes_when_absent": 0.5, "n_present": 2, "n_absent": 2}
    assert yes_no_confusion([row("Yes", "A. Yes"), row("No", "B. No")])["yes_when_absent"] == 0.0


def test_official_rule_is_a_substring_test_and_differs_from_parsing():
    question = q(0, 0, 0, "Yes")
    assert official_rule_correct("B is wrong, A. is right", question)
    assert parse_answer("B is wrong, A. is right", YES_NO) is None


def test_test_split_without_answers_gives_predictions_only():
    assert score([q(0, 0, 0, None)], ["A"]) == {"graded": 0, "note": "no correct_ans in this split: predictions only"}


def test_load_questions_validates_and_reports_missing_images(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    good = {"img_path": "a.png", "question": "Is it blurry?", "candidates": ["Yes", "No"], "correct_ans": "No",
            "type": 0, "concern": 0}
    (tmp_path / "q.json").write_text(json.dumps([good, {**good, "img_path": "gone.png"}]))
    qs, missing = load_questions(tmp_path / "q.json")
    assert len(qs) == 2 and missing == ["gone.png"] and qs[0].q.correct_letter == "B"
    (tmp_path / "bad.json").write_text(json.dumps([{**good, "correct_ans": "Maybe"}]))
    with pytest.raises(ValueError, match="not among the candidates"):
        load_questions(tmp_path / "bad.json")


# ---------------------------------------------------------------- LLDescribe judge


def test_judge_prompt_snapshot_and_parsing():
    assert JUDGE_VERSION == "lldescribe-judge-1"
    assert set(JUDGE_PROMPTS) == {"completeness", "precision", "relevance"}
    text = JUDGE_PROMPTS["precision"].format(golden="G", output="O")
    assert text.startswith("Reference description of an image's low-level visual quality:\nG\n\n"
                           "Description to rate:\nO\n\n")
    assert text.endswith("Answer with one line of the form 'Score: N', where N is 0, 1 or 2.")
    assert "{golden}" not in JUDGE_PROMPTS["relevance"]
    for reply, want in [("Score: 2", 2), ("score 1", 1), ("**Score:** 0", 0), ("1", 1), ("Score: 3", None),
                        ("I would say good", None)]:
        assert parse_judgment(reply) == want


# ---------------------------------------------------------------- end to end on a tiny model


@pytest.fixture
def tiny_bench(tmp_path):
    """Six images with IQA, LLVisionQA and LLDescribe files in the published formats."""
    names = []
    for i in range(6):
        name = f"img{i}.png"
        noise_image(40 + 8 * i, 48, seed=i).save(tmp_path / name)
        names.append(name)
    (tmp_path / "iqa.json").write_text(json.dumps([{"img_path": n, "gt_score": float(i)} for i, n in
                                                   enumerate(names)]))
    qa = [{"img_path": n, "question": "Is the image noisy?", "candidates": ["Yes", "No"], "correct_ans": "Yes",
           "type": 0, "concern": 0} for n in names[:3]]
    qa += [{"img_path": n, "question": "What is wrong?", "candidates": ["noise", "blur", "fog"],
            "correct_ans": "noise", "type": 1, "concern": 2} for n in names[3:]]
    (tmp_path / "llvisionqa.json").write_text(json.dumps(qa))
    (tmp_path / "lldescribe.json").write_text(json.dumps(
        [{"img_path": n, "golden_description": "The image is very noisy. Overall, the quality is bad."}
         for n in names[:2]]))
    return tmp_path


def test_iqa_runs_resumes_and_writes_tables(assessor, tiny_bench):
    out = tiny_bench / "out"
    s = run_iqa(assessor, {"mini": str(tiny_bench / "iqa.json")}, tiny_bench, out, progress=False)
    r = s["sets"]["mini"]
    assert r["n"] == 6 and r["cross_set"]
    assert (out / "iqa.md").read_text().startswith("| model | mini† | avg |")
    assert (out / "iqa_scatter_mini.png").stat().st_size > 1000
    samples = [json.loads(x) for x in (out / "iqa_samples.jsonl").read_text().splitlines()]
    assert [x["gt_score"] for x in samples] == [0, 1, 2, 3, 4, 5]
    assert samples[0]["score"] == pytest.approx(assessor.score([tiny_bench / "img0.png"])[0].score, abs=1e-6)
    pred, gt = [x["score"] for x in samples], [x["gt_score"] for x in samples]
    assert r["srcc"] == pytest.approx(spearmanr(pred, gt)[0]) and r["plcc"] == pytest.approx(pearsonr(pred, gt)[0])
    lines = (out / "iqa_cache.jsonl").read_text()
    run_iqa(assessor, {"mini": str(tiny_bench / "iqa.json")}, tiny_bench, out, progress=False)
    assert (out / "iqa_cache.jsonl").read_text() == lines  # nothing scored twice
    assert load_iqa_list(tiny_bench / "iqa.json")[0][2].gt == 2.0


def test_iqa_with_views_scores_anew_and_says_so(assessor, tiny_bench):
    out = tiny_bench / "out-views"
    run_iqa(assessor, {"mini": str(tiny_bench / "iqa.json")}, tiny_bench, out, progress=False)
    s = run_iqa(assessor, {"mini": str(tiny_bench / "iqa.json")}, tiny_bench, out, progress=False, views=2)
    assert s["views"] == 2 and "mean over 2 views" in (out / "iqa.md").read_text()
    samples = [json.loads(x) for x in (out / "iqa_samples.jsonl").read_text().splitlines()]
    want = assessor.score([tiny_bench / "img0.png"], views=2)[0].score
    assert samples[0]["score"] == pytest.approx(want, abs=1e-6)  # not the single view cached before


def test_iqa_cache_follows_the_weights_not_the_spelling_of_the_path(tiny_checkpoint, tiny_bench, tmp_path,
                                                                    monkeypatch):
    import shutil

    import torch

    from qsit.assessor import Assessor

    ckpt = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    out, sets = tmp_path / "out", {"mini": str(tiny_bench / "iqa.json")}
    monkeypatch.chdir(tmp_path)
    first = run_iqa(Assessor.from_pretrained("ckpt"), sets, tiny_bench, out, progress=False)
    lines = (out / "iqa_cache.jsonl").read_text()
    first_score = json.loads((out / "iqa_samples.jsonl").read_text().splitlines()[0])["score"]
    run_iqa(Assessor.from_pretrained(ckpt.resolve()), sets, tiny_bench, out, progress=False)
    assert (out / "iqa_cache.jsonl").read_text() == lines  # the same folder: nothing scored twice
    retrained = Assessor.from_pretrained(ckpt)
    with torch.no_grad():
        retrained.model.lm_head.weight.mul_(3.0)  # a different model saved into the same folder
    retrained.model.save_pretrained(ckpt)
    reloaded = Assessor.from_pretrained("ckpt")
    again = run_iqa(reloaded, sets, tiny_bench, out, progress=False)
    assert len((out / "iqa_cache.jsonl").read_text().splitlines()) == 2 * len(lines.splitlines())
    fresh = reloaded.score([tiny_bench / "img0.png"])[0].score
    assert fresh != pytest.approx(first_score, abs=1e-4)
    assert json.loads((out / "iqa_samples.jsonl").read_text().splitlines()[0])["score"] == pytest.approx(fresh)
    assert again["sets"]["mini"]["n"] == first["sets"]["mini"]["n"]


def test_llvisionqa_both_protocols_and_lmms_eval_roundtrip(assessor, tiny_bench):
    out = tiny_bench / "out"
    qs, missing = load_questions(tiny_bench / "llvisionqa.json")
    r = run_llvisionqa(assessor, qs, tiny_bench, out, mode="both", max_new_tokens=4, progress=False)
    assert r["generate"]["graded"] == 6 and r["likelihood"]["graded"] == 6 and "agreement" in r
    assert r["likelihood"]["unparsed"] == 0
    samples = [json.loads(x) for x in (out / "llvisionqa_samples.jsonl").read_text().splitlines()]
    assert all(s["likelihood_pick"] in "ABC" for s in samples)
    assert sum(s["correct_likelihood"] for s in samples) == r["likelihood"]["overall"]["correct"]
    lmms = out / "lmms.jsonl"
    lmms.write_text("".join(json.dumps(x) + "\n" for x in to_lmms_eval_samples(samples)))
    rows = read_lmms_eval_samples(lmms)
    assert [x["type"] for x in rows] == ["Yes/No"] * 3 + ["What"] * 3  # lmms-eval's own label order
    cmp = compare_lmms_eval(rows, {x.id: x for x in qs})
    assert cmp["n"] == 6 and cmp["qsit_rules_accuracy"] == pytest.approx(r["generate"]["overall"]["accuracy"])


def test_llvisionqa_likelihood_of_each_whole_answer(assessor, tiny_bench):
    import torch

    from qsit.records import Record
    from qsit.tokenization import Collator, encode

    qs, _ = load_questions(tiny_bench / "llvisionqa.json")
    q, image = qs[3], tiny_bench / qs[3].img_path
    options = list(q.q.options)
    ll = assessor.answer_log_likelihoods(image, q.q.prompt, options)
    alone = [assessor.answer_log_likelihoods(image, q.q.prompt, [o])[0] for o in options]
    assert ll == pytest.approx(alone, abs=1e-4)  # padding the batch changes nothing
    # Each value is minus the training loss of the record that answers with that option.
    for option, value in zip(options, ll, strict=True):
        record = Record(id="r", kind="interpreting", images=("x.png",), source="t", messages=(
            {"role": "user", "content": f"<image>\n{q.q.prompt}"}, {"role": "assistant", "content": option}))
        example = encode(assessor.processor, record, [image])
        batch = Collator(assessor.tokenizer.pad_token_id)([example])
        with torch.no_grad():
            loss = assessor.model(**{k: v.to(assessor.device) for k, v in batch.items()}).loss
        targets = sum(label != -100 for label in example.labels)
        assert value == pytest.approx(-float(loss) * targets, rel=1e-4, abs=1e-3)

    out = tiny_bench / "out-answer"
    r = run_llvisionqa(assessor, qs, tiny_bench, out, mode="likelihood", likelihood_of="answer", progress=False)
    assert r["likelihood_of"] == "answer" and r["likelihood"]["graded"] == 6 and r["likelihood"]["unparsed"] == 0
    samples = [json.loads(x) for x in (out / "llvisionqa_samples.jsonl").read_text().splitlines()]
    assert samples[3]["likelihood_pick"] == "ABC"[int(np.argmax(ll))]
    assert "| likelihood of the answer |" in (out / "llvisionqa.md").read_text()
    with pytest.raises(ValueError, match="likelihood_of"):
        run_llvisionqa(assessor, qs, tiny_bench, out, mode="likelihood", likelihood_of="word", progress=False)


def test_lldescribe_with_a_loopback_judge(assessor, tiny_bench):
    def reply(body):
        prompt = body["messages"][-1]["content"]
        if "How completely" in prompt:
            return "Score: 1"
        if "How precise" in prompt:
            return "I cannot tell."  # never parses: every precision judgment fails
        return "Score: 2"

    out = tiny_bench / "out"
    items = [DescribeItem(**d) for d in json.loads((tiny_bench / "lldescribe.json").read_text())]
    with ScriptedLLM(reply=reply) as llm:
        judge = Judge(base_url=llm.base_url, model="judge", attempts=2, max_retries=0, timeout=5, concurrency=2)
        r = run_lldescribe(assessor, items, tiny_bench, judge, out, rounds=3, max_new_tokens=4, progress=False)
        dims = r["dimensions"]
        assert dims["completeness"] == {"P0": 0.0, "P1": 1.0, "P2": 0.0, "mean": 1.0, "judged": 6, "failed": 0}
        assert dims["relevance"]["mean"] == 2.0 and dims["precision"]["failed"] == 6
        assert dims["precision"]["mean"] is None and r["sum"] is None
        calls = sum(llm.calls.values())
        assert calls == 2 * 3 * (1 + 1 + 2)  # items × rounds × (one call, one call, two attempts)
        run_lldescribe(assessor, items, tiny_bench, judge, out, rounds=3, max_new_tokens=4, progress=False)
        assert sum(llm.calls.values()) == calls  # an interrupted or repeated run judges nothing twice
    assert r["failures"] == {"the judge's reply holds no score 0, 1 or 2": 6}
    md = (out / "lldescribe.md").read_text()
    assert "6 judgment(s) failed and were excluded" in md and "6 × the judge's reply holds no score" in md
    assert math.isclose(json.loads((out / "lldescribe.json").read_text())["dimensions"]["relevance"]["P2"], 1.0)


def test_ask_says_why_a_request_failed():
    from qsit.llm import ChatEndpoint

    with ScriptedLLM() as llm:
        endpoint = ChatEndpoint(llm.base_url, "m", max_retries=0, timeout=5)
        answer = endpoint.ask([{"role": "user", "content": "[500] rate this"}], int, attempts=2)
        assert answer.value is None and answer.failure.startswith("HTTP 500") and llm.calls["[500]"] == 2
        answer = endpoint.ask([{"role": "user", "content": "[ok]"}], lambda r: r.upper(), attempts=2)
        assert answer.failure is None and answer.value == answer.reply.upper()


def test_explanation_checks_cover_pristine_and_distorted_images_and_resume(assessor, small_corpus, tmp_path):
    from evals.targets import explanation_checks

    d1 = [json.loads(line) for line in (small_corpus / "d1" / "records.jsonl").open()]
    tests = [r for r in d1 if r["split"] == "test"]
    pristine = sum(r["images"][0].endswith("/pristine.png") for r in tests)
    assert 0 < pristine < len(tests)
    first = explanation_checks(assessor, small_corpus, tmp_path, max_new_tokens=8)
    assert first["images"] == len(tests) and first["distorted"] == len(tests) - pristine
    assert all(r["family"] and r["distortion"] for r in first["examples"])
    cached = (tmp_path / "explain_cache.jsonl").read_text().splitlines()
    assert len(cached) == len(tests)
    again = explanation_checks(assessor, small_corpus, tmp_path, max_new_tokens=8)  # from the cache
    assert again == first and (tmp_path / "explain_cache.jsonl").read_text().splitlines() == cached
    sample = explanation_checks(assessor, small_corpus, tmp_path, n=3)
    assert sample["images"] == 3


def test_explanation_summary_counts_clean_calls_on_pristine_and_distorted_images():
    from evals.targets import summarise_explanations

    clean = "The image is sharp and well exposed, with no visible noise or artifacts. Overall, the quality of the image is excellent."
    noisy = "The image suffers from mild shot noise. Overall, the quality of the image is good."
    rows = [
        {"family": None, "explanation": clean, "names_family": None, "concluded": "excellent", "level": "excellent"},
        {"family": None, "explanation": noisy, "names_family": None, "concluded": "good", "level": "good"},
        {"family": "noise", "explanation": noisy, "names_family": True, "concluded": "good", "level": "fair"},
        {"family": "blur", "explanation": noisy, "names_family": False, "concluded": "good", "level": "good"},
        {"family": "blur", "explanation": clean, "names_family": False, "concluded": "excellent", "level": "excellent"},
    ]
    s = summarise_explanations(rows)
    assert (s["images"], s["distorted"], s["pristine"]) == (5, 3, 2)
    assert s["pristine_called_clean"] == 0.5 and s["distorted_called_clean"] == 1 / 3
    assert s["names_family"] == 1 / 3 and s["agreement"] == 4 / 5
    assert summarise_explanations(rows[2:])["pristine_called_clean"] is None
    assert s["by_family"] == {"blur": {"images": 2, "named": 0, "instead": {"noise": 1}},
                              "noise": {"images": 1, "named": 1, "instead": {}}}


def test_monotonicity_summary_counts_photos_that_pass():
    from evals.targets import monotonicity_summary

    def photo(clean, blur, noise):
        ladders = {"blur": blur, "noise": noise}
        return {"clean": clean, "all_monotonic": all(s[0] < clean and s[0] > s[1] > s[2] for s in ladders.values()),
                "distortions": {k: {"scores": s, "monotonic": s[0] < clean and s[0] > s[1] > s[2]}
                                for k, s in ladders.items()}}

    s = monotonicity_summary([photo(4.5, [4, 3, 2], [4, 3, 2]), photo(3.0, [2.5, 2, 1.5], [3.5, 2, 1])])
    assert s["photos"] == 2 and s["all_monotonic"] == 1
    assert s["monotonic"] == {"blur": 2, "noise": 1} and s["severity_1_below_clean"] == {"blur": 2, "noise": 1}
    assert s["clean"] == {"min": 3.0, "median": 3.75, "max": 4.5}
    with pytest.raises(ValueError, match="no photos"):
        monotonicity_summary([])


def test_the_score_miss_by_group_finds_an_offset_group_and_what_removing_it_gains():
    from evals.targets import score_miss_by_group

    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, 300)
    groups = ["a"] * 100 + ["b"] * 100 + ["c"] * 100
    score = 1 + 4 * truth / 100 + rng.normal(0, 0.1, 300)
    score[100:200] -= 1.0  # the model scores group b a level too low
    miss = score_miss_by_group(score, truth, groups)
    b = miss["groups"]["b"]
    assert b["n"] == 100 and b["residual"] > 10 and all(miss["groups"][g]["residual"] < 0 for g in "ac")
    assert all(g["within"] > 0.95 for g in miss["groups"].values())  # each group is ranked right within itself
    assert miss["overall"] < 0.95 < miss["offsets_removed"]
    flat = score_miss_by_group([1, 2, 3, 4], [10, 20, 30, 40], ["x", "x", "y", "y"])
    assert flat["groups"]["x"]["within"] is None and flat["offsets_removed"] == pytest.approx(1.0)
