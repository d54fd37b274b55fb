#!/usr/bin/env bash
# Run a long-lived dev process in the background with a pid file and a log, for `make dev`.
#   devproc.sh start STATE NAME CMD...   (no-op when already running)
#   devproc.sh stop STATE NAME           (SIGTERM: workers drain, then exit)
set -euo pipefail
action="${1:?start|stop}" state="${2:?state dir}" name="${3:?name}"
shift 3
mkdir -p "$state"
pidfile="$state/$name.pid"
running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "$action" in
  start)
    running && exit 0
    export KUBECONFIG="${KUBECONFIG:-$(cd "$state" && pwd)/kubeconfig}"
    TASKORCH_REDIS_URL="$(cat "$state/redis/url")" nohup "$@" >>"$state/$name.log" 2>&1 &
    echo $! >"$pidfile"
    ;;
  stop)
    if running; then
      pid="$(cat "$pidfile")"
      kill "$pid"
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    ;;
esac
