"""SSH to hosts whose keys are pinned: OpenSSH with a known_hosts file built from the pinned keys
and StrictHostKeyChecking=yes, so no connection ever trusts on first use.

A target is anything with `address`, `port` and `user` (a host's plan, a control plane's
endpoint, a builder); its pinned key is `host_key`.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol


TIMED_OUT = 124  # as timeout(1): the command was still running when the deployer stopped waiting


class Target(Protocol):
    address: str
    port: int
    user: str


class Pinned(Target, Protocol):
    host_key: str  # "ssh-ed25519 AAAA..."


def known_hosts_line(address: str, port: int, host_key: str) -> str:
    """The known_hosts entry pinning `host_key` for address:port."""
    name = address if port == 22 else f"[{address}]:{port}"
    key_type, key_data = host_key.split()[:2]
    return f"{name} {key_type} {key_data}\n"


def ssh_options(known_hosts: Path, port: int, identity_file: str | None, connect_timeout: int = 10) -> list[str]:
    """OpenSSH options: the pinned known_hosts file only, strict checking, no prompts."""
    opts = [
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",  # trust only the stack's keys, not the machine's
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", "LogLevel=ERROR",
        "-p", str(port),
    ]  # fmt: skip
    if identity_file:
        opts += ["-i", identity_file, "-o", "IdentitiesOnly=yes"]
    return opts


@contextmanager
def pinned_known_hosts(address: str, port: int, host_key: str):
    """A known_hosts file holding just this host's pinned key, for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="flakefleet-ssh-") as tmp:
        known = Path(tmp) / "known_hosts"
        known.write_text(known_hosts_line(address, port, host_key))
        yield known


def ssh_prefix(known_hosts: Path, address: str, port: int, user: str, identity: str | None) -> list[str]:
    """The argv prefix of an ssh to one host, checked against `known_hosts` (the remote command follows)."""
    return ["ssh", *ssh_options(known_hosts, port, identity), f"{user}@{address}", "--"]


@contextmanager
def pinned_ssh(address: str, port: int, user: str, host_key: str, identity: str | None):
    """The argv prefix of an ssh to one host whose key is pinned (a known_hosts file for just this call)."""
    with pinned_known_hosts(address, port, host_key) as known:
        yield ssh_prefix(known, address, port, user, identity)


def remote_command(words: list[str]) -> str:
    """`words` as one command line for the remote shell, each word quoted."""
    return " ".join(shlex.quote(w) for w in words)


class PinnedSSH:
    """SSH to a set of hosts whose keys are pinned, through one known_hosts file that lives as long
    as this object (`close` removes it)."""

    def __init__(self, hosts: Iterable[Pinned], identity: str | None):
        self.identity = identity
        self._tmp = tempfile.TemporaryDirectory(prefix="flakefleet-ssh-")
        self.known_hosts = Path(self._tmp.name) / "known_hosts"
        self.known_hosts.write_text("".join(known_hosts_line(h.address, h.port, h.host_key) for h in hosts))

    def argv(self, target: Target, remote: list[str]) -> list[str]:
        """ssh to `target` running `remote` (each word quoted for the remote shell)."""
        return [*ssh_prefix(self.known_hosts, target.address, target.port, target.user, self.identity),
                remote_command(remote)]

    def options(self, port: int) -> list[str]:
        """The ssh options for a port, as `NIX_SSHOPTS` takes them."""
        return ssh_options(self.known_hosts, port, self.identity)

    def run(self, target: Target, remote: list[str], stdin: str | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess:
        """Run `remote` on `target`; no answer within `timeout` is exit TIMED_OUT (ssh's own 255
        means the connection failed or dropped: another case)."""
        try:
            return subprocess.run(self.argv(target, remote), input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], TIMED_OUT, "", f"no answer within {timeout:.0f}s")

    def close(self) -> None:
        self._tmp.cleanup()
