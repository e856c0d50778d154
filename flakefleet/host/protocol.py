"""The host protocol: every verb of `nixos/host/hostctl.sh` as the deployer calls it, one typed
function each, and its answers parsed (deploy-rs' src/deploy.rs builds its activate, wait and
revoke commands the same way, each with a test of its exact string).

A verb is a `Call`: its arguments as hostctl takes them, how the script reaches the host and the
deployer's bound. Verbs that work before anything is installed send the script on stdin (`sh -s
-- VERB ...`); those of a delivery in progress run the copy staged with its files (`sh
/run/flakefleet/hostctl.sh VERB ...`, as /run may be mounted noexec), which the dead-man switch
runs too. `HostSession.hostctl(call)` runs a call over the session's pinned SSH; anything else
that reaches a host (ops/drift) runs `call.argv()` with `call.stdin()`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

# In the flake's host/ (nixos/host/): pushed hosts get it over SSH, pulled pools' instances in
# their agent's store path (nixos/host/default.nix).
HOSTCTL = Path(__file__).resolve().parents[2] / "nixos" / "host" / "hostctl.sh"
REMOTE_HOSTCTL = "/run/flakefleet/hostctl.sh"


@dataclass(frozen=True)
class Call:
    """One hostctl verb: `verb args...`, staged (the copy in /run/flakefleet) or sent on stdin."""

    verb: str
    args: tuple[str, ...] = ()
    staged: bool = False
    timeout: float = 120

    def argv(self) -> list[str]:
        """The command run on the host."""
        if self.staged:
            return ["sh", REMOTE_HOSTCTL, self.verb, *self.args]
        return ["sh", "-s", "--", self.verb, *self.args]

    def stdin(self) -> str | None:
        """What the command reads: the script itself, unless it runs the staged copy."""
        return None if self.staged else HOSTCTL.read_text()


def key_values(text: str) -> dict[str, str]:
    """hostctl's `key=value` lines as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@dataclass(frozen=True)
class HostState:
    """`state`'s answer: what the host runs and what flakefleet recorded there."""

    current: str = ""
    """The running system (/run/current-system)."""
    profile: str = ""
    """The system profile's generation link."""
    applied: str = ""
    """The digest (system and files) of the last confirmed delivery."""
    applied_system: str = ""
    applied_profile: str = ""
    """The profile generation flakefleet left: another one means a change outside flakefleet."""
    etcd_data: bool = False
    """Whether the host holds k3s' embedded etcd data."""
    restored: str = ""
    """The restore point it last restored or wiped for."""
    owner: str = ""
    """The delivery Command that holds it (its report's owner id)."""
    rolled_back: str = ""
    """An operator's rollback: `from to when`."""
    booted: str = ""
    """The booted system (/run/booted-system)."""
    reboot_pending: tuple[str, ...] = ()
    """The boot files of the running system that differ from the booted one's."""
    unconfirmed_boot: str = ""
    """`token system` of a boot into a new generation that was never confirmed."""

    @classmethod
    def parse(cls, text: str) -> HostState:
        raw = key_values(text)
        values = {f.name: raw[f.name] for f in fields(cls) if f.name in raw}
        values["etcd_data"] = raw.get("etcd_data") == "yes"
        values["reboot_pending"] = tuple(raw.get("reboot_pending", "").split())
        return cls(**values)


def switched_at(text: str) -> float:
    """`check`'s and `check-boot`'s answer: when the switch or boot finished (host clock; 0: unsaid)."""
    return float(key_values(text).get("switched_at", 0) or 0)


# ----------------------------------------------------------------------------- what any host answers


def state(timeout: float = 120) -> Call:
    """What the host runs (HostState.parse)."""
    return Call("state", timeout=timeout)


def claim(owner: str) -> Call:
    """Record which delivery Command holds the host."""
    return Call("claim", (owner,), timeout=30)


def previous() -> Call:
    """The newest confirmed system not running now (the rollback target; stdout, "" for none)."""
    return Call("previous")


def note_rollback(running: str, target: str) -> Call:
    """Record an operator's rollback (drift reports it)."""
    return Call("note-rollback", (running, target))


# ----------------------------------------------------------------------------- a live switch


def activate(system: str, token: str, deadman_s: int, switch_s: int) -> Call:
    """Install the staged files, arm the dead-man switch, `switch-to-configuration test` bounded by `switch_s`."""
    return Call("activate", (system, token, str(deadman_s), str(switch_s)), staged=True, timeout=switch_s + 60)


def check(token: str, system: str, settle_s: int) -> Call:
    """Is the host running `system`, healthy and settled (exit 0; 2 decided already; 3 not yet; 5 unhealthy)?"""
    return Call("check", (token, system, str(settle_s)), staged=True, timeout=30)


def confirm(token: str, system: str, digest: str) -> Call:
    """Keep `system`: disarm the dead-man switch, make it the profile's generation and boot default."""
    return Call("confirm", (token, system, digest), staged=True, timeout=60)


def rollback(token: str, reason: str, timeout: float) -> Call:
    """Back to the confirmed system, files restored."""
    return Call("rollback", (token, reason), staged=True, timeout=timeout)


# ----------------------------------------------------------------------------- a boot into a system


def needs_reboot(system: str) -> Call:
    """Which of `system`'s boot files differ from the booted system's (stdout, one a line)."""
    return Call("needs-reboot", (system,), timeout=30)


def boot_stage(system: str, token: str) -> Call:
    """Install the staged files; `system` a new generation booted once, the previous one the default."""
    return Call("boot-stage", (system, token), staged=True, timeout=600)


def reboot(token: str) -> Call:
    """Reboot now."""
    return Call("reboot", (token,), staged=True, timeout=60)


def check_boot(token: str, system: str, settle_s: int) -> Call:
    """After the reboot: booted `system` ("-": any), healthy and settled?"""
    return Call("check-boot", (token, system, str(settle_s)), timeout=30)


def confirm_boot(token: str, system: str, digest: str) -> Call:
    """Make the booted generation the boot default; record `digest`."""
    return Call("confirm-boot", (token, system, digest), timeout=60)


def boot_rollback(token: str, reason: str) -> Call:
    """The previous generation the default again, files restored."""
    return Call("boot-rollback", (token, reason), timeout=120)


def forget_boot(token: str) -> Call:
    """The host runs `token`'s system: drop what a rollback would restore."""
    return Call("forget-boot", (token,), timeout=30)


def restart_pending(token: str, note: str) -> Call:
    """Before a stop and start the deployer does (an instance resize): a boot `check-boot` waits for."""
    return Call("restart-pending", (token, note), timeout=30)


# ----------------------------------------------------------------------------- k3s membership


def retire() -> Call:
    """The host leaves the cluster: stop k3s."""
    return Call("retire", timeout=60)


def forget_etcd() -> Call:
    """Its etcd member is removed: set its etcd data aside."""
    return Call("forget-etcd", timeout=60)


def restore(restore_id: str, system: str, k3s_args: list[str]) -> Call:
    """Once per `restore_id`: stop k3s, run `system`'s k3s with the restore arguments."""
    return Call("restore", (restore_id, system, *k3s_args), staged=True, timeout=3600)


def wipe_etcd(restore_id: str) -> Call:
    """Once per `restore_id`: stop k3s, remove its etcd data (a server joining a restored cluster)."""
    return Call("wipe-etcd", (restore_id,), staged=True, timeout=600)
