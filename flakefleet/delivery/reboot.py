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
from flakefleet.host.session import REMOTE_HOSTCTL, parse_state
from flakefleet.plan.contract import ROLLED_BACK, DeliveryFailed, Endpoint

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


def reasons(d: HostSession, running: str) -> list[str]:
    """What of the new system's boot files differs from the booted system (empty: none);
    `reboot: always` reboots for any new system, not for files alone."""
    if d.plan.reboot == "always":
        return ["reboot: always"] if running != d.plan.system else []
    res = d.hostctl("needs-reboot", d.plan.system, timeout=30)
    return res.stdout.split() if res.returncode == 0 else []


def drain(d: HostSession) -> Endpoint | None:
    """Cordon and drain the node through the first control plane that answers (another one when
    there is one); None when there is nothing to drain (no cluster yet, or no Node yet)."""
    ordered = sorted(d.plan.control_planes, key=lambda cp: cp.host == d.plan.host)
    for cp in ordered:
        exists = node_exists(d, cp)
        if exists is None:
            continue
        if not exists:
            return None
        for argv in drain_commands(d.plan.host, d.plan.health_timeout_s):
            res = d.ssh(argv, to=cp, timeout=d.plan.health_timeout_s + 60)
            if res.returncode != 0:
                uncordon(d, cp)
                raise DeliveryFailed(f"draining {d.plan.host} on {cp.host} before its reboot failed; nothing was "
                                     f"changed on it: {res.stderr.strip()[-500:]}")
        d.say(f"cordoned and drained through {cp.host}")
        return cp
    return None


def uncordon(d: HostSession, via: Endpoint | None, deadline: float | None = None) -> None:
    """Uncordon the node (retrying while its control plane's k3s comes back, when it is this host)."""
    if via is None:
        return
    def attempt() -> tuple[bool, str]:
        return d.ssh(uncordon_command(d.plan.host), to=via, timeout=30).returncode == 0, ""

    done, _ = poll(attempt, deadline or time.monotonic() + d.plan.health_timeout_s)
    if not done:
        raise DeliveryFailed(f"host {d.plan.host} rebooted but could not be uncordoned through {via.host}", ROLLED_BACK)


def wait_booted(d: HostSession, token: str, system: str, deadline: float) -> tuple[str, str]:
    """After `reboot`: ("booted", when the boot had finished starting, host clock) once the host
    booted `system` ("-": any) and is healthy and settled, ("other", what it booted) when it booted something else, ("unhealthy", why) when k3s
    restarted since the boot, ("timeout", last error) otherwise."""
    detail = "no answer"
    while True:
        res = d.hostctl("check-boot", token, system, str(int(d.plan.settle_s)), timeout=30)
        if res.returncode == 0:
            return "booted", parse_state(res.stdout).get("switched_at", "0")
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


def over_ssh(d: HostSession, call, attempts: int = 5, delays=None) -> subprocess.CompletedProcess:
    """`call` (a hostctl step), again while ssh cannot even connect: right after a boot, sshd can
    still be restarting, and a refused connection is no answer. Only then: a connection lost
    mid-command may have run it, and these steps are not repeated blindly."""
    delays = delays if delays is not None else backoff_delays(cap=5)
    for _ in range(attempts - 1):
        res = call()
        if not never_connected(res):
            return res
        d.say(f"ssh to {d.plan.host} failed ({res.stderr.strip().splitlines()[-1]}); trying again")
        time.sleep(next(delays))
    return call()


def confirm_boot(d: HostSession, digest: str) -> subprocess.CompletedProcess:
    """`confirm-boot`, retried while ssh cannot connect; before retrying, the host is checked again
    to still run the new system, so a confirmation never lands on a host that booted something else."""
    res = d.hostctl("confirm-boot", d.token, d.plan.system, digest, timeout=60)
    if not never_connected(res):
        return res
    state, detail = wait_booted(d, d.token, d.plan.system, time.monotonic() + d.plan.boot_timeout_s)
    if state != "booted":
        return subprocess.CompletedProcess([], 2, "", detail)
    return over_ssh(d, lambda: d.hostctl("confirm-boot", d.token, d.plan.system, digest, timeout=60))


