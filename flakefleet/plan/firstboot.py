"""First-boot user data for EC2 hosts: the deploy keys and the fleet's signing key, nothing secret.

NixOS' amazon-init executes user data that starts with `#!`. This script authorizes the deploy
keys for root and makes Nix trust the fleet's signing key until the first delivery installs a
system that trusts it by configuration. It holds no private key: user data stays readable
through `ec2:DescribeInstanceAttribute` and, from the instance metadata service, by any root
process or hostNetwork pod on the node. The host makes its own SSH host key (NixOS' sshd) and
prints its fingerprint on the console, where delivery checks it before the first connection
(flakefleet/delivery/hostkey.py). It runs once: the delivered system turns amazon-init off, and
the instance ignores later changes to its user data.
"""

from __future__ import annotations

import shlex


def first_boot_user_data(authorized_keys: list[str], signing_public_key: str) -> str:
    """The user-data script (public material only)."""
    keys = "\n".join(authorized_keys)
    trust = f"extra-trusted-public-keys = {signing_public_key}"
    return f"""#!/bin/sh
# flakefleet first boot (see flakefleet/plan/firstboot.py)
set -eu
umask 077
mkdir -p /root/.ssh
cat >> /root/.ssh/authorized_keys <<'FLAKEFLEET_EOF'
{keys}
FLAKEFLEET_EOF
# nix-daemon (systemd) and `nix-daemon --stdio` (over SSH, as root) both accept signed paths.
mkdir -p /run/systemd/system/nix-daemon.service.d /root/.config/nix
printf '[Service]\\nEnvironment="NIX_CONFIG=%s"\\n' {shlex.quote(trust)} > /run/systemd/system/nix-daemon.service.d/flakefleet.conf
printf '%s\\n' {shlex.quote(trust)} >> /root/.config/nix/nix.conf
systemctl daemon-reload
systemctl restart nix-daemon.service
"""
