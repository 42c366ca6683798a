#!/usr/bin/env bash
# Create the Python environment `microscale export` runs the vendors' converters and runtimes in:
# litert-torch (LiteRT, the former TensorFlow Lite, and its generative-model builders),
# ai-edge-litert (the LiteRT interpreter), ai-edge-quantizer, and coremltools (Core ML), with torch,
# jax and tensorflow-cpu, every package pinned (scripts/export/requirements.txt). About 6.6 GB on
# disk and 2 minutes on a fast link; kept out of the Rust build.
#
#   scripts/export-env.sh [DIR]     (default: $MICROSCALE_EXPORT_ENV, else .venv-export)
#
# Idempotent: an environment made from the same requirements is left as it is. `microscale export`
# runs this script itself the first time it needs the environment.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ENV_DIR="${1:-${MICROSCALE_EXPORT_ENV:-$ROOT/.venv-export}}"
REQ="$ROOT/scripts/export/requirements.txt"
STAMP="$ENV_DIR/.microscale-requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$ENV_DIR/bin/python" ]; then
  exit 0
fi
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)'; then
  echo "export-env: $("$PY" --version 2>&1) found; the pinned converters need Python 3.10 to 3.12 (set PYTHON=...)" >&2
  exit 1
fi
if ! "$PY" -m venv --help >/dev/null 2>&1; then
  echo "export-env: $PY has no venv module (Debian: apt-get install python3-venv)" >&2
  exit 1
fi
echo "export-env: creating $ENV_DIR (LiteRT and Core ML converters, about 6.6 GB)" >&2
rm -rf "$ENV_DIR.part"
"$PY" -m venv "$ENV_DIR.part"
"$ENV_DIR.part/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
"$ENV_DIR.part/bin/python" -c 'import litert_torch.generative.utilities.converter, ai_edge_litert.interpreter, coremltools'
echo "$want" > "$ENV_DIR.part/.microscale-requirements.sha256"
# Complete, then in place: an interrupted install never looks ready. (microscale runs the
# environment's `bin/python`, which finds its packages wherever the directory lives.)
rm -rf "$ENV_DIR"
mv "$ENV_DIR.part" "$ENV_DIR"
echo "export-env: ready: $ENV_DIR" >&2
