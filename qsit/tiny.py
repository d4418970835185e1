"""Tiny LLaVA-OneVision checkpoints of the real architecture, built offline.

The same classes as a 7B hub checkpoint (SigLIP vision tower, Qwen2 language
model, anyres image processor, the hub's chat template), at a size that runs
in milliseconds on a CPU. Weights are random: such a model scores and talks
nonsense, but every code path — saving, loading, templating, padding, the
level-token look-up — is exercised exactly as with a real one. Tests build
them in fixtures; training starts the embedded default model from one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from qsit.levels import LEVELS
from qsit.prompts import PRESETS

# The chat template shipped with llava-hf/llava-onevision-qwen2-*-ov-hf.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")

# Words the tokenizer should know as whole tokens: the prompts, the levels in
# every casing, and the vocabulary of quality descriptions.
_QUALITY_WORDS = (
    "the image is blurry noisy sharp clear dark bright overexposed underexposed low high contrast "
    "colour color saturation details texture focus motion blur defocus jpeg compression artifacts "
    "noise grain fog snow frost pixelated pixelation distortion distorted lighting exposure sky "
    "subject background foreground left right top bottom part whole overall quality good poor fair "
    "bad excellent yes no what how which why where a an of in on and but with this that is are "
    "very slightly severely some many few clarity vivid dull washed out realistic natural photo "
    "photograph picture scene building flower temple tree person people water road car animal "
    "recommend increase reduce fix use tool restore denoise sharpen adjust the camera"
)


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of a tiny checkpoint; the defaults build ~1M parameters in a second."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    vocab_size: int = 1024
    """Of the fitted tokenizer."""
    anyres_max: int = 9
    space_token: bool = False
    """A space is a token of its own, so a word is one token wherever it stands (see build_tokenizer)."""
    seed: int = 0
    vision_intermediate: int = 0
    """The vision MLP's width (0: twice vision_hidden)."""
    text_intermediate: int = 0
    """The language model's MLP width (0: twice text_hidden)."""
    embedding_rows: int = 0
    """Rows of the language model's embedding and head (0: the tokenizer's size); a real checkpoint's
    vocabulary size gives a random model its real parameter count and head cost."""
    tie_embeddings: bool = True
    max_positions: int = 4096


# Random models of the published checkpoints' shapes (llava-hf/llava-onevision-qwen2-{0.5b,7b}-ov-hf:
# SigLIP so400m/14 at 384 px without its last layer, Qwen2 0.5B / 7B), for measuring speed and
# memory at real size where the weights cannot be downloaded. The tokenizer stays the tiny one.
_SO400M = {"image_size": 384, "patch_size": 14, "vision_hidden": 1152, "vision_intermediate": 4304,
           "vision_layers": 26, "vision_heads": 16, "max_positions": 32768}
REAL_SHAPES = {
    "0.5b": TinyConfig(**_SO400M, text_hidden=896, text_intermediate=4864, text_layers=24, text_heads=14,
                       text_kv_heads=2, embedding_rows=151936, tie_embeddings=True),
    "7b": TinyConfig(**_SO400M, text_hidden=3584, text_intermediate=18944, text_layers=28, text_heads=28,
                     text_kv_heads=4, embedding_rows=152128, tie_embeddings=False),
}


def tokenizer_corpus() -> list[str]:
    lines = [_QUALITY_WORDS]
    for preset in PRESETS.values():
        lines.append(preset.describe_question)
        for prompt in preset.scoring.values():
            lines.append(prompt.question)
            lines.extend(prompt.answer(i) for i in range(len(LEVELS)))
    levels = " ".join(LEVELS)
    lines += [levels, levels.title(), " ".join(f"The quality of the image is {w}." for w in LEVELS)]
    return lines * 20


def build_tokenizer(vocab_size: int = 1024, texts: Iterable[str] = (), space_token: bool = False):
    """A byte-level BPE tokenizer (Qwen2-style) with the chat and image special tokens.

    ``texts`` (e.g. the answers of a training corpus) are fitted besides qsit's own
    prompts, so that the words a model must learn to write are whole tokens.

    With ``space_token`` a space never merges into the word after it. In a Qwen2-style
    vocabulary "zoom" that begins an answer and " zoom" in the list of options before it
    are two unrelated tokens, which a pretrained model has learnt to relate and a model
    trained from random weights has not; with the space apart they are one token, so
    answering from a list is copying a token the prompt holds.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="isolated"), byte_level])
        if space_token else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(itertools.chain(tokenizer_corpus(), texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )


def grid_pinpoints(image_size: int) -> list[list[int]]:
    """The hub's 6×6 anyres grid (384..2304 in steps of 384), scaled to the tiny tile size."""
    steps = [image_size * k for k in range(1, 7)]
    return [[h, w] for h in steps for w in steps]


def tiny_model_config(cfg: TinyConfig, tokenizer):
    """The LlavaOnevisionConfig of a checkpoint of these sizes whose tokenizer is ``tokenizer``."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    pins = grid_pinpoints(cfg.image_size)
    return LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_size=cfg.vision_hidden,
            intermediate_size=cfg.vision_intermediate or 2 * cfg.vision_hidden, num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.vision_heads, vision_use_head=False,
        ),
        text_config=Qwen2Config(
            vocab_size=max(cfg.embedding_rows, len(tokenizer)), hidden_size=cfg.text_hidden,
            intermediate_size=cfg.text_intermediate or 2 * cfg.text_hidden, num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_kv_heads,
            max_position_embeddings=cfg.max_positions, tie_word_embeddings=cfg.tie_embeddings,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pins,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio=f"anyres_max_{cfg.anyres_max}",
        tie_word_embeddings=cfg.tie_embeddings,
    )


def build_tiny_checkpoint(
    out_dir: str | os.PathLike, config: TinyConfig | None = None, texts: Iterable[str] = (),
    device: str | None = None, dtype: str | None = None,
) -> str:
    """Build and ``save_pretrained`` a random tiny LLaVA-OneVision model + processor; returns the path.

    ``texts`` also fit the tokenizer (see :func:`build_tokenizer`). ``device`` is where the weights are
    drawn (a GPU draws a 7B model in seconds) and ``dtype`` what they are saved in (default float32).
    """
    import json

    import torch
    from transformers import (
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    cfg = config or TinyConfig()
    tokenizer = build_tokenizer(cfg.vocab_size, texts, cfg.space_token)
    pins = grid_pinpoints(cfg.image_size)
    tile = {"height": cfg.image_size, "width": cfg.image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=tile, image_grid_pinpoints=pins, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ),
        video_processor=LlavaOnevisionVideoProcessor(size=tile),
        tokenizer=tokenizer,
        num_image_tokens=(cfg.image_size // cfg.patch_size) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=f"anyres_max_{cfg.anyres_max}",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    model_config = tiny_model_config(cfg, tokenizer)
    torch.manual_seed(cfg.seed)
    with torch.device(device or "cpu"):
        model = LlavaOnevisionForConditionalGeneration(model_config)
    if dtype:  # "bfloat16" or the short names qsit's --dtype takes
        model.to(getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = os.fspath(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    with open(os.path.join(out, "qsit_tiny.json"), "w") as f:
        json.dump({"kind": "random-weight tiny LLaVA-OneVision", **asdict(cfg)}, f, indent=2)
    return out
