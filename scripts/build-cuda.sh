#!/usr/bin/env bash
# Build microscale with llama.cpp's CUDA backend on a machine without a system CUDA toolkit (no GPU needed to
# build), and print the binary's path.
#
#   scripts/build-cuda.sh                         # H100/H200 (sm_90): prints target-cuda/sm_90/release/microscale
#   CUDA_ARCH=sm_89 scripts/build-cuda.sh         # NVIDIA L4 (Ada); sm_100: B200 (Blackwell); "89,90": both
#   $(scripts/build-cuda.sh) info                 # runs here too, GPU or not: lists the CUDA devices it finds
#   scripts/build-cuda.sh test                    # then the --gpu-layers tests with this build (others: name them)
#
# The toolkit comes from PyPI, NVIDIA's own wheels, pip-installed once into .cuda-toolkit/ (git-ignored,
# about 850 MB, most of it cuBLAS): nvcc with ptxas, cicc (nvvm) and the crt headers, the runtime (cudart),
# cuBLAS/cuBLASLt and the CCCL headers, all laid out under .cuda-toolkit/nvidia/cu13/{bin,include,lib}.
# CUDA 13.0 (update 2: nvcc 13.0.88, cudart 13.0.96, cuBLAS 13.1.0.3), the oldest 13.x: a binary built
# against it runs with any CUDA 13 runtime libraries a GPU machine has installed and any driver that runs
# CUDA 13 (R580 or newer). CUDA 13 compiles for Turing (sm_75) and newer only; for an older GPU or driver,
# use a CUDA 12 toolkit (the -cu12 wheels, or the cluster's module) with the cluster command below.
#
# How it links, and what the binary needs at run time:
# - The wheels ship no static cuBLAS (libcublas_static.a, libculibos.a), which llama-cpp-sys-2's default
#   static build links, so llama.cpp is built as shared libraries (LLAMA_BUILD_SHARED_LIBS=1):
#   libllama, libllama-common, libggml, libggml-base, libggml-cpu and libggml-cuda (.so.0), and
#   libggml-cuda links the shared cudart and cuBLAS (.so.13). The script copies llama.cpp's libraries next
#   to the binary; the binary finds them there, and the CUDA libraries in .cuda-toolkit, by its rpath
#   ($ORIGIN, and the toolkit's lib folder relative to $ORIGIN), else through LD_LIBRARY_PATH or the
#   system's (ldconfig's) CUDA 13 libraries. Copied elsewhere, the binary needs its .so.0 files beside it.
# - Feature cuda-no-vmm (GGML_CUDA_NO_VMM): no direct link to the driver (libcuda.so.1, which ggml's VMM
#   memory pool calls), so the binary starts on a machine without a GPU or NVIDIA driver, where cudart
#   reports no device and `microscale info` lists none; ggml then pools GPU memory with cudaMalloc.
# - CPU code is compiled for x86-64-v3 (AVX2, FMA, F16C: every x86 server CPU of the last ten years), not
#   for this machine's CPU (target-cpu=native, the CPU build's setting), since the binary is meant for
#   another machine. CPU=native builds for this machine's CPU (on the GPU node itself, say).
# - llama.cpp's CUDA kernels are compiled for one architecture (CMAKE_CUDA_ARCHITECTURES, passed through
#   by llama-cpp-sys-2): device code for it plus its PTX, which newer GPUs compile at first use (slowly).
#   FlashAttention is built for the usual K/V types only (GGML_CUDA_FA_ALL_QUANTS off). One build took
#   47 minutes on 2 cores (sm_90; 144 CUDA files); later runs rebuild only what changed. Each architecture
#   (and CPU setting) builds in its own folder target-cuda/sm_XX[-CPU], since llama-cpp-sys-2 configures
#   CMake once per folder: the CPU build in target/ and other architectures' builds stay as they are.
#   The binary (15 MB) and the llama.cpp libraries beside it weigh about 96 MB (libggml-cuda.so 67 MB;
#   84 MB all stripped), plus cudart and cuBLAS (600 MB) from the toolkit or the GPU machine's CUDA 13.
#
# Variables: CUDA_ARCH (default sm_90), CPU (default x86-64-v3), CUDA_TOOLKIT_PREFIX (default
# .cuda-toolkit), CUDA_TARGET_DIR (default target-cuda). Arguments go to cargo.
#
# On a cluster with a CUDA module (a full toolkit with static libraries), build there instead:
#   module load cuda && cargo build --release --features cuda
# which links CUDA statically (one self-contained binary, native CPU) but also the driver (libcuda.so.1):
# that binary starts only where the NVIDIA driver is installed; add `--features cuda-no-vmm` to make it
# start on login nodes too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/setup.sh

