#!/bin/sh
# The real Kubernetes control plane the cluster tests run on: etcd, kube-apiserver,
# kube-controller-manager and kubectl, built from the Go module proxy and cached outside the
# repository, keyed by version. Called by `make setup` (so by `make demo`, `make test` and CI).
#
#   scripts/kubernetes.sh          build what the cache lacks, print its bin directory
#   scripts/kubernetes.sh --check  print the bin directory when complete, else exit 1
#   scripts/kubernetes.sh --dir    print the bin directory (whether or not it is built)
#
# Why these versions: the flake's k3s is nixpkgs' `k3s` (k3s_1_35 in the pinned nixos-26.05:
# pkgs/top-level/all-packages.nix), so the API server is Kubernetes 1.35, and etcd is the one
# that release is built and tested with (build/dependencies.yaml of k8s.io/kubernetes v1.35.4:
# etcd 3.6.6, in its own wrapper module so the API server keeps the etcd client it pins).
# `go install pkg@version` refuses modules with replace directives (kubernetes
# replaces its staging modules with ./staging/...), so a throw-away wrapper module pins each
# staging module at the matching v0.35.x instead. About 480 CPU-seconds and ~300 MB of binaries;
# the Go build cache it leaves (~3 GB) is Go's own and may be cleaned at any time.
set -eu

KUBERNETES=1.35.4
STAGING=0.35.4
ETCD=3.6.6
CACHE="${FLAKEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flakefleet}/kubernetes/v$KUBERNETES-etcd$ETCD"
BIN="$CACHE/bin"
TOOLS="etcd kube-apiserver kube-controller-manager kubectl"

complete() {
  for t in $TOOLS; do [ -x "$BIN/$t" ] || return 1; done
}

case "${1:-}" in
--dir) echo "$BIN"; exit 0 ;;
--check) complete && echo "$BIN" && exit 0; exit 1 ;;
"") ;;
*) echo "scripts/kubernetes.sh: unknown argument $1 (use --check or --dir)" >&2; exit 1 ;;
esac

complete && { echo "$BIN"; exit 0; }
command -v go >/dev/null 2>&1 || {
  echo "scripts/kubernetes.sh: Go 1.25 or newer is needed to build Kubernetes $KUBERNETES (https://go.dev/dl)" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
{
  printf 'module flakefleetkube\n\ngo 1.25.0\n\ngodebug default=go1.25\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$KUBERNETES"
  for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
    cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
    kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
    mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
    printf '\tk8s.io/%s => k8s.io/%s v%s\n' "$m" "$m" "$STAGING"
  done
  echo ')'
} >go.mod
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
say() { echo "scripts/kubernetes.sh: $*" >&2; }
# A step's output only when it fails (its last lines), so a good build is one line.
quiet() {
  "$@" >"$work/step.log" 2>&1 || { tail -n 30 "$work/step.log" >&2; say "failed: $*"; exit 1; }
}
say "building Kubernetes $KUBERNETES and etcd $ETCD from the Go module proxy into $BIN (~5 minutes of two cores, once)"
quiet go get "k8s.io/kubernetes/cmd/kube-apiserver@v$KUBERNETES" \
  "k8s.io/kubernetes/cmd/kube-controller-manager@v$KUBERNETES" "k8s.io/kubernetes/cmd/kubectl@v$KUBERNETES"
mkdir -p "$CACHE/partial"
flags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBERNETES -X k8s.io/client-go/pkg/version.gitVersion=v$KUBERNETES"
for c in kube-apiserver kube-controller-manager kubectl; do
  quiet go build -trimpath -ldflags "$flags" -o "$CACHE/partial/$c" "k8s.io/kubernetes/cmd/$c"
done
mkdir etcd && cd etcd
printf 'module flakefleetetcd\n\ngo 1.24\n' >go.mod
quiet go get "go.etcd.io/etcd/server/v3@v$ETCD"
quiet go build -trimpath -ldflags "-s -w" -o "$CACHE/partial/etcd" go.etcd.io/etcd/server/v3
# The directory appears whole or not at all: an interrupted build leaves only partial/.
rm -rf "$BIN" && mv "$CACHE/partial" "$BIN"
echo "$BIN"
