"""Copy a trained checkpoint into the package as the embedded default model (fp16 safetensors).

    python scripts/export_default_model.py runs/qsit-tiny/4-align/final qsit/assets/qsit-tiny

Weights, processor files and ``qsit_model.json`` are overwritten; ``MODEL_CARD.md`` and
``ATTRIBUTION.md`` beside them are kept. fp16 halves the file; ``Assessor`` loads it in fp32 on a CPU (bf16 on a GPU) like any checkpoint.
The run's description (``qsit_model.json``) travels with it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def export(src: Path, dst: Path) -> Path:
    import torch
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(src, dtype=torch.float16)
    dst.mkdir(parents=True, exist_ok=True)  # the model card and attribution beside the weights stay
    model.save_pretrained(dst)
    AutoProcessor.from_pretrained(src).save_pretrained(dst)
    if (src / "qsit_model.json").is_file():
        shutil.copy(src / "qsit_model.json", dst / "qsit_model.json")
    return dst


def main(argv=None) -> int:
    from qsit.cli import quiet_libraries

    quiet_libraries()  # qsit's own lines and bars, as in `qsit` itself
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("out")
    args = p.parse_args(argv)
    out = export(Path(args.checkpoint), Path(args.out))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"qsit: exported {args.checkpoint} to {out} ({size / 2**20:.1f} MiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
