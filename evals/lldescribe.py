"""LLDescribe (paper Table VI): the model describes each image's quality; an LLM judge rates
completeness, precision and relevance against a golden description, 0/1/2 each, over several
rounds that are averaged.

Input: a JSON list of ``img_path`` and ``golden_description``. The judge is any
OpenAI-compatible endpoint. Judge prompts are versioned data. Descriptions and
every (item, dimension, round) judgment are cached, so nothing already done
is redone after an interruption; a reply that does not parse is asked again,
then recorded as failed and excluded with a count.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from evals.common import SampleCache, resolve_image, write_results

JUDGE_VERSION = "lldescribe-judge-1"
DIMENSIONS = ("completeness", "precision", "relevance")
_ASK = "Answer with one line of the form 'Score: N', where N is 0, 1 or 2."
JUDGE_PROMPTS = {
    "completeness": (
        "Reference description of an image's low-level visual quality:\n{golden}\n\n"
        "Description to rate:\n{output}\n\n"
        "How completely does the description to rate cover the low-level visual information of the reference "
        "(distortions, blur, noise, exposure, colour, clarity, overall quality)? Give 2 if it covers all or "
        "almost all of it, 1 if it covers part of it, 0 if it covers none of it. " + _ASK
    ),
    "precision": (
        "Reference description of an image's low-level visual quality:\n{golden}\n\n"
        "Description to rate:\n{output}\n\n"
        "How precise is the description to rate with respect to the reference? Give 2 if nothing in it "
        "contradicts the reference, 1 if it has fewer contradicting than agreeing statements, 0 if it has "
        "more contradicting than agreeing statements. " + _ASK
    ),
    "relevance": (
        "Description of an image:\n{output}\n\n"
        "How relevant is this description to the image's low-level visual quality (blur, noise, exposure, "
        "artifacts, colour, brightness, clarity)? Give 2 if it is entirely about these, 1 if partly, 0 if not "
        "at all. " + _ASK
    ),
}
_SCORE = re.compile(r"score\s*[:：]?\s*\**\s*([012])\b", re.IGNORECASE)


def parse_judgment(text: str) -> int | None:
    """0, 1 or 2 from a judge reply ("Score: 2", "score 1", or a bare digit), else None."""
    stripped = text.strip().strip(".")
    if stripped in ("0", "1", "2"):
        return int(stripped)
    m = _SCORE.search(text)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class DescribeItem:
    img_path: str
    golden_description: str


def load_items(path: str | Path) -> list[DescribeItem]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{img_path, golden_description}}")
    items = []
    for i, d in enumerate(data):
        if not isinstance(d, dict) or not d.get("img_path") or not str(d.get("golden_description", "")).strip():
            raise ValueError(f"{path}: item {i} needs img_path and a non-empty golden_description")
        items.append(DescribeItem(str(d["img_path"]), str(d["golden_description"])))
    return items


@dataclass
class Judge:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 1.0
    """Above 0 so the rounds are independent draws, as in the paper's averaged rounds."""
    attempts: int = 3
    timeout: float = 60.0
    max_retries: int = 4
    concurrency: int = 4

    def __post_init__(self):
        from qsit.llm import ChatEndpoint

        self._endpoint = ChatEndpoint(self.base_url, self.model, self.api_key_env, self.timeout, self.max_retries)

    def rate(self, dimension: str, golden: str, output: str):
        """A ``qsit.llm.Answer``: the score 0..2, or why the judge gave none."""
        prompt = JUDGE_PROMPTS[dimension].format(golden=golden, output=output or "(empty)")
        return self._endpoint.ask([{"role": "user", "content": prompt}], judgment, attempts=self.attempts,
                                  temperature=self.temperature)


def judgment(reply: str) -> int:
    value = parse_judgment(reply)
    if value is None:
        raise ValueError("the judge's reply holds no score 0, 1 or 2")
    return value


