#!/usr/bin/env bash
# The demo: one question to the default model as it shrinks — the uncompressed baseline, Q8_0,
# Q4_K_M and the report's sweet spot — each answered under a device's caps (a phone by default),
# with the answer, file size, tokens/s and peak memory side by side.
#
#   scripts/demo.sh
#   QUESTION="Why is the sky blue?" PROFILE=pi4-4gb scripts/demo.sh
#
# QUESTION     what to ask (default: "What is the capital of France?")
# PROFILE      the device profile the answers run under (default: phone-6gb; `microscale bench --list-profiles`)
# RESULTS      the sweep whose report names the sweet spot (default: bench-results/smollm2-135m)
# GRID         the grid that sweep ran, to rebuild its sweet spot (default: grids/seed.toml)
# OUT          where the demo's models are kept between runs (default: models/demo)
# MAX_TOKENS   reply length cap (default: 64)
#
# Greedy decoding (--temp 0): the same answers on every run. Models are built once and kept.
set -euo pipefail
cd "$(dirname "$0")/.."

QUESTION=${QUESTION:-"What is the capital of France?"}
PROFILE=${PROFILE:-phone-6gb}
RESULTS=${RESULTS:-bench-results/smollm2-135m}
GRID=${GRID:-grids/seed.toml}
OUT=${OUT:-models/demo}
MAX_TOKENS=${MAX_TOKENS:-64}

scripts/setup.sh
scripts/fetch-default-model.sh
cargo build --release --quiet
MS=${CARGO_TARGET_DIR:-target}/release/microscale
SRC=models/smollm2-135m
mkdir -p "$OUT"

build() { # NAME CONVERT-FLAGS...: the model, converted once
  local name=$1
  shift
  if [ ! -f "$OUT/$name.gguf" ]; then
    echo "building $name" >&2
    "$MS" convert "$SRC" -o "$OUT/$name.gguf" -q "$@"
  fi
  echo "$OUT/$name.gguf"
}

models=("$(build baseline-f32 --outtype f32)" "$(build q8_0 --outtype q8_0)" "$(build q4_k_m --outtype q4_k_m)")
names=(baseline-f32 q8_0 q4_k_m)

# The report's sweet spot for this profile, built exactly as the sweep built it.
sweet=$("$MS" report "$RESULTS" --sweet-spot "$PROFILE")
case " ${names[*]} " in
  *" $sweet "*) echo "the sweet spot on $PROFILE is $sweet, already in the list" >&2 ;;
  *)
    if [ ! -f "$OUT/sweep/variants/$sweet.gguf" ]; then
      echo "building the sweet spot $sweet (as $GRID makes it)" >&2
    fi
    models+=("$("$MS" sweep --model "$SRC" --grid "$GRID" --out "$OUT/sweep" --variant "$sweet" --build-only -q)")
    names+=("$sweet (sweet spot)")
    ;;
esac

echo "Q: $QUESTION  (greedy, at most $MAX_TOKENS tokens, each model under the $PROFILE profile's caps)"
echo
json=$(mktemp -d)
trap 'rm -rf "$json"' EXIT
for i in "${!models[@]}"; do
  # A model that does not fit is a row too: the command exits non-zero and its JSON says why.
  "$MS" generate "${models[$i]}" --chat --prompt "$QUESTION" --temp 0 --max-tokens "$MAX_TOKENS" \
    --profile "$PROFILE" --json -q >"$json/$i.json" || true
done

python3 - "$json" "${names[@]}" <<'EOF'
import json, os, sys
folder, names = sys.argv[1], sys.argv[2:]
print("| model | file MiB | answer | prompt t/s | gen t/s | TTFT s | peak MiB | status |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
for i, name in enumerate(names):
    path = os.path.join(folder, f"{i}.json")
    try:
        run = json.load(open(path))
    except (OSError, ValueError):
        print(f"| {name} | | | | | | | failed to run |")
        continue
    r = run.get("report")
    status = run["status"] + (f": {run['reason']}" if run.get("reason") else "")
    if r is None:
        print(f"| {name} | | | | | | | {status} |")
        continue
    answer = " ".join(r["text"].split()).replace("|", "\\|")
    print(
        f"| {name} | {r['size_bytes'] / 2**20:.1f} | {answer} | {r['prompt_tps']:.0f} | {r['generation_tps']:.1f} "
        f"| {r['ttft_s']:.3f} | {r['peak_rss'] / 2**20:.0f} | {status} |"
    )
first = next((json.load(open(os.path.join(folder, f"{i}.json"))) for i in range(len(names))
              if os.path.getsize(os.path.join(folder, f"{i}.json")) > 0), None)
if first:
    cap = first.get("memory_cap")
    print()
    print(f"profile {first['profile']}: {first['threads']} threads, memory cap "
          f"{cap / 2**30:.1f} GiB" if cap else f"profile {first['profile']}: {first['threads']} threads, no memory cap",
          f"({first['enforcement']['memory']}; {first['enforcement']['affinity']})")
EOF
