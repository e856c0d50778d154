"""Tier 4: systems whose kernel changes, on test machines that really reboot (tests/machines:
systemd in nspawn; GRUB's choice from NixOS' grub.cfg and grubenv at each boot, as grub-reboot
and switch-to-configuration left them).

The stand-in systems carry a kernel, initrd and modules as their own store path (so they compare
as on NixOS) and install GRUB's grub.cfg as install-grub.pl does; hostctl decides, makes the
new generation the one-shot entry with the real grub-reboot and reboots with systemctl; the
machine's supervisor boots what GRUB would boot, or holds the machine (a boot that never comes up).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace

import pytest

from flakefleet.plan.contract import PLAN_ENV, ROLLED_BACK
from tests.local_fleet import (TOKENS, k3s_log, local_fleet, not_ready, run_waves, stack, waves_with_not_ready,
                               write_stack_file)
from tests.testhosts import ROOT, poll, run_as_deployer, run_command_as_deployer

ADDRESSES = {"cp-0": "127.0.0.81", "worker-0": "127.0.0.82", "worker-1": "127.0.0.83"}
NEW_KERNEL = {"standin_kernel": "6.13.0"}


@pytest.fixture(scope="module")
def fleet_hosts(tmp_path_factory):
    with local_fleet(tmp_path_factory.mktemp("reboots"), ADDRESSES) as (fleet, hosts):
        yield fleet, hosts


def deliver(fleet, plan):
    return run_as_deployer(fleet, ["flakefleet.delivery.runner"], {PLAN_ENV: plan.to_json(), **TOKENS}, timeout=600)


def report(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def booted(fleet_hosts):
    """The cluster on the stack's system with the usual kernel, each machine booted from it."""
    fleet, hosts = fleet_hosts
    not_ready(fleet)
    for host in hosts.values():
        if host.held:
            host.reset()
        host.clear_fault()
    cfg, inv, _, plans = stack(hosts, fleet, reboot="never")  # whatever ran before: back on the usual kernel
    results = run_waves(fleet, cfg, inv, plans)
    assert all(r.returncode == 0 for r in results.values()), {n: r.stderr for n, r in results.items()}
    for name, host in hosts.items():
        if host.booted_system() != plans[name].system:
            host.reboot()  # a real reboot: GRUB's default is the confirmed system
        assert host.booted_system() == plans[name].system
    return fleet, hosts


def changes(hosts, before: int) -> list[str]:
    """kubectl calls on cp-0 since `before` that change something."""
    return [l.split(" kubectl ", 1)[1] for l in k3s_log(hosts["cp-0"])[before:] if " kubectl " in l and " get " not in l]


def test_an_unchanged_kernel_switches_live(booted):
    fleet, hosts = booted
    cfg, inv, _, plans = stack(hosts, fleet, labels={"live": "yes"})
    boots = {n: (list(h.boots), h.boot_id()) for n, h in hosts.items()}
    results = run_waves(fleet, cfg, inv, plans)
    for name in ("worker-0", "worker-1"):
        assert results[name].returncode == 0, results[name].stderr
        assert report(results[name])["outcome"] == "activated"
        assert "rebooting" not in results[name].stderr
        assert hosts[name].current_system() == plans[name].system
    assert {n: (list(h.boots), h.boot_id()) for n, h in hosts.items()} == boots  # no machine rebooted


def test_a_new_kernel_drains_reboots_confirms_and_uncordons_wave_by_wave(booted):
    fleet, hosts = booted
    before = len(k3s_log(hosts["cp-0"]))
    boot_ids = {n: h.boot_id() for n, h in hosts.items()}
    cfg, inv, _, plans = stack(hosts, fleet, spec_extra=NEW_KERNEL)
    results = run_waves(fleet, cfg, inv, plans)
    for name, host in hosts.items():
        assert results[name].returncode == 0, results[name].stderr
        assert report(results[name])["outcome"] == "rebooted"
        assert "kernel, initrd, kernel-modules changed: rebooting into" in results[name].stderr
        assert host.boot_id() != boot_ids[name]  # really rebooted
        assert host.booted_system() == host.current_system() == plans[name].system
        assert host.boot_default() == plans[name].system  # confirmed: GRUB's default from now on
        assert grubenv(host).get("next_entry", "") == ""  # the one-shot entry was used up by that boot
    calls = changes(hosts, before)
    assert calls.index("uncordon cp-0") < calls.index("cordon worker-0")  # the control plane first
    assert calls.index("uncordon cp-0") < calls.index("cordon worker-1")
    for name in ADDRESSES:
        assert calls.index(f"cordon {name}") < calls.index(f"uncordon {name}")
        assert any(c.startswith(f"drain {name} ") for c in calls)


def grubenv(host) -> dict[str, str]:
    from tests.machines.grub import read_env

    return read_env(host.path("/boot/grub/grubenv"))


