"""LLVisionQA (paper Table V): multiple-choice questions on low-level attributes.

Questions are the Q-Bench JSON as published: ``img_path``, ``question``,
``candidates`` (2-4), ``correct_ans`` (absent in the test split), ``type``
(0 yes-no, 1 what, 2 how) and ``concern`` (0 distortion, 1 other,
2 in-context distortion, 3 in-context other).

An answer is read as an option letter by the official rules — the letter
alone, an answer starting "A." (or "A)"), the option's text itself, or the
letter alone on a line. Anything else is ``unparsed``: counted, shown, and
never guessed.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from evals.common import SampleCache, resolve_image, write_results
from qsit.prompts import OPTION_LETTERS, QUESTION_TYPES, Question

CONCERNS = ("distortion", "other", "in-context distortion", "in-context other")
UNPARSED = "unparsed"
# lmms-eval's qbench tasks name question types in another order (its utils.question_list).
LMMS_EVAL_TYPES = ("Yes/No", "How", "What")
LMMS_EVAL_CONCERNS = ("Global Distortion", "Global Others", "Local Distortion", "Local Others")
_TO_LMMS_TYPE = {0: 0, 1: 2, 2: 1}


@dataclass(frozen=True)
class LLVisionQAItem:
    """One Q-Bench LLVisionQA entry: a question about one image, and what it is concerned with."""

    id: str
    img_path: str
    q: Question
    concern: int

    def to_qbench(self) -> dict:
        """The entry in Q-Bench's own JSON layout."""
        return {"id": self.id, "img_path": self.img_path, "question": self.q.question,
                "candidates": list(self.q.options), "correct_ans": self.q.answer,
                "type": QUESTION_TYPES.index(self.q.type), "concern": self.concern}


def load_questions(path: str | Path, image_root: str | Path | None = None) -> tuple[list[LLVisionQAItem], list[str]]:
    """Questions from the Q-Bench JSON, and the image paths that are missing under ``image_root``."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of questions")
    root = Path(image_root) if image_root else path.parent
    questions, missing = [], []
    for i, d in enumerate(data):
        where = f"{path}: item {i}"
        try:
            cands = tuple(str(c) for c in d["candidates"])
            type_code, concern = int(d["type"]), int(d["concern"])
            correct = d.get("correct_ans")
            question = str(d["question"])
            img_path, qid = str(d["img_path"]), str(d.get("id", i))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: missing or bad field {e}") from None
        if not 2 <= len(cands) <= len(OPTION_LETTERS):
            raise ValueError(f"{where}: needs 2 to 4 candidates, got {len(cands)}")
        if correct is not None and correct not in cands:
            raise ValueError(f"{where}: correct_ans {correct!r} is not among the candidates")
        if type_code not in range(len(QUESTION_TYPES)) or concern not in range(len(CONCERNS)):
            raise ValueError(f"{where}: type must be 0..2 and concern 0..3")
        q = LLVisionQAItem(qid, img_path, Question(QUESTION_TYPES[type_code], question, correct, cands), concern)
        if not resolve_image(root, q.img_path).is_file():
            missing.append(q.img_path)
        questions.append(q)
    return questions, missing


def parse_answer(output: str, candidates) -> str | None:
    """The option letter an answer names, by the official rules, or None when it names none."""
    letters = tuple(OPTION_LETTERS[: len(candidates)])  # a tuple: "" must not count as a letter
    text = output.strip()
    if text in letters:
        return text
    m = re.match(rf"^\(?([{''.join(letters)}])[.)]", text)
    if m:
        return m.group(1)
    folded = text.rstrip(".").strip().lower()
    for letter, cand in zip(letters, candidates, strict=False):
        if folded == cand.strip().rstrip(".").lower():
            return letter
    for line in text.splitlines():
        if line.strip() in letters:
            return line.strip()
    return None


def official_rule_correct(output: str, item: LLVisionQAItem) -> bool:
    """The published Q-SiT script's test, kept for comparison: note its substring match on "A."."""
    letter = item.q.correct_letter
    return output == letter or f"{letter}." in output or output == item.q.answer or letter in output.split("\n")


