#!/usr/bin/env bash
# The main job end to end on built-in synthetic data (run by `make demo`).
# Usage: scripts/demo.sh OUT_DIR   (the ingest/train/predict commands must be on PATH)
set -euo pipefail
out=${1:-demo_out}
rm -rf "$out"
mkdir -p "$out"
step() { printf '\n== %s\n' "$*"; }

step "1. synthesise YouTube-8M-format frame-level shards (train, validate, test + truth)"
ingest synth "$out/shards" --split train    --shards 2 --videos-per-shard 40 --seed 0
ingest synth "$out/shards" --split validate --shards 2 --videos-per-shard 40 --seed 0
ingest synth "$out/shards" --split test     --shards 1 --videos-per-shard 40 --seed 0

step "2. decode them with the numba decoder (CRC-verified)"
ingest decode "$out"/shards/*.tfrecord

step "3. convert them into a Zarr + Parquet store"
ingest convert "$out/shards/*.tfrecord" --out "$out/store" --workers 2
ingest info "$out/store"
ingest verify "$out/store"

step "4. the models of the paper, parameter counts beside the paper's"
train models

echo
echo "demo complete: outputs in $out/"
