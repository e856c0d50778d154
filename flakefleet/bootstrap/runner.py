"""One host's install (its install Command's create): NixOS onto a machine running any Linux,
with nixos-anywhere from the pinned flake, once.

    ./scripts/flakefleet install            # create: install, unless it is installed already
    ./scripts/flakefleet install --update   # update: never installs; reports the last install

Phases: reach the machine (the installed system's pinned key first: an install done before is
not done again; else the pre-install key), read its facts, refuse to wipe a machine a flakefleet
delivery ran on unless a reinstall is asked for (then drain it and take it out of the cluster
first), build the host's disko script, the kexec tarball and nixos-anywhere from the flake, run
nixos-anywhere with the installed host key as an extra file, and wait for the installed system
to answer with that key. stdout is the report (kept in state: facts, disk, what was done).
Exit 0 installed (or already), 2 refused (nothing changed), 3 failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from flakefleet.bootstrap.command import (FACTS_QUERY, Facts, choose_disk, known_hosts_text, nixos_anywhere_argv,
                                         parse_facts, tools_refusal, wipe_refusal)
from flakefleet.bootstrap.hardware import firmware_refusal, gpu_refusal, network_refusal
from flakefleet.plan.network import UNIT_PATH, NetworkPlan
from flakefleet.plan.contract import INSTALL_PLAN_ENV, INSTALLED_KEY_ENV, INSTALLED_KEY_PATH, InstallPlan
from flakefleet.common.nix import NIX_FEATURES
from flakefleet.common.retry import poll
from flakefleet.common.ssh import known_hosts_line, remote_command, ssh_prefix
from flakefleet.plan.contract import IDENTITY_ENV
from flakefleet.common.cli import guard, required_env

REFUSED, FAILED = 2, 3
INSTALL_RECORD = "var/lib/flakefleet/install.json"  # on the installed system: which request installed it


class InstallError(Exception):
    def __init__(self, message: str, code: int = FAILED):
        super().__init__(message)
        self.code = code


def say(plan: InstallPlan, message: str) -> None:
    print(f"[{plan.host}] {message}", file=sys.stderr, flush=True)


def ssh(plan: InstallPlan, known_hosts: Path, remote: list[str] | str, timeout: float = 60,
        port: int | None = None) -> subprocess.CompletedProcess:
    words = remote if isinstance(remote, str) else remote_command(remote)
    argv = [*ssh_prefix(known_hosts, plan.address, port or plan.port, plan.user, plan.identity_file), words]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"no answer within {timeout:.0f}s")


def installed_record(plan: InstallPlan, tmp: Path) -> dict | None:
    """What the installed system says installed it, when it answers with the stack's key (else None)."""
    known = tmp / "installed_known_hosts"
    known.write_text(known_hosts_line(plan.address, plan.port, plan.host_key))
    res = ssh(plan, known, f"cat /{INSTALL_RECORD} 2>/dev/null || echo '{{}}'", timeout=30)
    if res.returncode != 0:
        return None
    try:
        return json.loads(res.stdout or "{}")
    except ValueError:
        return {}


def read_facts(plan: InstallPlan, known: Path) -> Facts:
    res = ssh(plan, known, FACTS_QUERY, timeout=60)
    if res.returncode != 0:
        raise InstallError(f"cannot reach {plan.address}:{plan.port} with its pinned key: "
                           f"{res.stderr.strip()[-300:] or res.returncode}; nothing was changed", REFUSED)
    try:
        return parse_facts(res.stdout)
    except ValueError as err:
        raise InstallError(f"its facts: {err}; nothing was changed", REFUSED) from None


def build(plan: InstallPlan, what: list[str], tmp: Path) -> str:
    """`nix build` of flake outputs or an expression; the store path."""
    argv = ["nix", *NIX_FEATURES, "build", "--no-link", "--json", *what]
    res = subprocess.run(argv, capture_output=True, text=True, cwd=tmp)
    try:
        return json.loads(res.stdout)[0]["outputs"]["out"]
    except (ValueError, LookupError, TypeError):
        raise InstallError(f"building {' '.join(what)[-200:]} failed; nothing was changed:\n{res.stderr.strip()[-1500:]}",
                           REFUSED) from None


