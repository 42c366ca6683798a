#!/usr/bin/env bash
# Size against KL divergence on the default model, for llama.cpp's mixes and for size budgets:
# for each TYPE, llama.cpp's own quantizer (`stock-quantize`, what llama-quantize runs) with the
# same importance matrix as ours, then `convert --target-size` at exactly that file's size; each
# evaluated against the F32 baseline (the exact dequantization of the shipped Q4_1 GGUF) over
# CHUNKS windows of WikiText-2 test, as llama-perplexity --kl-divergence does. Prints a Markdown
# table row per file.
#
# Usage: scripts/bench-mixes.sh [TYPE...]   (default: q4_k_m q3_k_m iq3_m)
#   CHUNKS=20 IMATRIX_CHUNKS=16 WORK=/tmp/microscale-mixes
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/microscale-mixes}
CHUNKS=${CHUNKS:-20}
IMATRIX_CHUNKS=${IMATRIX_CHUNKS:-16}
TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(q4_k_m q3_k_m iq3_m)
scripts/fetch-default-model.sh
cargo build --release --quiet --bins
M=${CARGO_TARGET_DIR:-target}/release/microscale
SRC=models/smollm2-135m
mkdir -p "$WORK"
[ -f "$WORK/f32.gguf" ] || "$M" -q convert "$SRC" -o "$WORK/f32.gguf" --outtype f32
[ -f "$WORK/imatrix.gguf" ] || "$M" -q imatrix "$SRC" -o "$WORK/imatrix.gguf" --chunks "$IMATRIX_CHUNKS"

measure() { # label file
  "$M" -q eval "$2" --kld-base "$WORK/f32.gguf" --chunks "$CHUNKS" --json >"$WORK/eval.json"
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
for t in "${TYPES[@]}"; do
  "$M" -q stock-quantize "$WORK/f32.gguf" "$WORK/stock-$t.gguf" "$t" --imatrix "$WORK/imatrix.gguf"
  size=$(stat -c %s "$WORK/stock-$t.gguf")
  "$M" -q convert "$SRC" -o "$WORK/budget-$t.gguf" --outtype "$t" --imatrix "$WORK/imatrix.gguf" --target-size "$size"
  measure "stock $t + imatrix" "$WORK/stock-$t.gguf"
  measure "microscale --target-size $size" "$WORK/budget-$t.gguf"
  rm -f "$WORK/stock-$t.gguf" "$WORK/budget-$t.gguf"
done
