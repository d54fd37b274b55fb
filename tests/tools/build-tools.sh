#!/usr/bin/env bash
# Builds the pinned control-plane tool chain from the Go module proxy, once, into a per-user cache
# keyed by version: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (one
# build module against k8s.io/kubernetes), kwok and kwokctl, and helm. Prints the bin directory.
# A second run with the same versions builds nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${TASKORCH_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskorch/tools}"
key="k8s-${KUBERNETES_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
bin="$cache_root/$key/bin"
stamp="$cache_root/$key/.complete"

if [[ "${1:-}" == "--print-bin" ]]; then
  echo "$bin"
  exit 0
fi
if [[ -f "$stamp" ]]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build-tools: the Go toolchain is required on PATH" >&2; exit 1; }
mkdir -p "$bin"
log() { echo "build-tools: $*" >&2; }
# A pinned module may ask for a newer Go than the one installed; let the toolchain fetch it.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0
ldstrip="-s -w"

build_kubernetes() {
  local have=0
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$bin/$b" ]] && have=$((have + 1))
  done
  [[ $have == 5 ]] && return 0
  local mod
  mod="$(mktemp -d)"
  trap 'rm -rf "$mod"' RETURN
  local k8s_mod
  k8s_mod="$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # k8s.io/kubernetes replaces its k8s.io/* staging modules with directories the proxy doesn't
  # serve; restate each replace against the published module of the same release.
  {
    echo "module taskorch.local/k8s-tools"
    echo
    grep -E '^go ' "$k8s_mod"
    echo
    echo "require k8s.io/kubernetes ${KUBERNETES_VERSION}"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$k8s_mod" | awk '/=>/ && $1 !~ /sample-/ {print "\t" $1 " => " $1 " '"$KUBERNETES_STAGING_VERSION"'"}'
    echo ")"
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (
    cd "$mod"
    log "resolving k8s.io/kubernetes ${KUBERNETES_VERSION}"
    go mod tidy
    local minor="${KUBERNETES_VERSION#v1.}"
    minor="${minor%%.*}"
    local vflags=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      vflags+=" -X $pkg.gitVersion=${KUBERNETES_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
      vflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      log "building $cmd"
      go build -ldflags "$ldstrip $vflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    done
    log "building etcd"
    go build -ldflags "$ldstrip" -o "$bin/etcd" go.etcd.io/etcd/server/v3
  )
}

go_install() {
  [[ -x "$bin/$(basename "${1%@*}")" ]] && return 0
  log "installing $1"
  GOBIN="$bin" go install -ldflags "$ldstrip" "$1"
}

build_kubernetes
go_install "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
go_install "sigs.k8s.io/kwok/cmd/kwokctl@${KWOK_VERSION}"
go_install "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
touch "$stamp"
echo "$bin"