def rollback(d: HostSession, via: Endpoint | None, reason: str) -> DeliveryFailed:
    """Previous generation the boot default again, files restored, reboot into it, uncordon."""
    res = over_ssh(d, lambda: d.hostctl("boot-rollback", d.token, reason, timeout=120))
    outcome = res.stdout.strip().splitlines()[0] if res.stdout.strip() else f"could not be rolled back ({reason})"
    state, detail = wait_booted(d, f"{d.token}-rollback", "-", time.monotonic() + d.plan.boot_timeout_s)
    if state != "booted":
        return DeliveryFailed(f"host {d.plan.host} {outcome}; it did not come back from that reboot ({detail})",
                              ROLLED_BACK)
    uncordon(d, via)
    return DeliveryFailed(f"host {d.plan.host} {outcome}", ROLLED_BACK)


def reboot_into(d: HostSession, digest: str, why: list[str]) -> None:
    """Steps 1-5 above; raises DeliveryFailed when the host is not confirmed on the new system."""
    d.say(f"{', '.join(why)} changed: rebooting into {d.plan.system}")
    start = time.monotonic()
    via = drain(d)
    d.timed("drain", start)
    start = time.monotonic()
    staged = d.ssh(["sh", REMOTE_HOSTCTL, "boot-stage", d.plan.system, d.token], timeout=600)
    d.timed("boot-stage", start)
    if staged.returncode != 0:
        uncordon(d, via)
        raise DeliveryFailed(f"preparing {d.plan.host}'s boot into {d.plan.system} failed; it was not rebooted: "
                             f"{staged.stderr.strip()[-500:]}")
    start = time.monotonic()
    d.ssh(["sh", REMOTE_HOSTCTL, "reboot", d.token], timeout=60)
    state, detail = wait_booted(d, d.token, d.plan.system, start + d.plan.boot_timeout_s)
    if state == "timeout":
        raise DeliveryFailed(
            f"host {d.plan.host} did not come back within {d.plan.boot_timeout_s:.0f}s after rebooting into "
            f"{d.plan.system} ({detail}); that generation was set to boot once only, so the next reset boots the "
            "previous one: reset the host (EC2: aws ec2 reboot-instances; metal: power-cycle it), then run "
            "`pulumi up` again, which reports what it booted",
            ROLLED_BACK,
        )
    d.timed("reboot", start)
    if state == "other":
        raise rollback(d, via, f"it did not boot {d.plan.system}: {detail}")
    if state == "unhealthy":
        raise rollback(d, via, f"not healthy after the reboot: {detail}")
    booted_at = float(detail or 0)
    start = time.monotonic()
    if d.plan.batch:
        ok, detail = poll(lambda: batch_ready(d, heartbeat_after=booted_at), time.monotonic() + d.plan.health_timeout_s)
        if not ok:
            raise rollback(d, via, f"its batch was not Ready within {d.plan.health_timeout_s:.0f}s of the reboot: {detail}")
    res = confirm_boot(d, digest)
    if res.returncode != 0:
        raise rollback(d, via, f"the new generation could not be made the boot default: {res.stderr.strip()}")
    uncordon(d, via)
    d.timed("confirm", start)


def fell_back(d: HostSession, state: dict[str, str]) -> None:
    """A boot into a new generation that was never confirmed. When the host runs another system
    (it was reset and its boot loader fell back): put the profile, files and boot default back to
    what it runs, say so, and stop; the next delivery tries again. When it runs that generation
    (the deployer was lost after the reboot): forget what a rollback would have restored, and go
    on; this delivery confirms or replaces it as any running system."""
    token, _, system = state.get("unconfirmed_boot", "").partition(" ")
    if not token:
        return
    if state.get("booted") == system:
        d.hostctl("forget-boot", token, timeout=30)
        d.say(f"booted {system} earlier without a confirmation; it runs: delivering as to any running system")
        return
    res = d.hostctl("boot-rollback", token, "its boot was never confirmed", timeout=120)
    outcome = res.stdout.strip().splitlines()[0] if res.stdout.strip() else "could not be put back"
    d.report.found["fell_back_from"] = system
    raise DeliveryFailed(f"host {d.plan.host} fell back on a reset after its boot into {system} was never "
                         f"confirmed: {outcome}; the next `pulumi up` tries again", ROLLED_BACK)
