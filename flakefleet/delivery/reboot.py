"""The reboot path of a delivery, for a system whose boot files differ from what the host booted.

A new kernel, initrd, kernel modules tree or kernel parameters do not take effect on a live
switch (the host would run the old kernel with the new modules). For such a system, delivery:

1. cordons and drains the node through a control plane (none yet: a new cluster; not
   registered yet: a first delivery), bounded by the health timeout;
2. installs the staged files and makes the system a new generation that the boot loader boots
   ONCE (`switch-to-configuration boot`, then the previous generation set back as the default
   and the new one as the one-shot entry): a hang or a failed boot falls back to the previous
   generation on the next reset;
3. reboots and waits for SSH with the same bounded back-off as a first boot;
4. confirms over a new connection that the host booted the new system and is healthy (k3s up
   without a restart for `settle_s`), and that its Node is Ready with a Lease renewed since the
   boot; then makes the new generation the boot default and uncordons;
5. otherwise rolls back at the boot loader (the previous generation the default again, files
   restored), reboots into it, uncordons and fails the delivery saying why.

The host side is hostctl.sh (needs-reboot, boot-stage, reboot, check-boot, confirm-boot,
boot-rollback), for systemd-boot (bootctl set-default / set-oneshot) and GRUB (grub-reboot for
the one-shot; the default follows the system whose `switch-to-configuration boot` ran last).
"""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING

from flakefleet.cluster.kubectl import drain_commands, uncordon_command
from flakefleet.cluster.readiness import batch_ready, node_exists
from flakefleet.common.retry import backoff_delays, poll
from flakefleet.host import protocol as hostctl
from flakefleet.host.protocol import HostState
from flakefleet.plan.contract import ROLLED_BACK, DeliveryFailed, Endpoint

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


def reasons(run: HostSession, running: str) -> list[str]:
    """What of the new system's boot files differs from the booted system (empty: none);
    `reboot: always` reboots for any new system, not for files alone."""
    if run.plan.reboot == "always":
        return ["reboot: always"] if running != run.plan.system else []
    res = run.hostctl(hostctl.needs_reboot(run.plan.system))
    return res.stdout.split() if res.returncode == 0 else []


def drain(run: HostSession) -> Endpoint | None:
    """Cordon and drain the node through the first control plane that answers (another one when
    there is one); None when there is nothing to drain (no cluster yet, or no Node yet)."""
    ordered = sorted(run.plan.control_planes, key=lambda cp: cp.host == run.plan.host)
    for cp in ordered:
        exists = node_exists(run, cp)
        if exists is None:
            continue
        if not exists:
            return None
        for argv in drain_commands(run.plan.host, run.plan.health_timeout_s):
            res = run.ssh(argv, to=cp, timeout=run.plan.health_timeout_s + 60)
            if res.returncode != 0:
                uncordon(run, cp)
                raise DeliveryFailed(f"draining {run.plan.host} on {cp.host} before its reboot failed; nothing was "
                                     f"changed on it: {res.stderr.strip()[-500:]}")
        run.say(f"cordoned and drained through {cp.host}")
        return cp
    return None


def uncordon(run: HostSession, via: Endpoint | None, deadline: float | None = None) -> None:
    """Uncordon the node (retrying while its control plane's k3s comes back, when it is this host)."""
    if via is None:
        return
    def attempt() -> tuple[bool, str]:
        return run.ssh(uncordon_command(run.plan.host), to=via, timeout=30).returncode == 0, ""

    done, _ = poll(attempt, deadline or time.monotonic() + run.plan.health_timeout_s)
    if not done:
        raise DeliveryFailed(f"host {run.plan.host} rebooted but could not be uncordoned through {via.host}", ROLLED_BACK)


def wait_booted(run: HostSession, token: str, system: str, deadline: float) -> tuple[str, str]:
    """After `reboot`: ("booted", when the boot had finished starting, host clock) once the host
    booted `system` ("-": any) and is healthy and settled, ("other", what it booted) when it booted something else, ("unhealthy", why) when k3s
    restarted since the boot, ("timeout", last error) otherwise."""
    detail = "no answer"
    while True:
        res = run.hostctl(hostctl.check_boot(token, system, int(run.plan.settle_s)))
        if res.returncode == 0:
            return "booted", str(hostctl.switched_at(res.stdout))
        if res.returncode == 2:
            return "other", res.stderr.strip()
        if res.returncode == 5:
            return "unhealthy", res.stderr.strip()
        detail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        if time.monotonic() > deadline:
            return "timeout", detail
        time.sleep(1)


def never_connected(res: subprocess.CompletedProcess) -> bool:
    """ssh could not open the connection at all (refused, timed out): the command never ran."""
    return res.returncode == 255 and "connect to host" in res.stderr


def over_ssh(run: HostSession, call, attempts: int = 5, delays=None) -> subprocess.CompletedProcess:
    """`call` (a hostctl step), again while ssh cannot even connect: right after a boot, sshd can
    still be restarting, and a refused connection is no answer. Only then: a connection lost
    mid-command may have run it, and these steps are not repeated blindly."""
    delays = delays if delays is not None else backoff_delays(cap=5)
    for _ in range(attempts - 1):
        res = call()
        if not never_connected(res):
            return res
        run.say(f"ssh to {run.plan.host} failed ({res.stderr.strip().splitlines()[-1]}); trying again")
        time.sleep(next(delays))
    return call()