def score(questions: list[LLVisionQAItem], outputs: list[str]) -> dict:
    """Accuracy overall, per type and per concern, with counts and the unparsed count."""
    if len(questions) != len(outputs):
        raise ValueError(f"{len(questions)} questions but {len(outputs)} outputs")
    graded = [q for q in questions if q.q.answer is not None]
    if not graded:
        return {"graded": 0, "note": "no correct_ans in this split: predictions only"}
    tally = defaultdict(lambda: [0, 0])
    unparsed_by_type = dict.fromkeys(QUESTION_TYPES, 0)
    official = 0
    for q, out in zip(questions, outputs, strict=True):
        if q.q.answer is None:
            continue
        letter = parse_answer(out, q.q.options)
        unparsed_by_type[q.q.type] += letter is None
        official += official_rule_correct(out, q)
        ok = letter == q.q.correct_letter
        for key in ("overall", f"type:{q.q.type}", f"concern:{CONCERNS[q.concern]}"):
            tally[key][0] += ok
            tally[key][1] += 1

    def acc(key):
        right, n = tally[key]
        return {"accuracy": right / n if n else None, "correct": right, "n": n}

    return {
        "overall": acc("overall"),
        "by_type": {t: acc(f"type:{t}") for t in QUESTION_TYPES},
        "by_concern": {c: acc(f"concern:{c}") for c in CONCERNS},
        "unparsed": sum(unparsed_by_type.values()),
        "unparsed_by_type": unparsed_by_type,  # answers that name no option offered (e.g. a distortion not listed)
        "official_rule_accuracy": official / len(graded),
        "graded": len(graded),
    }


def run_llvisionqa(assessor, questions: list[LLVisionQAItem], image_root: str | Path, out_dir: str | Path,
                   mode: str = "generate", max_new_tokens: int = 32, batch_size: int = 8,
                   progress: bool = True, likelihood_of: str = "letter") -> dict:
    """Answer every question (resuming from the cache) and write results, samples and tables.

    ``mode="generate"`` is the paper's protocol (greedy text, then parsing);
    ``mode="likelihood"`` picks the option letter with the highest next-token
    probability in one forward pass per batch (Q-Bench's protocol), or, with
    ``likelihood_of="answer"``, the option whose words are the likeliest whole
    answer (for models trained to answer with the option's words, which never
    write the letter); ``mode="both"`` runs both and reports how often they agree.
    """
    from tqdm.auto import tqdm

    if mode not in ("generate", "likelihood", "both"):
        raise ValueError(f"unknown mode {mode!r}; use generate, likelihood or both")
    if likelihood_of not in ("letter", "answer"):
        raise ValueError(f"unknown likelihood_of {likelihood_of!r}; use letter or answer")
    root = Path(image_root)
    cache = SampleCache(Path(out_dir) / "llvisionqa_cache.jsonl")
    base = f"{assessor.cache_id}|{assessor.preset.version}"
    present = [q for q in questions if resolve_image(root, q.img_path).is_file()]
    outputs: dict[str, str] = {}
    picks: dict[str, str] = {}
    if mode in ("generate", "both"):
        for q in tqdm(present, desc="LLVisionQA (generate)", unit="q", disable=not progress):
            key = f"{base}|gen{max_new_tokens}|{q.id}"
            if key not in cache:
                text = assessor.explain(resolve_image(root, q.img_path), question=q.q.prompt,
                                        max_new_tokens=max_new_tokens)
                cache.put(key, {"output": text})
            outputs[q.id] = cache.get(key)["output"]
    if mode in ("likelihood", "both"):
        lik = f"{base}|{'lik' if likelihood_of == 'letter' else 'likans'}|"  # the two protocols cache apart
        todo = [q for q in present if lik + q.id not in cache]
        if likelihood_of == "answer":
            for q in tqdm(todo, desc="LLVisionQA (likelihood of each answer)", unit="q", disable=not progress):
                ll = assessor.answer_log_likelihoods(resolve_image(root, q.img_path), q.q.prompt, list(q.q.options))
                cache.put(lik + q.id, {"letter": OPTION_LETTERS[int(ll.argmax())],
                                          "log_likelihoods": [float(x) for x in ll]})
        else:
            by_n = defaultdict(list)
            for q in todo:
                by_n[len(q.q.options)].append(q)
            for n, qs in by_n.items():
                for start in tqdm(range(0, len(qs), batch_size), desc=f"LLVisionQA (likelihood, {n} options)",
                                  disable=not progress):
                    chunk = qs[start:start + batch_size]
                    probs = assessor.choice_probabilities([resolve_image(root, q.img_path) for q in chunk],
                                                          [q.q.prompt for q in chunk], list(OPTION_LETTERS[:n]))
                    for q, p in zip(chunk, probs, strict=True):
                        cache.put(lik + q.id, {"letter": OPTION_LETTERS[int(p.argmax())],
                                                  "probabilities": [float(x) for x in p]})
        picks = {q.id: cache.get(lik + q.id)["letter"] for q in present}

    samples, results = [], {"model": assessor.model_id, "prompt_version": assessor.preset.version, "mode": mode,
                            "likelihood_of": likelihood_of if picks else None,
                            "questions": len(questions), "missing_images": len(questions) - len(present)}
    if outputs:
        results["generate"] = score(present, [outputs[q.id] for q in present])
    if picks:
        results["likelihood"] = score(present, [picks[q.id] for q in present])
    if outputs and picks:
        same = sum(parse_answer(outputs[q.id], q.q.options) == picks[q.id] for q in present)
        results["agreement"] = same / len(present) if present else None
    for q in present:
        out = outputs.get(q.id)
        parsed = parse_answer(out, q.q.options) if out is not None else None
        right = q.q.correct_letter
        samples.append({**q.to_qbench(), "prompt": q.q.prompt, "raw_output": out,
                        "parsed": None if out is None else (parsed or UNPARSED),
                        "likelihood_pick": picks.get(q.id), "correct_letter": right,
                        "correct_generate": parsed == right if right is not None and out is not None else None,
                        "correct_likelihood": picks[q.id] == right if right is not None and q.id in picks else None})
    write_results(out_dir, "llvisionqa", results, llvisionqa_markdown(results), samples)
    return results


