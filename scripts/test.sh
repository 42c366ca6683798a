#!/usr/bin/env bash
# The project's tests, from a fresh clone: install what the build needs (scripts/setup.sh), fetch
# the default model (scripts/fetch-default-model.sh) and llama.cpp's reference vocabularies
# (scripts/fetch-vocabs.sh), build llama.cpp's own llama-imatrix and llama-quantize as oracles
# (scripts/build-llama-tools.sh, once), make the Python environment LiteRT's converter and
# interpreter run in (scripts/export-env.sh, once), start a one-node SLURM cluster on this machine for the
# `sweep --slurm` tests (scripts/slurm-local.sh: installs slurmctld/slurmd/slurm-client with
# apt-get if missing, stopped again when the tests end), then run every test against the real engine.
# Then the aarch64 part (scripts/test-aarch64.sh): the unit tests and the quantizer oracle cross-built for
# aarch64 and run under qemu; tests/it/aarch64.rs, among the x86-64 tests, runs the aarch64 binary end to end.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh --test it bench::   # arguments go to `cargo test --release` (the aarch64 part is skipped):
#                                       # the integration tests are one binary, `it`, a module per area
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-default-model.sh
scripts/fetch-vocabs.sh
scripts/build-llama-tools.sh >/dev/null
# LiteRT's converter and interpreter for the export tests (pinned; about 8 GB, once).
scripts/export-env.sh
# A cluster that cannot start stops here with the reason (the SLURM tests would fail without it).
SLURM_CONF=$(scripts/slurm-local.sh start)
export SLURM_CONF
trap 'scripts/slurm-local.sh stop' EXIT
cargo test --release "$@"
# On an aarch64 machine the tests above already ran natively there: nothing to emulate.
if [ $# -eq 0 ] && [ "$(uname -m)" = x86_64 ]; then
  scripts/test-aarch64.sh
fi
