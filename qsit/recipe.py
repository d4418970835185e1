"""The training recipe: fine-tune a LLaVA-OneVision checkpoint on qsit records.

``TrainRecipe`` has setup / train / save_checkpoint / cleanup, like a
torchtune recipe; the data of a run is ``qsit.train_data``, how it is spread
over processes (DDP, DeepSpeed) is ``qsit.distributed``. One epoch = one draw from D1, D2, D3 by the current plan;
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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from qsit.assessor import resolve_level_token_ids
from qsit.distributed import Distribution, deepspeed_config
from qsit.mixture import adjust, resolve_sizes
from qsit.model_info import describe_training, run_finished, write_model_info
from qsit.prompts import get_preset
from qsit.records import INTERPRETING, KINDS, SCORING
from qsit.train_config import ConfigError, TrainConfig
from qsit.train_data import TrainData, conversation_texts, load_sources


def epoch_end_steps(history: list[dict], last_step: int) -> list[float]:
    """Where each epoch's validation belongs on the loss plot's step axis: the step it was taken at.

    Runs saved before the step was recorded get their epochs spread evenly up to ``last_step``.
    """
    return [h.get("step", last_step * (i + 1) / len(history)) for i, h in enumerate(history)]


def default_scoring_prompt(preset: str):
    """The preset's scoring prompt of its first (default) task, whose level words D1 answers use."""
    p = get_preset(preset)
    return p.scoring_prompt(p.tasks[0])


