"""The published Q-SiT scoring loop, reproduced for cross-checks and benchmarks.

The authors' ``qsit_transformers_test_iqa.py`` scores one image at a time:
chat-template the question, tokenise the answer prefix separately and append
it, then ``generate(max_new_tokens=1, output_logits=True)`` and read the level
logits of that one generated step. ``Assessor.score`` must give the same
numbers with one batched forward pass; tests and ``bench/`` hold it to that.
Nothing else in qsit uses this module.
"""

from __future__ import annotations

import numpy as np

from qsit import levels as L


def reference_level_logits(assessor, image, task: str = "quality") -> np.ndarray:
    """Level logits for one image, computed the way the published script does."""
    import torch

    prompt = assessor.preset.scoring_prompt(task)
    loaded = assessor.load(image)
    messages = [{"role": "user", "content": [{"type": "text", "text": prompt.question}, {"type": "image"}]}]
    text = assessor.processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = assessor.processor(images=loaded.image, text=text, return_tensors="pt").to(
        assessor.device, assessor.dtype
    )
    prefix_ids = assessor.tokenizer(assessor.scoring_prefixes[task], return_tensors="pt")["input_ids"].to(assessor.device)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], prefix_ids], dim=-1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.inference_mode():
        out = assessor.model.generate(
            **inputs, max_new_tokens=1, output_logits=True, return_dict_in_generate=True, do_sample=False,
            pad_token_id=assessor.tokenizer.pad_token_id,
        )
    last = out.logits[-1][0]
    ids = assessor.level_token_ids[task]
    return np.array([last[i].item() for i in ids], dtype=np.float64)


def reference_score(assessor, image, task: str = "quality") -> float:
    """The 1..5 score of the published loop (its 0..1 number is ``(score - 1) / 4``)."""
    return float(L.expected_score(reference_level_logits(assessor, image, task)))
