#!/bin/sh
# Stand-in for systemd-boot's bootctl: the default entry (loader.conf) and a one-shot entry (the
# LoaderEntryOneShot EFI variable: booted once, then cleared by the boot loader itself).
#   bootctl set-default ID | set-oneshot ID | set-oneshot "" | status
set -eu
loader=/boot/loader
case "${1:-}" in
  set-default)
    [ -f "$loader/entries/$2" ] || { echo "no boot entry $2" >&2; exit 1; }
    printf 'default %s\n' "$2" >"$loader/loader.conf"
    ;;
  set-oneshot)
    if [ -z "${2:-}" ]; then rm -f "$loader/oneshot"; exit 0; fi
    [ -f "$loader/entries/$2" ] || { echo "no boot entry $2" >&2; exit 1; }
    printf '%s\n' "$2" >"$loader/oneshot"
    ;;
  status)
    printf 'default: %s\noneshot: %s\n' "$(awk '/^default/ { print $2 }' "$loader/loader.conf")" \
      "$(cat "$loader/oneshot" 2>/dev/null || true)"
    ;;
  *)
    echo "usage: bootctl set-default ID | set-oneshot ID | status" >&2
    exit 1
    ;;
esac
