#!/usr/bin/env bash
# The local control plane: etcd, kube-apiserver (RBAC, service-account token signing),
# kube-controller-manager, kube-scheduler and kwok faking nodes, all as local processes started
# by kwokctl's binary runtime from the binaries build-tools.sh cached. kwok's pod stages come
# from kwok-stages.yaml (its defaults, plus the failures the container-task tests ask for).
#   cluster.sh up NAME KUBECONFIG   create (or reuse) the cluster, write its kubeconfig, add nodes
#   cluster.sh down NAME            stop it and remove its processes and state
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$("$here/build-tools.sh")"
export PATH="$bin:$PATH"
# kwokctl keeps each cluster's state (pids, logs, certs) under its workdir; one per user.
export KWOK_WORKDIR="${KWOK_WORKDIR:-${XDG_CACHE_HOME:-$HOME/.cache}/taskorch/kwok}"

cmd="${1:?up|down}"
name="${2:?cluster name}"
nodes="${TASKORCH_FAKE_NODES:-3}"
# Extra component flags at creation, e.g. "kube-controller-manager=kube-api-qps=5000" (several
# separated by spaces): kwokctl create cluster --extra-args, once per item.
extra=()
for a in ${TASKORCH_KWOK_EXTRA_ARGS:-}; do extra+=(--extra-args "$a"); done

case "$cmd" in
  up)
    kubeconfig="$(realpath -m "${3:?kubeconfig path}")"
    mkdir -p "$(dirname "$kubeconfig")"
    config="$KWOK_WORKDIR/clusters/$name/kwok.yaml"
    if kwokctl get clusters 2>/dev/null | grep -qx "$name" \
      && ! grep -q taskorch-pod-keep-running "$config" 2>/dev/null; then
      kwokctl delete cluster --name "$name" >&2  # made before kwok-stages.yaml: without them
    fi
    if ! kwokctl get clusters 2>/dev/null | grep -qx "$name"; then
      kwokctl create cluster --name "$name" --runtime binary \
        --kube-authorization \
        --config "$here/kwok-stages.yaml" \
        --etcd-binary "$bin/etcd" \
        --kube-apiserver-binary "$bin/kube-apiserver" \
        --kube-controller-manager-binary "$bin/kube-controller-manager" \
        --kube-scheduler-binary "$bin/kube-scheduler" \
        --kwok-controller-binary "$bin/kwok" \
        "${extra[@]}" \
        --wait 120s >&2
    else
      kwokctl start cluster --name "$name" >&2
    fi
    kwokctl get kubeconfig --name "$name" >"$kubeconfig"
    kwokctl scale node --name "$name" --replicas "$nodes" >/dev/null 2>&1
    ;;
  down)
    pids=""
    for f in "$KWOK_WORKDIR/clusters/$name/pids/"*.pid; do
      [[ -f "$f" ]] && pids+=" $(<"$f")"
    done
    kwokctl delete cluster --name "$name" >&2 || true
    # kwokctl signals its processes and returns; wait until they are really gone.
    for _ in $(seq 100); do
      alive=""
      for p in $pids; do kill -0 "$p" 2>/dev/null && alive+=" $p"; done
      [[ -z "$alive" ]] && break
      sleep 0.1
    done
    for p in $alive; do kill -9 "$p" 2>/dev/null || true; done
    ;;
  *) echo "usage: cluster.sh up NAME KUBECONFIG | down NAME" >&2; exit 2 ;;
esac
