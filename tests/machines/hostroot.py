"""What makes a root file system one of the fleet's test hosts, for the nspawn machines and the
qemu guests alike: its pinned SSH host key, sshd for keys only, the deployer's key for root, Nix
trusting only the fleet's signing key, and the boot loader its stand-in systems install."""

from __future__ import annotations

import shutil
from pathlib import Path

SSHD = ("HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\n")


def make_fleet_host(root: Path, fleet, host_key: Path, bootloader: str, sshd_extra: str = "") -> None:
    """Write into `root` what every test host has before its first boot (`sshd_extra`: lines of
    this kind of host, such as the address a machine's sshd listens on)."""
    ssh = root / "etc/ssh"
    shutil.copy(host_key, ssh / "ssh_host_ed25519_key")
    shutil.copy(host_key.with_suffix(".pub"), ssh / "ssh_host_ed25519_key.pub")
    (ssh / "sshd_config.d/flakefleet.conf").write_text(sshd_extra + SSHD)
    (root / "root/.ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / "root/.ssh/authorized_keys").write_text(fleet.client_public + "\n")
    (root / "etc/nix").mkdir(exist_ok=True)
    (root / "etc/nix/nix.conf").write_text(
        "experimental-features = nix-command flakes\nbuild-users-group =\nsandbox = false\nsubstituters =\n"
        f"require-sigs = true\ntrusted-public-keys = {fleet.signing_public}\n"
    )
    standin = root / "etc/flakefleet-standin"
    standin.mkdir(parents=True, exist_ok=True)
    (standin / "bootloader").write_text(bootloader + "\n")
