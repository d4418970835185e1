"""D2 — quality interpreting data: pathway feedback → descriptions, VQA, multiple choice, conversations.

A feedback item (an image plus a human description of its low-level
attributes ending in an overall conclusion) is turned into a ``QualityQA``
— the description, short-answer questions (what / how, and yes/no balanced
1:1 over the dataset), and a short conversation on causes and fixes — by one
of two writers:

* ``rule_based_qa`` for images whose defects are known (the synthetic corpus);
* ``LLMQuestionWriter`` for free-text feedback, through any OpenAI-compatible
  endpoint, with answers validated, cached on disk, retried, and failures listed.

``qa_records`` then makes the records: one description, each question in
short-answer and in A/B/C/D form (correct letter position balanced), and the
conversation::

    {"image": "spaq/00001.jpg", "feedback": "The photo is slightly blurry ... Overall, the quality is fair."}
    → {"id": "feedback/00001/describe", "kind": "interpreting", "images": ["spaq/00001.jpg"],
       "messages": [{"role": "user", "content": "<image>\\nDescribe and evaluate the quality of the image."},
                    {"role": "assistant", "content": "The photo is slightly blurry ... fair."}], ...}
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_builders.common import BuildError, Problems
from qsit.levels import LEVELS, level_value
from qsit.prompts import OPTION_LETTERS, QUESTION_TYPES, Question, get_preset, multiple_choice_question
from qsit.records import IMAGE_MARKER, INTERPRETING, Record, RecordError, from_llava

SEVERITY_WORDS = ("slight", "mild", "noticeable", "strong", "severe")
SEVERITY_WORD_SOURCES = ("distortion", "level")
"""What a synthetic corpus's severity words follow: the distortion's parameter, or the image's level."""


@dataclass
class QualityQA:
    description: str
    questions: list[Question] = field(default_factory=list)
    conversation: list[tuple[str, str]] = field(default_factory=list)
    """(user, assistant) turns after the description: causes, advice, tools, recommendations."""

    def to_dict(self) -> dict:
        return {"description": self.description, "questions": [asdict(q) for q in self.questions],
                "conversation": [list(t) for t in self.conversation]}

    @classmethod
    def from_dict(cls, d: dict) -> QualityQA:
        return cls(description=d["description"],
                   questions=[Question(q["type"], q["question"], q["answer"], tuple(q["options"]))
                              for q in d.get("questions", [])],
                   conversation=[(u, a) for u, a in d.get("conversation", [])])


def qa_problems(qa: QualityQA) -> list[str]:
    """Why a QualityQA cannot be used (empty when it can)."""
    problems = []
    if not isinstance(qa.description, str) or not qa.description.strip():
        problems.append("empty description")
    for i, q in enumerate(qa.questions):
        tag = f"question {i}"
        if q.type not in QUESTION_TYPES:
            problems.append(f"{tag}: type {q.type!r} is not one of {', '.join(QUESTION_TYPES)}")
        if not q.question.strip() or not q.answer.strip():
            problems.append(f"{tag}: empty question or answer")
        if not 2 <= len(q.options) <= len(OPTION_LETTERS):
            problems.append(f"{tag}: needs 2 to {len(OPTION_LETTERS)} options, got {len(q.options)}")
        if len({o.strip().lower() for o in q.options}) != len(q.options) or any(not o.strip() for o in q.options):
            problems.append(f"{tag}: options must be distinct and non-empty")
        if q.answer not in q.options:
            problems.append(f"{tag}: answer {q.answer!r} is not among the options {list(q.options)}")
        if q.type == "yes-no" and (q.answer not in ("Yes", "No") or set(q.options) != {"Yes", "No"}):
            problems.append(f"{tag}: a yes-no question needs options Yes/No and one of them as answer")
    for i, turn in enumerate(qa.conversation):
        if len(turn) != 2 or not all(isinstance(t, str) and t.strip() for t in turn):
            problems.append(f"conversation turn {i}: needs a non-empty user and assistant text")
    return problems


# ---------------------------------------------------------------- rule-based writer
@dataclass(frozen=True)
class Defect:
    """A known quality problem of an image (the synthetic corpus knows these exactly)."""

    name: str
    """What it is called in text, e.g. "motion blur"."""
    severity: int
    """1 (slight) .. 5 (severe)."""
    region: str | None = None
    """e.g. "left part"; None when the whole image is affected."""
    cause: str = ""
    fix: str = ""


@dataclass(frozen=True)
class KnownQuality:
    content: str | None
    """A short caption of what the image shows; ``None`` leaves the description to quality alone."""
    level: str
    defects: tuple[Defect, ...] = ()


def _where(d: Defect) -> str:
    return f"the {d.region} of the image" if d.region else "the image"


