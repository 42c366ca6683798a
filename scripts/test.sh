#!/usr/bin/env bash
# The project's tests, from a fresh clone: install what the build needs (scripts/setup.sh), fetch
# the default model (scripts/fetch-default-model.sh), then run every test against the real engine.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh --test bench    # arguments go to `cargo test --release`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-default-model.sh
cargo test --release "$@"
