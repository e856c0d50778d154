"""Pure parts of an install: what is read of the machine before (facts), which disk the layout
is written to, whether wiping it is allowed, and nixos-anywhere's command line.

nixos-anywhere (nix-community/nixos-anywhere, src/nixos-anywhere.sh, pinned in nixos/flake.lock)
is run with the store paths it installs (`--store-paths <disko script> <system>`, both built by
the deployer), the kexec tarball built from the pinned nixos-images with our nixpkgs (`--kexec`:
otherwise it downloads one at run time), the installed system's host key as an extra file, and
ssh pinned to the pre-install key through `--ssh-option` (the flake's nixos-anywhere drops the
two options that would override them; nixos/flake.nix). The kexec installer keeps the old
system's host keys (nixos-images kexec-run.sh copies /etc/ssh/ssh_host_* into its initrd), so
one pin holds until the reboot into the installed system, whose key is the stack's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flakefleet.bootstrap.hardware import HARDWARE_QUERY, Hardware, parse_hardware
from flakefleet.common.ssh import known_hosts_line

# One ssh call before anything is changed: the machine's architecture, its disks and their
# stable names, and whether a flakefleet system runs there already.
FACTS_QUERY = ["sh", "-c", (
    "uname -m; "
    "lsblk -J -b -d -o NAME,SIZE,TYPE,RM,RO,MODEL,SERIAL; "
    "echo '--by-id'; for l in /dev/disk/by-id/*; do [ -L \"$l\" ] && printf '%s %s\\n' \"$l\" \"$(readlink -f \"$l\")\"; done; "
    "echo '--state'; if [ -e /var/lib/flakefleet/deliveries.log ]; then echo flakefleet; fi; "
    "if [ -e /etc/NIXOS ]; then echo nixos; fi; "
    # What nixos-anywhere needs on the machine before its kexec (src/nixos-anywhere.sh aborts
    # without them, after it has uploaded its key): said before anything is built or copied.
    "for t in tar cpio setsid; do command -v $t >/dev/null 2>&1 || echo missing-$t; done; "
    # How it boots, its network as its Linux runs it, its GPUs (bootstrap/hardware.py).
    + HARDWARE_QUERY)]
NEEDED_TOOLS = ("tar", "cpio", "setsid")
NIX_ARCH = {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux"}


@dataclass(frozen=True)
class Disk:
    name: str  # sda, nvme0n1
    size: int  # bytes
    model: str
    serial: str
    removable: bool
    read_only: bool
    by_id: tuple[str, ...]  # /dev/disk/by-id/... links to it


@dataclass(frozen=True)
class Facts:
    """What an install reads of the machine first; kept in the install Command's report."""

    arch: str  # as Nix names it: x86_64-linux
    disks: tuple[Disk, ...]
    flakefleet: bool  # a flakefleet delivery ran there (it is, or was, a node of a stack)
    nixos: bool
    missing: tuple[str, ...] = ()  # of NEEDED_TOOLS
    hardware: Hardware = Hardware()

    def to_json(self) -> dict:
        return {"arch": self.arch, "nixos": self.nixos, "flakefleet": self.flakefleet, "missing": list(self.missing),
                "disks": [{"name": d.name, "size": d.size, "model": d.model, "serial": d.serial,
                           "by_id": list(d.by_id)} for d in self.disks], **self.hardware.to_json()}


def parse_facts(out: str) -> Facts:
    """FACTS_QUERY's output. Raises ValueError naming what is not as expected."""
    head, _, rest = out.partition("\n")
    listing, _, rest = rest.partition("--by-id\n")
    links, _, state = rest.partition("--state\n")
    state, _, hardware = state.partition("--hardware\n")
    try:
        devices = json.loads(listing)["blockdevices"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"lsblk gave no device list: {listing.strip()[:200]!r}") from err
    named: dict[str, list[str]] = {}
    for line in links.splitlines():
        link, _, target = line.partition(" ")
        if target.startswith("/dev/") and "-part" not in link:
            named.setdefault(target[len("/dev/"):], []).append(link)
    disks = tuple(
        Disk(d["name"], int(d.get("size") or 0), (d.get("model") or "").strip(), (d.get("serial") or "").strip(),
             bool(d.get("rm")) and d.get("rm") not in ("0", 0), bool(d.get("ro")) and d.get("ro") not in ("0", 0),
             tuple(sorted(named.get(d["name"], ()))))
        for d in devices if d.get("type") == "disk")
    arch = NIX_ARCH.get(head.strip())
    if arch is None:
        raise ValueError(f"unsupported architecture {head.strip()!r} (nixos-anywhere's installers: x86_64, aarch64)")
    words = state.split()
    missing = tuple(t for t in NEEDED_TOOLS if f"missing-{t}" in words)
    return Facts(arch, disks, "flakefleet" in words, "nixos" in words, missing, parse_hardware(hardware))