CUDA_ARCH=${CUDA_ARCH:-sm_90}
CPU=${CPU:-x86-64-v3}
PREFIX=${CUDA_TOOLKIT_PREFIX:-$ROOT/.cuda-toolkit}
case "$PREFIX" in /*) ;; *) PREFIX=$ROOT/$PREFIX ;; esac

# "sm_90", "90", "sm_89,sm_90" -> CMake's "90", "89;90".
ARCHS=$(echo "$CUDA_ARCH" | tr ',;' '  ' | sed 's/sm_//g; s/compute_//g' | xargs | tr ' ' ';')
if ! [[ "$ARCHS" =~ ^[0-9]+[af]?(-real|-virtual)?(\;[0-9]+[af]?(-real|-virtual)?)*$ ]]; then
  echo "error: CUDA_ARCH=$CUDA_ARCH: expected sm_XX (e.g. sm_89 for L4, sm_90 for H100, sm_100 for B200)" >&2
  exit 1
fi
TARGET_DIR=${CUDA_TARGET_DIR:-target-cuda}/sm_$(echo "$ARCHS" | tr ';' '-')
[ "$CPU" = x86-64-v3 ] || TARGET_DIR=$TARGET_DIR-$CPU
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac

# CUDA 13.0 update 2, from PyPI. Installed with --no-deps and every version pinned (nvidia-cuda-nvcc alone
# would pull the newest crt, nvvm and runtime).
PACKAGES=(
  nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, fatbinary, nvlink
  nvidia-cuda-crt==13.0.88      # nvcc's crt/ headers
  nvidia-nvvm==13.0.88          # cicc, libnvvm, libdevice
  nvidia-cuda-runtime==13.0.96  # cudart (.so.13 and static), cuda_runtime.h, cuda.h
  nvidia-cuda-cccl==13.0.85     # CUB, Thrust, libcu++ headers
  nvidia-cublas==13.1.0.3       # libcublas.so.13, libcublasLt.so.13
)
CUDA_HOME=$PREFIX/nvidia/cu13
STAMP=$PREFIX/.installed
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "${PACKAGES[*]}" ]; then
  echo "build-cuda: installing CUDA 13.0 from PyPI into $PREFIX (about 1 GB to download)" >&2
  # Only a prefix this script made (its stamp) or an empty one is replaced: never a toolkit of another's.
  if [ -d "$PREFIX" ] && [ ! -f "$STAMP" ] && [ -n "$(ls -A "$PREFIX")" ]; then
    echo "error: $PREFIX exists and is not a toolkit this script installed; choose another CUDA_TOOLKIT_PREFIX" >&2
    exit 1
  fi
  rm -rf "$PREFIX" "$PREFIX.tmp"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --target "$PREFIX.tmp" "${PACKAGES[@]}" >&2
  # nvcc.profile and CMake look for lib64 (x86-64's name in a full toolkit); the linker (-lcudart,
  # -lcublas) and CMake's FindCUDAToolkit want the unversioned names, which the wheels leave out.
  ln -s lib "$PREFIX.tmp/nvidia/cu13/lib64"
  for lib in cudart cublas cublasLt; do
    ln -s "lib$lib.so.13" "$PREFIX.tmp/nvidia/cu13/lib/lib$lib.so"
  done
  echo "${PACKAGES[*]}" >"$PREFIX.tmp/.installed"
  mv "$PREFIX.tmp" "$PREFIX"
fi
"$CUDA_HOME/bin/nvcc" --version >/dev/null || { echo "error: $CUDA_HOME/bin/nvcc does not run" >&2; exit 1; }

# The binary's run-time search path: its own folder (llama.cpp's libraries), then the toolkit's lib folder
# relative to it. DT_RPATH (--disable-new-dtags), not DT_RUNPATH: it also serves libggml-cuda.so's own
# dependencies (cudart, cuBLAS), which a RUNPATH would not. -rpath-link lets the linker check them now.
# (CARGO_ENCODED_RUSTFLAGS, flags separated by 0x1f, so that paths may hold spaces; it replaces RUSTFLAGS and
# .cargo/config.toml's target-cpu=native.)
REL_LIB=$(realpath -m --relative-to="$TARGET_DIR/release" "$CUDA_HOME/lib")
flags=(-C "target-cpu=$CPU" -C link-arg=-Wl,--disable-new-dtags
  -C "link-arg=-Wl,-rpath,\$ORIGIN:\$ORIGIN/$REL_LIB" -C "link-arg=-Wl,-rpath-link,$CUDA_HOME/lib")
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; echo "${flags[*]}")
export CARGO_ENCODED_RUSTFLAGS
export PATH=$CUDA_HOME/bin:$PATH
export CUDA_PATH=$CUDA_HOME CUDAToolkit_ROOT=$CUDA_HOME
# llama-cpp-sys-2 passes CMAKE_* variables to llama.cpp's CMake as -D definitions.
export CMAKE_CUDA_COMPILER=$CUDA_HOME/bin/nvcc CMAKE_CUDA_ARCHITECTURES=$ARCHS
export LLAMA_BUILD_SHARED_LIBS=1
unset GGML_CUDA_FA_ALL_QUANTS CUDAARCHS

# `scripts/build-cuda.sh test [TEST...]`: build as below, then the tests with the CUDA build (the ones only
# it enables among them), in the same folder and environment, so nothing is rebuilt but the test crate.
TEST=
if [ "${1:-}" = test ]; then
  shift
  TEST=("${@:-gpu_layers}")
  set --
fi

# cargo's JSON messages name llama-cpp-sys-2's build folder (llama.cpp's libraries) and the binary.
MESSAGES=$(mktemp)
trap 'rm -f "$MESSAGES"' EXIT
CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --bin microscale --features cuda-no-vmm \
  --message-format=json-render-diagnostics "$@" >"$MESSAGES"
paths=$(python3 - "$MESSAGES" <<'EOF'
import json, sys
out_dir = binary = None
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "build-script-executed" and "llama-cpp-sys-2" in m.get("package_id", ""):
        out_dir = m["out_dir"]
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "microscale" and m.get("executable"):
        binary = m["executable"]
if not (out_dir and binary):
    sys.exit("build-cuda: cargo did not report llama-cpp-sys-2's build folder or the binary")
print(out_dir)
print(binary)
EOF
)
{ read -r OUT_DIR; read -r BINARY; } <<<"$paths"

# llama-cpp-sys-2 hard-links only the unversioned lib*.so symlinks next to the binary (dangling there); the
# binary asks for the versioned names (libllama.so.0, ...). Copy those, with the files they point to.
# CMake installs to lib64 on some distributions (RHEL, SUSE).
LIBS=$OUT_DIR/lib
[ -d "$LIBS" ] || LIBS=$OUT_DIR/lib64
for dir in "$(dirname "$BINARY")" "$(dirname "$BINARY")/deps"; do
  cp -a --remove-destination "$LIBS"/lib*.so.* "$dir/"
done
if [ -n "$TEST" ]; then
  # The test executables live in deps/ (beside the copies), where the rpath's relative toolkit path does
  # not lead: LD_LIBRARY_PATH does.
  CARGO_TARGET_DIR=$TARGET_DIR LD_LIBRARY_PATH=$CUDA_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    cargo test --release --features cuda-no-vmm --test it -- "${TEST[@]}"
  exit
fi
echo "$BINARY"
