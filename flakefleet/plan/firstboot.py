"""First-boot user data for EC2 hosts: pin the stack's SSH host key before anyone connects.

NixOS' amazon-init executes user data that starts with `#!`. This script installs the ed25519
host key the stack generated (so the deployer's known_hosts is right from the first
connection), authorizes the deploy keys, and makes Nix trust the fleet's signing key until the
first delivery installs a system that trusts it by configuration. It runs once: the delivered
system turns amazon-init off, and the instance ignores later changes to its user data.
"""

from __future__ import annotations

import shlex


def first_boot_user_data(host_private_key: str, host_public_key: str, authorized_keys: list[str], signing_public_key: str) -> str:
    """The user-data script (it holds a private key: keep it a Pulumi secret)."""
    keys = "\n".join(authorized_keys)
    trust = f"extra-trusted-public-keys = {signing_public_key}"
    return f"""#!/bin/sh
# flakefleet first boot (see flakefleet/plan/firstboot.py)
set -eu
umask 077
cat > /etc/ssh/ssh_host_ed25519_key.flakefleet <<'FLAKEFLEET_EOF'
{host_private_key.strip()}
FLAKEFLEET_EOF
mv -f /etc/ssh/ssh_host_ed25519_key.flakefleet /etc/ssh/ssh_host_ed25519_key
printf '%s\\n' {shlex.quote(host_public_key.strip())} > /etc/ssh/ssh_host_ed25519_key.pub
chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub
mkdir -p /root/.ssh
cat >> /root/.ssh/authorized_keys <<'FLAKEFLEET_EOF'
{keys}
FLAKEFLEET_EOF
# nix-daemon (systemd) and `nix-daemon --stdio` (over SSH, as root) both accept signed paths.
mkdir -p /run/systemd/system/nix-daemon.service.d /root/.config/nix
printf '[Service]\\nEnvironment="NIX_CONFIG=%s"\\n' {shlex.quote(trust)} > /run/systemd/system/nix-daemon.service.d/flakefleet.conf
printf '%s\\n' {shlex.quote(trust)} >> /root/.config/nix/nix.conf
systemctl daemon-reload
systemctl restart nix-daemon.service sshd.service
"""
