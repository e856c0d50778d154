"""Tier 4: a bring-your-own machine installed by the stack (pools[].bootstrap), through its install
Command's lifecycle (tests/lifecycle.py) on a test machine that starts as plain Debian (systemd,
sshd, its own host key: the pinned install key). The stand-in flake's nixos-anywhere restates the
real one's steps (tests/standin/nixos-anywhere.sh); its disko script wipes what a new disk would
not have. What is checked: create installs (the machine reboots into the pool's system and then
answers only with the stack's host key), its delivery then joins it to the cluster; update never
installs; a create with nothing asked (state lost) finds it installed; a new reinstall drains it,
takes it out of the cluster and installs it again; a machine a delivery ran on is never wiped
without one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from components.install import CREATE, UPDATE
from flakefleet.config import parse_stack_config
from flakefleet.config.stackfile import read_stack_file
from flakefleet.nixos.evaluate import evaluate_systems
from flakefleet.plan.contract import INSTALL_PLAN_ENV, INSTALLED_KEY_ENV, PLAN_ENV
from flakefleet.plan.hostplans import delivery_plans, install_plan
from flakefleet.plan.inventory import plan_inventory
from flakefleet.plan.specs import system_specs
from tests.conftest import STANDIN_FLAKE
from tests.lifecycle import LocalCommand
from tests.local_fleet import TEST_CA_HASH, TOKENS, local_fleet
from tests.machines.machine import add_machine
from tests.testhosts import keypair, poll, run_as_deployer, run_command_as_deployer

ADDRESSES = {"cp-0": "127.0.0.191", "byo-0": "127.0.0.192"}


@pytest.fixture(scope="module")
def fleet_hosts(tmp_path_factory):
    root = tmp_path_factory.mktemp("bootstrap")
    # UEFI machines, as the layout installed (single-disk: systemd-boot) is for.
    with local_fleet(root, ADDRESSES, bootloader="systemd-boot") as (fleet, hosts):
        # The key the stack makes for the installed system (components/install.py: tls.PrivateKey).
        installed = keypair(root / "installed_host_key", "byo-0")
        yield fleet, hosts, installed, (root / "installed_host_key").read_text()


def stack(hosts, installed: str, reinstall: str | None = None):
    """The local stack: cp-0 as it is, its worker pool the one machine the stack installs."""
    raw = read_stack_file("local")
    cp = {"name": "cp", "role": "control-plane", "provider": "metal", "hosts": [
        {"name": "cp-0", "address": hosts["cp-0"].address, "ssh_port": 2222, "ssh_host_key": hosts["cp-0"].host_key}]}
    byo = {"name": "workers", "role": "worker", "provider": "metal", "bootstrap": "nixos-anywhere", "hosts": [
        {"name": "byo-0", "address": hosts["byo-0"].address, "ssh_port": 2222, "install_host_key": hosts["byo-0"].host_key,
         **({"reinstall": reinstall} if reinstall else {})}]}
    raw["flakefleet:pools"] = json.dumps([cp, byo])
    raw["flakefleet:delivery"] = json.dumps({**json.loads(raw["flakefleet:delivery"]), "settle_s": 1,
                                             "health_timeout_s": 60, "metal_boot_timeout_s": 180})
    return raw


def planned(fleet, hosts, installed: str, reinstall: str | None = None):
    raw = stack(hosts, installed, reinstall)
    raw["flakefleet:signing_key"] = fleet.signing_secret
    cfg = parse_stack_config(raw, None, {"flakefleet:signing_key"})
    inv = plan_inventory(cfg)
    systems, _ = evaluate_systems(Path(STANDIN_FLAKE), system_specs(cfg, inv))
    for system in systems.values():  # built and published before the install (the Publish step)
        subprocess.run(["nix-store", "--realise", system.drv], check=True, capture_output=True)
    keys = {"cp-0": hosts["cp-0"].host_key, "byo-0": installed}
    plans = delivery_plans(cfg, inv, systems, keys, ca_hash=TEST_CA_HASH)
    host = next(h for h in inv.hosts if h.name == "byo-0")
    install = install_plan(cfg, inv, host, systems, installed, plans["byo-0"].to_json(), str(STANDIN_FLAKE))
    return plans, install


def install_command(fleet, private_key: str, plan, command: LocalCommand | None = None):
    cmd = command or LocalCommand(lambda c, env: run_command_as_deployer(fleet, c, env, timeout=900))
    return cmd, {"create": CREATE, "update": UPDATE, "environment": {
        INSTALL_PLAN_ENV: plan.to_json(), INSTALLED_KEY_ENV: private_key}, "triggers": [plan.reinstall or ""]}


def deliver(fleet, plan):
    return run_as_deployer(fleet, ["flakefleet.delivery.runner"], {PLAN_ENV: plan.to_json(), **TOKENS}, timeout=600)


def answers_with(fleet, host, key: str) -> bool:
    """Whether the machine's sshd presents `key` (the deployer's identity logs in either way)."""
    known = host.root / "check_known_hosts"
    known.write_text(f"[{host.address}]:{host.port} {' '.join(key.split()[:2])}\n")
    return subprocess.run(["ssh", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
                           "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-i", str(fleet.client_key), "-p", str(host.port),
                           f"root@{host.address}", "true"], capture_output=True).returncode == 0


@pytest.fixture
def installed_node(fleet_hosts):
    """byo-0 installed by its install Command and joined by its delivery (a no-op when it is)."""
    fleet, hosts, installed, private = fleet_hosts
    plans, plan = planned(fleet, hosts, installed)
    assert deliver(fleet, plans["cp-0"]).returncode == 0
    cmd, inputs = install_command(fleet, private, plan)
    steps = cmd.up(inputs)
    assert [s.proc.returncode for s in steps] == [0], [s.proc.stderr for s in steps]
    proc = deliver(fleet, plans["byo-0"])
    assert proc.returncode == 0, proc.stderr
    return fleet, hosts, installed, private, cmd, inputs, steps


def test_a_plain_linux_machine_is_installed_and_then_joins(installed_node):
    fleet, hosts, installed, _, _, _, steps = installed_node
    byo = hosts["byo-0"]
    report = json.loads(steps[0].proc.stdout)
    assert report["installed"] in ("now", "already"), report  # "already": an earlier test installed it
    assert answers_with(fleet, byo, installed) and not answers_with(fleet, byo, byo.host_key)
    assert byo.current_system() is not None and byo.current_system().endswith("-nixos-system-workers")
    log = byo.path("/var/lib/standin-disko.log").read_text()
    assert "disko: wiped and mounted /dev/" in log and "(layout single-disk)" in log
    poll(lambda: fleet.node("byo-0") is not None, 120, "byo-0's Node registered")


def test_the_first_install_reads_the_facts_and_boots_the_installed_system(fleet_hosts):
    """On a new plain Debian machine in byo-0's place (same address, same pre-install key)."""
    fleet, hosts, installed, private = fleet_hosts
    old = hosts["byo-0"]
    old.stop()
    byo = hosts["byo-0"] = add_machine(fleet, f"byo-0-{len(fleet.hosts)}", old.address,
                                      host_key_file=old.root / "ssh_host_ed25519_key", bootloader="systemd-boot")
    assert byo.current_system() is None and not answers_with(fleet, byo, installed)
    plans, plan = planned(fleet, hosts, installed)
    cmd, inputs = install_command(fleet, private, plan)
    boots = len(byo.boots)
    [step] = cmd.up(inputs)
    assert step.proc.returncode == 0, step.proc.stderr
    report = json.loads(step.proc.stdout)
    assert report["installed"] == "now" and report["disk"].startswith("/dev/")
    assert report["facts"]["arch"] == "x86_64-linux" and report["facts"]["missing"] == []
    assert not report["facts"]["flakefleet"] and not report["facts"]["nixos"]
    assert set(report["timings"]) == {"check", "facts", "tools", "nixos_anywhere", "first_answer"}
    assert len(byo.boots) > boots and byo.boots[-1] != "debian"  # rebooted into the pool's system
    assert "installing /nix/store/" in step.proc.stderr and "its disks are wiped" in step.proc.stderr
    assert answers_with(fleet, byo, installed) and not answers_with(fleet, byo, byo.host_key)


