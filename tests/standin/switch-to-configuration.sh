#!/bin/sh
# Stand-in for NixOS' switch-to-configuration: `switch`, `test`, `boot`, `dry-activate`.
# `switch` and `test` make this system the running one (/run/current-system), as NixOS does.
# `boot` installs the boot loader entries, one per generation of the system profile, and makes
# the profile's current generation the default, as NixOS' systemd-boot installer does (the
# stand-in boot loader lives in /boot/loader: entries/, loader.conf's `default`, and `oneshot`;
# sw/bin/bootctl sets them). `standin-boot` is what systemd does at boot (start k3s); only the
# tests' reboot emulation calls it.
#
# Faults for tests, per system, from /etc/flakefleet/standin-fault (lines "<fault> <out path>"):
#   fail  switch, then exit 4 as NixOS does when some units failed to start
#   cut   switch, then drop the SSH connection that ran the activation
#   hang  switch, then keep the activation running for 20 s (a slow activation)
set -eu
action="${1:-}"
self="$(cd "$(dirname "$0")/.." && pwd -P)"
fault=""
if [ -f /etc/flakefleet/standin-fault ]; then
  fault="$(awk -v s="$self" '$2 == s { print $1 }' /etc/flakefleet/standin-fault)"
fi
install_boot_entries() {
    profiles=/nix/var/nix/profiles
    mkdir -p /boot/loader/entries
    rm -f /boot/loader/entries/nixos-generation-*.conf
    for link in "$profiles"/system-*-link; do
      [ -e "$link" ] || continue
      n=${link##*/system-}
      n=${n%-link}
      printf 'title NixOS generation %s\nsystem %s\n' "$n" "$(readlink -f "$link")" >"/boot/loader/entries/nixos-generation-$n.conf"
    done
    current=$(readlink "$profiles/system")
    current=${current#system-}
    printf 'default nixos-generation-%s.conf\n' "${current%-link}" >/boot/loader/loader.conf
}
case "$action" in
  switch|test)
    ln -sfn "$self" /run/current-system
    # As NixOS does, `switch` also installs the boot entries (the new generation the default).
    [ "$action" = test ] || install_boot_entries
    ;;
  dry-activate)
    exit 0
    ;;
  boot)
    install_boot_entries
    exit 0
    ;;
  standin-boot)
    ;;
  *)
    echo "usage: switch-to-configuration switch|boot|test|dry-activate|standin-boot" >&2
    exit 1
    ;;
esac
# Start k3s as systemd would: its unit asserts the host's facts and token exist first.
if [ "$action" = switch ] || [ "$action" = test ] || [ "$action" = standin-boot ]; then
  for required in $(cat "$self/k3s-required"); do
    if [ ! -e "$required" ]; then
      echo "warning: the following units failed: k3s.service (assertion failed: $required)" >&2
      exit 4
    fi
  done
  # services.k3s.images: systemd-tmpfiles links each image into k3s' image directory (L+),
  # and k3s' containerd imports what is there when it starts. Links of other systems go.
  images=/var/lib/rancher/k3s/agent/images
  mkdir -p "$images"
  find "$images" -maxdepth 1 -type l -delete
  for i in "$self"/k3s-images/*; do
    [ -e "$i" ] && ln -sfn "$(readlink "$i")" "$images/$(basename "$i")"
  done
  # shellcheck disable=SC2046 # the arguments are words by construction
  "$self/sw/bin/k3s" $(cat "$self/k3s-args")
fi
[ "$action" = standin-boot ] && exit 0
case "$fault" in
  fail)
    echo "warning: the following units failed: standin-fault.service" >&2
    exit 4
    ;;
  hang)
    sleep 20
    ;;
  cut)
    # Kill the per-connection sshd process above us: the deployer sees the connection drop.
    pid=$$
    while [ "$pid" -gt 1 ]; do
      if [ "$(cat /proc/$pid/comm)" = sshd ]; then
        kill -9 "$pid"
        break
      fi
      pid=$(awk '{ print $4 }' /proc/$pid/stat)
    done
    ;;
esac
