"""The training recipe: fine-tune a LLaVA-OneVision checkpoint on qsit records.

``TrainRecipe`` has setup / train / save_checkpoint / cleanup, like a
torchtune recipe. One epoch = one draw from D1, D2, D3 by the current plan;
after it, the validation losses per kind (L_S scoring, L_I interpreting) move
the plan (Algorithm 1, step 3) and every decision is logged. Checkpoints
carry the resolved config, the plan and its history and the PEFT config, and
resuming restores model, optimizer, scheduler, plan, position and RNG.

Launch: ``qsit train CONFIG`` (one process), ``deepspeed --num_gpus N --module
qsit.cli train CONFIG`` or ``torchrun --nproc_per_node N -m qsit.cli train CONFIG``.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from qsit.mixture import adjust, draw_epoch, length_grouped_batches, padding_fraction, resolve_sizes
from qsit.model_info import describe_training, write_model_info
from qsit.records import INTERPRETING, KINDS, SCORING, Record, iter_jsonl
from qsit.train_config import ConfigError, TrainConfig

DEEPSPEED_DIR = Path(__file__).parent / "configs" / "deepspeed"


@dataclass
class TrainResult:
    """What a run returns: where the model is and what happened, so callers never parse logs."""

    final: Path
    """The checkpoint ``Assessor.from_pretrained`` loads."""
    stage: str
    epochs: list[dict]
    """Per epoch: val_loss per kind, L_S/L_I ratio, action, sizes before and after."""
    reference_ratio: float | None
    global_steps: int
    perception: dict | None = None
    """A perception stage's last held-out metrics."""

    @property
    def val_loss(self) -> dict[str, float]:
        """The last epoch's validation loss per kind."""
        return self.epochs[-1]["val_loss"] if self.epochs else {}

    @property
    def loss_ratio(self) -> float | None:
        """L_S / L_I after the last epoch (λ, when this is the chosen run of a mix search)."""
        v = self.val_loss
        return v[SCORING] / v[INTERPRETING] if v.get(SCORING) and v.get(INTERPRETING) else None


# ---------------------------------------------------------------- data
@dataclass
class Item:
    record: Record
    images: list[Path]
    length: int


def _image_resolver(source_path: Path, image_root: str | None):
    """How a source's record image paths map to files: manifest image_root with its prefix stripped."""
    manifest = {}
    folder = source_path if source_path.is_dir() else source_path.parent
    if (folder / "manifest.json").is_file():
        manifest = json.loads((folder / "manifest.json").read_text())
    root = Path(image_root or manifest.get("image_root") or folder)
    prefix = manifest.get("image_prefix") or ""

    def resolve(p: str) -> Path:
        rel = p[len(prefix) + 1:] if prefix and p.startswith(prefix + "/") else p
        return Path(rel) if Path(rel).is_absolute() else root / rel

    return resolve


def load_sources(cfg: TrainConfig) -> list[tuple[Record, list[Path]]]:
    out = []
    for src in cfg.data.sources:
        path = Path(src.path)
        records_file = path / "records.jsonl" if path.is_dir() else path
        if not records_file.is_file():
            raise ConfigError(f"data source {src.path}: no records.jsonl there")
        resolve = _image_resolver(path, src.image_root)
        out += [(r, [resolve(p) for p in r.images]) for r in iter_jsonl(records_file)]
    return out


def conversation_texts(sources: list[str]) -> Iterator[str]:
    """Every message's text in these record sources, without image placeholders."""
    for src in sources:
        path = Path(src)
        records_file = path / "records.jsonl" if path.is_dir() else path
        if not records_file.is_file():
            raise ConfigError(f"tiny_vocab_from {src}: no records.jsonl there")
        for record in iter_jsonl(records_file):
            for message in record.messages:
                yield message["content"].replace("<image>", "").strip()


def deepspeed_config(cfg: TrainConfig) -> dict | None:
    if not cfg.deepspeed:
        return None
    name = cfg.deepspeed
    path = DEEPSPEED_DIR / f"{name}.json" if name in ("zero2", "zero3") else Path(name)
    if not path.is_file():
        raise ConfigError(f"deepspeed config {name!r} not found (zero2, zero3 or a JSON path)")
    ds = json.loads(path.read_text())
    stage = ds.get("zero_optimization", {}).get("stage")
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{path}: zero_optimization.stage must be 0..3, got {stage!r}")
    t = cfg.train
    for key, want in (("train_micro_batch_size_per_gpu", t.batch_size), ("gradient_accumulation_steps", t.grad_accum)):
        if key in ds and ds[key] not in ("auto", want):
            raise ConfigError(f"{path}: {key}={ds[key]} disagrees with the config's {want}")
        ds[key] = want
    ds.setdefault("gradient_clipping", t.max_grad_norm)
    ds.pop("train_batch_size", None)
    return ds


