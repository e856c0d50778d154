"""The build phase: realise a system here, on a named build host, or on the target host itself.

`delivery.build` (per pool): `local` realises on the deployer; `<builder>` copies the derivation
to that builder (pinned SSH), realises it there and brings the result back once for the pool;
`target` copies the derivation to the host being delivered and realises it there (colmena's
buildOnTarget), substituting what the stack's cache or an upstream already holds.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass

from flakefleet.deliver import NIX_FEATURES, pinned_known_hosts, ssh_options, ssh_prefix

NIX_SYSTEMS = {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux"}


class BuildFailed(Exception):
    """A build could not produce the planned system (one line, or Nix's own tail)."""


@dataclass(frozen=True)
class Builder:
    """A build host reached over pinned SSH (from `delivery.builders`, or the target host)."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    host_key: str = ""
    identity_file: str | None = None

    @property
    def store(self) -> str:
        return f"ssh-ng://{self.user}@{self.address}"


def ssh_env(builder: Builder, known_hosts) -> dict[str, str]:
    """The environment for `nix copy` over ssh-ng to `builder`, pinned to its key."""
    return {**os.environ, "NIX_SSHOPTS": " ".join(ssh_options(known_hosts, builder.port, builder.identity_file))}


def ssh_to(builder: Builder, known_hosts) -> list[str]:
    """The argv prefix of an ssh to `builder` pinned to `known_hosts` (the remote command follows)."""
    return ssh_prefix(known_hosts, builder.address, builder.port, builder.user, builder.identity_file)


def realise_argv(drv: str, substituters: tuple[str, ...] = ()) -> list[str]:
    """`nix-store --realise` of one derivation, optionally with these substituters (root on the
    host is a trusted user, so the option applies; keys stay the host's own trusted ones)."""
    argv = ["nix-store", "--realise", drv]
    if substituters:
        argv += ["--option", "substituters", " ".join(substituters)]
    return argv


def check_out(res: subprocess.CompletedProcess, drv: str, out: str, where: str) -> None:
    if res.returncode != 0 or res.stdout.strip().splitlines()[-1:] != [out]:
        raise BuildFailed(f"building {drv} on {where} failed:\n{res.stderr.strip()[-2000:]}")


def realise_remote(drv: str, out: str, builder: Builder, substituters: tuple[str, ...] = ()) -> None:
    """Copy the derivation's closure to `builder` and realise it there."""
    with pinned_known_hosts(builder.address, builder.port, builder.host_key) as known:
        res = subprocess.run(["nix", *NIX_FEATURES, "copy", "--derivation", "--to", builder.store, drv],
                             env=ssh_env(builder, known), capture_output=True, text=True)
        if res.returncode != 0:
            raise BuildFailed(f"copying {drv} to {builder.name} failed:\n{res.stderr.strip()[-2000:]}")
        remote = " ".join(shlex.quote(w) for w in realise_argv(drv, substituters))
        check_out(subprocess.run([*ssh_to(builder, known), remote], capture_output=True, text=True), drv, out, builder.name)


def fetch_from(out: str, builder: Builder) -> None:
    """Bring a builder's result into this store (once per pool; it is signed here afterwards).
    --no-check-sigs: the builder is pinned by host key and built it from our derivation."""
    with pinned_known_hosts(builder.address, builder.port, builder.host_key) as known:
        res = subprocess.run(["nix", *NIX_FEATURES, "copy", "--no-check-sigs", "--from", builder.store, out],
                             env=ssh_env(builder, known), capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildFailed(f"fetching {out} from {builder.name} failed:\n{res.stderr.strip()[-2000:]}")


def realise(drv: str, out: str, builder: Builder | None = None) -> None:
    """The system in this store: built here, or on `builder` and fetched once."""
    if builder is None:
        check_out(subprocess.run(realise_argv(drv), capture_output=True, text=True), drv, out, "the deployer")
        return
    realise_remote(drv, out, builder)
    fetch_from(out, builder)
