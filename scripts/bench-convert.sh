#!/usr/bin/env bash
# Conversion benchmark: wall time and peak RSS (GNU time) of HF → GGUF conversions.
#   1. the default model's Hugging Face directory → F16 GGUF;
#   2. a synthetic 1B-shaped LLaMA checkpoint in BF16 (written by examples/synth_checkpoint.rs) → F16 GGUF.
# Peak RSS should stay far below the checkpoint's size: conversion streams one tensor at a time.
# Usage: scripts/bench-convert.sh [WORKDIR]   (default /tmp/microscale-bench; needs ~5 GB free)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/microscale-bench}
mkdir -p "$WORK"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
cargo build --release --quiet --bins --examples
scripts/fetch-default-model.sh
M=${CARGO_TARGET_DIR:-target}/release/microscale

[ -f "$WORK/llama-1b/config.json" ] || target/release/examples/synth_checkpoint --shape 1b --dtype bf16 -o "$WORK/llama-1b"

measure() { # name src out
  rm -f "$3"
  /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$M" convert "$2" -o "$3" --outtype f16 -q
  read -r secs kib < "$WORK/time.txt"
  src_mib=$(du -sm --apparent-size "$2" | cut -f1)
  printf "| %s | %s MiB | %s s | %.0f MiB |\n" "$1" "$src_mib" "$secs" "$(echo "$kib / 1024" | bc -l)"
}

echo "| conversion (→ F16 GGUF) | checkpoint | wall | peak RSS |"
echo "| --- | --- | --- | --- |"
measure "SmolLM2-135M, F32 safetensors" models/smollm2-135m "$WORK/smollm2-f16.gguf"
measure "synthetic LLaMA 1.1B, BF16 safetensors" "$WORK/llama-1b" "$WORK/llama-1b-f16.gguf"
