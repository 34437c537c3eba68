#!/usr/bin/env bash
# Generate the Python gRPC stubs of proto/recsys/v1/*.proto into recsys/serving/v1/ (or $1).
# Reproducible: the pinned grpcio-tools (constraints.txt) is checked, output is deterministic,
# and tests/unit/test_proto_stubs.py fails when the committed stubs differ from a fresh run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${1:-recsys/serving/v1}"
WANT="$(grep -i '^grpcio-tools==' constraints.txt | cut -d= -f3)"
HAVE="$("$PY" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))')"
if [ "$WANT" != "$HAVE" ]; then
    echo "error: grpcio-tools $HAVE installed, constraints.txt pins $WANT (run scripts/bootstrap.sh)" >&2
    exit 1
fi
exec "$PY" -m recsys.serving.protogen "$OUT"
