#!/usr/bin/env bash
# Quantization benchmarks:
#   1. quantizer throughput, microscale vs ggml's C functions, same data and threads, in one process
#      (microscale bench-quant), written to bench-results/quantizers.md;
#   2. end to end, Hugging Face directory -> Q4_K_M GGUF: microscale's one pass against the two-step
#      path (convert to F16, then llama.cpp's quantizer via stock-quantize), wall time and peak RSS
#      (GNU time), on the default model and on a synthetic 1.1B LLaMA.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/microscale-bench}
mkdir -p "$WORK" bench-results
cargo build --release --quiet --bins --examples
scripts/fetch-default-model.sh
M=${CARGO_TARGET_DIR:-target}/release/microscale

$M bench-quant --threads "$(nproc)" --reps 7 --rows 512 | tee bench-results/quantizers.md

[ -f "$WORK/llama-1b/config.json" ] || target/release/examples/synth_checkpoint --shape 1b --dtype bf16 -o "$WORK/llama-1b"

timed() { # label command...
  /usr/bin/time -f "%e %M" -o "$WORK/t.txt" "${@:2}" >/dev/null 2>&1
  read -r secs kib < "$WORK/t.txt"
  printf "| %s | %s s | %.0f MiB |\n" "$1" "$secs" "$(echo "$kib / 1024" | bc -l)"
}

echo "| HF -> Q4_K_M | wall | peak RSS |"
echo "| --- | --- | --- |"
for src in models/smollm2-135m "$WORK/llama-1b"; do
  name=$(basename "$src")
  rm -f "$WORK/$name-q4km.gguf" "$WORK/$name-f16.gguf" "$WORK/$name-stock-q4km.gguf"
  timed "$name: microscale one pass" $M convert "$src" -o "$WORK/$name-q4km.gguf" --outtype q4_k_m -q
  timed "$name: step 1, convert to F16" $M convert "$src" -o "$WORK/$name-f16.gguf" --outtype f16 -q
  timed "$name: step 2, llama.cpp quantize" $M stock-quantize "$WORK/$name-f16.gguf" "$WORK/$name-stock-q4km.gguf" q4_k_m -q
done