def lr_schedule(optimizer, t, total_steps: int):
    """The learning-rate schedule of ``train`` (``t``): its warm-up, its shape, and a floor under the cosine."""
    from transformers import get_scheduler

    name, floor = (("cosine_with_min_lr", {"min_lr_rate": t.min_lr_ratio}) if t.min_lr_ratio
                   else (t.scheduler, None))
    return get_scheduler(name, optimizer, num_warmup_steps=int(t.warmup_ratio * total_steps),
                         num_training_steps=total_steps, scheduler_specific_kwargs=floor)


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
    def __init__(self, cfg: TrainConfig, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.out = Path(cfg.output_dir)
        self.dist = Distribution(deepspeed_config(cfg))
        self.rank = self.dist.rank

    # .............................................................. setup
    def setup(self) -> None:
        import torch
        from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

        cfg, t = self.cfg, self.cfg.train
        self.dist.start()
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
            with warnings.catch_warnings():  # peft reads a property transformers has deprecated; not ours to fix
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                model = get_peft_model(model, LoraConfig(
                    r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=rf".*language_model.*\.({targets})", task_type="CAUSAL_LM"))
        self.model = model.to(self.device)

        self.data = TrainData(cfg, self.processor)
        # The level words' tokens, when scoring records learn soft level targets (train.score_labels).
        self.level_ids = (resolve_level_token_ids(self.processor.tokenizer, default_scoring_prompt(cfg.preset))
                          if t.score_labels == "soft" else None)
        self._log("data", **self.data.summary())
        optimizer = torch.optim.AdamW(self._param_groups(), lr=t.lr, weight_decay=t.weight_decay)
        steps_per_epoch = math.ceil(sum(self.data.sizes.values()) / (t.batch_size * self.dist.world) / t.grad_accum)
        self.total_steps = max(1, steps_per_epoch * t.epochs)  # the plan can move; the schedule follows the first
        scheduler = lr_schedule(optimizer, t, self.total_steps)
        self.optimizer, self.scheduler = self.dist.wrap(self.model, optimizer, scheduler, self.device, precision)
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "sizes": dict(self.data.sizes),
                      "history": [], "losses": []}
        self._resume()

    def _param_groups(self) -> list[dict]:
        """The trainable parameters, the vision tower's in a group of its own when it has its own rate."""
        t = self.cfg.train
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if t.vision_lr is None:
            return [{"params": [p for _, p in trainable]}]
        tower = [p for n, p in trainable if ".vision_tower." in f".{n}"]
        rest = [p for n, p in trainable if ".vision_tower." not in f".{n}"]
        return [{"params": rest}, {"params": tower, "lr": t.vision_lr}]

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
            self.dist.barrier()
            return str(target)
        return m

    # .............................................................. train
    def train(self) -> TrainResult:
        if self.cfg.stage == "perception":
            from qsit.perception import train_perception

            final, metrics, steps = train_perception(self)
            return TrainResult(final, "perception", [], None, steps, metrics)
        from tqdm.auto import tqdm

        cfg, t = self.cfg, self.cfg.train
        # A finished run keeps its model: rewriting the same weights would only make every evaluation cache miss.
        finished = self._finished()
        for epoch in range(self.state["epoch"], t.epochs):
            batches, info = self.data.epoch_batches(epoch, self.state["sizes"], self.rank, self.dist.world)
            self._log("epoch_start", epoch=epoch, sizes=self.state["sizes"], **info)
            start = self.state["step_in_epoch"]
            bar = tqdm(total=len(batches), initial=start, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch",
                       disable=not (self.progress and self.rank == 0))
            self.model.train()
            tokens, t0 = 0, time.perf_counter()
            for b in range(start, len(batches)):
                boundary = (b + 1) % t.grad_accum == 0 or b + 1 == len(batches)
                value, n = self.train_step(batches[b], epoch, b, boundary)
                tokens += n
                self.state["step_in_epoch"] = b + 1
                self.state["global_step"] += 1
                self.state["losses"].append([self.state["global_step"], value])
                rate = tokens / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{rate:.0f}")
                bar.update(1)
                if self.state["global_step"] % t.log_every == 0:
                    self._log("train", epoch=epoch, step=self.state["global_step"], loss=value,
                              lr=self.scheduler.get_last_lr()[0], tokens_per_s=rate, **self._peak_memory())
                if t.save_every_steps and self.state["global_step"] % t.save_every_steps == 0:
                    self.save_checkpoint(f"step-{self.state['global_step']}")
            bar.close()
            val = self.validation_losses()
            decision = adjust(self.state["sizes"], val.get(SCORING), val.get(INTERPRETING),
                              cfg.mix.reference_ratio, cfg.mix.step, cfg.mix.tolerance)
            entry = {"epoch": epoch, "step": self.state["global_step"], "val_loss": val, "ratio": decision.ratio,
                     "reference": cfg.mix.reference_ratio, "action": decision.action,
                     "sizes_before": self.state["sizes"], "sizes_after": decision.sizes}
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
        final = self.out / "final" if finished else self.finalize()
        return TrainResult(final, "chat", list(self.state["history"]), cfg.mix.reference_ratio,
                           self.state["global_step"])

    def train_step(self, items: list, epoch: int, batch: int, boundary: bool) -> tuple[float, int]:
        """One batch: encode, forward, backward, and the optimizer step at an accumulation boundary.
        Returns the batch's mean loss and its real (non-padding) tokens."""
        import torch

        from qsit.tokenization import Collator, encode

        collate = Collator(self.processor.tokenizer.pad_token_id)
        encoded = collate([encode(self.processor, it.record, it.images, self.level_ids,
                                  *self._view(it, epoch, batch, i)) for i, it in enumerate(items)])
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
                            and self.dist.engine is None):
            total, count = self._loss_sum(self.dist.forward_module(self.model), encoded)
            loss = total / max(count, 1)
        t = self.cfg.train
        self.dist.step(loss, self.model, self.optimizer, self.scheduler, boundary, t.grad_accum, t.max_grad_norm)
        return float(loss.detach()), int(encoded["attention_mask"].sum())

    def _peak_memory(self) -> dict:
        """The accelerator's peak allocation so far, for the training log (nothing on CPU)."""
        import torch

        if self.device.type != "cuda":
            return {}
        return {"peak_gib": round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)}

    def _view(self, item, epoch: int, batch: int, index: int) -> tuple:
        """The view a training record is drawn in, (flip, grey): for scoring records, flipped and in
        grey at random when asked; other records as they are."""
        from qsit.tokenization import drawn_flip, drawn_grey

        t = self.cfg.train
        if item.record.kind != SCORING:
            return None, False
        flip = drawn_flip(t.seed, epoch, batch, index) if t.flip_scoring_images else None
        return flip, drawn_grey(t.seed, epoch, batch, index, t.grey_scoring_images)

    def _loss_sum(self, model, batch: dict):
        """Summed loss over the batch's labelled tokens (soft level targets where the batch has them), and their count."""
        from qsit.tokenization import token_loss_sum

        inputs = {k: v for k, v in batch.items() if k not in ("labels", "soft_index", "soft_targets")}
        return token_loss_sum(model(**inputs).logits, batch["labels"], self.level_ids,
                              batch.get("soft_index"), batch.get("soft_targets"))

    def _finished(self) -> bool:
        """Whether every epoch ran and the final checkpoint was written to the end."""
        return self.state["epoch"] >= self.cfg.train.epochs and run_finished(self.out)

    def validation_losses(self) -> dict[str, float]:
        """Token-weighted mean loss per kind on the validation records (L_S, L_I, L_G)."""
        import torch

        from qsit.tokenization import Collator, encode

        collate = Collator(self.processor.tokenizer.pad_token_id)
        self.model.eval()
        out = {}
        for kind, items in self.data.items["val"].items():
            if not items:
                continue
            total, count = 0.0, 0
            for i in range(0, len(items), self.cfg.train.eval_batch_size):
                batch = collate([encode(self.processor, it.record, it.images, self.level_ids)
                                 for it in items[i:i + self.cfg.train.eval_batch_size]])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype,
                                                     enabled=self.amp_dtype is not None):
                    loss, n = self._loss_sum(self.dist.engine or self.model, batch)
                total += float(loss)
                count += n
            out[kind] = total / max(count, 1)
        self.model.train()
        return out

    # .............................................................. checkpoints
    def save_checkpoint(self, tag: str) -> Path:
        import torch

        ckpt = self.out / "checkpoints" / tag
        ckpt.mkdir(parents=True, exist_ok=True)
        state = {**self.state, "rng": self._rng_state(), "tag": tag}
        self.dist.save_state(ckpt, self.model, self.optimizer, self.scheduler)
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
        self.dist.barrier()
        return ckpt

    def _resume(self) -> None:
        import torch

        pointer = self.out / "checkpoints" / "latest"
        if not pointer.is_file():
            return
        ckpt = self.out / "checkpoints" / pointer.read_text().strip()
        state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        self.dist.load_state(ckpt, self._load_weights, self.optimizer, self.scheduler)
        self._set_rng_state(state.pop("rng"))
        state.pop("tag", None)
        self.state = state
        self._log("resume", checkpoint=str(ckpt), epoch=state["epoch"], step_in_epoch=state["step_in_epoch"])
        if self.rank == 0 and self._finished():
            print(f"qsit: {self.out} has finished all {self.cfg.train.epochs} epochs; its model is kept as it is",
                  file=sys.stderr)
        elif self.rank == 0:
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
        with self.dist.whole_weights(self.model):  # ZeRO-3 keeps parameters in pieces across ranks
            if self.rank == 0:
                model = self.model.merge_and_unload() if self.cfg.lora is not None else self.model
                model.save_pretrained(final)
                self.processor.save_pretrained(final)
                write_model_info(final, describe_training(
                    self.cfg, mix_history=self.state["history"], dropped_over_length=self.data.dropped,
                    global_steps=self.state["global_step"]))
        self.dist.barrier()
        return final

    def plot(self) -> None:
        if self.rank != 0 or not self.state["losses"]:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps, losses = zip(*self.state["losses"], strict=True)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, losses, lw=0.6, alpha=0.3, color="tab:grey", label="train (per batch)")
        window = max(1, len(losses) // 50)
        if window > 1:
            ax.plot(steps[window - 1:], np.convolve(losses, np.ones(window) / window, mode="valid"), lw=1.2,
                    color="tab:blue", label=f"train (mean of {window})")
        ends = epoch_end_steps(self.state["history"], steps[-1])
        for end in ends:
            ax.axvline(end, color="0.8", lw=0.6, ls=":")
        for kind, style in zip(KINDS, ("o-", "s-", "^-"), strict=True):
            pts = [(x, h["val_loss"][kind]) for x, h in zip(ends, self.state["history"], strict=True)
                   if kind in h["val_loss"]]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, ms=4, label=f"val {kind}")
        ax.set_xlabel("step (dotted: end of an epoch)")
        ax.set_ylabel("loss")
        # the first batches' losses are ten times the rest, and single batches spike: clip them
        val = [v for h in self.state["history"] for v in h["val_loss"].values()]
        ax.set_ylim(0, 1.1 * max([np.percentile(losses[len(losses) // 20:], 99), *val]))
        ax.legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        fig.savefig(self.out / "loss.png", dpi=110)
        plt.close(fig)

    def cleanup(self) -> None:
        self.dist.stop()

    # .............................................................. helpers
    def _log(self, event: str, **fields) -> None:
        if getattr(self, "rank", 0) != 0:
            return
        with open(self.out / "train_log.jsonl", "a") as f:
            f.write(json.dumps({"event": event, "time": time.time(), **fields}, default=str) + "\n")

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


def run(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    recipe = TrainRecipe(cfg, progress=progress)
    recipe.setup()
    try:
        return recipe.train()
    finally:
        recipe.cleanup()
