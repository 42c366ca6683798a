#!/usr/bin/env bash
# LLaMA-2-7B at full scale: a synthetic checkpoint of LLaMA-2-7B's shape (32 blocks of 4096, 32
# heads, FFN 11008; random BF16 weights, 12.6 GiB) with LLaMA-2's real SentencePiece vocabulary
# (llama.cpp's ggml-vocab-llama-spm.gguf, from scripts/fetch-vocabs.sh), through one pass of
# convert + prune (50% magnitude sparsity) + quantize (Q4_K_M), timed with GNU time (wall, peak
# RSS), beside llama.cpp's own path on the same checkpoint: convert_hf_to_gguf.py (→ BF16 GGUF),
# then llama.cpp's quantizer (llama_model_quantize, what llama-quantize runs, via
# `microscale stock-quantize`) to Q4_K_M — which does not prune.
#
# The reference converter needs PyTorch: the script makes a venv in WORKDIR and installs torch,
# numpy, sentencepiece and safetensors from PyPI (about 5 GB; skip it with REFERENCE=0).
#
# Usage: scripts/bench-llama2-7b.sh [WORKDIR]   (default /tmp/microscale-bench-7b; ~45 GB free)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/microscale-bench-7b}
REFERENCE=${REFERENCE:-1}
mkdir -p "$WORK"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
scripts/setup.sh
scripts/fetch-vocabs.sh
cargo build --release --quiet --bins --examples
T=${CARGO_TARGET_DIR:-target}/release
M=$T/microscale
CKPT=$WORK/llama2-7b

[ -f "$CKPT/config.json" ] || "$T/examples/synth_checkpoint" --shape 7b --dtype bf16 \
  --vocab models/vocabs/ggml-vocab-llama-spm.gguf -o "$CKPT"

row() { # label command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/last.log" || { cat "$WORK/last.log" >&2; exit 1; }
  read -r secs kib < "$WORK/time.txt"
  printf "| %s | %s s | %.0f MiB |\n" "$label" "$secs" "$(echo "$kib / 1024" | bc -l)"
}

echo "checkpoint: $(du -sh --apparent-size "$CKPT" | cut -f1) ($CKPT)"
echo
echo "| step | wall | peak RSS |"
echo "| --- | ---: | ---: |"
rm -f "$WORK/ms-q4_k_m.gguf"
row "microscale, one pass: convert + 50% magnitude sparsity + Q4_K_M" \
  "$M" convert "$CKPT" -o "$WORK/ms-q4_k_m.gguf" --outtype q4_k_m --sparsity 0.5 -q
rm -f "$WORK/ms-q4_k_m-dense.gguf"
row "microscale, one pass: convert + Q4_K_M (no pruning)" \
  "$M" convert "$CKPT" -o "$WORK/ms-q4_k_m-dense.gguf" --outtype q4_k_m -q

if [ "$REFERENCE" = 1 ]; then
  if [ ! -f "$WORK/llama.cpp/convert_hf_to_gguf.py" ]; then
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" llama-cpp-python==0.3.36
    tar -xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
    mv "$tmp"/llama_cpp_python-0.3.36/vendor/llama.cpp "$WORK/llama.cpp"
    rm -rf "$tmp"
  fi
  if [ ! -x "$WORK/venv/bin/python" ]; then
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install --quiet torch numpy sentencepiece safetensors pyyaml "transformers>=4.46"
  fi
  rm -f "$WORK/ref-bf16.gguf" "$WORK/ref-q4_k_m.gguf"
  row "convert_hf_to_gguf.py → BF16 GGUF" \
    "$WORK/venv/bin/python" "$WORK/llama.cpp/convert_hf_to_gguf.py" "$CKPT" --outtype bf16 --outfile "$WORK/ref-bf16.gguf"
  row "llama.cpp's quantizer, BF16 → Q4_K_M" \
    "$M" stock-quantize "$WORK/ref-bf16.gguf" "$WORK/ref-q4_k_m.gguf" q4_k_m -q
fi
ls -l "$WORK"/*.gguf