def tools(plan: InstallPlan, disk: str, tmp: Path) -> tuple[str, str, str]:
    """(nixos-anywhere, the host's disko script, the kexec tarball), built from the flake."""
    flake = f"path:{Path(plan.flake).resolve()}"
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({**plan.spec, "install": {**plan.spec.get("install", {}), "disk": disk}}))
    disko = build(plan, ["--impure", "--expr", f"(builtins.getFlake {json.dumps(flake)}).lib.diskoScript "
                         f"(builtins.fromJSON (builtins.readFile {json.dumps(str(spec))}))"], tmp)
    here = subprocess.run(["nix", *NIX_FEATURES, "eval", "--impure", "--raw", "--expr", "builtins.currentSystem"],
                          capture_output=True, text=True).stdout.strip() or "x86_64-linux"
    program = build(plan, [f"{flake}#packages.{here}.nixos-anywhere"], tmp) + "/bin/nixos-anywhere"
    kexec = build(plan, [f"{flake}#packages.{plan.arch}.kexec-installer"], tmp)
    return program, disko, f"{kexec}/nixos-kexec-installer-noninteractive-{plan.arch}.tar.gz"


def ssh_dir_for_ssh_copy_id() -> None:
    """nixos-anywhere uploads the deploy key with ssh-copy-id, retried until it works
    (src/nixos-anywhere.sh: `until ssh-copy-id ...; do sleep 3`); ssh-copy-id makes its temporary
    files in ~/.ssh and fails without it. A deployer that never ran ssh (a CI runner) has none:
    the install would wait out its timeout. Made as ssh makes it (0700)."""
    (Path.home() / ".ssh").mkdir(mode=0o700, exist_ok=True)


def extra_files(plan: InstallPlan, env: dict[str, str], tmp: Path) -> Path:
    """The files nixos-anywhere copies onto the new root: the installed host key (0600) and the
    record of this install. In a 0700 directory, removed with it."""
    key = env.get(INSTALLED_KEY_ENV, "")
    if "PRIVATE KEY" not in key:
        raise InstallError(f"the installed system's host key is missing from the environment ({INSTALLED_KEY_ENV})")
    root = tmp / "root"
    (root / Path(INSTALLED_KEY_PATH).parent).mkdir(parents=True, mode=0o755)
    private = root / INSTALLED_KEY_PATH
    private.touch(mode=0o600)
    private.write_text(key if key.endswith("\n") else key + "\n")
    (root / (INSTALLED_KEY_PATH + ".pub")).write_text(plan.host_key.strip() + "\n")
    unit = NetworkPlan.from_json(plan.network).unit()
    if unit is not None:  # the installed system's network, as the stack says (plan/network.py)
        (root / Path(UNIT_PATH).parent).mkdir(parents=True, mode=0o755)
        (root / UNIT_PATH).write_text(unit)
    (root / Path(INSTALL_RECORD).parent).mkdir(parents=True, mode=0o755)
    (root / INSTALL_RECORD).write_text(json.dumps({"reinstall": plan.reinstall, "layout": plan.layout,
                                                   "system": plan.system, "at": int(time.time())}))
    return root


def take_out_of_cluster(plan: InstallPlan, env: dict[str, str]) -> None:
    """A node that is to be wiped: drained and deleted (its etcd member removed) as its removal does."""
    if not plan.delivery:
        raise InstallError("it is a node of the cluster, and this install has no delivery plan to drain it with", REFUSED)
    from flakefleet.cluster.membership import answered_state, take_out
    from flakefleet.host.session import HostSession
    from flakefleet.plan.contract import DeliveryFailed, DeliveryPlan

    session = HostSession(DeliveryPlan.from_json(plan.delivery), env)
    try:
        say(plan, take_out(session, answered_state(session)))
    except DeliveryFailed as err:
        raise InstallError(f"taking it out of the cluster first failed; nothing was wiped: {err}", REFUSED) from None
    finally:
        session.close()


def refusals(plan: InstallPlan, facts: Facts) -> list[str | None]:
    """Everything that stops an install before anything is changed (None where nothing does)."""
    hw = facts.hardware
    return [tools_refusal(facts), wipe_refusal(facts, plan.reinstall),
            firmware_refusal(hw, plan.layout, plan.firmware),
            network_refusal(hw, NetworkPlan.from_json(plan.network), plan.address), gpu_refusal(hw, plan.gpu)]


