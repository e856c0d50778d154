"""Tier 4: what only EC2 hosts go through, against a stand-in EC2 (tests/ec2hosts.py: moto's API,
with StopInstances and StartInstances powering the test machine off and on, the type changed
only while stopped, and the console carrying what NixOS' print-host-key writes):

- a new instance type, applied by the host's delivery in its wave (the Instance ignores type
  changes: pulumi-aws would stop and start it behind the rollout);
- the host key, learnt from the host's console before the first connection.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from flakefleet.plan.contract import INSTANCE_ENV, PLAN_ENV, PREVIOUS_STDOUT_ENV
from tests.ec2hosts import REGION, set_state, standin_ec2
from tests.local_fleet import TOKENS, k3s_log, local_fleet, run_waves, stack
from flakefleet.delivery.hostkey import TARGET_ENV
from tests.testhosts import keypair, run_as_deployer, run_command_as_deployer

ADDRESSES = {"cp-0": "127.0.0.151", "worker-0": "127.0.0.152", "worker-1": "127.0.0.153"}
OLD, NEW = "m6i.large", "m6i.xlarge"


@pytest.fixture(scope="module")
def fleet_hosts(tmp_path_factory):
    with local_fleet(tmp_path_factory.mktemp("resize"), ADDRESSES) as (fleet, hosts), standin_ec2() as ec2:
        instances = {name: ec2.add(host, OLD) for name, host in hosts.items()}
        yield fleet, hosts, ec2, instances


@pytest.fixture
def cluster(fleet_hosts):
    """Every machine running as an m6i.large instance, the cluster on the stack's system."""
    fleet, hosts, ec2, instances = fleet_hosts
    ec2.no_capacity.clear()
    for name, host in hosts.items():
        found = ec2.backend.get_instance(instances[name])
        found.instance_type = OLD
        if not host.running():
            host.start()
        set_state(found, "running")
        host.clear_fault()
    cfg, inv, _, plans = stack(hosts, fleet)
    results = run_waves(fleet, cfg, inv, plans)
    assert all(r.returncode == 0 for r in results.values()), {n: r.stderr for n, r in results.items()}
    ec2.calls.clear()
    return fleet, hosts, ec2, instances, plans


def deliver(fleet, ec2, plan, instance, previous=None):
    """The host's Command: its update when `previous` (the last report) is given, else its create."""
    env = {PLAN_ENV: plan.to_json(), INSTANCE_ENV: instance, **TOKENS, **ec2.env}
    if previous is not None:
        env[PREVIOUS_STDOUT_ENV] = json.dumps(previous)
    mode = ["--update"] if previous is not None else []
    return run_as_deployer(fleet, ["flakefleet.delivery.runner", *mode], env, timeout=600)


def as_ec2(plan, instance_type):
    return replace(plan, instance_type=instance_type, region=REGION)


def resize_to(fleet, ec2, plans, instances, host, instance_type=NEW):
    """The host's delivery, updated to `instance_type` from a last report that recorded OLD."""
    previous = {"host": host, "system": plans[host].system, "instance": instances[host], "instance_type": OLD}
    return deliver(fleet, ec2, as_ec2(plans[host], instance_type), instances[host], previous)


def changes(hosts, before):
    return [l.split(" kubectl ", 1)[1] for l in k3s_log(hosts["cp-0"])[before:] if " kubectl " in l and " get " not in l]


def test_a_new_type_is_drained_stopped_resized_started_and_health_gated(cluster):
    fleet, hosts, ec2, instances, plans = cluster
    worker = hosts["worker-0"]
    boot, before = worker.boot_id(), len(k3s_log(hosts["cp-0"]))
    proc = resize_to(fleet, ec2, plans, instances, "worker-0")
    assert proc.returncode == 0, proc.stderr
    assert f"instance type {OLD} -> {NEW}: draining" in proc.stderr
    assert f"resized to {NEW} and confirmed healthy" in proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["instance_type"] == NEW
    assert ec2.instance_type(instances["worker-0"]) == NEW
    i = instances["worker-0"]
    assert ec2.calls == [f"stop {i}", f"modify {i} {NEW}", f"start {i} {NEW}"]
    assert worker.boot_id() not in (None, boot)  # the machine really went down and came back
    assert changes(hosts, before) == [
        "cordon worker-0",
        "drain worker-0 --ignore-daemonsets --delete-emptydir-data --timeout=60s",
        "uncordon worker-0",
    ]
    assert hosts["worker-1"].boot_id() is not None and ec2.instance_type(instances["worker-1"]) == OLD


