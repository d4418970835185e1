"""Where sweep runs execute: this machine (one at a time, or one per visible GPU), a Ray cluster,
or nowhere (``--plan-only`` prints the commands for any other scheduler).

An executor takes run specs and yields ledger rows as runs finish; the sweep appends each row
to the ledger at once, so a crash of the driver loses no finished run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from mixing.sweep import RunSpec, execute, write_spec

OUTCOME = "outcome.json"


def run_one(spec_path: str | os.PathLike) -> dict:
    """``qsit mix run-one SPEC``: execute one spec and leave its row in ``outcome.json`` beside it."""
    from mixing.sweep import read_spec

    spec = read_spec(spec_path)
    row = execute(spec)
    out = Path(spec.run_dir) / OUTCOME
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=2))
    os.replace(tmp, out)
    return row


def collected(spec: RunSpec) -> dict | None:
    """A row left by ``run-one`` (an external scheduler's run), if any."""
    path = Path(spec.run_dir) / OUTCOME
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
    return None


class LocalExecutor:
    """Runs in this process one after another; with ``gpus`` > 1, one subprocess per GPU at a time."""

    def __init__(self, gpus: int | None = None):
        if gpus is None:
            try:
                import torch

                gpus = torch.cuda.device_count()
            except ImportError:
                gpus = 0
        self.gpus = gpus

    def map(self, specs: Iterable[RunSpec]) -> Iterator[dict]:
        specs = list(specs)
        if self.gpus <= 1:
            for spec in specs:
                yield execute(spec)
            return
        free = list(range(self.gpus))

        def on_gpu(spec: RunSpec) -> dict:
            gpu = free.pop()
            try:
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
                proc = subprocess.run([sys.executable, "-m", "qsit.cli", "mix", "run-one", str(write_spec(spec))],
                                      env=env, capture_output=True, text=True)
                row = collected(spec)
                if row is None:
                    row = {"run_id": spec.run_id, "stage": spec.stage, "ratio": spec.ratio, "seed": spec.seed,
                           "sizes": spec.sizes, "run_dir": spec.run_dir, "status": "failed",
                           "error": f"run-one exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
                return row
            finally:
                free.append(gpu)

        with ThreadPoolExecutor(self.gpus) as pool:
            for fut in as_completed([pool.submit(on_gpu, s) for s in specs]):
                yield fut.result()


class RayExecutor:
    """Each run is a Ray task with its own CPU/GPU request; rows come back as tasks finish.

    The workers import qsit, so it must be installed on every node (``pip install qsit[ray]``).
    """

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 init_kwargs: dict | None = None):
        try:
            import ray
        except ImportError:
            raise RuntimeError("the Ray executor needs ray: pip install 'qsit[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level="ERROR",
                     **(init_kwargs or {}))
        self.task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(execute)

    def map(self, specs: Iterable[RunSpec]) -> Iterator[dict]:
        pending = [self.task.remote(s) for s in specs]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])


class PlanOnlyExecutor:
    """Writes each spec and prints the command that runs it; runs nothing."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.printed: list[str] = []

    def map(self, specs: Iterable[RunSpec]) -> Iterator[dict]:
        for spec in specs:
            line = spec.command(write_spec(spec))
            self.printed.append(line)
            print(line, file=self.stream)
        return iter(())