def confirm_boot(run: HostSession, digest: str) -> subprocess.CompletedProcess:
    """`confirm-boot`, retried while ssh cannot connect; before retrying, the host is checked again
    to still run the new system, so a confirmation never lands on a host that booted something else."""
    res = run.hostctl(hostctl.confirm_boot(run.token, run.plan.system, digest))
    if not never_connected(res):
        return res
    state, detail = wait_booted(run, run.token, run.plan.system, time.monotonic() + run.plan.boot_timeout_s)
    if state != "booted":
        return subprocess.CompletedProcess([], 2, "", detail)
    return over_ssh(run, lambda: run.hostctl(hostctl.confirm_boot(run.token, run.plan.system, digest)))


def rollback(run: HostSession, via: Endpoint | None, reason: str) -> DeliveryFailed:
    """Previous generation the boot default again, files restored, reboot into it, uncordon."""
    res = over_ssh(run, lambda: run.hostctl(hostctl.boot_rollback(run.token, reason)))
    outcome = res.stdout.strip().splitlines()[0] if res.stdout.strip() else f"could not be rolled back ({reason})"
    state, detail = wait_booted(run, f"{run.token}-rollback", "-", time.monotonic() + run.plan.boot_timeout_s)
    if state != "booted":
        return DeliveryFailed(f"host {run.plan.host} {outcome}; it did not come back from that reboot ({detail})",
                              ROLLED_BACK)
    uncordon(run, via)
    return DeliveryFailed(f"host {run.plan.host} {outcome}", ROLLED_BACK)


def reboot_into(run: HostSession, digest: str, why: list[str]) -> None:
    """Steps 1-5 above; raises DeliveryFailed when the host is not confirmed on the new system."""
    run.say(f"{', '.join(why)} changed: rebooting into {run.plan.system}")
    start = time.monotonic()
    via = drain(run)
    run.timed("drain", start)
    start = time.monotonic()
    staged = run.hostctl(hostctl.boot_stage(run.plan.system, run.token))
    run.timed("boot-stage", start)
    if staged.returncode != 0:
        uncordon(run, via)
        raise DeliveryFailed(f"preparing {run.plan.host}'s boot into {run.plan.system} failed; it was not rebooted: "
                             f"{staged.stderr.strip()[-500:]}")
    start = time.monotonic()
    run.hostctl(hostctl.reboot(run.token))
    state, detail = wait_booted(run, run.token, run.plan.system, start + run.plan.boot_timeout_s)
    if state == "timeout":
        raise DeliveryFailed(
            f"host {run.plan.host} did not come back within {run.plan.boot_timeout_s:.0f}s after rebooting into "
            f"{run.plan.system} ({detail}); that generation was set to boot once only, so the next reset boots the "
            "previous one: reset the host (EC2: aws ec2 reboot-instances; metal: power-cycle it), then run "
            "`pulumi up` again, which reports what it booted",
            ROLLED_BACK,
        )
    run.timed("reboot", start)
    if state == "other":
        raise rollback(run, via, f"it did not boot {run.plan.system}: {detail}")
    if state == "unhealthy":
        raise rollback(run, via, f"not healthy after the reboot: {detail}")
    booted_at = float(detail or 0)
    start = time.monotonic()
    if run.plan.batch:
        ok, detail = poll(lambda: batch_ready(run, heartbeat_after=booted_at), time.monotonic() + run.plan.health_timeout_s)
        if not ok:
            raise rollback(run, via, f"its batch was not Ready within {run.plan.health_timeout_s:.0f}s of the reboot: {detail}")
    res = confirm_boot(run, digest)
    if res.returncode != 0:
        raise rollback(run, via, f"the new generation could not be made the boot default: {res.stderr.strip()}")
    uncordon(run, via)
    run.timed("confirm", start)


def fell_back(run: HostSession, state: HostState) -> None:
    """A boot into a new generation that was never confirmed. When the host runs another system
    (it was reset and its boot loader fell back): put the profile, files and boot default back to
    what it runs, say so, and stop; the next delivery tries again. When it runs that generation
    (the deployer was lost after the reboot): forget what a rollback would have restored, and go
    on; this delivery confirms or replaces it as any running system."""
    token, _, system = state.unconfirmed_boot.partition(" ")
    if not token:
        return
    if state.booted == system:
        run.hostctl(hostctl.forget_boot(token))
        run.say(f"booted {system} earlier without a confirmation; it runs: delivering as to any running system")
        return
    res = run.hostctl(hostctl.boot_rollback(token, "its boot was never confirmed"))
    outcome = res.stdout.strip().splitlines()[0] if res.stdout.strip() else "could not be put back"
    run.report.found["fell_back_from"] = system
    raise DeliveryFailed(f"host {run.plan.host} fell back on a reset after its boot into {system} was never "
                         f"confirmed: {outcome}; the next `pulumi up` tries again", ROLLED_BACK)