def test_a_type_without_capacity_gets_the_old_type_back_and_fails(cluster):
    fleet, hosts, ec2, instances, plans = cluster
    ec2.no_capacity.add(NEW)
    proc = resize_to(fleet, ec2, plans, instances, "worker-1")
    assert proc.returncode != 0
    assert f"EC2 refused worker-1's new type {NEW}; it runs {OLD} again, uncordoned" in proc.stderr
    assert "InsufficientInstanceCapacity" in proc.stderr
    i = instances["worker-1"]
    assert ec2.calls == [f"stop {i}", f"modify {i} {NEW}", f"start {i} {NEW}", f"modify {i} {OLD}", f"start {i} {OLD}"]
    assert ec2.instance_type(i) == OLD and hosts["worker-1"].running()


def test_a_host_unhealthy_after_its_restart_stays_cordoned(cluster):
    fleet, hosts, ec2, instances, plans = cluster
    before = len(k3s_log(hosts["cp-0"]))
    hosts["worker-0"].set_fault("crashloop", plans["worker-0"].system)  # k3s fails on the next boot
    proc = resize_to(fleet, ec2, plans, instances, "worker-0")
    assert proc.returncode != 0
    assert f"worker-0 did not come back healthy after its restart as {NEW}" in proc.stderr
    assert "it stays cordoned and the rollout stops here" in proc.stderr
    assert "uncordon worker-0" not in changes(hosts, before)


def test_an_unchanged_type_recorded_runs_nothing_anywhere(cluster):
    fleet, hosts, ec2, instances, plans = cluster
    first = deliver(fleet, ec2, as_ec2(plans["worker-0"], OLD), instances["worker-0"])  # a create: EC2 asked once
    report = json.loads(first.stdout.splitlines()[-1])
    assert first.returncode == 0 and report["instance_type"] == OLD and ec2.calls == []
    log = hosts["worker-0"].path("/var/lib/flakefleet/deliveries.log").read_text()
    proc = deliver(fleet, ec2, as_ec2(plans["worker-0"], OLD), instances["worker-0"], report)
    assert proc.returncode == 0 and "no command on the host" in proc.stderr
    assert hosts["worker-0"].path("/var/lib/flakefleet/deliveries.log").read_text() == log


def host_key_step(fleet, ec2, host, name, instance):
    """The host's host-key Command (components/machine.py), as pulumi-command runs it."""
    target = {"host": name, "address": host.address, "port": host.port, "region": REGION}
    env = {INSTANCE_ENV: instance, TARGET_ENV: json.dumps(target), **ec2.env}
    return run_command_as_deployer(fleet, "./scripts/flakefleet host-key", env)


def test_the_host_key_is_the_one_its_console_printed(cluster):
    fleet, hosts, ec2, instances, _ = cluster
    proc = host_key_step(fleet, ec2, hosts["worker-1"], "worker-1", instances["worker-1"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == hosts["worker-1"].host_key.split()[:2]
    assert f"matches instance {instances['worker-1']}'s console" in proc.stderr


def test_a_key_other_than_the_one_on_the_console_is_refused(cluster, tmp_path):
    fleet, hosts, ec2, instances, _ = cluster
    keypair(tmp_path / "other", "another machine")  # what the console shows is not what answers
    ec2.console_keys[instances["worker-1"]] = str(tmp_path / "other.pub")
    try:
        proc = host_key_step(fleet, ec2, hosts["worker-1"], "worker-1", instances["worker-1"])
    finally:
        ec2.console_keys.clear()
    assert proc.returncode != 0 and proc.stdout == ""
    assert "something else answers at its address; refusing to connect" in proc.stderr


def test_an_instance_whose_user_data_installed_its_key_is_checked_against_that(cluster):
    """Instances made before hosts made their own keys: the stack's key was in their user data."""
    fleet, hosts, ec2, instances, _ = cluster
    key = " ".join(hosts["cp-0"].host_key.split()[:2])
    old = f"#!/bin/sh\nprintf '%s\\n' '{key}' > /etc/ssh/ssh_host_ed25519_key.pub\n"
    ec2.backend.get_instance(instances["cp-0"]).user_data = [old.encode()]
    ec2.console_keys[instances["cp-0"]] = "/nonexistent"  # its first boot's console is gone
    try:
        proc = host_key_step(fleet, ec2, hosts["cp-0"], "cp-0", instances["cp-0"])
    finally:
        ec2.console_keys.clear()
        ec2.backend.get_instance(instances["cp-0"]).user_data = None
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == key.split()