def test_unhealthy_after_the_reboot_goes_back_at_the_boot_loader(booted):
    fleet, hosts = booted
    previous = {n: h.current_system() for n, h in hosts.items()}
    cfg, inv, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.14.0"}, health_timeout_s=10)
    results = waves_with_not_ready(fleet, ("worker-1",), cfg, inv, plans)
    assert results["cp-0"].returncode == 0, results["cp-0"].stderr
    for name in ("worker-0", "worker-1"):  # the batch: neither is confirmed, both go back
        proc = results[name]
        assert proc.returncode == ROLLED_BACK, proc.stderr
        assert f"host {name} rolled back at the boot loader to generation" in proc.stderr
        assert "its batch was not Ready within 10s of the reboot: not Ready: worker-1" in proc.stderr
        host = hosts[name]
        assert host.booted_system() == host.current_system() == previous[name]
        assert host.boot_default() == previous[name]


def test_a_host_that_never_comes_back_falls_back_on_reset(booted):
    fleet, hosts = booted
    host = hosts["worker-0"]
    previous = host.current_system()
    _, _, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.15.0"})
    plan = replace(plans["worker-0"], batch=(), ready_via=())
    host.hold()  # the boot into the new kernel never comes up
    proc = deliver(fleet, replace(plan, boot_timeout_s=5))  # the one bound this test waits out
    assert proc.returncode == ROLLED_BACK
    assert "did not come back within 5s after rebooting into" in proc.stderr
    assert "the next reset boots the previous one" in proc.stderr
    assert host.held
    host.reset()  # power-cycled: GRUB used the one-shot entry on the boot that hung; the default is the old one
    assert host.booted_system() == previous
    again = deliver(fleet, plan)  # the next delivery reports the fallback, puts things back, stops
    assert again.returncode == ROLLED_BACK, again.stderr
    assert f"fell back on a reset after its boot into {plan.system} was never confirmed" in again.stderr
    assert host.current_system() == previous and host.boot_default() == previous
    third = deliver(fleet, plan)  # and the one after tries again, this time the host comes back
    assert third.returncode == 0, third.stderr
    assert host.booted_system() == plan.system == host.boot_default()


