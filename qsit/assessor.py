"""The Assessor: one object for everything downstream of a checkpoint.

It owns image loading, chat templating, the level-token look-up and the
scoring maths. The CLI, the UI, the evals and the server call it and never
re-implement any of those.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from qsit import levels as L
from qsit.images import SCORING_FLIPS, LoadedImage, flipped, load_image
from qsit.prompts import DEFAULT_PRESET, PromptPreset, ScoringPrompt, get_preset, user_turn


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message says which and why."""


DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "qsit-tiny"
"""The embedded default model, used when no model is named."""
MODEL_ENV = "QSIT_MODEL"


def resolve_model(name: str | None) -> str:
    """The named checkpoint, else $QSIT_MODEL, else the embedded default model, else a clear error."""
    if name:
        return name
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return str(DEFAULT_MODEL_DIR)
    raise ModelLoadError(
        "no model given and the embedded default model (qsit-tiny) is not installed; pass --model "
        f"DIR_OR_HUB_ID (any LLaVA-OneVision checkpoint) or set {MODEL_ENV}. "
        "`qsit make-tiny DIR` builds a random-weight test checkpoint."
    )


@dataclass(frozen=True)
class ScoreResult:
    """A level-based score with the metadata needed to read it."""

    image: str
    score: float
    """Expected level value, Σ p_i·i, on 1 (bad) .. 5 (excellent); higher is better."""
    level: str
    """The most likely level."""
    probabilities: dict[str, float]
    """Closed-set probabilities of the five levels, low → high (canonical level names)."""
    spread: float
    """Standard deviation of the predicted opinion distribution, in level units."""
    task: str = "quality"
    notes: tuple[str, ...] = ()
    score_range: tuple[float, float] = L.SCORE_RANGE
    higher_is_better: bool = True

    @property
    def score_unit(self) -> float:
        """The score on 0..1 (Q-SiT's published scripts report this)."""
        return float(L.to_unit_interval(self.score))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        d["score_range"] = list(self.score_range)
        return d


_SCORE_FIELDS = frozenset(f.name for f in fields(ScoreResult)) | {"score_unit"}