def run_lldescribe(assessor, items: list[DescribeItem], image_root: str | Path, judge: Judge, out_dir: str | Path,
                   rounds: int = 5, max_new_tokens: int = 256, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    root = Path(image_root)
    out = Path(out_dir)
    cache = SampleCache(out / "lldescribe_cache.jsonl")
    base = f"{assessor.cache_id}|{assessor.preset.version}"
    present = [it for it in items if resolve_image(root, it.img_path).is_file()]
    descriptions = {}
    for it in tqdm(present, desc="LLDescribe (describe)", unit="img", disable=not progress):
        key = f"{base}|desc{max_new_tokens}|{it.img_path}"
        if key not in cache:
            cache.put(key, {"output": assessor.explain(resolve_image(root, it.img_path),
                                                       max_new_tokens=max_new_tokens)})
        descriptions[it.img_path] = cache.get(key)["output"]

    def jkey(it, dim, r):
        return f"{judge.model}|{JUDGE_VERSION}|{base}|{it.img_path}|{dim}|{r}"

    todo = [(it, dim, r) for it in present for dim in DIMENSIONS for r in range(rounds)
            if jkey(it, dim, r) not in cache]
    with ThreadPoolExecutor(max_workers=judge.concurrency) as pool, tqdm(
        total=len(todo), desc="LLDescribe (judge)", unit="call", disable=not progress
    ) as bar:
        futures = {pool.submit(judge.rate, dim, it.golden_description, descriptions[it.img_path]): (it, dim, r)
                   for it, dim, r in todo}
        for fut in as_completed(futures):
            it, dim, r = futures[fut]
            answer = fut.result()  # EndpointUnreachable propagates: the run stops, the cache keeps the rest
            cache.put(jkey(it, dim, r), {"score": answer.value, "raw": answer.reply, "failure": answer.failure})
            bar.update(1)

    per_dim, failed, samples, reasons = {d: Counter() for d in DIMENSIONS}, Counter(), [], Counter()
    for it in present:
        row = {"img_path": it.img_path, "golden_description": it.golden_description,
               "output": descriptions[it.img_path]}
        for dim in DIMENSIONS:
            judged = [cache.get(jkey(it, dim, r)) for r in range(rounds)]
            row[dim] = [j["score"] for j in judged]
            for j in judged:
                if j["score"] is None:
                    failed[dim] += 1
                    reasons[j.get("failure") or "reason not recorded"] += 1
                else:
                    per_dim[dim][j["score"]] += 1
        samples.append(row)
    table = {}
    for dim in DIMENSIONS:
        n = sum(per_dim[dim].values())
        table[dim] = {f"P{k}": (per_dim[dim][k] / n if n else None) for k in (0, 1, 2)}
        table[dim]["mean"] = (sum(k * c for k, c in per_dim[dim].items()) / n) if n else None
        table[dim]["judged"], table[dim]["failed"] = n, failed[dim]
    means = [table[d]["mean"] for d in DIMENSIONS]
    results = {"model": assessor.model_id, "prompt_version": assessor.preset.version, "judge": judge.model,
               "judge_version": JUDGE_VERSION, "rounds": rounds, "items": len(items),
               "missing_images": len(items) - len(present), "dimensions": table,
               "failures": dict(reasons.most_common()),
               "sum": sum(means) if all(m is not None for m in means) else None}
    write_results(out, "lldescribe", results, lldescribe_markdown(results), samples)
    return results


def lldescribe_markdown(results: dict) -> str:
    def cell(v):
        return "–" if v is None else f"{v:.3f}"

    head = "| model | " + " | ".join(f"{d} P0 | P1 | P2 | mean" for d in DIMENSIONS) + " | sum |"
    row = f"| {results['model']} | " + " | ".join(
        " | ".join(cell(results["dimensions"][d][k]) for k in ("P0", "P1", "P2", "mean")) for d in DIMENSIONS
    ) + f" | {cell(results['sum'])} |"
    failed = sum(results["dimensions"][d]["failed"] for d in DIMENSIONS)
    note = (f"\nJudge `{results['judge']}` with prompts `{results['judge_version']}`, {results['rounds']} rounds "
            f"averaged; {failed} judgment(s) failed and were excluded.\n")
    for reason, count in results.get("failures", {}).items():
        note += f"\n- {count} × {reason}"
    if results.get("failures"):
        note += "\n"
    return "\n".join([head, "|---" * (1 + 4 * len(DIMENSIONS) + 1) + "|", row]) + "\n" + note
