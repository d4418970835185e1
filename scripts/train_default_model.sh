#!/usr/bin/env bash
# Rebuild the offline corpus and retrain the embedded default model, qsit-tiny, from scratch:
#   bash scripts/train_default_model.sh            (under 2 hours on 2 CPU cores; resumable)
# Every step picks up where it stopped: the corpus is built once, each stage resumes from its
# last checkpoint, the evaluation from its caches. Set EXPORT=0 to keep qsit/assets untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
QSIT=${QSIT:-qsit}
PY=${PYTHON:-python}
CORPUS=data/qsit-tiny-corpus
CONFIGS=qsit/configs/train
PHOTOS=data/photos/wallpapers
# 24 photographs from Debian's wallpaper packages (apt-get download; every step resumes)
$QSIT build wallpapers --out "$PHOTOS"
# 13 more, in no stage: the evaluation's unseen-photo check runs on each of them too
UNSEEN=data/photos/lomiri
$QSIT build wallpapers --packages lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 --out "$UNSEEN"
if [ -f "$CORPUS/manifest.json" ] && ! { grep -q "\"photos\": \"$PHOTOS\"" "$CORPUS/manifest.json" &&
    grep -q '"mcq_answers": "words"' "$CORPUS/manifest.json" &&
    grep -q '"severity_words": "level"' "$CORPUS/manifest.json"; }; then
  echo "$CORPUS was built by an older recipe (without $PHOTOS, --mcq-answers words or --severity-words level):" \
    "remove it and run again" >&2
  exit 1
fi
if [ ! -f "$CORPUS/manifest.json" ]; then
  $QSIT build synthetic --out "$CORPUS" --crops-per-photo 5 --ladders-per-crop 6 --train-scenes 20 \
    --no-content-in-descriptions --photos "$PHOTOS" --photos-test-every 0 --mcq-answers words \
    --severity-words level
fi
$QSIT train $CONFIGS/qsit-tiny-1-perception.yaml
$QSIT train $CONFIGS/qsit-tiny-2-scoring.yaml
$QSIT train $CONFIGS/qsit-tiny-3-mix.yaml
$QSIT train $CONFIGS/qsit-tiny-4-align.yaml
if [ "${EXPORT:-1}" = 1 ]; then
  $PY scripts/export_default_model.py runs/qsit-tiny/4-align/final qsit/assets/qsit-tiny
  $PY scripts/evaluate_default_model.py --corpus "$CORPUS" --model qsit/assets/qsit-tiny --out runs/qsit-tiny/eval \
    --unseen-photos "$UNSEEN"
else
  $PY scripts/evaluate_default_model.py --corpus "$CORPUS" --model runs/qsit-tiny/4-align/final --out runs/qsit-tiny/eval \
    --unseen-photos "$UNSEEN"
fi