@dataclass(frozen=True)
class Assessment:
    """The joint result: a score and an explanation of the same image, by the same model.

    The score's fields read through: ``a.score``, ``a.level``, ``a.probabilities`` … are ``a.result``'s.
    """

    result: ScoreResult
    explanation: str
    model: str
    prompt_version: str

    def __getattr__(self, name: str):
        if name in _SCORE_FIELDS:
            return getattr(object.__getattribute__(self, "result"), name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict:
        """One flat mapping: the score's fields, then the explanation and who made both."""
        return {**self.result.to_dict(), "explanation": self.explanation, "model": self.model,
                "prompt_version": self.prompt_version}


def default_device_and_dtype(device=None, dtype=None):
    """CUDA + bf16 when a GPU is present, else CPU + fp32; explicit arguments win."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        try:
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(dtype) or getattr(
                torch, dtype
            )
        except AttributeError:
            raise ValueError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32") from None
    return device, dtype


def continuation_token_ids(tokenizer, prefix: str, words) -> list[int]:
    """The vocabulary id a model emits first for each word when it continues ``prefix``.

    The word is tokenised in context (prefix + separator + word) so casing and
    the leading space come out as the model would produce them. When the
    prefix is empty or ends in whitespace, that whitespace stays its own token
    (Q-SiT's script: "...is " then "Excellent"), so the bare word's first
    token is used.
    """
    bare = not prefix or prefix[-1].isspace()
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    ids = []
    for word in words:
        full = tokenizer(prefix + ("" if bare else " ") + word, add_special_tokens=False)["input_ids"]
        if prefix_ids and full[: len(prefix_ids)] == prefix_ids and len(full) > len(prefix_ids):
            ids.append(full[len(prefix_ids)])
        else:
            ids.append(tokenizer(word, add_special_tokens=False)["input_ids"][0])
    return ids


VIEWS_NOTE = "mean of {} views (as is and flipped)"
"""The note a score averaged over several views carries (``Assessor.score(views=)``); written and read
back from one pattern, so a scores CSV can tell which kind of score it holds."""


def views_note(views: int) -> str:
    return VIEWS_NOTE.format(views)


def views_in_notes(notes: str) -> int:
    """How many views a score was averaged over, read from its notes (1 when they name none)."""
    found = re.search(re.escape(VIEWS_NOTE).replace(r"\{\}", r"(\d+)"), notes)
    return int(found.group(1)) if found else 1


def scoring_prefix(tokenizer, prompt: ScoringPrompt) -> str:
    """The answer prefix the level word follows, as the model must be shown it.

    Where the tokenizer makes the space before a word a token of its own (qsit's tiny
    vocabulary with ``space_token``), every level word's continuation begins with that
    same space token, so it belongs to the prefix; elsewhere the prefix is the preset's.
    """
    prefix = prompt.answer_prefix
    if not prefix or prefix[-1].isspace():
        return prefix
    space = tokenizer(" ", add_special_tokens=False)["input_ids"]
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    full = tokenizer(f"{prefix} {prompt.level_words[0]}", add_special_tokens=False)["input_ids"]
    spaced = len(space) == 1 and full[: len(prefix_ids) + 1] == prefix_ids + space
    return prefix + " " if spaced else prefix


def resolve_level_token_ids(tokenizer, prompt: ScoringPrompt) -> list[int]:
    """The first token of each level word right after the answer prefix; they must be distinct."""
    ids = continuation_token_ids(tokenizer, scoring_prefix(tokenizer, prompt), prompt.level_words)
    if len(set(ids)) != len(ids):
        pieces = tokenizer.convert_ids_to_tokens(ids)
        shown = ", ".join(f"{w!r}→{p!r}({i})" for w, p, i in zip(prompt.level_words, pieces, ids, strict=True))
        raise ModelLoadError(
            "the level words do not start with distinct tokens in this tokenizer, so their "
            f"probabilities cannot be told apart: {shown}"
        )
    return ids


@dataclass(frozen=True)
class ChatReply:
    text: str
    finish_reason: str
    """"stop" when the model ended its turn, "length" when it hit ``max_new_tokens`` (OpenAI's words)."""


def finish_reason(new_tokens: Sequence[int], end_ids: set[int], max_new_tokens: int) -> str:
    ended = bool(new_tokens) and new_tokens[-1] in end_ids
    return "length" if len(new_tokens) >= max_new_tokens and not ended else "stop"


def stripped_pieces(pieces: Iterable[str]) -> Iterator[str]:
    """Stream pieces whose concatenation is the stripped text: leading and trailing whitespace
    dropped, whitespace between words kept (held back until a word follows), no empty pieces."""
    started, held = False, ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        text = held + piece
        body = text.rstrip()
        held = text[len(body):]
        if body:
            yield body


def choose_preset(explicit: str | PromptPreset | None, info: dict | None) -> tuple[PromptPreset, tuple[str, ...]]:
    """The prompt preset to score with, and a note when it is not the one the checkpoint was trained with."""
    trained = info.get("preset") if info else None
    if explicit is None:
        return get_preset(trained or DEFAULT_PRESET), ()
    chosen = get_preset(explicit) if isinstance(explicit, str) else explicit
    if trained and chosen.name != trained:
        return chosen, (f"prompt preset {chosen.name!r} is not the one this checkpoint was trained with "
                        f"({trained!r}); scores may be off",)
    return chosen, ()


class Assessor:
    """Scores and explains image quality with a LLaVA-OneVision-format checkpoint.

    >>> a = Assessor.from_pretrained("path/to/checkpoint")        # doctest: +SKIP
    >>> a.score(["photo.jpg"])[0].score                            # doctest: +SKIP
    3.91
    >>> print(a.assess("photo.jpg").explanation)                   # doctest: +SKIP
    """

    def __init__(self, model, processor, preset: str | PromptPreset = DEFAULT_PRESET, model_id: str = "",
                 max_pixels: int | None = None, notes: Sequence[str] = (), info: dict | None = None,
                 cache_id: str = ""):
        self.model = model.eval()
        self.notes = tuple(notes)
        """Said once per checkpoint (e.g. a prompt preset other than the trained one); every result repeats them."""
        self.info = info
        """The checkpoint's ``qsit_model.json`` (see ``qsit.model_info``), or None."""
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.model_id = model_id or getattr(model.config, "_name_or_path", "") or "<in-memory model>"
        self.cache_id = cache_id or self.model_id
        """What evaluation caches are keyed by: for a local checkpoint, its absolute path and weight files."""
        self.max_pixels = max_pixels
        # Resolved for every task at load, so a tokenizer that cannot tell the
        # levels apart fails here and not in the middle of a scoring run.
        self.level_token_ids = {
            task: resolve_level_token_ids(self.tokenizer, self.preset.scoring_prompt(task))
            for task in self.preset.tasks
        }
        self.scoring_prefixes = {
            task: scoring_prefix(self.tokenizer, self.preset.scoring_prompt(task)) for task in self.preset.tasks
        }
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device=None, dtype=None,
                        preset: str | PromptPreset | None = None, trust_remote_code: bool = False,
                        max_pixels: int | None = None) -> Assessor:
        """Load a local checkpoint directory or a hub id through the real transformers classes.

        ``preset`` defaults to the one the checkpoint was trained with (its ``qsit_model.json``),
        else qsit's; an explicit preset that differs from the trained one is named in every result's notes.
        """
        from transformers import AutoConfig, AutoProcessor, LlavaOnevisionForConditionalGeneration

        from qsit.model_info import checkpoint_identity, read_model_info

        name = os.fspath(name_or_path)
        device, dtype = default_device_and_dtype(device, dtype)
        where = "local directory" if Path(name).is_dir() else "hub id (no local directory of that name)"
        try:
            config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load model {name!r} as a {where}: {_first_line(e)}") from None
        if config.model_type != "llava_onevision":
            raise ModelLoadError(
                f"model {name!r} is a {config.model_type!r} checkpoint; qsit needs a LLaVA-OneVision one "
                "(model_type 'llava_onevision')"
            )
        try:
            processor = AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
            model = LlavaOnevisionForConditionalGeneration.from_pretrained(
                name, dtype=dtype, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load model {name!r}: {_first_line(e)}") from None
        info = read_model_info(name)
        chosen, notes = choose_preset(preset, info)
        return cls(model.to(device), processor, preset=chosen, model_id=name, max_pixels=max_pixels, notes=notes,
                   info=info, cache_id=checkpoint_identity(name))

    @property
    def device(self):
        return self.model.device

    @property
    def dtype(self):
        return self.model.dtype

    # ------------------------------------------------------------------ inputs
    def load(self, image, name: str | None = None) -> LoadedImage:
        """Load one image the way every Assessor method does (see ``qsit.images.load_image``)."""
        if isinstance(image, LoadedImage):
            return image
        return load_image(image, name=name, max_pixels=self.max_pixels)

    def _prompt(self, messages: list[dict], answer_prefix: str = "") -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True) + answer_prefix

    def _encode(self, texts: list[str], images: list[LoadedImage]):
        inputs = self.processor(
            images=[im.image for im in images], text=texts, return_tensors="pt", padding=True,
            padding_side="left",
        )
        return inputs.to(self.device, dtype=self.dtype) if self.dtype is not None else inputs.to(self.device)

    # ------------------------------------------------------------------ scoring
    def level_logits(self, images: Sequence, task: str = "quality") -> np.ndarray:
        """Logits of the level tokens right after the answer prefix: shape (len(images), n_levels).

        One forward pass for the whole list, no ``generate``: with left padding
        the last position is the prefix's last token in every row, and only
        that position's logits are computed (``logits_to_keep=1``).
        """
        loaded = [self.load(im) for im in images]
        if not loaded:
            return np.zeros((0, len(self.preset.scoring_prompt(task).level_words)))
        return self._next_token_logits(self._encode_scoring(loaded, task), self.level_token_ids[task])

    def _encode_scoring(self, loaded: list[LoadedImage], task: str):
        prompt = self.preset.scoring_prompt(task)
        text = self._prompt([user_turn(prompt.question)], self.scoring_prefixes[task])
        return self._encode([text] * len(loaded), loaded)

    def _next_token_logits(self, inputs, token_ids: Sequence[int]) -> np.ndarray:
        """Logits of ``token_ids`` at the last position of every (left-padded) row: one forward pass."""
        import torch

        mask = inputs["attention_mask"]
        # Positions counted from each row's first real token, so a left-padded
        # row sees the same rotary positions as it would alone.
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(**inputs, position_ids=position_ids, use_cache=False, logits_to_keep=1)
        last = out.logits[:, -1, :]
        ids = torch.tensor(list(token_ids), device=last.device)
        return last.index_select(-1, ids).float().cpu().numpy().astype(np.float64)

    def score(self, images: Iterable, task: str = "quality", batch_size: int = 8,
              progress: bool = False, views: int = 1) -> list[ScoreResult]:
        """Score images (paths, bytes, PIL images): one result per image, in order.

        ``views`` > 1 averages the level probabilities over the image and its flips (``SCORING_FLIPS``:
        mirrored, then upside down, then both), as IQA models average crops: steadier scores for
        ``views`` times the work.
        """
        from concurrent.futures import ThreadPoolExecutor

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 1 <= views <= len(SCORING_FLIPS):
            raise ValueError(f"views must be 1 to {len(SCORING_FLIPS)}, got {views}")
        self.preset.scoring_prompt(task)  # an unknown task fails before any work
        from tqdm.auto import tqdm

        loaded = [self.load(im) for im in images]
        seen = [flipped(im, t) for im in loaded for t in SCORING_FLIPS[:views]]  # each image's views together
        batches = [seen[i:i + batch_size] for i in range(0, len(seen), batch_size)]
        probs = []
        # The processor (anyres resizing, tiling) prepares batch i+1 on a
        # worker thread while the model runs batch i.
        with ThreadPoolExecutor(max_workers=1) as pool, tqdm(
            total=len(seen), desc=f"scoring {task}", unit="img" if views == 1 else "view", disable=not progress
        ) as bar:
            pending = pool.submit(self._encode_scoring, batches[0], task) if batches else None
            for i, batch in enumerate(batches):
                inputs = pending.result()
                if i + 1 < len(batches):
                    pending = pool.submit(self._encode_scoring, batches[i + 1], task)
                probs.append(L.level_probabilities(self._next_token_logits(inputs, self.level_token_ids[task])))
                bar.update(len(batch))
        if not loaded:
            return []
        mean = np.concatenate(probs).reshape(len(loaded), views, -1).mean(axis=1)
        return self._results(loaded, mean, task, (views_note(views),) if views > 1 else ())

    def _results(self, batch: list[LoadedImage], probs: np.ndarray, task: str,
                 notes: tuple[str, ...] = ()) -> list[ScoreResult]:
        scores = probs @ L.default_weights(probs.shape[-1])
        spreads = L.opinion_spread(probs)
        names = L.LEVELS  # canonical names, whatever casing the preset's words use
        return [
            ScoreResult(
                image=im.name,
                score=float(s),
                level=names[int(np.argmax(p))],
                probabilities={n: float(x) for n, x in zip(names, p, strict=True)},
                spread=float(sd),
                task=task,
                notes=(*self.notes, *im.notes, *notes),
            )
            for im, p, s, sd in zip(batch, probs, scores, np.atleast_1d(spreads), strict=True)
        ]

    def choice_probabilities(self, images: Sequence, questions: Sequence[str], choices: Sequence[str],
                             batch_size: int = 8) -> np.ndarray:
        """Closed-set probabilities of ``choices`` (e.g. option letters) as the answer's first token.

        One forward pass per batch, like scoring: shape (len(images), len(choices)).
        """
        ids = continuation_token_ids(self.tokenizer, "", choices)
        if len(set(ids)) != len(ids):
            raise ValueError(f"choices {list(choices)} do not start with distinct tokens")
        loaded = [self.load(im) for im in images]
        texts = [self._prompt([user_turn(q)]) for q in questions]
        if len(texts) != len(loaded):
            raise ValueError(f"{len(loaded)} images but {len(texts)} questions")
        out = [self._next_token_logits(self._encode(texts[i:i + batch_size], loaded[i:i + batch_size]), ids)
               for i in range(0, len(loaded), batch_size)]
        logits = np.concatenate(out) if out else np.zeros((0, len(choices)))
        return L.level_probabilities(logits) if len(logits) else logits

    def answer_log_likelihoods(self, image, question: str, answers: Sequence[str]) -> np.ndarray:
        """log P(answer, then the end of the turn | image, question) for each whole answer.

        How a model that answers in words picks among options without generating: the answer is
        appended to the prompt exactly as training appends it (its own tokens, then the template's
        end of turn), and one forward pass over the answers as a batch sums their tokens' log-probs.
        """
        import torch
        import torch.nn.functional as F

        from qsit.conversation import end_of_turn, render_prompt

        if not answers:
            return np.zeros(0)
        # The prompt generation sees (and training saw): the same rendering as ``chat``.
        text = render_prompt(self.processor, _chat_messages([{"role": "user", "content": question}]))
        prompt = self._encode([text], [self.load(image)])
        eot = end_of_turn(self.processor)
        pieces = [self.tokenizer(a + eot, add_special_tokens=False)["input_ids"] for a in answers]
        if any(not p for p in pieces):
            raise ValueError("an answer must have at least one token")
        base, longest = prompt["input_ids"][0], max(len(p) for p in pieces)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(pieces), len(base) + longest), pad, dtype=base.dtype, device=base.device)
        mask = torch.zeros_like(ids, dtype=prompt["attention_mask"].dtype)
        for i, p in enumerate(pieces):  # right padding: every row's prompt sits at the same positions
            ids[i, :len(base)] = base
            ids[i, len(base):len(base) + len(p)] = torch.tensor(p, dtype=base.dtype)
            mask[i, :len(base) + len(p)] = 1
        rest = {k: v.repeat_interleave(len(pieces), dim=0) for k, v in prompt.items()
                if k not in ("input_ids", "attention_mask") and torch.is_tensor(v)}
        with torch.inference_mode():
            # Only the logits that predict answer tokens: the last prompt position onwards.
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=longest + 1,
                                **rest).logits[:, :-1].float()
        logp = F.log_softmax(logits, dim=-1)
        return np.array([float(logp[i, torch.arange(len(p)), torch.tensor(p)].sum()) for i, p in enumerate(pieces)])

    # ------------------------------------------------------------------ interpreting
    def explain(self, image, question: str | None = None, max_new_tokens: int = 256,
                do_sample: bool = False, **generate_kwargs) -> str:
        """A free-text answer about the image's quality (greedy by default)."""
        q = question or self.preset.describe_question
        return self.chat(image, [{"role": "user", "content": q}], max_new_tokens=max_new_tokens,
                         do_sample=do_sample, **generate_kwargs)

    def chat(self, image, history: Sequence[dict], max_new_tokens: int = 256, do_sample: bool = False,
             streamer=None, **generate_kwargs) -> str:
        """Answer the last user turn of ``history`` (role/content dicts); the image goes with the first."""
        return self.reply(image, history, max_new_tokens, do_sample, streamer, **generate_kwargs).text

    def reply(self, image, history: Sequence[dict], max_new_tokens: int = 256, do_sample: bool = False,
              streamer=None, **generate_kwargs) -> ChatReply:
        """Like ``chat``, with why generation ended: "stop" (end of turn) or "length" (the token limit)."""
        import torch

        from qsit.conversation import render_prompt

        loaded = self.load(image)
        inputs = self._encode([render_prompt(self.processor, _chat_messages(history))], [loaded])
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, streamer=streamer,
                pad_token_id=self.tokenizer.pad_token_id, **generate_kwargs,
            )
        new_tokens = out[0, inputs["input_ids"].shape[1]:].tolist()
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        return ChatReply(text, finish_reason(new_tokens, self._end_ids(), max_new_tokens))

    def _end_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        return {i for i in ids if i is not None}

    def stream_chat(self, image, history: Sequence[dict], max_new_tokens: int = 256,
                    **generate_kwargs) -> Generator[str, None, str]:
        """Like ``chat`` but yields text pieces as they are generated; returns the finish reason.

        The pieces join to exactly ``chat``'s text: no leading or trailing whitespace, no empty pieces.
        """
        import threading

        from transformers import TextIteratorStreamer

        loaded = self.load(image)  # a bad image fails here, not inside the worker
        _chat_messages(history)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []
        replies: list[ChatReply] = []

        def work():
            try:
                replies.append(self.reply(loaded, history, max_new_tokens=max_new_tokens, streamer=streamer,
                                          **generate_kwargs))
            except BaseException as e:  # re-raised in the caller's thread below
                failure.append(e)
                streamer.end()  # otherwise the consumer would wait forever

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        yield from stripped_pieces(streamer)
        worker.join()
        if failure:
            raise failure[0]
        return replies[0].finish_reason

    # ------------------------------------------------------------------ joint
    def assess(self, image, task: str = "quality", question: str | None = None,
               max_new_tokens: int = 256) -> Assessment:
        """Score and explain one image: the joint result reports, the UI and the server show."""
        loaded = self.load(image)
        result = self.score([loaded], task=task)[0]
        explanation = self.explain(loaded, question=question, max_new_tokens=max_new_tokens)
        return Assessment(result, explanation, model=self.model_id, prompt_version=self.preset.version)


def _chat_messages(history: Sequence[dict]) -> list[dict]:
    """Validated role/content turns; the image marker goes on the first user turn."""
    from qsit.records import IMAGE_MARKER

    if not history or history[-1].get("role") != "user":
        raise ValueError("chat history must end with a user turn")
    messages = []
    for i, turn in enumerate(history):
        role, content = turn.get("role"), turn.get("content")
        if role not in ("user", "assistant") or not isinstance(content, str):
            raise ValueError(f"history turn {i} needs role 'user' or 'assistant' and text content, got {turn!r}")
        first_user = role == "user" and not any(m["role"] == "user" for m in messages)
        messages.append({"role": role, "content": f"{IMAGE_MARKER}\n{content}" if first_user else content})
    return messages


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
