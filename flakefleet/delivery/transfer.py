"""The transfer phase: the system reaches the host's store by one of three routes.

- substitute: the host fetches it from the stack's binary cache (and upstream caches) itself,
  checked against the keys it trusts; the deployer sends no store bytes;
- build on target: the derivation goes over (kilobytes), the host realises it, substituting
  what the caches hold; with the stack's cache, only a pool's first host builds and the runner
  relays its result into the cache, the pool's other hosts wait for it there and substitute;
- copy: `nix copy` over pinned SSH from the deployer's store (bring-your-own hosts without a
  cache URL), only the paths the host lacks, with retries.
"""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING

from flakefleet.common.nix import NIX_FEATURES
from flakefleet.common.retry import backoff_delays
from flakefleet.delivery.build import BuildFailed, realise_argv, realise_remote
from flakefleet.delivery.cache import cache_has, closure_of, push_from, s3_client
from flakefleet.plan.contract import SIGNING_KEY_ENV, Builder, DeliveryFailed, DeliveryPlan, substituter_url

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


def nix_copy_argv(plan: DeliveryPlan) -> list[str]:
    """`nix copy` of the system to the host's store over ssh-ng (NIX_SSHOPTS carries the pinning)."""
    argv = ["nix", *NIX_FEATURES, "copy", "--to", f"ssh-ng://{plan.user}@{plan.address}"]
    if plan.substitute_on_destination:
        argv.append("--substitute-on-destination")
    return [*argv, plan.system]


def transfer(run: HostSession) -> None:
    """Whichever route the plan names; afterwards the host's store holds the system."""
    start = time.monotonic()
    if run.plan.build == "target" and run.plan.await_build:
        await_pool_build(run)
        substitute(run)
    elif run.plan.build == "target":
        build_on_target(run)
        if run.plan.push:
            push(run)
    elif run.plan.substituters:
        substitute(run)
    else:
        copy(run)
    run.timed("copy", start)


def substitute(run: HostSession) -> None:
    plan = run.plan
    missing = missing_paths(run)
    if missing:
        res = run.ssh(realise_argv(plan.system, plan.substituters), timeout=3600)
        if res.returncode != 0 or res.stdout.strip().splitlines()[-1:] != [plan.system]:
            raise DeliveryFailed(f"{plan.host} could not fetch {plan.system} from {', '.join(plan.substituters)}; "
                                 f"nothing was activated:\n{res.stderr.strip()[-2000:]}")
    run.report.paths_copied = 0  # none from the deployer
    run.say(f"fetched {len(missing)} paths from the binary cache (0 bytes from the deployer)")


def build_on_target(run: HostSession) -> None:
    plan = run.plan
    if not missing_paths(run):
        run.say(f"{plan.system} is already in the host's store")
        return
    try:
        realise_remote(plan.drv, plan.system, the_host(run), plan.substituters)
    except BuildFailed as err:
        raise DeliveryFailed(f"{err}; nothing was activated") from None
    run.say(f"built {plan.system} on the host itself")


def await_pool_build(run: HostSession) -> None:
    """The pool's first host builds its system once; wait (bounded) until the cache has it."""
    plan, start = run.plan, time.monotonic()
    for delay in backoff_delays(cap=15):
        if cache_has(plan.substituters[0], plan.system):
            run.say(f"{plan.system} is in the cache (built once for the pool)")
            return
        if time.monotonic() - start + delay > plan.build_wait_s:
            break
        time.sleep(delay)
    raise DeliveryFailed(f"{plan.system} did not appear in {plan.substituters[0]} within {plan.build_wait_s:.0f}s "
                         "(the pool's first host builds it); nothing was activated")


def share_pool_build(run: HostSession) -> None:
    """A pool's first host that already runs the system still makes sure the cache has it
    (a cache enabled after the host was built): the pool's other hosts wait for it there."""
    plan = run.plan
    if plan.build == "target" and plan.push and not cache_has(substituter_url(**plan.push), plan.system):
        push(run)


def push(run: HostSession) -> None:
    """Relay what this host built into the stack's cache, for the pool's other hosts."""
    plan = run.plan
    try:
        sent = push_from(the_host(run), plan.system, run.env.get(SIGNING_KEY_ENV, ""),
                         s3_client(plan.push["region"]), plan.push["bucket"], plan.substituters[1:])
    except BuildFailed as err:
        raise DeliveryFailed(f"{err}; nothing was activated") from None
    run.say(f"pushed {plan.system} into the cache for the pool ({sent} bytes)")


def the_host(run: HostSession) -> Builder:
    """The host being delivered, as a build host (it builds, or its build is read back)."""
    plan = run.plan
    return Builder(plan.host, plan.address, plan.port, plan.user, plan.host_key, plan.identity_file)


def missing_paths(run: HostSession) -> list[str]:
    """The system's closure paths the host lacks (asked on the host when the deployer has no
    closure to list: a target build or a substitution asks for the system path alone)."""
    plan = run.plan
    try:
        closure = closure_of(plan.system)
    except BuildFailed as err:
        if not (plan.substituters or plan.build == "target"):
            raise DeliveryFailed(str(err)) from None
        closure = [plan.system]
    check = run.ssh(["sh", "-c", "xargs nix-store --check-validity --print-invalid"], stdin="\n".join(closure))
    if check.returncode != 0:
        raise DeliveryFailed(f"cannot query the store of {plan.host}: {check.stderr.strip()}")
    return check.stdout.split()


def copy(run: HostSession) -> None:
    plan = run.plan
    missing = missing_paths(run)
    if missing:
        sizes = subprocess.run(["nix-store", "--query", "--size", *missing], capture_output=True, text=True)
        run.report.bytes_copied = sum(int(s) for s in sizes.stdout.split()) if sizes.returncode == 0 else 0
        env = {**run.env, "NIX_SSHOPTS": " ".join(run.remote.options(plan.port))}
        delays = backoff_delays()
        for attempt in range(1, plan.copy_attempts + 1):
            res = subprocess.run(nix_copy_argv(plan), env=env, capture_output=True, text=True)
            if res.returncode == 0:
                break
            if attempt == plan.copy_attempts:
                raise DeliveryFailed(f"copying {plan.system} failed {attempt} times; nothing was activated:\n"
                                     f"{res.stderr.strip()[-2000:]}")
            run.say(f"copy attempt {attempt} failed, retrying")
            time.sleep(next(delays))
    run.report.paths_copied = len(missing)
    run.say(f"copied {len(missing)} paths ({run.report.bytes_copied} bytes)")