def test_an_update_never_installs_and_a_lost_state_finds_it_installed(installed_node):
    fleet, hosts, installed, private, cmd, inputs, _ = installed_node
    byo = hosts["byo-0"]
    boots = len(byo.boots)
    changed = {**inputs, "environment": {**inputs["environment"], "EXTRA": "an input changed"}}
    [step] = cmd.up(changed)
    assert step.op == "update" and step.proc.returncode == 0
    assert "nothing is installed again" in step.proc.stderr
    fresh, again = install_command(fleet, private, planned(fleet, hosts, installed)[1])
    [step] = fresh.up(again)  # create again, as after a lost state: it answers with the stack's key
    assert step.op == "create" and step.proc.returncode == 0
    assert json.loads(step.proc.stdout)["installed"] == "already"
    assert len(byo.boots) == boots and byo.path("/var/lib/flakefleet/deliveries.log").exists()  # not wiped


def test_a_machine_a_delivery_ran_on_is_not_wiped_without_a_reinstall(installed_node):
    """byo-0 runs a delivered system, but the stack's key is not the one it answers with (another
    stack made it, say): the install refuses, one line, and changes nothing."""
    fleet, hosts, installed, private, _, _, _ = installed_node
    byo = hosts["byo-0"]
    other_key = keypair(byo.root / "other_stack_key", "other")
    plans, plan = planned(fleet, hosts, other_key)
    from dataclasses import replace

    plan = replace(plan, install_host_key=installed)  # it answers with what it runs now
    cmd, inputs = install_command(fleet, (byo.root / "other_stack_key").read_text(), plan)
    [step] = cmd.up(inputs)
    assert step.proc.returncode == 2, step.proc.stderr
    assert "it runs a flakefleet system already (a delivery ran there): refusing to wipe it" in step.proc.stderr
    assert answers_with(fleet, byo, installed) and byo.path("/var/lib/flakefleet/deliveries.log").exists()