def stable_name(disk: Disk) -> str:
    """The disk's /dev/disk/by-id link (not the wwn- one when there is another), else /dev/<name>."""
    preferred = [link for link in disk.by_id if "/wwn-" not in link] or list(disk.by_id)
    return preferred[0] if preferred else f"/dev/{disk.name}"


def choose_disk(facts: Facts, wanted: str | None) -> tuple[str | None, str]:
    """(the disk to write, "") or (None, why not): the configured one, which must be a disk the
    machine has; else its only fixed, writable disk."""
    fixed = [d for d in facts.disks if not d.removable and not d.read_only and d.size > 0
             and not d.name.startswith(("zram", "nbd"))]  # swap in RAM, network disks: not installable
    listed = ", ".join(f"{stable_name(d)} ({d.size // 10**9} GB{', ' + d.model if d.model else ''})" for d in fixed)
    if wanted is not None:
        for disk in facts.disks:
            if wanted in disk.by_id or wanted == f"/dev/{disk.name}":
                return (wanted, "") if disk in fixed else (None, f"{wanted} is removable or read-only")
        return None, f"the machine has no disk {wanted} (it has: {listed or 'none'})"
    if len(fixed) == 1:
        return stable_name(fixed[0]), ""
    return None, (f"the machine has {len(fixed)} fixed disks ({listed or 'none'}): name the one to install on "
                  "in hosts[].install_disk")


def tools_refusal(facts: Facts) -> str | None:
    """Why nixos-anywhere could not kexec this machine (None: it can)."""
    if facts.missing:
        return (f"the machine lacks {', '.join(facts.missing)}, which nixos-anywhere needs to boot its installer "
                f"(kexec): install {'it' if len(facts.missing) == 1 else 'them'} first (Debian, Ubuntu: "
                f"apt-get install {' '.join('util-linux' if t == 'setsid' else t for t in facts.missing)})")
    return None


def wipe_refusal(facts: Facts, reinstall: str | None) -> str | None:
    """Why the disks must not be wiped (None: they may). A machine a flakefleet delivery ran on is
    or was a node: it is wiped only on an explicit reinstall, never because a pool was switched
    to bootstrap."""
    if facts.flakefleet and reinstall is None:
        return ("it runs a flakefleet system already (a delivery ran there): refusing to wipe it. To install it "
                "anew, set hosts[].reinstall (it is drained and taken out of the cluster first)")
    return None


def known_hosts_text(address: str, port: int, install_host_key: str) -> str:
    """The pre-install key pinned at the SSH port, and at 22, where the kexec installer listens
    (nixos-anywhere's --post-kexec-ssh-port default) with the same host keys."""
    lines = known_hosts_line(address, port, install_host_key)
    return lines + (known_hosts_line(address, 22, install_host_key) if port != 22 else "")


def nixos_anywhere_argv(program: str, disko_script: str, system: str, kexec: str, extra_files: Path,
                        known_hosts: Path, address: str, port: int, user: str, identity: str | None) -> list[str]:
    """nixos-anywhere's command line (its options as src/nixos-anywhere.sh parses them)."""
    argv = [program, "--store-paths", disko_script, system, "--kexec", kexec, "--extra-files", str(extra_files),
            "--ssh-port", str(port),
            "--ssh-option", f"UserKnownHostsFile={known_hosts}",
            "--ssh-option", "GlobalKnownHostsFile=/dev/null",
            "--ssh-option", "StrictHostKeyChecking=yes",
            "--phases", "kexec,disko,install,reboot",
            # Both paths are built here already: nothing is built on the machine, or probed for.
            "--build-on", "local"]
    if identity:
        argv += ["-i", identity]
    return [*argv, "--target-host", f"{user}@{address}"]
