#!/bin/sh
# Stand-in k3s. Records every call in /var/lib/flakefleet/standin-k3s.log (with the drop-in a
# real k3s would read and the image files its containerd would import), writes a kubeconfig when a server starts, and answers the kubectl calls
# flakefleet makes: `get nodes NAME... -o json` (Ready, unless the name is listed in
# /etc/flakefleet/standin-notready; without names, the nodes listed in
# /etc/flakefleet/standin-nodes), `get node NAME --ignore-not-found -o name` (a node listed in
# standin-nodes: the nodes registered with this server, as tests set them), `cordon`, `drain`,
# `delete node` (which takes the name out of standin-nodes).
set -eu
log=/var/lib/flakefleet/standin-k3s.log
dropin=/etc/rancher/k3s/config.yaml.d/50-flakefleet-host.yaml
mkdir -p /var/lib/flakefleet
now() { date +%s.%N; }
case "${1:-}" in
  server|agent)
    printf '%s start %s | config %s | images %s\n' "$(now)" "$*" "$(tr -d '\n' < "$dropin" 2>/dev/null || true)" \
      "$(ls /var/lib/rancher/k3s/agent/images 2>/dev/null | tr '\n' ' ')" >>"$log"
    case " $* " in *" --cluster-reset "*) exit 0 ;; esac  # resets etcd and exits, as k3s does
    if [ "$1" = server ]; then
      umask 077
      mkdir -p /var/lib/rancher/k3s/server/db/etcd  # a server keeps its etcd data here
      mkdir -p /etc/rancher/k3s
      ca=$(printf 'STANDIN-CA %s' "$(hostname)" | base64 -w0)
      cat >/etc/rancher/k3s/k3s.yaml <<KUBECONFIG
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $ca
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: $(printf 'STANDIN-CLIENT-CERT' | base64 -w0)
    client-key-data: $(printf 'STANDIN-CLIENT-KEY' | base64 -w0)
KUBECONFIG
    fi
    ;;
  kubectl)
    shift
    printf '%s kubectl %s\n' "$(now)" "$*" >>"$log"
    if [ ! -f /etc/rancher/k3s/k3s.yaml ]; then
      echo "The connection to the server 127.0.0.1:6443 was refused" >&2
      exit 1
    fi
    if [ "${1:-}" = get ] && [ "${2:-}" = nodes ]; then
      shift 2
      names="$*"
      case "$names" in ""|-*) names="$(cat /etc/flakefleet/standin-nodes 2>/dev/null || true)" ;; esac
      printf '{"apiVersion":"v1","kind":"List","items":['
      sep=""
      for name in $names; do
        case "$name" in -*) continue ;; esac
        status=True
        if grep -qx "$name" /etc/flakefleet/standin-notready 2>/dev/null; then status=False; fi
        printf '%s{"metadata":{"name":"%s"},"status":{"conditions":[{"type":"Ready","status":"%s"}]}}' "$sep" "$name" "$status"
        sep=","
      done
      printf ']}\n'
    elif [ "${1:-}" = get ] && [ "${2:-}" = node ]; then
      if tr ' ' '\n' </etc/flakefleet/standin-nodes 2>/dev/null | grep -qx "$3"; then echo "node/$3"; fi
    elif [ "${1:-}" = delete ] && [ "${2:-}" = node ] && [ -f /etc/flakefleet/standin-nodes ]; then
      kept=$(tr ' ' '\n' </etc/flakefleet/standin-nodes | grep -vx "$3" | tr '\n' ' ' || true)
      printf '%s\n' "$kept" >/etc/flakefleet/standin-nodes
    fi
    ;;
  *)
    echo "stand-in k3s: unsupported: $*" >&2
    exit 1
    ;;
esac