def test_a_new_reinstall_drains_the_node_and_installs_it_again(installed_node):
    fleet, hosts, installed, private, cmd, inputs, _ = installed_node
    byo = hosts["byo-0"]
    poll(lambda: fleet.node("byo-0") is not None, 120, "byo-0's Node registered")
    plans, plan = planned(fleet, hosts, installed, reinstall="2026-12-02")
    _, changed = install_command(fleet, private, plan)
    steps = cmd.up(changed)  # a new trigger: replaced, its create installs again
    assert [s.op for s in steps][:1] == ["create"] and steps[0].proc.returncode == 0, steps[0].proc.stderr
    assert "byo-0 drained, k3s stopped, node deleted (through cp-0)" in steps[0].proc.stderr
    report = json.loads(steps[0].proc.stdout)
    assert report["installed"] == "now" and "take_out" in report["timings"]
    assert answers_with(fleet, byo, installed)
    assert not byo.path("/var/lib/flakefleet/deliveries.log").exists()  # a new disk: delivered to again next
    proc = deliver(fleet, plans["byo-0"])
    assert proc.returncode == 0, proc.stderr
    poll(lambda: fleet.node("byo-0") is not None, 120, "byo-0's Node registered again")
    # The reinstall line taken out again: replaced (its trigger changed), and not wiped.
    boots = len(byo.boots)
    _, back = install_command(fleet, private, planned(fleet, hosts, installed)[1])
    [step] = cmd.up(back)
    assert step.op == "create" and step.proc.returncode == 0 and json.loads(step.proc.stdout)["installed"] == "already"
    assert len(byo.boots) == boots and byo.path("/var/lib/flakefleet/deliveries.log").exists()


