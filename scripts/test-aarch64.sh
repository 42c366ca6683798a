#!/usr/bin/env bash
# microscale's own tests built for aarch64 and run on this x86-64 machine under qemu: the library's unit
# tests and the quantizer oracle (every ggml type, microscale's bytes against the aarch64-built ggml's own
# quantizers). The end-to-end part (the aarch64 binary's files byte for byte against x86-64's, perplexity,
# bench, generate, rows measured "on the device" folded into a report) is tests/it/aarch64.rs, which runs with
# the x86-64 tests. scripts/test.sh runs this after them: about 3 minutes (1.5 to build these test binaries
# once the cross-built llama.cpp is there, 1.5 to run them); bench-results/aarch64/ has the numbers.
#
# Needs what scripts/build-aarch64.sh installs (it installs it when run as root). Arguments go to the
# test binaries (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-aarch64.sh >/dev/null

TRIPLE=aarch64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-target}/aarch64
# The same compiler and flags as scripts/build-aarch64.sh, so that nothing is rebuilt.
bins=$(RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="$TARGET_DIR" RUSTFLAGS="-C target-feature=+neon" \
  /usr/bin/cargo test --release --quiet --no-run --target "$TRIPLE" --lib --test quant_oracle --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
[ -n "$bins" ] || { echo "error: no aarch64 test binary was built" >&2; exit 1; }
for b in $bins; do
  echo "running $(basename "$b") (aarch64, under qemu)" >&2
  # binfmt_misc hands the aarch64 binary to qemu; the arm64 system libraries come from their multiarch folders.
  "$b" "$@"
done
