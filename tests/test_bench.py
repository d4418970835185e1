"""The real-size benchmarks: the shapes they draw, and both scripts end to end at tiny size."""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlavaOnevisionForConditionalGeneration

from qsit.tiny import REAL_SHAPES, build_tokenizer, tiny_model_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("size", "published"), [("0.5b", 0.894e9), ("7b", 8.03e9)])
def test_real_shapes_have_the_published_checkpoints_parameter_counts(size, published):
    """llava-hf/llava-onevision-qwen2-{0.5b,7b}-ov-hf: 894M and 8.03B parameters (their model pages)."""
    with torch.device("meta"):  # shapes only: no memory, no time
        model = LlavaOnevisionForConditionalGeneration(tiny_model_config(REAL_SHAPES[size], build_tokenizer()))
    assert abs(sum(p.numel() for p in model.parameters()) / published - 1) < 0.002
    assert model.config.vision_config.image_size // model.config.vision_config.patch_size == 27  # 729 tokens a tile


def test_an_empty_real_shape_field_keeps_the_tiny_default():
    config = tiny_model_config(dataclasses.replace(REAL_SHAPES["7b"], text_intermediate=0), build_tokenizer())
    assert config.text_config.intermediate_size == 2 * 3584
    assert config.text_config.tie_word_embeddings is False


def _bench(script: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| " in proc.stdout  # the Markdown table
    return json.loads(out.read_text())


@pytest.mark.slow
def test_training_bench_runs_the_recipes_step_full_and_lora(tmp_path):
    full = _bench("train_real_size.py", "--size", "tiny", "--steps", "2", "--batch-size", "2",
                  "--config", "qsit/configs/train/mini-0.5b.yaml", tmp_path=tmp_path)
    lora = _bench("train_real_size.py", "--size", "tiny", "--steps", "2", "--batch-size", "2", "--lora",
                  "--config", "qsit/configs/train/primary-7b.yaml", tmp_path=tmp_path)
    for r in (full, lora):
        assert r["steps"] == 2 and r["real_tokens_per_s"] > 0 and all(math.isfinite(x) for x in r["losses"])
        assert r["tokens_per_record"] > 4  # each record carries its image's tokens
    # The shipped configs keep the tower frozen: full training is the language model and the projector.
    assert full["parameters"] / 2 < full["trainable"] < full["parameters"]
    assert 0 < lora["trainable"] < full["trainable"] / 2


@pytest.mark.slow
def test_scoring_bench_gives_the_same_scores_both_ways(tmp_path):
    r = _bench("score_throughput.py", "--size", "tiny", "--images", "4", "--batch-size", "2", "--repeats", "1",
               tmp_path=tmp_path)
    assert r["max_abs_score_diff"] < 1e-4
    assert r["reference"]["images_per_s"] > 0 and r["batched"]["images_per_s"] > 0