def test_a_bios_machine_is_refused_the_uefi_layout_before_anything_changes(fleet_hosts):
    """byo-0's place taken by a plain Debian machine that booted by BIOS (GRUB): the pool's layout
    is single-disk (systemd-boot, UEFI), so the install stops after reading its facts."""
    fleet, hosts, installed, private = fleet_hosts
    old = hosts["byo-0"]
    old.stop()
    key = old.root / "ssh_host_ed25519_key"
    bios = hosts["byo-0"] = add_machine(fleet, f"byo-0-{len(fleet.hosts)}", old.address, host_key_file=key,
                                       bootloader="grub")
    try:
        _, plan = planned(fleet, hosts, installed)
        cmd, inputs = install_command(fleet, private, plan)
        [step] = cmd.up(inputs)
        assert step.proc.returncode == 2, step.proc.stderr
        assert ("the machine booted by BIOS, and layout single-disk is for UEFI machines: it would not boot. Use "
                "disk_layout: bios-single-disk") in step.proc.stderr and "nothing was changed" in step.proc.stderr
        # Nothing touched: no disko run, no system, still its own key.
        assert bios.current_system() is None and not bios.path("/var/lib/standin-disko.log").exists()
        assert answers_with(fleet, bios, bios.host_key)
    finally:
        bios.stop()
        hosts["byo-0"] = add_machine(fleet, f"byo-0-{len(fleet.hosts)}", old.address, host_key_file=key,
                                     bootloader="systemd-boot")


def test_facts_shows_the_machine_before_its_install_over_its_pinned_key(fleet_hosts, tmp_path):
    """`flakefleet facts` from the stack file alone, as a user runs it before the first update."""
    from tests.local_fleet import write_stack_file

    fleet, hosts, installed, _ = fleet_hosts
    write_stack_file(tmp_path, stack(hosts, installed))
    target = hosts["byo-0"]
    # Whatever byo-0 runs now (installed by an earlier test or not): ask with the key it serves.
    raw = stack(hosts, installed)
    if answers_with(fleet, target, installed):
        pools = json.loads(raw["flakefleet:pools"])
        pools[1]["hosts"][0]["install_host_key"] = installed
        raw["flakefleet:pools"] = json.dumps(pools)
        write_stack_file(tmp_path, raw)
    proc = run_as_deployer(fleet, ["flakefleet", "facts", "--stack", "local", "--host", "byo-0", "--stacks-dir",
                                   str(tmp_path)], {})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"byo-0 ({target.address}):" and "  arch: x86_64-linux" in lines
    assert "  firmware: UEFI" in lines  # a systemd-boot machine (tests/machines: /sys/firmware/efi)
    disks, network = lines.index("  disks:"), lines.index("  network:")
    assert network > disks + 1 and all(line.startswith("    /dev/") for line in lines[disks + 1:network])
    assert any(" link " in line and "(" in line for line in lines[network + 1:lines.index("  gpus:")])
    as_json = run_as_deployer(fleet, ["flakefleet", "facts", "--stack", "local", "--host", "byo-0", "--json",
                                      "--stacks-dir", str(tmp_path)], {})
    kept = json.loads(as_json.stdout)
    assert kept["host"] == "byo-0" and kept["firmware"] == "uefi" and kept["disks"] and kept["nics"]
    # A key that is not the machine's: unreachable (exit 3), one line, nothing else tried.
    wrong = json.loads(raw["flakefleet:pools"])
    wrong[1]["hosts"][0]["install_host_key"] = hosts["cp-0"].host_key
    write_stack_file(tmp_path, {**raw, "flakefleet:pools": json.dumps(wrong)})
    refused = run_as_deployer(fleet, ["flakefleet", "facts", "--stack", "local", "--host", "byo-0", "--stacks-dir",
                                      str(tmp_path)], {})
    assert refused.returncode == 3 and refused.stderr.startswith("flakefleet facts: byo-0 (")
    assert "could not be reached with its pinned key" in refused.stderr and "Traceback" not in refused.stderr