class Clock:
    """Seconds per phase for the report (as a delivery's timings): each stamp closes one."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.last = time.monotonic()

    def stamp(self, phase: str) -> None:
        now = time.monotonic()
        self.timings[phase] = round(now - self.last, 3)
        self.last = now


def install(plan: InstallPlan, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="flakefleet-install-") as name:
        tmp, clock = Path(name), Clock()
        record = installed_record(plan, tmp)
        clock.stamp("check")
        # Installed by the stack: again only for a reinstall it was not installed by (taking the
        # `reinstall` line out afterwards is no request).
        if record is not None and (plan.reinstall is None or record.get("reinstall") == plan.reinstall):
            say(plan, "installed already (it answers with the stack's host key); not installed again")
            return {"host": plan.host, "installed": "already", "reinstall": plan.reinstall, "timings": clock.timings}
        known = tmp / "known_hosts"
        # Installed before (a reinstall): the installer keeps its host keys, the stack's.
        key = plan.host_key if record is not None else plan.install_host_key
        known.write_text(known_hosts_text(plan.address, plan.port, key))
        facts = read_facts(plan, known)
        clock.stamp("facts")
        if facts.arch != plan.arch:
            raise InstallError(f"it is {facts.arch}, the pool's system is {plan.arch}; nothing was changed", REFUSED)
        for why in refusals(plan, facts):
            if why is not None:
                raise InstallError(f"{why}; nothing was changed", REFUSED)
        disk, why = choose_disk(facts, plan.disk)
        if disk is None:
            raise InstallError(f"{why}; nothing was changed", REFUSED)
        if facts.flakefleet:
            take_out_of_cluster(plan, env)
            clock.stamp("take_out")
        program, disko, kexec = tools(plan, disk, tmp)
        files = extra_files(plan, env, tmp)
        clock.stamp("tools")
        say(plan, f"installing {plan.system} on {disk} (layout {plan.layout}): its disks are wiped")
        argv = nixos_anywhere_argv(env.get("FLAKEFLEET_NIXOS_ANYWHERE") or program, disko, plan.system, kexec, files,
                                   known, plan.address, plan.port, plan.user, plan.identity_file)
        ssh_dir_for_ssh_copy_id()
        try:
            res = subprocess.run(argv, stdout=sys.stderr, stderr=sys.stderr, timeout=plan.boot_timeout_s * 3)
        except subprocess.TimeoutExpired:
            raise InstallError(f"nixos-anywhere did not finish within {plan.boot_timeout_s * 3:.0f}s (3 x "
                               "delivery.metal_boot_timeout_s); see its output above for the step it was in") from None
        if res.returncode != 0:
            raise InstallError(f"nixos-anywhere failed (exit {res.returncode}); see its output above")
        clock.stamp("nixos_anywhere")
        installed = tmp / "installed_known_hosts"
        installed.write_text(known_hosts_line(plan.address, plan.port, plan.host_key))
        up, _ = poll(lambda: (ssh(plan, installed, "true", timeout=30).returncode == 0, ""),
                     time.monotonic() + plan.boot_timeout_s, first=2, cap=15)
        if not up:
            raise InstallError(f"the installed system did not answer with the stack's host key within "
                               f"{plan.boot_timeout_s:.0f}s")
        clock.stamp("first_answer")
        say(plan, "installed; it answers with the stack's host key")
        return {"host": plan.host, "installed": "now", "disk": disk, "layout": plan.layout,
                "reinstall": plan.reinstall, "facts": facts.to_json(), "timings": clock.timings}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan = InstallPlan.from_json(required_env(INSTALL_PLAN_ENV))
    if plan.identity_file is None and os.environ.get(IDENTITY_ENV):  # as a delivery's (host/session.py)
        plan = replace(plan, identity_file=os.environ[IDENTITY_ENV])
    if argv[:1] == ["--update"]:
        # A changed input (the system, the plan) is the delivery's business: never an install.
        say(plan, "install inputs changed; nothing is installed again (a new hosts[].reinstall does that)")
        print(os.environ.get("PULUMI_COMMAND_STDOUT") or json.dumps({"host": plan.host, "installed": "before"}))
        return 0
    try:
        report = install(plan, dict(os.environ))
    except InstallError as err:
        say(plan, str(err))
        return err.code
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(guard("flakefleet install", main))