def rule_based_qa(known: KnownQuality, absent_pool: Sequence[str], rng: random.Random) -> QualityQA:
    """Description, questions and conversation that follow from known defects, no model needed.

    ``absent_pool`` names defects the image does not have (for "No" answers and
    distractors). One yes and one no question per image keeps yes/no balanced.
    """
    if known.level not in LEVELS:
        raise ValueError(f"unknown level {known.level!r}")
    present = sorted(known.defects, key=lambda d: -d.severity)
    absent = [a for a in absent_pool if a not in {d.name for d in present}]
    sentences = [f"The image shows {known.content}."] if known.content else []
    for d in present:
        sentences.append(f"{_where(d).capitalize()} suffers from {SEVERITY_WORDS[d.severity - 1]} {d.name}.")
    if not present:
        subject = "It" if sentences else "The image"
        sentences.append(f"{subject} is sharp and well exposed, with natural colours and no visible noise or artifacts.")
    sentences.append(f"Overall, the quality of the image is {known.level}.")
    qs: list[Question] = []
    if present:
        main = present[0]
        qs.append(Question("yes-no", f"Is there {main.name} in the image?", "Yes", ("Yes", "No")))
        options = [main.name, *rng.sample(absent, k=min(3, len(absent)))]
        qs.append(Question("what", "What is the most obvious distortion in the image?", main.name, tuple(options)))
        sev = SEVERITY_WORDS[main.severity - 1]
        qs.append(Question("how", f"How severe is the {main.name} in the image?", sev,
                           tuple([sev, *rng.sample([w for w in SEVERITY_WORDS if w != sev], 3)])))
        if main.region:
            others = [r for r in ("left part", "right part", "top part", "bottom part", "whole image")
                      if r != main.region]
            qs.append(Question("what", f"Which part of the image is affected by {main.name}?", main.region,
                               tuple([main.region, *rng.sample(others, 3)])))
    else:
        qs.append(Question("yes-no", "Is the image clear and free of distortions?", "Yes", ("Yes", "No")))
    if absent:
        qs.append(Question("yes-no", f"Is there {rng.choice(absent)} in the image?", "No", ("Yes", "No")))
    level_options = [known.level, *rng.sample([lv for lv in LEVELS if lv != known.level], 3)]
    qs.append(Question("how", "How is the overall quality of the image?", known.level, tuple(level_options)))
    conversation = []
    if present:
        main = present[0]
        conversation.append((f"What most likely caused the {main.name}?", main.cause or "It is hard to say."))
        conversation.append(("How could this be fixed or avoided?", main.fix or "Retake the photo with care."))
    usable = level_value(known.level) >= level_value("good")
    conversation.append((
        "Would you recommend this image for printing or publishing?",
        "Yes, its quality is good enough for that." if usable
        else f"Not as it is: its quality is {known.level}, so fix the problems above or use another shot.",
    ))
    return QualityQA(description=" ".join(sentences), questions=qs, conversation=conversation)


# ---------------------------------------------------------------- LLM writer
LLM_PROMPT_VERSION = "d2-llm-1"
LLM_SYSTEM = (
    "You turn a human's description of an image's low-level visual quality into training data. "
    "Use only facts stated in the description. Reply with one JSON object and nothing else."
)
LLM_TEMPLATE = """Description of the image's quality:
\"\"\"{feedback}\"\"\"

Write JSON with these keys:
- "questions": a list of 4 to 6 objects {{"type", "question", "answer", "options"}}:
  * exactly one of type "yes-no" whose answer is "Yes" and exactly one whose answer is "No",
    both with options ["Yes", "No"];
  * the others of type "what" or "how" (e.g. which distortion, where, how severe, how is the
    overall quality), with a short answer and "options": the answer plus 3 plausible wrong answers.
- "conversation": 2 to 3 [user, assistant] pairs about causes of the problems, photography advice,
  restoration tools, or whether the image is fit for use."""


def parse_qa(raw: str, feedback: str) -> QualityQA:
    """The LLM's JSON reply as a validated ``QualityQA``; ``ValueError`` says what is wrong with it."""
    try:
        qa = QualityQA.from_dict(json.loads(raw) | {"description": feedback})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"reply is not the asked JSON ({type(e).__name__}: {_short(str(e))})") from None
    problems = qa_problems(qa)
    if problems:
        raise ValueError("reply does not validate: " + "; ".join(problems[:3]))
    return qa


class LLMUnreachable(BuildError):
    """The endpoint cannot be used at all; the run stops (finished items stay cached)."""


