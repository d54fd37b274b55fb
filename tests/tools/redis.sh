#!/usr/bin/env bash
# A development redis-server with AOF on, in a state directory: `redis.sh up DIR` / `redis.sh down DIR`.
set -euo pipefail
cmd="${1:?up|down}"
dir="$(mkdir -p "${2:?state dir}" && cd "$2" && pwd)"
case "$cmd" in
  up)
    if [[ -f "$dir/redis.pid" ]] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
      exit 0
    fi
    port="${TASKORCH_DEV_REDIS_PORT:-6390}"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save ""
    for _ in $(seq 50); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "redis://127.0.0.1:$port/0" >"$dir/url"
    ;;
  down)
    if [[ -f "$dir/redis.pid" ]]; then
      kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
      rm -f "$dir/redis.pid"
    fi
    ;;
  *) echo "usage: redis.sh up|down DIR" >&2; exit 2 ;;
esac
