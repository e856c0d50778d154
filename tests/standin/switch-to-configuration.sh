#!/bin/sh
# Stand-in for NixOS' switch-to-configuration: `switch`, `test`, `boot`, `dry-activate`.
# Activation records the running system in /run/current-system as NixOS does.
set -eu
action="${1:-}"
self="$(cd "$(dirname "$0")/.." && pwd)"
case "$action" in
  switch|test)
    ln -sfn "$self" /run/current-system
    ;;
  boot|dry-activate)
    ;;
  *)
    echo "usage: switch-to-configuration switch|boot|test|dry-activate" >&2
    exit 1
    ;;
esac
