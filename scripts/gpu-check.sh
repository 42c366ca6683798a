#!/usr/bin/env bash
# The CUDA build on a GPU, in one run: a machine with an NVIDIA GPU and its driver (CUDA 13 runtime
# libraries installed), and neither Rust nor network. Two halves:
#
#   scripts/gpu-check.sh pack      # here: build (scripts/build-cuda.sh) and pack gpu-carry/ (git-ignored)
#   scripts/gpu-check.sh run       # there, from the repository root with gpu-carry/ beside it
#
# What `run` measures (the model: a synthetic checkpoint of LLaMA-2-7B's shape — 32 blocks of 4096,
# random BF16 weights — with LLaMA-2's real vocabulary, made there by microscale's synth_checkpoint and
# converted there to Q4_0, the model and type of llama.cpp's CUDA scoreboard; speed does not depend on
# the weights' values, and the file is 3.6 GiB, far over what can be carried):
#   1. `microscale info`: the backends and the GPU found;
#   2. perplexity and KL divergence on 4 WikiText-2 windows with every layer on the GPU against the CPU
#      run of the same file (its saved log-probabilities);
#   3. `bench --profile host`, pp512 and tg128 (llama-bench's tests), with 99, 16 and 0 layers offloaded;
# everything printed and written to $OUT (or /tmp/gpu-check): the logs and one JSON per command.
#
# SHAPE=1b LAYERS=2 make `run` small enough to try on a CPU machine (where it reports no GPU, and the
# offloaded rows record gpu_layers 0). CUDA_ARCH as for build-cuda.sh (default sm_90: H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-}
CARRY=gpu-carry
case "$MODE" in
pack)
  BINARY=$(scripts/build-cuda.sh --example synth_checkpoint | tail -1)
  DIR=$(dirname "$BINARY")
  scripts/fetch-vocabs.sh >/dev/null
  rm -rf "$CARRY" && mkdir -p "$CARRY/bin"
  # The binaries and the libraries they load (not libllama-common), stripped: about 79 MB, 46 MB packed.
  cp -L "$BINARY" "$DIR/examples/synth_checkpoint" "$CARRY/bin/"
  for lib in libllama libggml libggml-base libggml-cpu libggml-cuda; do cp -L "$DIR/$lib.so.0" "$CARRY/bin/"; done
  strip --strip-unneeded "$CARRY"/bin/*
  cp models/vocabs/ggml-vocab-llama-spm.gguf "$CARRY/"
  tar -C "$CARRY" -cf - bin | xz -9 -T2 >"$CARRY/bin.tar.xz" && rm -rf "$CARRY/bin"
  du -sh --apparent-size "$CARRY"/*
  echo "carry $CARRY (64 MiB at most): run scripts/gpu-check.sh run there" >&2
  ;;
run)
  OUT=${OUT:-/tmp/gpu-check}
  WORK=${WORK:-/tmp/gpu-check-work}
  mkdir -p "$OUT" "$WORK"
  tar -C "$WORK" -xJf "$CARRY/bin.tar.xz"
  # llama.cpp's libraries beside the binary; CUDA 13's runtime and cuBLAS from the machine (its toolkit's
  # lib64 when ldconfig does not list it).
  export LD_LIBRARY_PATH=$WORK/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64; do
    [ -d "$d" ] && LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d
  done
  M=$WORK/bin/microscale
  log() { echo "== $*" | tee -a "$OUT/gpu-check.log"; }
  step() { # name command...: stdout to OUT/name.json, stderr to the log
    local name=$1; shift
    log "$name: $*"
    local t0=$SECONDS
    "$@" >"$OUT/$name.json" 2>>"$OUT/gpu-check.log"
    log "$name: $((SECONDS - t0)) s"
  }
  { nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || echo "no nvidia-smi"; } |
    tee "$OUT/nvidia-smi.txt"
  $M info | tee "$OUT/info.txt"
  SHAPE=${SHAPE:-7b}
  CKPT=$WORK/llama-$SHAPE
  step synth "$WORK/bin/synth_checkpoint" --shape "$SHAPE" ${LAYERS:+--layers "$LAYERS"} --dtype bf16 \
    --vocab "$CARRY/ggml-vocab-llama-spm.gguf" -o "$CKPT"
  GGUF=$WORK/llama-$SHAPE-q4_0.gguf
  step convert "$M" convert "$CKPT" --outtype q4_0 -o "$GGUF" -q --json
  rm -rf "$CKPT"
  step eval-cpu "$M" eval "$GGUF" --chunks 4 --save-kld-base "$WORK/cpu.kld" --ppl --gpu-layers 0 --json -q
  step eval-gpu "$M" eval "$GGUF" --chunks 4 --kld-base "$WORK/cpu.kld" --ppl --gpu-layers 99 --json -q
  for ngl in 99 16 0; do
    step "bench-ngl$ngl" "$M" bench "$GGUF" --profile host --pp 512 --tg 128 --reps 3 --gpu-layers "$ngl" --json -q
  done
  log "done: $OUT"
  ;;
*)
  echo "usage: scripts/gpu-check.sh pack|run" >&2
  exit 2
  ;;
esac