def llvisionqa_markdown(results: dict) -> str:
    def pct(d):
        return "–" if d["accuracy"] is None else f"{100 * d['accuracy']:.2f}"

    rows = []
    for mode in ("generate", "likelihood"):
        r = results.get(mode)
        if r and r.get("graded"):
            label = f"likelihood of the {results.get('likelihood_of') or 'letter'}" if mode == "likelihood" else mode
            rows.append(f"| {label} | " + " | ".join(pct(r["by_type"][t]) for t in QUESTION_TYPES) + " | "
                        + " | ".join(pct(r["by_concern"][c]) for c in CONCERNS)
                        + f" | {pct(r['overall'])} | {r['unparsed']} |")
    if not rows:
        return "No graded questions (test split): predictions only.\n"
    head = "| protocol | " + " | ".join(QUESTION_TYPES) + " | " + " | ".join(CONCERNS) + " | overall | unparsed |"
    lines = [head, "|---" * (len(QUESTION_TYPES) + len(CONCERNS) + 3) + "|", *rows, ""]
    if "agreement" in results:
        lines.append(f"Generation and likelihood picks agree on {100 * results['agreement']:.1f}% of questions.\n")
    return "\n".join(lines)


# ---------------------------------------------------------------- lmms-eval interop
def to_lmms_eval_samples(samples: list[dict]) -> list[dict]:
    """Per-sample results in the layout of lmms-eval's ``samples_*.jsonl`` for ``qbench_dev``."""
    rows = []
    for i, s in enumerate(samples):
        resp = s.get("raw_output") if s.get("raw_output") is not None else (s.get("likelihood_pick") or "")
        rows.append({
            "doc_id": i,
            "doc": {"id": s["id"], "question": s["question"],
                    **{f"option{j}": (s["candidates"][j] if j < len(s["candidates"]) else "N/A") for j in range(4)},
                    "correct_choice": s["correct_letter"], "question_type": _TO_LMMS_TYPE[s["type"]],
                    "question_concern": s["concern"]},
            "target": s["correct_letter"],
            "arguments": [[s["prompt"]]],
            "resps": [[resp]],
            "filtered_resps": [resp],
            "qbench_acc": {"id": s["id"], "question_concern": s["concern"], "question_type": _TO_LMMS_TYPE[s["type"]],
                           "answer": s["correct_letter"], "parsed_pred": s["parsed"]},
        })
    return rows


def read_lmms_eval_samples(path: str | Path) -> list[dict]:
    """Predictions from lmms-eval's ``qbench_dev`` samples JSONL: id, raw response, its parse, target, labels."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            acc = d["qbench_acc"]
            resp = d["filtered_resps"][0] if d.get("filtered_resps") else d["resps"][0][0]
            rows.append({"id": str(acc["id"]), "response": resp, "their_parse": acc.get("parsed_pred"),
                         "target": acc.get("answer", d.get("target")),
                         "type": LMMS_EVAL_TYPES[int(acc["question_type"])],
                         "concern": LMMS_EVAL_CONCERNS[int(acc["question_concern"])]})
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{lineno}: not an lmms-eval qbench sample ({type(e).__name__}: {e})") from None
    return rows


def compare_lmms_eval(rows: list[dict], questions: dict[str, LLVisionQAItem]) -> dict:
    """Re-score lmms-eval's raw responses with qsit's rules; lmms-eval's own parser guesses a random
    letter on unparseable answers, so both accuracies and the unparsed count are reported."""
    ours = theirs = unparsed = 0
    for r in rows:
        q = questions.get(r["id"])
        if q is None:
            raise ValueError(f"lmms-eval sample {r['id']!r} has no matching question")
        letter = parse_answer(r["response"], q.q.options)
        unparsed += letter is None
        ours += letter == r["target"]
        theirs += r["their_parse"] == r["target"]
    n = len(rows)
    return {"n": n, "qsit_rules_accuracy": ours / n, "lmms_eval_accuracy": theirs / n, "unparsed_by_qsit": unparsed}
