#!/usr/bin/env bash
# What building microscale needs beyond Rust, gcc and Python: cmake (llama.cpp is built by
# llama-cpp-sys-2 with CMake) and libclang (bindgen generates llama.cpp's bindings with it).
#
# Run by the README's two commands before cargo. As root on Debian/Ubuntu it installs what is
# missing with apt-get; otherwise it stops with one line saying exactly what to install.
# Idempotent and quiet when everything is there.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)

# bindgen (clang-sys) loads libclang.so or libclang-N.so; libclang-cpp.so (present without
# libclang-dev) is a different library and does not count.
have_libclang() {
  if [ -n "${LIBCLANG_PATH:-}" ] && compgen -G "${LIBCLANG_PATH}/libclang*.so*" >/dev/null; then
    return 0
  fi
  compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null && return 0
  compgen -G "/usr/lib/llvm-*/lib/libclang-[0-9]*.so*" >/dev/null && return 0
  compgen -G "/usr/lib/*-linux-gnu/libclang-[0-9]*.so*" >/dev/null && return 0
  compgen -G "/usr/lib*/libclang.so*" >/dev/null && return 0
  return 1
}
have_libclang || missing+=(libclang-dev)

for tool in cargo python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is missing: install Rust (https://rustup.rs) and Python 3 first" >&2; exit 1; }
done
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "error: microscale's build needs ${missing[*]}: run \`sudo apt-get install -y ${missing[*]}\` (or your system's equivalent), then run this command again" >&2
exit 1