@dataclass
class LLMQuestionWriter:
    """Writes a QualityQA per feedback text through an OpenAI-compatible chat endpoint."""

    base_url: str
    model: str
    cache_dir: Path
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    attempts: int = 3
    """Requests per item when replies do not validate (HTTP retries are the client's, with back-off)."""
    timeout: float = 60.0
    max_retries: int = 4
    temperature: float = 0.2

    def __post_init__(self):
        from qsit.llm import ChatEndpoint

        self.cache_dir = Path(self.cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._endpoint = ChatEndpoint(self.base_url, self.model, self.api_key_env, self.timeout, self.max_retries)

    def cache_key(self, feedback: str) -> str:
        payload = json.dumps([LLM_PROMPT_VERSION, self.model, self.temperature, feedback], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def cached(self, feedback: str) -> QualityQA | None:
        path = self._cache_path(self.cache_key(feedback))
        if path.is_file():
            return QualityQA.from_dict(json.loads(path.read_text(encoding="utf-8"))["qa"])
        return None

    def _store(self, feedback: str, qa: QualityQA, raw: str) -> None:
        path = self._cache_path(self.cache_key(feedback))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"qa": qa.to_dict(), "raw": raw, "model": self.model}, ensure_ascii=False))
        os.replace(tmp, path)

    def write_one(self, feedback: str) -> QualityQA:
        """One item: from the cache, or asked (and re-asked while the reply does not validate)."""
        from qsit.llm import EndpointUnreachable

        hit = self.cached(feedback)
        if hit is not None:
            return hit
        messages = [{"role": "system", "content": LLM_SYSTEM},
                    {"role": "user", "content": LLM_TEMPLATE.format(feedback=feedback)}]
        try:
            answer = self._endpoint.ask(messages, lambda raw: parse_qa(raw, feedback), attempts=self.attempts,
                                        temperature=self.temperature, json_mode=True)
        except EndpointUnreachable as e:
            raise LLMUnreachable(str(e)) from None
        if answer.value is None:
            raise ValueError(answer.failure)
        self._store(feedback, answer.value, answer.reply)
        return answer.value

    def write_all(self, items: Sequence[tuple[str, str]], progress: bool = True
                  ) -> tuple[dict[str, QualityQA], dict[str, str]]:
        """``items`` are (id, feedback); returns the QAs by id and the failures by id (with why)."""
        from tqdm.auto import tqdm

        done: dict[str, QualityQA] = {}
        failed: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool, tqdm(
            total=len(items), desc="LLM questions", unit="item", disable=not progress
        ) as bar:
            futures = {pool.submit(self.write_one, fb): key for key, fb in items}
            try:
                for fut in as_completed(futures):
                    key = futures[fut]
                    try:
                        done[key] = fut.result()
                    except LLMUnreachable:
                        raise
                    except ValueError as e:
                        failed[key] = str(e)
                    bar.update(1)
            except LLMUnreachable:
                for f in futures:
                    f.cancel()
                raise
        return done, failed


def _short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------- records
def balance_yes_no(qas: dict[str, QualityQA], seed: int) -> tuple[dict[str, QualityQA], int]:
    """Drop yes-no questions of the majority answer (seeded) until Yes and No are 1:1; returns how many."""
    refs = [(k, i, q.answer) for k, qa in sorted(qas.items()) for i, q in enumerate(qa.questions)
            if q.type == "yes-no"]
    yes = [r for r in refs if r[2] == "Yes"]
    no = [r for r in refs if r[2] == "No"]
    major, minor = (yes, no) if len(yes) > len(no) else (no, yes)
    drop = set(random.Random(seed).sample([(k, i) for k, i, _ in major], len(major) - len(minor)))
    out = {k: QualityQA(qa.description, [q for i, q in enumerate(qa.questions) if (k, i) not in drop],
                        list(qa.conversation)) for k, qa in qas.items()}
    return out, len(drop)


class LetterBalancer:
    """Places the correct option at A, B, C, D in turn (per option count), shuffling the rest.

    Yes-no options come in both orders: "Yes" is at A for every other "Yes" question and so is
    "No" for every other "No" question, so neither the order nor the letter tells the answer.
    (Always "A. Yes / B. No" teaches a model to write "A. Yes" for yes whatever the order, which
    test sets that shuffle the options count wrong.)
    """

    def __init__(self, seed: int):
        self._next: dict[int, int] = {}
        self._yes_no_next = {"Yes": 0, "No": 0}
        self._rng = random.Random(seed)

    def arrange(self, q: Question) -> tuple[list[str], int]:
        n = len(q.options)
        pos = self._next.get(n, 0)
        self._next[n] = (pos + 1) % n
        if q.type == "yes-no":
            at = self._yes_no_next[q.answer]
            self._yes_no_next[q.answer] = 1 - at
            other = "No" if q.answer == "Yes" else "Yes"
            return ([q.answer, other] if at == 0 else [other, q.answer]), at
        wrong = [o for o in q.options if o != q.answer]
        self._rng.shuffle(wrong)
        return wrong[:pos] + [q.answer] + wrong[pos:], pos


MCQ_ANSWERS = ("letter", "words")


