#!/usr/bin/env bash
# Build llama.cpp's own command-line tools (llama-imatrix, llama-quantize, llama-perplexity,
# llama-completion) as test oracles: the tests compare `microscale imatrix` with llama-imatrix, our
# quantized files with llama-quantize (the tool, which adds the quantize.imatrix.* keys the library
# call does not), read llama-perplexity's saved base log-probabilities, and compare `microscale
# generate --chat` with llama-completion's conversation mode.
#
# The sources are llama.cpp as vendored in the llama-cpp-python 0.3.36 source distribution on PyPI
# (the crate llama-cpp-sys-2 vendors the libraries but not the tools); pip downloads it, its sha256
# is checked. Built with CMake into target/llama-tools/ (or $CARGO_TARGET_DIR/llama-tools/), about
# 6 minutes on 2 cores, once; the tools are reused while the stamp (sdist and flags) is there. Compiled with
# the flags .cargo/config.toml gives the crate's llama.cpp: AMX off on x86-64 (llama.cpp issue 20824), and no
# contracted multiply-adds on any CPU (-ffp-contract=off: the same quantized bytes on every CPU). llama-bench
# is built too, for bench-results/. Prints the directory holding the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${CARGO_TARGET_DIR:-target}/llama-tools
SDIST=llama_cpp_python-0.3.36.tar.gz
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# The crate's flags (.cargo/config.toml [env]), so that oracle and engine are the same compiled C.
FLAGS="-ffp-contract=off"
if [ "$(uname -m)" = x86_64 ]; then FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16 $FLAGS"; fi
STAMP="$ROOT/.complete-$SHA256-$(echo "$FLAGS" | sha256sum | cut -c1-12)"
BIN="$ROOT/build/bin"

TARGETS=(llama-imatrix llama-quantize llama-perplexity llama-completion llama-bench)
have_all() {
  for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || return 1; done
}
if [ -f "$STAMP" ] && have_all; then
  echo "$BIN"
  exit 0
fi
command -v cmake >/dev/null || { echo "error: cmake is missing: run scripts/setup.sh" >&2; exit 1; }
if [ -f "$STAMP" ] && [ -f "$ROOT/build/CMakeCache.txt" ]; then
  # A build of this sdist from before a tool was added to the list: build only what is missing.
  cmake --build "$ROOT/build" --target "${TARGETS[@]}" -j "$(nproc)" >>"$ROOT/cmake.log" 2>&1 \
    || { echo "error: building llama.cpp's tools failed, see $ROOT/cmake.log" >&2; exit 1; }
  echo "$BIN"
  exit 0
fi
mkdir -p "$ROOT"
rm -f "$ROOT"/.complete-*
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching llama-cpp-python==0.3.36 (source) from PyPI for llama.cpp's tools" >&2
python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" llama-cpp-python==0.3.36 >&2
echo "$SHA256  $tmp/$SDIST" | sha256sum -c --quiet - || { echo "sha256 mismatch for $SDIST" >&2; exit 1; }
rm -rf "$ROOT/src"
tar -xzf "$tmp/$SDIST" -C "$tmp"
mv "$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp" "$ROOT/src"

echo "building ${TARGETS[*]} (CMake, once)" >&2
cmake -S "$ROOT/src" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
  -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_CXX_FLAGS="$FLAGS" >"$ROOT/cmake.log" 2>&1 \
  || { echo "error: cmake configure failed, see $ROOT/cmake.log" >&2; exit 1; }
cmake --build "$ROOT/build" --target "${TARGETS[@]}" -j "$(nproc)" >>"$ROOT/cmake.log" 2>&1 \
  || { echo "error: building llama.cpp's tools failed, see $ROOT/cmake.log" >&2; exit 1; }
touch "$STAMP"
echo "$BIN"
