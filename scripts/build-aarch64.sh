#!/usr/bin/env bash
# Cross-build microscale for aarch64 Linux (Raspberry Pi 4/5, Jetson Orin, Android/Termux-class CPUs) on an
# x86-64 Debian or Ubuntu machine, and print the binary's path.
#
# What it needs, installed with apt-get when run as root (otherwise it says what to install), as setup.sh does:
# - Debian's rustc-web and cargo-web (1.96) with the aarch64 standard library libstd-rust-web-dev:arm64
#   (rustup's toolchain cannot use that library; this script runs Debian's cargo and rustc explicitly);
# - g++-aarch64-linux-gnu (compiles llama.cpp and links);
# - qemu-user and qemu-user-binfmt, and the arm64 libgomp llama.cpp's OpenMP build links, so that the result
#   runs here under emulation (about 30 times slower than natively: speeds measured so mean nothing).
# arm64 packages need `dpkg --add-architecture arm64`, which the script adds.
#
# CPU baseline: plain armv8-a (NEON; llama-cpp-sys-2 sets ggml's GGML_CPU_ARM_ARCH=armv8-a when the target CPU
# is not `native`). The binary runs on every aarch64 Linux CPU, a Pi 4's Cortex-A72 included; it does not use
# the dot-product (Pi 5, Orin) or i8mm instructions. On the device itself, the README's two commands build for
# that CPU (`target-cpu=native`).
#
# Builds into $CARGO_TARGET_DIR/aarch64 (default target/aarch64): Debian's compiler keeps its own build folder,
# so it and rustup's never rebuild each other's. Arguments go to cargo (e.g. `--tests` to build the tests).
#
#   scripts/build-aarch64.sh                      # prints target/aarch64/aarch64-unknown-linux-gnu/release/microscale
#   $(scripts/build-aarch64.sh) info              # runs it under qemu
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

TRIPLE=aarch64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-target}/aarch64

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in rustc-web cargo-web libstd-rust-web-dev:arm64 g++-aarch64-linux-gnu qemu-user qemu-user-binfmt libgomp1:arm64; do
  have_pkg "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the aarch64 cross-build needs ${missing[*]}: run \`sudo dpkg --add-architecture arm64 && sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}\`, then run this command again" >&2
    exit 1
  fi
  echo "build-aarch64: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  dpkg --add-architecture arm64
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Let the kernel run aarch64 binaries through qemu (test binaries spawn the aarch64 microscale). The arm64
# system libraries are found in their multiarch folders: no QEMU_LD_PREFIX (OpenMP hangs with 2+ threads so).
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && [ "$(id -u)" = 0 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  /lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf
fi

# RUSTFLAGS replaces .cargo/config.toml's `target-cpu=native` (the cross gcc rejects -mcpu=native); NEON is
# armv8-a's own. The linker is set there ([target.aarch64-unknown-linux-gnu]).
RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="$TARGET_DIR" RUSTFLAGS="-C target-feature=+neon" \
  /usr/bin/cargo build --release --quiet --target "$TRIPLE" --bin microscale "$@" >&2
echo "$TARGET_DIR/$TRIPLE/release/microscale"
