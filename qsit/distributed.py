"""How a training run is spread over processes: one process, DDP, or DeepSpeed ZeRO.

``Distribution`` owns what differs between them — starting the process group,
wrapping the model, the backward/optimizer step, saving and loading the
training state, and gathering whole weights for the final checkpoint (ZeRO-3
keeps each parameter in pieces across ranks; a plain ``save_pretrained``
would write the pieces). The recipe calls it and never asks which one it is.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path

from qsit.train_config import ConfigError, TrainConfig

DEEPSPEED_DIR = Path(__file__).parent / "configs" / "deepspeed"


def deepspeed_config(cfg: TrainConfig) -> dict | None:
    """The run's DeepSpeed JSON (zero2, zero3 or a path) with the batch settings of the config filled in."""
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Distribution:
    def __init__(self, ds_config: dict | None):
        self.ds_config = ds_config
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.engine = None
        self.ddp = None

    @property
    def zero_stage(self) -> int | None:
        return self.ds_config["zero_optimization"]["stage"] if self.ds_config else None

    def start(self) -> None:
        """Join the process group (a one-process group when DeepSpeed runs without a launcher)."""
        if self.ds_config is None and self.world == 1:
            return
        import torch

        for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(free_port())), ("RANK", "0"),
                           ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
            os.environ.setdefault(key, value)
        if self.ds_config is not None:
            import deepspeed

            deepspeed.init_distributed()
        else:
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def wrap(self, model, optimizer, scheduler, device, precision: str):
        """Wrap for DDP or DeepSpeed; returns the optimizer and scheduler to step (DeepSpeed's own)."""
        if self.ds_config is None and self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Gradients are averaged across processes; saving uses the unwrapped model.
            # Some parameters get no gradient in a step (e.g. the vision tower on a text-only batch).
            self.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=True)
        if self.ds_config is not None:
            import deepspeed

            if precision == "bf16":
                self.ds_config["bf16"] = {"enabled": True}
            self.engine, optimizer, _, scheduler = deepspeed.initialize(
                model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config)
        return optimizer, scheduler

    def forward_module(self, model):
        return self.engine or self.ddp or model

    def step(self, loss, model, optimizer, scheduler, boundary: bool, grad_accum: int, max_grad_norm: float) -> None:
        """Backward, and at an accumulation boundary clip, step and zero (DeepSpeed does its own)."""
        import torch

        if self.engine is not None:
            self.engine.backward(loss)
            self.engine.step()
            return
        (loss / grad_accum).backward()
        if boundary:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

    def save_state(self, ckpt: Path, model, optimizer, scheduler) -> None:
        """Weights (or adapter), optimizer and scheduler into ``ckpt``; DeepSpeed writes its own shards."""
        import torch

        if self.engine is not None:
            self.engine.save_checkpoint(str(ckpt), tag="ds")
        elif self.rank == 0:
            model.save_pretrained(ckpt / "model")
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       ckpt / "optimizer.pt")

    def load_state(self, ckpt: Path, load_weights, optimizer, scheduler) -> None:
        import torch

        if self.engine is not None:
            self.engine.load_checkpoint(str(ckpt), tag="ds")
            return
        load_weights(ckpt / "model")
        opt = torch.load(ckpt / "optimizer.pt", weights_only=False)
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])

    def whole_weights(self, model):
        """A context in which every parameter is whole on every rank (ZeRO-3 gathers; others need nothing)."""
        if self.zero_stage != 3:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)

    def barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    def stop(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
