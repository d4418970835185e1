#!/usr/bin/env bash
# Real-size figures on one GPU, in one run: scoring throughput (the published loop against
# Assessor.score) and the recipe's training step, on random models of the published 0.5B and 7B
# shapes (the weights cannot be downloaded). Each part is limited so that a slow one cannot starve
# the rest; the 0.5B parts come first.
#
#     bench/real_size.sh [OUT_DIR]        # default bench/results
set -u
out=${1:-bench/results}
py=${PYTHON:-python3}
mkdir -p "$out"
part() {  # part SECONDS COMMAND...
  local limit=$1; shift
  echo "== $*"
  timeout "$limit" "$@" || echo "!! exit $?: $*"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
$py -c "import torch, transformers; print('torch', torch.__version__, '· transformers', transformers.__version__)"
part 150 $py bench/score_throughput.py --size 0.5b --device cuda --dtype bfloat16 --threads 8 \
  --images 64 --batch-size 16 --repeats 3 --out "$out/score_throughput_0.5b_cuda.json"
part 120 $py bench/train_real_size.py --size 0.5b --config qsit/configs/train/mini-0.5b.yaml \
  --out "$out/train_real_size_0.5b.json"
part 200 $py bench/score_throughput.py --size 7b --device cuda --dtype bfloat16 --threads 8 \
  --images 64 --batch-size 16 --repeats 3 --out "$out/score_throughput_7b_cuda.json"
part 180 $py bench/train_real_size.py --size 7b --config qsit/configs/train/primary-7b.yaml --lora \
  --out "$out/train_real_size_7b_lora.json"
