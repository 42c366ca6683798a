#!/usr/bin/env bash
# What building llama.cpp with -ffp-contract=off (.cargo/config.toml, scripts/build-llama-tools.sh) costs
# in speed: llama-bench built twice from the same sources, with the project's flags and with GCC's default
# (-ffp-contract=fast), run alternately on the same files, same threads. Also counts the fused multiply-add
# instructions in each binary (the ones FMA intrinsics write stay; those GCC contracted go).
#
#   scripts/bench-fp-contract.sh              # the default model's q8_0 and q4_k_m, 2 threads
#   MODELS="a.gguf b.gguf" THREADS=4 scripts/bench-fp-contract.sh
#
# Prints one line per file and test: mean t/s of each build and their ratio. The second build (about 6
# minutes on 2 cores, once) goes to target/llama-tools-fp-contract-fast.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
TOOLS=$(scripts/build-llama-tools.sh)
ROOT=${CARGO_TARGET_DIR:-target}/llama-tools-fp-contract-fast
MS=${CARGO_TARGET_DIR:-target}/release/microscale

flags=""
if [ "$(uname -m)" = x86_64 ]; then flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"; fi
if [ ! -x "$ROOT/build/bin/llama-bench" ]; then
  echo "building llama-bench with GCC's default contraction (once)" >&2
  cmake -S "$(dirname "$TOOLS")/../src" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >"$ROOT.log" 2>&1
  cmake --build "$ROOT/build" --target llama-bench -j "$(nproc)" >>"$ROOT.log" 2>&1
fi
OFF=$TOOLS/llama-bench
FAST=$ROOT/build/bin/llama-bench

if [ -z "${MODELS:-}" ]; then
  scripts/fetch-default-model.sh
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for t in q8_0 q4_k_m; do "$MS" convert models/smollm2-135m -o "$tmp/$t.gguf" --outtype "$t" -q; done
  MODELS="$tmp/q8_0.gguf $tmp/q4_k_m.gguf"
fi

fma() { objdump -d --no-show-raw-insn "$1" | grep -cE '\svf(n)?m(add|sub)[0-9]{3}[sp][sd]|\sf(n)?m(add|sub)\s' || true; }
echo "fused multiply-add instructions: -ffp-contract=off $(fma "$OFF"), GCC default $(fma "$FAST")"
raw=$(mktemp)
for m in $MODELS; do
  for build in fast off fast off; do
    bin=$FAST; [ "$build" = off ] && bin=$OFF
    "$bin" -m "$m" -p 128 -n 32 -r 3 -t "$THREADS" -o csv 2>/dev/null | awk -F, -v b="$build" -v f="$(basename "$m")" 'NR>1 {print f, b, $0}' >>"$raw"
  done
done
python3 - "$raw" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, build, rest = line.split(" ", 2)
    cols = [c.strip('"') for c in rest.strip().split(",")]
    test = "pp%s" % cols[34] if int(cols[34]) else "tg%s" % cols[35]
    runs.setdefault((name, test, build), []).append(float(cols[-2]))
for name, test in sorted({(n, t) for n, t, _ in runs}):
    fast, off = statistics.mean(runs[(name, test, "fast")]), statistics.mean(runs[(name, test, "off")])
    print(f"{name} {test}: default {fast:.2f} t/s, -ffp-contract=off {off:.2f} t/s, ratio {off / fast:.3f}")
PY
rm -f "$raw"
