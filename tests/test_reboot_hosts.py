"""Tier 4: systems whose kernel changes, on test hosts with emulated reboots (tests/reboots.py).

The stand-in systems carry a kernel, initrd and modules as their own store path (so they compare
as on NixOS) and a stand-in systemd-boot; hostctl decides, stages the one-shot entry and asks for
the reboot; the emulation reboots the host into the entry its boot loader would boot.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from flakefleet.plan.contract import PLAN_ENV, ROLLED_BACK
from tests.local_fleet import TOKENS, k3s_log, local_fleet, run_waves, stack
from tests.reboots import Reboots, loader_default
from tests.testhosts import run_as_deployer

ADDRESSES = {"cp-0": "127.0.0.81", "worker-0": "127.0.0.82", "worker-1": "127.0.0.83"}
NEW_KERNEL = {"standin_kernel": "6.13.0"}


@pytest.fixture(scope="module")
def fleet_hosts(tmp_path_factory):
    with local_fleet(tmp_path_factory.mktemp("reboots"), ADDRESSES) as (fleet, hosts), Reboots(hosts) as reboots:
        yield fleet, hosts, reboots


def deliver(fleet, plan):
    return run_as_deployer(fleet, ["flakefleet.delivery.runner"], {PLAN_ENV: plan.to_json(), **TOKENS}, timeout=300)


def report(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def booted(fleet_hosts):
    """The cluster on the stack's system with the usual kernel, each host booted from it."""
    fleet, hosts, reboots = fleet_hosts
    reboots.hang.clear()
    hosts["cp-0"].path("/etc/flakefleet/standin-notready").unlink(missing_ok=True)
    cfg, inv, _, plans = stack(hosts, fleet, reboot="never")  # whatever ran before: back on the usual kernel
    assert all(r.returncode == 0 for r in run_waves(fleet, cfg, inv, plans).values())
    hosts["cp-0"].path("/etc/flakefleet/standin-nodes").write_text(" ".join(ADDRESSES) + "\n")  # registered
    for host in hosts.values():  # as if each machine had booted this system
        link = host.root / "run" / "booted-system"
        link.unlink(missing_ok=True)
        link.symlink_to(host.current_system())
    return fleet, hosts, reboots


def changes(hosts, before: int) -> list[str]:
    """kubectl calls on cp-0 since `before` that change something."""
    return [l.split(" kubectl ", 1)[1] for l in k3s_log(hosts["cp-0"])[before:] if " kubectl " in l and " get " not in l]


def test_an_unchanged_kernel_switches_live(booted):
    fleet, hosts, reboots = booted
    cfg, inv, _, plans = stack(hosts, fleet, labels={"live": "yes"})
    boots = {n: list(b) for n, b in reboots.booted.items()}
    booted_from = {n: h.path("/run/booted-system").readlink() for n, h in hosts.items()}
    results = run_waves(fleet, cfg, inv, plans)
    for name in ("worker-0", "worker-1"):
        assert results[name].returncode == 0, results[name].stderr
        assert report(results[name])["outcome"] == "activated"
        assert "rebooting" not in results[name].stderr
        assert hosts[name].current_system() == plans[name].system
    assert reboots.booted == boots  # no host rebooted
    assert {n: h.path("/run/booted-system").readlink() for n, h in hosts.items()} == booted_from


def test_a_new_kernel_drains_reboots_confirms_and_uncordons_wave_by_wave(booted):
    fleet, hosts, reboots = booted
    before = len(k3s_log(hosts["cp-0"]))
    cfg, inv, _, plans = stack(hosts, fleet, spec_extra=NEW_KERNEL)
    results = run_waves(fleet, cfg, inv, plans)
    for name, host in hosts.items():
        assert results[name].returncode == 0, results[name].stderr
        assert report(results[name])["outcome"] == "rebooted"
        assert "kernel, initrd, kernel-modules changed: rebooting into" in results[name].stderr
        assert host.path("/run/booted-system").resolve() == host.path("/run/current-system").resolve()
        assert str(host.path("/run/booted-system").readlink()) == plans[name].system
        assert loader_default(host) == plans[name].system  # confirmed: the default from now on
    calls = changes(hosts, before)
    assert calls.index("uncordon cp-0") < calls.index("cordon worker-0")  # the control plane first
    assert calls.index("uncordon cp-0") < calls.index("cordon worker-1")
    for name in ADDRESSES:
        assert calls.index(f"cordon {name}") < calls.index(f"uncordon {name}")
        assert any(c.startswith(f"drain {name} ") for c in calls)


