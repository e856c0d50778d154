#!/bin/sh
# The system packages flakefleet's demo and tests need, installed where this script can, named in
# one line where it cannot. Called by `make setup` (so by `make demo` and `make test`) and by CI.
#
#   scripts/prerequisites.sh          install what is missing (root on Debian or Ubuntu), else say what to do
#   scripts/prerequisites.sh --check  only say what is missing (exit 1 when something is)
#   scripts/prerequisites.sh --list   the Debian packages, one a line
#
# Why each is needed:
#   nix-bin          evaluate the flake, build the offline stand-in systems, copy and sign closures
#   openssh-server   the test hosts' sshd (each on its own 127.0.0.x in its own mount namespace)
#   openssh-client   delivery's pinned SSH, and ssh-keygen for test host keys
#   iproute2         addresses and namespaces of the test hosts
#   util-linux       unshare, setsid and mount for the test hosts' namespaces
#   python3-venv     `make setup`'s virtualenv (Debian's python3 lacks venv without it)
#   systemd-container  systemd-nspawn: the host tier's machines (systemd as PID 1, real reboots)
#   debootstrap      builds those machines' root and the VM tier's disk (Debian bookworm, cached)
#   qemu-system-x86  the VM tier's guests (a real kernel and GRUB, software emulation)
#   qemu-utils       qemu-img: a copy-on-write disk per guest
#   fdisk            sfdisk: the VM disk's partition table
#   e2fsprogs        mkfs.ext4 -d: the VM disk's root file system, without mounting
#   python3-cryptography  the demo hosts' stand-in k3s signs its kubelet's certificate (as k3s'
#                    supervisor does) with the system python3, which runs it there
set -eu

PACKAGES="nix-bin openssh-server openssh-client iproute2 util-linux python3-venv systemd-container debootstrap qemu-system-x86 qemu-utils fdisk e2fsprogs python3-cryptography"
# What each package provides, to check machines without dpkg (another distribution, a Nix shell).
provides() {
  case "$1" in
    nix-bin) echo nix ;;
    openssh-server) echo /usr/sbin/sshd ;;
    openssh-client) echo ssh ;;
    iproute2) echo ip ;;
    util-linux) echo unshare ;;
    python3-venv) echo python3-venv ;;
    systemd-container) echo systemd-nspawn ;;
    debootstrap) echo debootstrap ;;
    qemu-system-x86) echo qemu-system-x86_64 ;;
    qemu-utils) echo qemu-img ;;
    fdisk) echo sfdisk ;;
    e2fsprogs) echo mkfs.ext4 ;;
    python3-cryptography) echo python3-cryptography ;;
  esac
}

have() { # package
  what=$(provides "$1")
  case "$what" in
    python3-venv) python3 -c 'import ensurepip, venv' 2>/dev/null ;;
    python3-cryptography) /usr/bin/python3 -c 'import cryptography' 2>/dev/null ;;
    /*) [ -x "$what" ] ;;
    *) command -v "$what" >/dev/null 2>&1 ;;
  esac
}

missing() {
  for p in $PACKAGES; do
    have "$p" || printf '%s ' "$p"
  done
}

case "${1:-}" in
--list)
  printf '%s\n' $PACKAGES
  exit 0
  ;;
esac

todo=$(missing)
[ -z "$todo" ] && exit 0
if [ "${1:-}" = --check ]; then
  echo "flakefleet needs: $todo" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "prerequisites: installing $todo"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086 # a list of package names
  apt-get install -y -qq --no-install-recommends $todo >/dev/null
  todo=$(missing)
  [ -z "$todo" ] && exit 0
  echo "prerequisites: still missing after apt-get install: $todo" >&2
  exit 1
fi
if command -v apt-get >/dev/null 2>&1; then
  how="as root: apt-get install $todo"
else
  how="with your distribution's packages (Debian names: $todo)"
fi
echo "prerequisites: the demo and the host tests need $todo; install them $how, or use the flake's shell (nix develop ./nixos); the tests that need them skip meanwhile" >&2
exit 0
