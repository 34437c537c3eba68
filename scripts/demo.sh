#!/usr/bin/env bash
# The README's first command: the main job end to end on the embedded default (SQLite online
# store, no services). Extra arguments go to `recsys demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export OPENBLAS_NUM_THREADS=1
.venv/bin/recsys --data-dir "${RECSYS_DATA_DIR:-data/demo}" demo "$@"