def test_unhealthy_after_the_reboot_goes_back_at_the_boot_loader(booted):
    fleet, hosts, reboots = booted
    previous = {n: h.current_system() for n, h in hosts.items()}
    cfg, inv, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.14.0"})
    hosts["cp-0"].path("/etc/flakefleet/standin-notready").write_text("worker-1\n")
    results = run_waves(fleet, cfg, inv, plans)
    assert results["cp-0"].returncode == 0, results["cp-0"].stderr
    for name in ("worker-0", "worker-1"):  # the batch: neither is confirmed, both go back
        proc = results[name]
        assert proc.returncode == ROLLED_BACK, proc.stderr
        assert f"host {name} rolled back at the boot loader to generation" in proc.stderr
        assert "its batch was not Ready within 5s of the reboot: not Ready: worker-1" in proc.stderr
        host = hosts[name]
        assert str(host.path("/run/booted-system").readlink()) == previous[name]
        assert host.current_system() == previous[name] and loader_default(host) == previous[name]


def test_a_host_that_never_comes_back_falls_back_on_reset(booted):
    fleet, hosts, reboots = booted
    host = hosts["worker-0"]
    previous = host.current_system()
    _, _, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.15.0"})
    plan = replace(plans["worker-0"], boot_timeout_s=5, batch=(), ready_via=())
    reboots.hang.add("worker-0")
    proc = deliver(fleet, plan)
    assert proc.returncode == ROLLED_BACK
    assert "did not come back within 5s after rebooting into" in proc.stderr
    assert "the next reset boots the previous one" in proc.stderr
    reboots.reset("worker-0")  # power-cycled: the one-shot was spent, the default is the old one
    assert str(host.path("/run/booted-system").readlink()) == previous
    again = deliver(fleet, plan)  # the next delivery reports the fallback, puts things back, stops
    assert again.returncode == ROLLED_BACK, again.stderr
    assert f"fell back on a reset after its boot into {plan.system} was never confirmed" in again.stderr
    assert host.current_system() == previous and loader_default(host) == previous
    third = deliver(fleet, plan)  # and the one after tries again, this time the host comes back
    assert third.returncode == 0, third.stderr
    assert str(host.path("/run/booted-system").readlink()) == plan.system


def test_reboot_never_switches_live_and_reports_the_reboot_pending(booted):
    fleet, hosts, reboots = booted
    cfg, inv, _, plans = stack(hosts, fleet, spec_extra={"standin_kernel": "6.16.0"}, reboot="never")
    proc = deliver(fleet, plans["worker-1"])
    assert proc.returncode == 0, proc.stderr
    assert report(proc)["outcome"] == "activated" and report(proc)["reboot_pending"] is True
    assert "reboot pending (kernel, initrd, kernel-modules changed, reboot: never)" in proc.stderr
    host = hosts["worker-1"]
    assert host.current_system() == plans["worker-1"].system
    assert str(host.path("/run/booted-system").readlink()) != plans["worker-1"].system
    p = plans["worker-1"]
    outputs = host.root.parent / "outputs.json"
    outputs.write_text(json.dumps({"nodes": {"worker-1": {
        "address": p.address, "ssh_port": p.port, "ssh_user": "root", "host_key": p.host_key, "pool": "workers",
        "wanted": p.system, "system": p.system}}}))
    drift = run_as_deployer(fleet, ["flakefleet", "drift", "--outputs", str(outputs), "--json"], {})
    row = json.loads(drift.stdout)["hosts"][0]
    assert row["status"] == "in sync" and row["reboot_pending"] is True
    assert "reboot pending: kernel, initrd, kernel-modules changed since it booted" in row["detail"]
