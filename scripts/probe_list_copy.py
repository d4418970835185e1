"""Can a checkpoint's language model learn to answer from an option list? A text-only probe.

    python scripts/probe_list_copy.py [--model DIR] [--steps 600] [--image PHOTO]

Each question names a distortion family and lists one of its members among three members of
other families, in fresh random lists: "Which of these distortions is a kind of blur?  A. fog
B. motion blur …". A model that does not read the list can only guess among the family's members
(right on about a third: blur has 4, noise and weather 3, exposure 4, compression 2); one that
copies the listed member is always right. Fine-tunes a copy of the model in memory on such
questions (the answer's tokens only), then asks 200 new ones and counts answers that are right,
another option, or outside the list. No image is involved, so what it measures is the language
model alone; ``--image`` puts the same photo before every question (the tower frozen), to tell
whether the image's tokens ahead of the question stop it from reading the list. Nothing is
saved; all other weights train, so it is meant for small checkpoints.
"""

from __future__ import annotations

import argparse
import random

import torch

from data_builders.distortions import FAMILY_MEMBERS, FAMILY_NAMES
from qsit.assessor import Assessor, resolve_model


def question(rng: random.Random) -> tuple[str, str, list[str]]:
    """(question with options, the listed member of the named family, the options)."""
    family = rng.choice([f for f, names in FAMILY_MEMBERS.items() if len(names) > 1])
    answer = rng.choice(FAMILY_MEMBERS[family])
    options = [answer] + [rng.choice(FAMILY_MEMBERS[f]) for f in rng.sample([f for f in FAMILY_MEMBERS if f != family], 3)]
    rng.shuffle(options)
    lines = [f"Which of these distortions is a kind of {FAMILY_NAMES[family]}?"]
    lines += [f"{letter}. {o}" for letter, o in zip("ABCD", options, strict=False)]
    return "\n".join(lines) + "\n", answer, options


def image_batch(assessor, photo, pairs: list[tuple[str, str]]):
    """Inputs and labels for (question, answer) pairs after the photo, as generation renders them.

    Left padding (the Assessor's), so every row's answer and end of turn sit at the end; only
    those tokens are learnt.
    """
    from qsit.assessor import _chat_messages
    from qsit.conversation import end_of_turn, render_prompt

    eot = end_of_turn(assessor.processor)
    texts = [render_prompt(assessor.processor, _chat_messages([{"role": "user", "content": q}])) + a + eot
             for q, a in pairs]
    batch = assessor._encode(texts, [photo] * len(pairs))
    labels = torch.full_like(batch["input_ids"], -100)
    for i, (_, a) in enumerate(pairs):
        tail = assessor.tokenizer(a + eot, add_special_tokens=False)["input_ids"]
        if batch["input_ids"][i, -len(tail):].tolist() != tail:
            raise RuntimeError(f"the answer {a!r} does not tokenize the same inside the prompt")
        labels[i, -len(tail):] = batch["input_ids"][i, -len(tail):]
    return batch, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the embedded qsit-tiny)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--image", default=None, help="a photo put before every question (default: none)")
    args = ap.parse_args()

    torch.manual_seed(0)
    assessor = Assessor.from_pretrained(resolve_model(args.model))
    model, processor = assessor.model, assessor.processor
    tok = processor.tokenizer
    tok.padding_side = "right"
    model.model.vision_tower.requires_grad_(False)  # unused without --image; with it, as in the recipe's later stages
    photo = assessor.load(args.image) if args.image else None

    def prompt(text: str) -> str:
        return processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": text}]}],
                                             add_generation_prompt=True)

    def ask(n: int) -> dict:
        rng, tally = random.Random(12345), {"right": 0, "another option": 0, "outside the list": 0}
        model.eval()
        for _ in range(n):
            text, answer, options = question(rng)
            if photo is not None:
                said = assessor.explain(photo, question=text, max_new_tokens=10).strip()
            else:
                ids = tok(prompt(text), return_tensors="pt")
                with torch.no_grad():
                    out = model.generate(**ids, max_new_tokens=10, do_sample=False)
                said = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            tally["right" if said == answer else "another option" if said in options else "outside the list"] += 1
        return tally

    print("before:", ask(args.questions))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    rng = random.Random(0)
    model.train()
    for step in range(1, args.steps + 1):
        questions = [question(rng) for _ in range(args.batch_size)]
        if photo is not None:
            batch, labels = image_batch(assessor, photo, [(t, a) for t, a, _ in questions])
        else:
            prompts, answers = zip(*[(prompt(t), a) for t, a, _ in questions], strict=True)
            batch = tok([p + a + tok.eos_token for p, a in zip(prompts, answers, strict=True)],
                        return_tensors="pt", padding=True)
            labels = batch["input_ids"].clone()
            for i, p in enumerate(prompts):
                labels[i, :len(tok(p)["input_ids"])] = -100  # learn the answer only
            labels[batch["attention_mask"] == 0] = -100
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    print(f"after {args.steps} steps:", ask(args.questions))


if __name__ == "__main__":
    main()
