"""Which records each epoch trains on, and how the mix moves between epochs.

* ``resolve_sizes`` turns a plan (sizes, or ratios scaled to the base kind's
  pool) into records per kind.
* ``draw_epoch`` samples each kind without replacement inside an epoch, and
  with replacement only when a plan asks for more than a pool has (reported).
* ``adjust`` is Q-SiT's fine-grained step (Algorithm 1, step 3): after an
  epoch, if L'_S/L'_I < λ the interpreting side (D2 + D3) grows for the next
  epoch; if it is above λ, the scoring side (D1) grows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from qsit.records import GENERAL, INTERPRETING, SCORING


def resolve_sizes(pools: dict[str, int], sizes: dict[str, int] | None = None,
                  ratios: dict[str, float] | None = None, base: str = SCORING) -> dict[str, int]:
    """Records per kind for one epoch."""
    if sizes is not None:
        return {k: int(v) for k, v in sizes.items() if v > 0}
    if not pools.get(base):
        raise ValueError(f"the base kind {base!r} has no training records to scale the ratios by")
    unit = pools[base] / ratios[base]
    return {k: max(1, round(r * unit)) for k, r in ratios.items() if r > 0}


@dataclass(frozen=True)
class EpochDraw:
    indices: dict[str, list[int]]
    """Per kind, indices into that kind's pool (repeats only where ``resampled``)."""
    resampled: dict[str, int]
    """Per kind, how many draws had to repeat records because the plan exceeded the pool."""


def draw_epoch(pools: dict[str, int], sizes: dict[str, int], seed: int, epoch: int) -> EpochDraw:
    rng = random.Random(f"{seed}/{epoch}")
    indices, resampled = {}, {}
    for kind in sorted(sizes):
        n, pool = sizes[kind], pools.get(kind, 0)
        if n <= 0:
            continue
        if pool == 0:
            raise ValueError(f"the plan asks for {n} {kind} records but there are none")
        full, rest = divmod(n, pool)
        picks = []
        for _ in range(full):  # whole passes over the pool, each a permutation
            perm = list(range(pool))
            rng.shuffle(perm)
            picks += perm
        picks += rng.sample(range(pool), rest)
        indices[kind] = picks
        resampled[kind] = max(0, n - pool)
    return EpochDraw(indices, resampled)


@dataclass(frozen=True)
class Decision:
    ratio: float | None
    action: str
    """"grow interpreting", "grow scoring", "keep" or "fixed" (no λ)."""
    sizes: dict[str, int]


def adjust(sizes: dict[str, int], loss_scoring: float | None, loss_interpreting: float | None,
           reference: float | None, step: float, tolerance: float) -> Decision:
    """Next epoch's sizes from this epoch's validation losses (Algorithm 1, step 3)."""
    if reference is None or not loss_scoring or not loss_interpreting:
        ratio = loss_scoring / loss_interpreting if loss_scoring and loss_interpreting else None
        return Decision(ratio, "fixed", dict(sizes))
    ratio = loss_scoring / loss_interpreting
    new = dict(sizes)
    if ratio < reference * (1 - tolerance):
        # Scoring is learned well relative to interpreting: give D2 + D3 more weight.
        for k in (INTERPRETING, GENERAL):
            if k in new:
                new[k] = max(1, round(new[k] * (1 + step)))
        return Decision(ratio, "grow interpreting", new)
    if ratio > reference * (1 + tolerance):
        if SCORING in new:
            new[SCORING] = max(1, round(new[SCORING] * (1 + step)))
        return Decision(ratio, "grow scoring", new)
    return Decision(ratio, "keep", new)


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, mega: int = 50) -> list[list[int]]:
    """Batches of similar length: shuffle, sort within mega-batches of ``mega × batch_size``, shuffle batches.

    Keeps padding low without making every batch's length predictable from
    its position (the usual length-grouped sampler).
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    chunk = mega * batch_size
    for start in range(0, len(order), chunk):
        group = sorted(order[start:start + chunk], key=lambda i: -lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_fraction(lengths: list[int], batches: list[list[int]], pad_to: int | None = None) -> float:
    """Share of token slots that are padding, with dynamic padding (or padding to ``pad_to``)."""
    real = sum(lengths[i] for b in batches for i in b)
    slots = sum((pad_to or max(lengths[i] for i in b)) * len(b) for b in batches)
    return 1 - real / slots if slots else 0.0
