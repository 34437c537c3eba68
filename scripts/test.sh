#!/usr/bin/env bash
# The README's test command: install what the tests need, start a throwaway Redis on a free
# local port, run pytest against it, stop Redis. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "redis-server missing: installing Debian's redis-server with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "error: the tests need redis-server on PATH. Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) and run again." >&2
        exit 1
    fi
fi

port="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis_dir="$(mktemp -d)"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" --daemonize yes \
    --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log"
# Stop Redis, wait until it has exited (it may still be writing in its directory), remove the
# directory. Cleanup never changes the script's exit status: that is pytest's.
cleanup() {
    local status=$?
    local pid
    pid="$(cat "$redis_dir/redis.pid" 2>/dev/null || true)"
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$redis_dir" 2>/dev/null || true
    exit "$status"
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" ping >/dev/null || { echo "error: Redis did not start on port $port" >&2; cat "$redis_dir/redis.log" >&2; exit 1; }

export RECSYS_TEST_REDIS="redis://127.0.0.1:$port"
export OPENBLAS_NUM_THREADS=1
echo "Redis for tests at $RECSYS_TEST_REDIS" >&2
.venv/bin/python -m pytest "$@"
