#!/usr/bin/env bash
# Fetch llama.cpp's reference vocabularies for the tokenizer tests: `models/ggml-vocab-*.gguf`
# (LLaMA-2's SentencePiece, LLaMA-3's, GPT-2's, Qwen2's and other BPE vocabularies, vocab only)
# with their `.inp` / `.out` tokenizer cases (texts and the token ids llama.cpp must produce).
#
# They ship in the llama-cpp-python 0.3.36 source distribution on PyPI, which pip downloads
# (no install, no build); the archive's sha256 is checked, and the files are extracted to
# models/vocabs/ (git-ignored). Idempotent: does nothing when they are in place.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=models/vocabs
SDIST=llama_cpp_python-0.3.36.tar.gz
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
STAMP="$DEST/.complete-$SHA256"

[ -f "$STAMP" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching llama-cpp-python==0.3.36 (source) from PyPI for llama.cpp's vocabularies" >&2
python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation --dest "$tmp" llama-cpp-python==0.3.36 2>/dev/null \
  || python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" llama-cpp-python==0.3.36
echo "$SHA256  $tmp/$SDIST" | sha256sum -c --quiet - || { echo "sha256 mismatch for $SDIST" >&2; exit 1; }
mkdir -p "$tmp/x" "$DEST"
tar -xzf "$tmp/$SDIST" -C "$tmp/x" --wildcards 'llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*'
mv "$tmp"/x/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-* "$DEST"/
touch "$STAMP"
echo "vocabularies ready: $DEST/ ($(ls "$DEST"/*.gguf | wc -l) files)" >&2