def test_a_deployer_lost_after_the_reboot_leaves_nothing_that_rolls_the_host_back_later(booted):
    """The host booted the new kernel, then its deployer vanished before confirming. The next
    deliveries go on from the system it runs; a later reboot into another kernel must not
    'fall back' to the generation before the lost one (a stale boot record restored old files)."""
    fleet, hosts = booted
    host = hosts["worker-1"]
    _, _, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.17.0"})
    lost = replace(plans["worker-1"], batch=(), ready_via=(), settle_s=30)  # time to lose it after the boot
    runner = subprocess.Popen([sys.executable, "-m", "flakefleet.delivery.runner"], cwd=ROOT,
                              env={**deployer_env(fleet), PLAN_ENV: lost.to_json(), **TOKENS},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        poll(lambda: host.booted_system() == lost.system, 300, "the boot into the new kernel")
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    _, _, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.17.0"}, labels={"after": "lost"})
    live = deliver(fleet, replace(plans["worker-1"], batch=(), ready_via=()))  # same kernel: live
    assert live.returncode == 0, live.stderr
    assert "booted " + lost.system + " earlier without a confirmation" in live.stderr
    _, _, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.18.0"}, labels={"after": "lost"})
    later = deliver(fleet, replace(plans["worker-1"], batch=(), ready_via=()))
    assert later.returncode == 0, later.stderr
    assert "fell back" not in later.stderr
    assert host.booted_system() == plans["worker-1"].system == host.boot_default()


def deployer_env(fleet) -> dict[str, str]:
    import os

    return {**os.environ, "FLAKEFLEET_SSH_IDENTITY": str(fleet.client_key),
            "FLAKEFLEET_SIGNING_KEY": fleet.signing_secret, "PYTHONPATH": str(ROOT)}


def test_a_reset_during_the_health_window_boots_the_confirmed_generation(booted):
    """A live switch is not the boot default until it is confirmed: a host reset while the gate
    waits comes back on the confirmed system (and the deployer's gate then fails)."""
    fleet, hosts = booted
    host = hosts["worker-0"]
    confirmed = host.current_system()
    _, _, _, plans = stack(hosts, fleet, labels={"reset": "in-window"})
    plan = replace(plans["worker-0"], batch=(), ready_via=(), settle_s=60)
    runner = subprocess.Popen([sys.executable, "-m", "flakefleet.delivery.runner"], cwd=ROOT,
                              env={**deployer_env(fleet), PLAN_ENV: plan.to_json(), **TOKENS},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: host.current_system() == plan.system, 300, "the live switch")
        host.power_cut()  # the supervisor boots it again, as a reset would
        poll(lambda: host.running() and host.booted_system() is not None, 300, "the boot after the reset")
        assert host.booted_system() == host.current_system() == confirmed
        assert host.boot_default() == confirmed
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()


def test_reboot_always_reboots_for_a_new_system_but_not_for_new_files(booted):
    fleet, hosts = booted
    host = hosts["worker-1"]
    _, _, _, plans = stack(hosts, fleet, labels={"always": "1"}, reboot="always")
    plan = replace(plans["worker-1"], batch=(), ready_via=())
    first = deliver(fleet, plan)
    assert first.returncode == 0, first.stderr
    assert report(first)["outcome"] == "rebooted"
    boot = host.boot_id()
    files = tuple(replace(f, content=f.content + " ") if f.content else f for f in plan.files)
    again = deliver(fleet, replace(plan, files=files))  # the same system, files changed
    assert again.returncode == 0, again.stderr
    assert report(again)["outcome"] == "activated" and host.boot_id() == boot


def test_reboot_never_switches_live_and_reports_the_reboot_pending(booted):
    fleet, hosts = booted
    cfg, inv, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.16.0"}, reboot="never")
    proc = deliver(fleet, plans["worker-1"])
    assert proc.returncode == 0, proc.stderr
    assert report(proc)["outcome"] == "activated" and report(proc)["reboot_pending"] is True
    assert "reboot pending (kernel, initrd, kernel-modules changed, reboot: never)" in proc.stderr
    host = hosts["worker-1"]
    assert host.current_system() == plans["worker-1"].system
    assert host.booted_system() != plans["worker-1"].system
    p = plans["worker-1"]
    outputs = host.root.parent / "outputs.json"
    outputs.write_text(json.dumps({"nodes": {"worker-1": {
        "address": p.address, "ssh_port": p.port, "ssh_user": "root", "host_key": p.host_key, "pool": "workers",
        "wanted": p.system, "system": p.system}}}))
    drift = run_as_deployer(fleet, ["flakefleet", "drift", "--outputs", str(outputs), "--json"], {})
    row = json.loads(drift.stdout)["hosts"][0]
    assert row["status"] == "in sync" and row["reboot_pending"] is True
    assert "reboot pending: kernel, initrd, kernel-modules changed since it booted" in row["detail"]


def test_an_operators_rollback_across_a_kernel_change_reboots(booted, tmp_path):
    """`flakefleet rollback` to a generation with another kernel boots it (a live switch would run
    the old kernel with the other generation's modules)."""
    fleet, hosts = booted
    host = hosts["worker-0"]
    before = host.current_system()
    _, _, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.19.0"})
    plan = replace(plans["worker-0"], batch=(), ready_via=())
    assert deliver(fleet, plan).returncode == 0
    assert host.booted_system() == plan.system
    write_stack_file(tmp_path, stack(hosts, fleet, raw_only=True))
    proc = run_command_as_deployer(
        fleet, f"./scripts/flakefleet rollback --stack local --host worker-0 --stacks-dir {tmp_path}", {}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"worker-0 rolled back from {plan.system} to {before}, rebooted into it" in proc.stdout
    assert host.booted_system() == host.current_system() == before
    assert host.boot_default() == before


def test_a_systemd_boot_host_reboots_through_its_one_shot_entry(tmp_path):
    """Bring-your-own metal boots with systemd-boot: `bootctl set-oneshot` for the new generation,
    `set-default` on confirmation (the stand-in bootctl keeps them in /boot/loader, as the EFI
    variables would be; the machine's supervisor boots as systemd-boot does)."""
    from pathlib import Path

    from flakefleet.nixos.evaluate import evaluate_systems
    from tests.conftest import STANDIN_FLAKE
    from tests.machines.machine import running_machines
    from tests.test_delivery_hosts import deliver as deliver_one
    from tests.test_health_hosts import plan as host_plan
    from tests.test_health_hosts import spec

    specs = {"old": spec("m1"), "new": spec("m1", standin_kernel="6.20.0")}
    systems, _ = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path / "cache")
    with running_machines(tmp_path / "fleet", {"metal-0": "127.0.0.89"}, bootloader="systemd-boot") as (fleet, hosts):
        host = hosts["metal-0"]
        assert deliver_one(fleet, host_plan(fleet, host, systems["old"])).returncode == 0
        host.reboot()
        assert host.booted_system() == systems["old"].out == host.boot_default()
        proc = deliver_one(fleet, host_plan(fleet, host, systems["new"]))
        assert proc.returncode == 0, proc.stderr
        assert report(proc)["outcome"] == "rebooted"
        assert host.booted_system() == systems["new"].out == host.boot_default()
        assert not host.path("/boot/loader/oneshot").exists()  # used by the boot that came up
