#!/usr/bin/env bash
# The project's tests, from a fresh clone: install what the build needs (scripts/setup.sh), fetch
# the default model (scripts/fetch-default-model.sh) and llama.cpp's reference vocabularies
# (scripts/fetch-vocabs.sh), build llama.cpp's own llama-imatrix and llama-quantize as oracles
# (scripts/build-llama-tools.sh, once), start a one-node SLURM cluster on this machine for the
# `sweep --slurm` tests (scripts/slurm-local.sh: installs slurmctld/slurmd/slurm-client with
# apt-get if missing, stopped again when the tests end), then run every test against the real engine.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh --test bench    # arguments go to `cargo test --release`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-default-model.sh
scripts/fetch-vocabs.sh
scripts/build-llama-tools.sh >/dev/null
# A cluster that cannot start stops here with the reason (the SLURM tests would fail without it).
SLURM_CONF=$(scripts/slurm-local.sh start)
export SLURM_CONF
trap 'scripts/slurm-local.sh stop' EXIT
cargo test --release "$@"
