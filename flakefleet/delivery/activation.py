"""The live switch of a delivery: stage the host's files, activate the system under a host-side
dead-man switch, confirm over new connections that the host is healthy and its batch Ready, or
roll back. The operator's rollback (`flakefleet rollback`) goes through the same steps."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from flakefleet.cluster.readiness import batch_ready
from flakefleet.common.retry import poll
from flakefleet.host.files import HostFile, staging_script
from flakefleet.host.session import HOSTCTL, REMOTE_HOSTCTL, parse_state
from flakefleet.plan.contract import ROLLED_BACK, DeliveryFailed

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


def stage(run: HostSession, contents: list[HostFile], what: str = "staging files") -> None:
    """hostctl.sh and the files, to the host's /run/flakefleet/<token> (installed at activation)."""
    start = time.monotonic()
    staged = run.ssh(["sh", "-s"], stdin=staging_script(run.token, HOSTCTL.read_text(), contents))
    if staged.returncode != 0:
        raise DeliveryFailed(f"{what} on {run.plan.host} failed; nothing was activated: {staged.stderr.strip()}")
    run.timed("stage", start)


def activate(run: HostSession) -> None:
    """The new generation and its switch-to-configuration, with the dead-man switch armed first."""
    plan = run.plan
    start = time.monotonic()
    deadman = int(plan.health_timeout_s + plan.deadman_margin_s)
    act = run.ssh([REMOTE_HOSTCTL, "activate", plan.system, run.token, str(deadman)], timeout=plan.health_timeout_s + 600)
    run.timed("activate", start)
    if act.returncode == 255:
        # The connection dropped (the new system may have restarted networking or sshd).
        # Whether the switch completed is decided by confirming over a new connection.
        run.say("connection lost during activation; confirming over a new connection")
    elif act.returncode != 0:
        detail = act.stderr.strip().splitlines()[-1] if act.stderr.strip() else ""
        why = "some units failed to start (exit 4)" if act.returncode == 4 else f"exit {act.returncode}"
        raise rollback(run, f"activation of {plan.system} failed: {why}{': ' + detail if detail else ''}")


def confirm(run: HostSession, digest: str) -> None:
    """The health gate, over new connections: the host runs the system and is healthy, its
    batch's nodes are Ready; then the host is told to keep it (disarming the dead-man)."""
    plan = run.plan
    start = time.monotonic()
    deadline = start + plan.health_timeout_s
    timeout = f"{plan.health_timeout_s:.0f}s"

    def healthy() -> tuple[bool, str]:
        res = run.ssh([REMOTE_HOSTCTL, "check", run.token, plan.system], timeout=30)
        if res.returncode == 2:  # the host decided already: its dead-man switch rolled it back
            raise DeliveryFailed(f"host {plan.host} {res.stderr.strip()}", ROLLED_BACK)
        return res.returncode == 0, res.stderr.strip() or f"exit {res.returncode}"

    ok, detail = poll(healthy, deadline)
    if not ok:
        raise rollback(run, f"not healthy within {timeout}: {detail}")
    if plan.batch:
        ok, detail = poll(lambda: batch_ready(run), deadline)
        if not ok:
            raise rollback(run, f"its batch was not Ready within {timeout}: {detail}")
    res = run.ssh([REMOTE_HOSTCTL, "confirm", run.token, plan.system, digest], timeout=30)
    if res.returncode != 0:
        raise DeliveryFailed(f"host {plan.host} {res.stderr.strip() or 'could not be confirmed'}", ROLLED_BACK)
    run.timed("confirm", start)


def rollback(run: HostSession, reason: str) -> DeliveryFailed:
    """Back to the previous generation now (or, unreachable, by the host's dead-man switch): the
    failure to raise, saying which."""
    plan = run.plan
    res = run.ssh([REMOTE_HOSTCTL, "rollback", run.token, reason], timeout=plan.health_timeout_s + 60)
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
    """The operator's `nixos-rebuild --rollback` for one host (`flakefleet rollback`): activate the
    previous generation's system through the same dead-man switch and confirm over a new
    connection (its Node Ready), then record it so drift reports the host as rolled back."""
    run.wait_for_ssh()
    state = parse_state(run.hostctl("state").stdout)
    previous = run.hostctl("previous").stdout.strip()
    if not previous:
        raise DeliveryFailed(f"host {run.plan.host} has no earlier confirmed system to roll back to")
    running = state.get("current", "")
    run.plan = replace(run.plan, system=previous)
    stage(run, [], what="preparing the rollback")
    activate(run)
    confirm(run, state.get("applied", ""))
    run.hostctl("note-rollback", running, previous)
    return f"{run.plan.host} rolled back from {running or 'nothing'} to {previous}, confirmed healthy"