def validate(cfg: TrainConfig, check_images: int = 20) -> dict:
    """Everything that can be checked before any compute: model, files, records, plan, DeepSpeed."""
    report: dict = {}
    if cfg.model != "tiny" and not cfg.model.startswith("tiny:"):
        local = Path(cfg.model)
        if local.exists() and not (local / "config.json").is_file():
            raise ConfigError(f"model {cfg.model}: a folder without config.json")
        report["model"] = f"{cfg.model} ({'local folder' if local.exists() else 'hub id'})"
    else:
        report["model"] = "tiny (random weights, built at setup)"
    if cfg.stage == "perception":
        from qsit.perception import find_photos

        try:
            photos = find_photos(cfg.perception.photos)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        report.update(stage="perception", photos=len(photos), held_out_photos=cfg.perception.val_photos,
                      steps=cfg.perception.steps)
        return report
    items = load_sources(cfg)
    pools = {k: sum(1 for r, _ in items if r.kind == k and r.split == "train") for k in KINDS}
    vals = {k: sum(1 for r, _ in items if r.kind == k and r.split == "val") for k in KINDS}
    missing = [str(p) for _, paths in items[:: max(1, len(items) // max(check_images, 1))] for p in paths
               if not p.is_file()]
    if missing:
        raise ConfigError(f"{len(missing)} sampled image(s) missing, e.g. {missing[0]}")
    sizes = resolve_sizes(pools, cfg.mix.sizes, cfg.mix.ratios, cfg.mix.base)
    for k, n in sizes.items():
        if pools.get(k, 0) == 0:
            raise ConfigError(f"the plan asks for {n} {k} records per epoch but the sources have none for training")
    report.update(records=len(items), train_pools=pools, val_records=vals, epoch_sizes=sizes,
                  resampled={k: max(0, n - pools[k]) for k, n in sizes.items()})
    if cfg.mix.reference_ratio is not None and not (vals[SCORING] and vals[INTERPRETING]):
        raise ConfigError("mix.reference_ratio needs validation records of both scoring and interpreting kinds")
    ds = deepspeed_config(cfg)
    if ds:
        report["deepspeed"] = f"ZeRO stage {ds['zero_optimization']['stage']}"
    return report


# ---------------------------------------------------------------- recipe
class TrainRecipe:
    def __init__(self, cfg: TrainConfig, progress: bool = True, stop_after_steps: int | None = None):
        self.cfg = cfg
        self.progress = progress
        self.stop_after_steps = stop_after_steps  # for tests: simulate an interruption
        self.out = Path(cfg.output_dir)

    # .............................................................. setup
    def setup(self) -> None:
        import torch
        from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

        cfg, t = self.cfg, self.cfg.train
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.ds_config = deepspeed_config(cfg)
        if self.ds_config is not None or self.world > 1:
            self._init_distributed()
        self._seed_everything(t.seed)
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available()
                                   else "cpu")
        precision = t.precision if t.precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.out.mkdir(parents=True, exist_ok=True)

        model_path = self._model_path()
        self.processor = AutoProcessor.from_pretrained(model_path)
        model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_path, dtype=torch.float32)
        if cfg.stage == "perception":
            self.model = model.to(self.device)
            return  # the tower trains alone, on tiles drawn on the fly (qsit.perception)
        if t.freeze_vision:
            for p in model.model.vision_tower.parameters():
                p.requires_grad_(False)
        if t.gradient_checkpointing:
            # Newer transformers 5.x call it activation checkpointing; earlier 5.x only know the old name.
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if cfg.lora is not None:
            from peft import LoraConfig, get_peft_model

            targets = "|".join(cfg.lora.target_modules)
            model = get_peft_model(model, LoraConfig(
                r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                target_modules=rf".*language_model.*\.({targets})", task_type="CAUSAL_LM"))
        self.model = model.to(self.device)

        self._prepare_data()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
        from transformers import get_scheduler

        steps_per_epoch = math.ceil(sum(self.sizes.values()) / (t.batch_size * self.world) / t.grad_accum)
        self.total_steps = max(1, steps_per_epoch * t.epochs)  # the plan can move; the schedule follows the first
        self.scheduler = get_scheduler(t.scheduler, self.optimizer, num_warmup_steps=int(t.warmup_ratio *
                                       self.total_steps), num_training_steps=self.total_steps)
        self.engine = None
        self.ddp = None
        if self.ds_config is None and self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Gradients are averaged across processes; saving uses the unwrapped self.model.
            # Some parameters get no gradient in a step (e.g. the vision tower on a text-only batch).
            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if
                                               self.device.type == "cuda" else None, find_unused_parameters=True)
        if self.ds_config is not None:
            import deepspeed

            if precision == "bf16":
                self.ds_config["bf16"] = {"enabled": True}
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=self.ds_config)
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "sizes": dict(self.sizes),
                      "history": [], "losses": []}
        self._resume()

    def _model_path(self) -> str:
        m = self.cfg.model
        if m == "tiny" or m.startswith("tiny:"):
            from qsit.tiny import TinyConfig, build_tiny_checkpoint

            target = self.out / "init-tiny"
            if not (target / "config.json").is_file() and self.rank == 0:
                seed = int(m.split(":", 1)[1]) if ":" in m else self.cfg.train.seed
                try:
                    size = TinyConfig(**{**(self.cfg.tiny_size or {}), "seed": seed})
                except TypeError as e:
                    raise ConfigError(f"tiny_size: {e}") from None
                build_tiny_checkpoint(target, size, conversation_texts(self.cfg.tiny_vocab_from))
            self._barrier()
            return str(target)
        return m

    def _prepare_data(self) -> None:
        from qsit.tokenization import estimate_length, image_size_hw

        cfg = self.cfg
        pairs = load_sources(cfg)
        self.items: dict[str, dict[str, list[Item]]] = {s: {k: [] for k in KINDS} for s in ("train", "val")}
        self.dropped = {k: 0 for k in KINDS}
        for record, paths in pairs:
            if record.split not in ("train", "val"):
                continue
            n = estimate_length(self.processor, record, [image_size_hw(p) for p in paths])
            if n > cfg.data.max_length:
                self.dropped[record.kind] += 1  # never truncated: that would cut image tokens
                continue
            self.items[record.split][record.kind].append(Item(record, paths, n))
        rng = random.Random(cfg.train.seed)
        for k in KINDS:  # a bounded, fixed validation subset per kind
            v = self.items["val"][k]
            if len(v) > cfg.train.max_val_records:
                self.items["val"][k] = rng.sample(v, cfg.train.max_val_records)
        pools = {k: len(v) for k, v in self.items["train"].items()}
        self.sizes = resolve_sizes(pools, cfg.mix.sizes, cfg.mix.ratios, cfg.mix.base)
        self._log("data", pools=pools, val={k: len(v) for k, v in self.items["val"].items()}, sizes=self.sizes,
                  dropped_over_length=self.dropped)

    # .............................................................. train
    def _epoch_batches(self, epoch: int) -> tuple[list[list[Item]], dict]:
        t = self.cfg.train
        pools = {k: len(v) for k, v in self.items["train"].items()}
        draw = draw_epoch(pools, self.state["sizes"], t.seed, epoch)
        chosen = [self.items["train"][k][i] for k in sorted(draw.indices) for i in draw.indices[k]]
        lengths = [it.length for it in chosen]
        if t.group_by_length:
            order = length_grouped_batches(lengths, t.batch_size, seed=t.seed * 1000 + epoch)
        else:
            idx = list(range(len(chosen)))
            random.Random(t.seed * 1000 + epoch).shuffle(idx)
            order = [idx[i:i + t.batch_size] for i in range(0, len(idx), t.batch_size)]
        usable = len(order) - len(order) % self.world if self.world > 1 else len(order)
        mine = order[self.rank:usable:self.world]
        info = {"resampled": draw.resampled, "padding_fraction": padding_fraction(lengths, order),
                "records": len(chosen)}
        return [[chosen[i] for i in b] for b in mine], info

    def train(self) -> TrainResult:
        if self.cfg.stage == "perception":
            from qsit.perception import train_perception

            final, metrics, steps = train_perception(self)
            return TrainResult(final, "perception", [], None, steps, metrics)
        import torch
        from tqdm.auto import tqdm

        from qsit.tokenization import Collator, encode

        cfg, t = self.cfg, self.cfg.train
        collate = Collator(self.processor.tokenizer.pad_token_id)
        model = self.engine or self.ddp or self.model
        for epoch in range(self.state["epoch"], t.epochs):
            batches, info = self._epoch_batches(epoch)
            self._log("epoch_start", epoch=epoch, sizes=self.state["sizes"], **info)
            start = self.state["step_in_epoch"]
            bar = tqdm(total=len(batches), initial=start, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch",
                       disable=not (self.progress and self.rank == 0))
            self.model.train()
            tokens, t0 = 0, time.perf_counter()
            for b in range(start, len(batches)):
                batch = collate([encode(self.processor, it.record, it.images) for it in batches[b]])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
                                    and self.engine is None):
                    loss = model(**batch).loss
                if self.engine is not None:
                    self.engine.backward(loss)
                    self.engine.step()
                else:
                    (loss / t.grad_accum).backward()
                    if (b + 1) % t.grad_accum == 0 or b + 1 == len(batches):
                        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                       t.max_grad_norm)
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                tokens += int(batch["attention_mask"].sum())
                self.state["step_in_epoch"] = b + 1
                self.state["global_step"] += 1
                value = float(loss.detach())
                self.state["losses"].append([self.state["global_step"], value])
                rate = tokens / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{rate:.0f}")
                bar.update(1)
                if self.state["global_step"] % t.log_every == 0:
                    self._log("train", epoch=epoch, step=self.state["global_step"], loss=value,
                              lr=self.scheduler.get_last_lr()[0], tokens_per_s=rate)
                if t.save_every_steps and self.state["global_step"] % t.save_every_steps == 0:
                    self.save_checkpoint(f"step-{self.state['global_step']}")
                if self.stop_after_steps and self.state["global_step"] >= self.stop_after_steps:
                    bar.close()
                    self.save_checkpoint(f"step-{self.state['global_step']}")
                    raise KeyboardInterrupt(f"stopped after {self.stop_after_steps} steps (as asked)")
            bar.close()
            val = self.validation_losses()
            decision = adjust(self.state["sizes"], val.get(SCORING), val.get(INTERPRETING),
                              cfg.mix.reference_ratio, cfg.mix.step, cfg.mix.tolerance)
            entry = {"epoch": epoch, "val_loss": val, "ratio": decision.ratio, "reference": cfg.mix.reference_ratio,
                     "action": decision.action, "sizes_before": self.state["sizes"], "sizes_after": decision.sizes}
            self._log("adjust", **entry)
            if self.rank == 0:
                with open(self.out / "mix_log.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")
                print(f"qsit: epoch {epoch + 1}: val {val}; L_S/L_I={decision.ratio}; {decision.action} → "
                      f"{decision.sizes}", file=sys.stderr)
            self.state["history"].append(entry)
            self.state.update(epoch=epoch + 1, step_in_epoch=0, sizes=decision.sizes)
            self.save_checkpoint(f"epoch-{epoch + 1}")
            self.plot()
        return TrainResult(self.finalize(), "chat", list(self.state["history"]), cfg.mix.reference_ratio,
                           self.state["global_step"])

    def validation_losses(self) -> dict[str, float]:
        """Token-weighted mean loss per kind on the validation records (L_S, L_I, L_G)."""
        import torch

        from qsit.tokenization import IGNORE_INDEX, Collator, encode

        collate = Collator(self.processor.tokenizer.pad_token_id)
        self.model.eval()
        out = {}
        for kind, items in self.items["val"].items():
            if not items:
                continue
            total, count = 0.0, 0
            for i in range(0, len(items), self.cfg.train.eval_batch_size):
                batch = collate([encode(self.processor, it.record, it.images)
                                 for it in items[i:i + self.cfg.train.eval_batch_size]])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                labels = batch.pop("labels")
                with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype,
                                                     enabled=self.amp_dtype is not None):
                    logits = (self.engine or self.model)(**batch).logits.float()
                shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
                loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                                         shift_labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                                         reduction="sum")
                total += float(loss)
                count += int((shift_labels != IGNORE_INDEX).sum())
            out[kind] = total / max(count, 1)
        self.model.train()
        return out

    # .............................................................. checkpoints
    def save_checkpoint(self, tag: str) -> Path:
        import torch

        ckpt = self.out / "checkpoints" / tag
        ckpt.mkdir(parents=True, exist_ok=True)
        state = {**self.state, "rng": self._rng_state(), "tag": tag}
        if self.engine is not None:
            self.engine.save_checkpoint(str(ckpt), tag="ds")
        elif self.rank == 0:
            self.model.save_pretrained(ckpt / "model")
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                       ckpt / "optimizer.pt")
        if self.rank == 0:
            self.processor.save_pretrained(ckpt / "model")
            (ckpt / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            (ckpt / "mix_plan.json").write_text(json.dumps(
                {"sizes": self.state["sizes"], "reference_ratio": self.cfg.mix.reference_ratio,
                 "history": self.state["history"]}, indent=2))
            torch.save(state, ckpt / "trainer_state.pt")
            tmp = self.out / "checkpoints" / "latest.tmp"
            tmp.write_text(tag)
            os.replace(tmp, self.out / "checkpoints" / "latest")
        self._barrier()
        return ckpt

    def _resume(self) -> None:
        import torch

        pointer = self.out / "checkpoints" / "latest"
        if not pointer.is_file():
            return
        ckpt = self.out / "checkpoints" / pointer.read_text().strip()
        state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        if self.engine is not None:
            self.engine.load_checkpoint(str(ckpt), tag="ds")
        else:
            self._load_weights(ckpt / "model")
            opt = torch.load(ckpt / "optimizer.pt", weights_only=False)
            self.optimizer.load_state_dict(opt["optimizer"])
            self.scheduler.load_state_dict(opt["scheduler"])
        self._set_rng_state(state.pop("rng"))
        state.pop("tag", None)
        self.state = state
        self._log("resume", checkpoint=str(ckpt), epoch=state["epoch"], step_in_epoch=state["step_in_epoch"])
        if self.rank == 0:
            print(f"qsit: resuming from {ckpt} (epoch {state['epoch'] + 1}, batch {state['step_in_epoch']})",
                  file=sys.stderr)

    def _load_weights(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file

        if self.cfg.lora is not None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors")))
            return
        from transformers import LlavaOnevisionForConditionalGeneration

        # from_pretrained maps the saved (hub-format) names onto the module's own.
        saved = LlavaOnevisionForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
        self.model.load_state_dict(saved.state_dict())

    def finalize(self) -> Path:
        """A plain checkpoint ``Assessor.from_pretrained`` loads (LoRA merged), with the run's description."""
        final = self.out / "final"
        model = self.model
        if self.cfg.lora is not None:
            model = model.merge_and_unload()
        if self.rank == 0:
            model.save_pretrained(final)
            self.processor.save_pretrained(final)
            write_model_info(final, describe_training(
                self.cfg, mix_history=self.state["history"], dropped_over_length=self.dropped,
                global_steps=self.state["global_step"]))
        self._barrier()
        return final

    def plot(self) -> None:
        if self.rank != 0 or not self.state["losses"]:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps, losses = zip(*self.state["losses"], strict=True)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, losses, lw=0.8, alpha=0.6, label="train (per batch)")
        per_epoch = [(i + 1, h["val_loss"]) for i, h in enumerate(self.state["history"])]
        ax2 = ax.twiny() if per_epoch else None
        for kind, style in zip(KINDS, ("o-", "s-", "^-"), strict=True):
            pts = [(e, v[kind]) for e, v in per_epoch if kind in v]
            if pts and ax2 is not None:
                ax2.plot(*zip(*pts, strict=True), style, label=f"val {kind}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if ax2 is not None:
            ax2.set_xlabel("epoch")
            ax2.legend(loc="upper right", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        fig.savefig(self.out / "loss.png", dpi=110)
        plt.close(fig)

    def cleanup(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    # .............................................................. helpers
    def _log(self, event: str, **fields) -> None:
        if getattr(self, "rank", 0) != 0:
            return
        with open(self.out / "train_log.jsonl", "a") as f:
            f.write(json.dumps({"event": event, "time": time.time(), **fields}, default=str) + "\n")

    def _init_distributed(self) -> None:
        import torch

        for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(_free_port())), ("RANK", "0"),
                           ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
            os.environ.setdefault(key, value)
        if self.ds_config is not None:
            import deepspeed

            deepspeed.init_distributed()
        else:
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def _barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    @staticmethod
    def _seed_everything(seed: int) -> None:
        import torch

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    @staticmethod
    def _rng_state() -> dict:
        import torch

        return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    @staticmethod
    def _set_rng_state(s: dict) -> None:
        import torch

        random.setstate(s["python"])
        np.random.set_state(s["numpy"])
        torch.set_rng_state(s["torch"])
        if s.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cfg: TrainConfig, progress: bool = True, stop_after_steps: int | None = None) -> TrainResult:
    recipe = TrainRecipe(cfg, progress=progress, stop_after_steps=stop_after_steps)
    recipe.setup()
    try:
        return recipe.train()
    finally:
        recipe.cleanup()
