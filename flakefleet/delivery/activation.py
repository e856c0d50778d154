"""The live switch of a delivery: stage the host's files, activate the system under a host-side
dead-man switch (`switch-to-configuration test`: the boot loader and the profile unchanged),
confirm over new connections that the host is healthy, k3s settled and its batch Ready with a
fresh heartbeat, then make it the boot default; or roll back. The operator's rollback
(`flakefleet rollback`) goes through the same steps, or through a reboot when the kernel differs."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from flakefleet.cluster.readiness import batch_ready
from flakefleet.common.retry import poll
from flakefleet.common.ssh import TIMED_OUT
from flakefleet.delivery import reboot
from flakefleet.host.files import HostFile, staging_script
from flakefleet.host import protocol as hostctl
from flakefleet.host.protocol import HostState
from flakefleet.plan.contract import ROLLED_BACK, DeliveryFailed

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


def stage(run: HostSession, contents: list[HostFile], what: str = "staging files") -> None:
    """hostctl.sh and the files, to the host's /run/flakefleet/<token> (installed at activation),
    with the units that read each file."""
    start = time.monotonic()
    restarts = {f.path: f.restart for f in run.plan.files}
    create_only = frozenset(f.path for f in run.plan.files if f.create_only)
    staged = run.ssh(["sh", "-s"], stdin=staging_script(run.token, hostctl.HOSTCTL.read_text(), contents, restarts,
                                                        create_only))
    if staged.returncode != 0:
        raise DeliveryFailed(f"{what} on {run.plan.host} failed; nothing was activated: {staged.stderr.strip()}")
    run.timed("stage", start)


def activate(run: HostSession) -> None:
    """switch-to-configuration test of the new system, with the dead-man switch armed first. The
    host bounds the switch by the health timeout (a unit whose start never ends, as k3s' with
    TimeoutStartSec=0 can, would hold it forever); the deployer waits a minute longer."""
    plan = run.plan
    start = time.monotonic()
    deadman = int(plan.health_timeout_s + plan.deadman_margin_s)
    limit = int(plan.health_timeout_s)
    act = run.hostctl(hostctl.activate(plan.system, run.token, deadman, limit))
    run.timed("activate", start)
    detail = act.stderr.strip().splitlines()[-1] if act.stderr.strip() else ""
    if act.returncode == 255:
        # The connection dropped (the new system may have restarted networking or sshd).
        # Whether the switch completed is decided by confirming over a new connection.
        run.say("connection lost during activation; confirming over a new connection")
    elif act.returncode == TIMED_OUT:
        raise rollback(run, f"the activation of {plan.system} did not finish within {limit}s: {detail}")
    elif act.returncode != 0:
        why = "some units failed to start (exit 4)" if act.returncode == 4 else f"exit {act.returncode}"
        raise rollback(run, f"activation of {plan.system} failed: {why}{': ' + detail if detail else ''}")


def confirm(run: HostSession, digest: str) -> None:
    """The health gate, over new connections: the host runs the system and is healthy, its
    batch's nodes are Ready; then the host is told to keep it (disarming the dead-man)."""
    plan = run.plan
    start = time.monotonic()
    deadline = start + plan.health_timeout_s
    timeout = f"{plan.health_timeout_s:.0f}s"

    switched_at = 0.0

    def healthy() -> tuple[bool, str]:
        nonlocal switched_at
        res = run.hostctl(hostctl.check(run.token, plan.system, int(plan.settle_s)))
        if res.returncode == 2:  # the host decided already: its dead-man switch rolled it back
            raise DeliveryFailed(f"host {plan.host} {res.stderr.strip()}", ROLLED_BACK)
        if res.returncode == 5:  # k3s restarted after the switch: waiting will not make it healthy
            raise rollback(run, f"not healthy: {res.stderr.strip()}")
        switched_at = hostctl.switched_at(res.stdout)
        return res.returncode == 0, res.stderr.strip() or f"exit {res.returncode}"

    ok, detail = poll(healthy, deadline)
    if not ok:
        raise rollback(run, f"not healthy within {timeout}: {detail}")
    if plan.batch:
        ok, detail = poll(lambda: batch_ready(run, heartbeat_after=switched_at), deadline)
        if not ok:
            raise rollback(run, f"its batch was not Ready within {timeout}: {detail}")
    res = run.hostctl(hostctl.confirm(run.token, plan.system, digest))
    if res.returncode == 6:  # kept, but a reboot would not boot it
        raise DeliveryFailed(f"host {plan.host} runs {plan.system}, {res.stderr.strip()}")
    if res.returncode != 0:
        raise DeliveryFailed(f"host {plan.host} {res.stderr.strip() or 'could not be confirmed'}", ROLLED_BACK)
    run.timed("confirm", start)


def rollback(run: HostSession, reason: str) -> DeliveryFailed:
    """Back to the previous generation now (or, unreachable, by the host's dead-man switch): the
    failure to raise, saying which."""
    plan = run.plan
    res = run.hostctl(hostctl.rollback(run.token, reason, timeout=plan.health_timeout_s + 60))
    if res.returncode == 0 and res.stdout.strip():
        return DeliveryFailed(f"host {plan.host} {res.stdout.strip().splitlines()[-1]}{split_note(run)}", ROLLED_BACK)
    when = plan.health_timeout_s + plan.deadman_margin_s
    return DeliveryFailed(
        f"host {plan.host} could not be reached to roll back ({reason}); its dead-man switch rolls it "
        f"back to the previous generation {when:.0f}s after activation{split_note(run)}",
        ROLLED_BACK,
    )


def split_note(run: HostSession) -> str:
    """The rule for a failed host in a batch: the rollout stops, hosts of the batch that were
    confirmed keep the new system (their Commands succeeded; rolling them back would make the
    stack's state lie), and the error says the pool is split and where to see who runs what."""
    others = [h for h in run.plan.batch if h != run.plan.host]
    if not others:
        return ""
    return (f"; other hosts of its batch ({', '.join(others)}) may have switched to {run.plan.system}: "
            "the pool stays split until a `pulumi up` completes; `python -m flakefleet drift` and the "
            "stack output `pools` name every host not on its pool's system")


def roll_back_generation(run: HostSession) -> str:
    """The operator's `nixos-rebuild --rollback` for one host (`flakefleet rollback`): the previous
    generation's system through the same dead-man switch and confirmation over a new connection
    (its Node Ready), live, or through a reboot when its kernel differs from the booted one; then
    recorded so drift reports the host as rolled back."""
    run.wait_for_ssh()
    state = HostState.parse(run.hostctl(hostctl.state()).stdout)
    previous = run.hostctl(hostctl.previous()).stdout.strip()
    if not previous:
        raise DeliveryFailed(f"host {run.plan.host} has no earlier confirmed system to roll back to")
    running = state.current
    run.plan = replace(run.plan, system=previous, reboot="auto")
    stage(run, [], what="preparing the rollback")
    why = reboot.reasons(run, running)
    if why:
        reboot.reboot_into(run, state.applied, why)
    else:
        activate(run)
        confirm(run, state.applied)
    run.hostctl(hostctl.note_rollback(running, previous))
    how = "rebooted into it" if why else "confirmed healthy"
    return f"{run.plan.host} rolled back from {running or 'nothing'} to {previous}, {how}"
