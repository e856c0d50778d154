"""What one host's install Command hands its runner (the JSON in FLAKEFLEET_INSTALL_PLAN)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

INSTALL_PLAN_ENV = "FLAKEFLEET_INSTALL_PLAN"
# The installed system's SSH host key (OpenSSH private key), made by the stack: a secret.
INSTALLED_KEY_ENV = "FLAKEFLEET_SECRET_INSTALLED_HOST_KEY"
INSTALLED_KEY_PATH = "etc/ssh/ssh_host_ed25519_key"  # under the new root (nixos/common/openssh.nix)


@dataclass(frozen=True)
class InstallPlan:
    """host, address, port, user: how the machine is reached, before and after; install_host_key:
    the pinned key of the Linux it runs before; host_key: the installed system's (the stack's);
    layout and disk: how its disk is written (disk None: the only one its facts show); system:
    the pool's system (built and published before); spec: the pool's spec, for the host's disko
    script; reinstall: the stack's request to wipe it again (None: install once)."""

    host: str
    address: str
    port: int
    user: str
    install_host_key: str
    host_key: str
    layout: str
    system: str
    spec: dict = field(default_factory=dict)
    arch: str = "x86_64-linux"
    disk: str | None = None
    reinstall: str | None = None
    flake: str = "nixos"
    identity_file: str | None = None
    boot_timeout_s: float = 1800
    delivery: str = ""
    """The host's delivery plan (JSON): drained and taken out of the cluster through it first
    when a reinstall wipes a host that is in the cluster."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InstallPlan:
        return cls(**json.loads(text))
