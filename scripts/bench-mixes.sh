#!/usr/bin/env bash
# Size against KL divergence on the default model, for llama.cpp's mixes and for size budgets:
# for each TYPE, llama.cpp's own quantizer (`stock-quantize`, what llama-quantize runs) with the
# same importance matrix as ours, then `convert --target-size` at exactly that file's size; each
# evaluated against the F32 baseline (the exact dequantization of the shipped Q4_1 GGUF) over
# CHUNKS windows of WikiText-2 test, as llama-perplexity --kl-divergence does. Prints a Markdown
# table row per file.
#
# With --every, instead: every mix llama-quantize offers, from llama.cpp's own quantizer, without
# and with the importance matrix (the mixes that need one are refused without it, as llama-quantize
# refuses them). microscale's `convert --outtype TYPE` writes the same tensor bytes
# (tests/it/quant_whole_file.rs), so these rows are both tools' numbers.
#
# Usage: scripts/bench-mixes.sh [TYPE...]   (default: q4_k_m q3_k_m iq3_m)
#        scripts/bench-mixes.sh --every
#   CHUNKS=20 IMATRIX_CHUNKS=16 WORK=/tmp/microscale-mixes
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/microscale-mixes}
CHUNKS=${CHUNKS:-20}
IMATRIX_CHUNKS=${IMATRIX_CHUNKS:-16}
EVERY=0
if [ "${1:-}" = --every ]; then
  EVERY=1
  shift
  [ $# -eq 0 ] || { echo "--every measures every mix: no TYPE arguments" >&2; exit 2; }
fi
TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(q4_k_m q3_k_m iq3_m)
ALL_MIXES=(q8_0 q6_k q5_k_m q5_k_s q5_1 q5_0 q4_k_m q4_k_s q4_1 q4_0 iq4_nl iq4_xs q3_k_l q3_k_m q3_k_s
  iq3_m iq3_s iq3_xs iq3_xxs q2_k q2_k_s iq2_m iq2_s iq2_xs iq2_xxs iq1_m iq1_s tq2_0 tq1_0)
scripts/fetch-default-model.sh
cargo build --release --quiet --bins
M=${CARGO_TARGET_DIR:-target}/release/microscale
SRC=models/smollm2-135m
mkdir -p "$WORK"
[ -f "$WORK/f32.gguf" ] || "$M" -q convert "$SRC" -o "$WORK/f32.gguf" --outtype f32
[ -f "$WORK/imatrix.gguf" ] || "$M" -q imatrix "$SRC" -o "$WORK/imatrix.gguf" --chunks "$IMATRIX_CHUNKS"
# The baseline's log-probabilities once (llama-perplexity's --kl-divergence-base format), so each
# comparison runs only the quantized model.
BASE="$WORK/f32-$CHUNKS.kld"
[ -f "$BASE" ] || "$M" -q eval "$WORK/f32.gguf" --save-kld-base "$BASE" --chunks "$CHUNKS" >/dev/null

measure() { # label file
  "$M" -q eval "$2" --kld-base "$BASE" --json >"$WORK/eval.json"
  python3 - "$1" "$2" "$WORK/eval.json" <<'PY'
import json, os, sys
label, path, out = sys.argv[1:]
d = json.load(open(out))
rows = {r["metric"]: r for r in d["results"]["rows"]}
k = d["results"]["kld"]
size = os.path.getsize(path)
print(f"| {label} | {size} | {size*8/d['model']['n_params']:.3f} | {rows['kld']['value']:.4f} ± {rows['kld']['stderr']:.4f} "
      f"| {k['ppl']:.3f} | {100*(k['ppl']/k['ppl_base']-1):+.2f}% | {100*rows['same_top']['value']:.1f}% |")
PY
}

echo "| file | bytes | bpw | KLD vs F32 | PPL | PPL vs F32 | same top |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
if [ "$EVERY" = 1 ]; then
  for t in "${ALL_MIXES[@]}"; do
    if "$M" -q stock-quantize "$WORK/f32.gguf" "$WORK/stock-$t.gguf" "$t" 2>"$WORK/refused.txt"; then
      measure "$t" "$WORK/stock-$t.gguf"
    else
      echo "| $t | refused: $(head -c 160 "$WORK/refused.txt" | tr '|\n' '/ ') | | | | | |"
    fi
    "$M" -q stock-quantize "$WORK/f32.gguf" "$WORK/stock-$t.gguf" "$t" --imatrix "$WORK/imatrix.gguf"
    measure "$t + imatrix" "$WORK/stock-$t.gguf"
    rm -f "$WORK/stock-$t.gguf"
  done
  exit 0
fi
for t in "${TYPES[@]}"; do
  "$M" -q stock-quantize "$WORK/f32.gguf" "$WORK/stock-$t.gguf" "$t" --imatrix "$WORK/imatrix.gguf"
  size=$(stat -c %s "$WORK/stock-$t.gguf")
  "$M" -q convert "$SRC" -o "$WORK/budget-$t.gguf" --outtype "$t" --imatrix "$WORK/imatrix.gguf" --target-size "$size"
  measure "stock $t + imatrix" "$WORK/stock-$t.gguf"
  measure "microscale --target-size $size" "$WORK/budget-$t.gguf"
  rm -f "$WORK/stock-$t.gguf" "$WORK/budget-$t.gguf"
done
