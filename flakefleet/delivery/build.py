"""The build phase: realise a system here, on a named build host, or on the target host itself.

`delivery.build` (per pool): `local` realises on the deployer; `<builder>` copies the derivation
to that builder (pinned SSH), realises it there and brings the result back once for the pool;
`target` copies the derivation to the host being delivered and realises it there (colmena's
buildOnTarget), substituting what the stack's cache or an upstream already holds.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import TYPE_CHECKING

from flakefleet.common.nix import NIX_FEATURES
from flakefleet.common.secrets import secret_file
from flakefleet.common.ssh import pinned_known_hosts, remote_command, ssh_options, ssh_prefix
from flakefleet.plan.contract import SIGNING_KEY_ENV, Builder, DeliveryFailed

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


class BuildFailed(Exception):
    """A build could not produce the planned system (one line, or Nix's own tail)."""


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
        remote = remote_command(realise_argv(drv, substituters))
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


def build_here(run: HostSession) -> None:
    """A delivery's build phase: realise the system on the deployer (a no-op when present) and sign
    it with the fleet's key; nothing when the host builds it or fetches it from the cache
    (published and signed once)."""
    plan = run.plan
    if plan.build == "target" or plan.substituters:
        return
    start = time.monotonic()
    res = subprocess.run(realise_argv(plan.drv), capture_output=True, text=True)
    if res.returncode != 0 or res.stdout.strip().splitlines()[-1:] != [plan.system]:
        raise DeliveryFailed(f"building {plan.drv} failed:\n{res.stderr.strip()[-2000:]}")
    key = run.env.get(SIGNING_KEY_ENV)
    if not key:
        raise DeliveryFailed(f"{SIGNING_KEY_ENV} is not set: hosts accept only signed systems")
    with secret_file(key) as key_file:
        res = subprocess.run(["nix", *NIX_FEATURES, "store", "sign", "--key-file", str(key_file), "--recursive", plan.system],
                             capture_output=True, text=True)
    if res.returncode != 0:
        raise DeliveryFailed(f"signing {plan.system} failed: {res.stderr.strip()[-1000:]}")
    run.timed("build", start)