def mcq_answer(letter: str, option: str, style: str) -> str:
    """How a multiple-choice answer is written: "B. zoom blur" (``letter``) or "zoom blur" (``words``).

    Both are right by the official LLVisionQA rules. ``words`` spares a small language model the
    hardest step of the answer, copying the letter that stands in front of the option it means.
    """
    if style not in MCQ_ANSWERS:
        raise BuildError(f"multiple-choice answers are written as one of {MCQ_ANSWERS}, not {style!r}")
    return f"{letter}. {option}" if style == "letter" else option


def _record(key: str, image: str, source: str, split: str, suffix: str, turns: list[tuple[str, str]],
            meta: dict) -> Record:
    messages = []
    for i, (user, assistant) in enumerate(turns):
        messages.append({"role": "user", "content": f"{IMAGE_MARKER}\n{user}" if i == 0 else user})
        messages.append({"role": "assistant", "content": assistant})
    return Record(id=f"{key}/{suffix}", kind=INTERPRETING, images=[image], messages=messages,
                  source=source, split=split, meta=meta)


def _choice_turn(q: Question, balancer: LetterBalancer, mcq_answers: str) -> tuple[tuple[str, str], str]:
    """The multiple-choice (question, answer) turn, options placed by ``balancer``, and the right letter."""
    options, correct = balancer.arrange(q)
    letter = OPTION_LETTERS[correct]
    return (multiple_choice_question(q.question, options), mcq_answer(letter, q.answer, mcq_answers)), letter


def qa_records(key: str, image: str, qa: QualityQA, source: str, split: str, balancer: LetterBalancer,
               describe_question: str | None = None, meta: dict | None = None,
               mcq_answers: str = "letter") -> list[Record]:
    """Description, each question as short answer and as multiple choice, and the conversation."""
    ask = describe_question or get_preset("qsit").describe_question
    meta = dict(meta or {})

    def rec(suffix: str, turns: list[tuple[str, str]], extra: dict) -> Record:
        return _record(key, image, source, split, suffix, turns, {**meta, **extra})

    out = [rec("describe", [(ask, qa.description)], {"task": "describe"})]
    for i, q in enumerate(qa.questions):
        out.append(rec(f"q{i}", [(q.question, q.answer)], {"task": "vqa", "type": q.type}))
        turn, letter = _choice_turn(q, balancer, mcq_answers)
        out.append(rec(f"q{i}/mcq", [turn], {"task": "mcq", "type": q.type, "correct": letter}))
    if qa.conversation:
        out.append(rec("chat", [(ask, qa.description), *qa.conversation], {"task": "conversation"}))
    return out


def choice_only_records(key: str, image: str, questions: Sequence[Question], source: str, split: str,
                        balancer: LetterBalancer, meta: dict | None = None,
                        mcq_answers: str = "letter") -> list[Record]:
    """Questions asked with their options only: their right answer depends on the list (e.g. "blur"
    among family words, "zoom blur" among names), so they have no short-answer twin."""
    out = []
    for i, q in enumerate(questions):
        turn, letter = _choice_turn(q, balancer, mcq_answers)
        out.append(_record(key, image, source, split, f"c{i}/mcq", [turn],
                           {**(meta or {}), "task": "mcq", "type": q.type, "correct": letter, "choice_only": True}))
    return out


def read_feedback(path: Path) -> tuple[list[dict], Problems]:
    """Feedback items from JSON (a list) or JSONL: ``image`` and ``feedback`` (or ``text``), optional ``id``."""
    problems = Problems()
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        raw = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    raw.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as e:
                    problems.add(f"{path}:{lineno}", f"not valid JSON ({e.msg})")
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BuildError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list):
            raise BuildError(f"{path}: expected a list of feedback items")
        raw = [(f"{path}:item {i}", d) for i, d in enumerate(data)]
    items = []
    for where, d in raw:
        fb = d.get("feedback", d.get("text")) if isinstance(d, dict) else None
        if not isinstance(fb, str) or not fb.strip() or not isinstance(d.get("image"), str):
            problems.add(where, "needs 'image' and a non-empty 'feedback' (or 'text')")
            continue
        items.append({"id": str(d.get("id") or Path(d["image"]).stem), "image": d["image"],
                      "feedback": fb.strip(), "where": where})
    return items, problems


def read_instruction_json(path: Path, source: str, split: str = "train") -> tuple[list[Record], Problems]:
    """Q-Instruct-style instruction JSON (LLaVA conversation format), taken as-is."""
    problems = Problems()
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BuildError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    records = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        where = f"{path}:item {i}"
        try:
            item = {**item, "id": f"{source}/{item.get('id', i)}"}
            records.append(from_llava(item, kind=INTERPRETING, source=source, split=split, where=where))
        except (RecordError, AttributeError) as e:
            problems.add(where, str(e).removeprefix(f"{where}: "))
    return records, problems
