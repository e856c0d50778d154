"""Tier 4: each host's delivery Command through pulumi-command's lifecycle (tests/lifecycle.py) on
test hosts: replacements of every kind never take a host out of the cluster, removal does,
bookkeeping-only changes run nothing on the host, and a failed host in a batch is named.

Every test first brings the local stack's cluster up through fresh Command state (hosts already
on the stack's system only get claimed), so each passes alone and in any order.
"""

from __future__ import annotations

import json

import pytest

from flakefleet.plan.contract import ROLLED_BACK
from flakefleet.common.outputs import NodeRow
from flakefleet.ops.drift import split_pools
from tests.lifecycle import LocalCommand
from tests.local_fleet import k3s_log, local_fleet, stack, up, write_stack_file
from tests.machines.machine import add_machine
from tests.testhosts import poll, run_command_as_deployer

ADDRESSES = {"cp-0": "127.0.0.51", "worker-0": "127.0.0.52", "worker-1": "127.0.0.53"}


@pytest.fixture(scope="module")
def fleet_hosts(tmp_path_factory):
    with local_fleet(tmp_path_factory.mktemp("lifecycle"), ADDRESSES) as (fleet, hosts):
        yield fleet, hosts


@pytest.fixture
def cluster(fleet_hosts):
    """The cluster formed on the stack's current system, and fresh Pulumi state for it."""
    fleet, hosts = fleet_hosts
    for host in hosts.values():
        host.clear_fault()
    cfg, inv, systems, plans = stack(hosts, fleet)
    commands = {h: LocalCommand(lambda cmd, env: run_command_as_deployer(fleet, cmd, env)) for h in ADDRESSES}
    steps = up(commands, inv, cfg, plans)
    assert all(s.proc.returncode == 0 for ss in steps.values() for s in ss), \
        {h: [s.proc.stderr for s in ss] for h, ss in steps.items()}
    return fleet, hosts, commands, (cfg, inv, plans)


def drained(host_log_before: int, cp) -> list[str]:
    """kubectl calls on the control plane since `host_log_before` that change something (no `get`)."""
    return [l for l in k3s_log(cp)[host_log_before:] if " kubectl " in l and " kubectl get " not in l]


def ops(steps):
    return [s.op for s in steps]


def test_forced_replace_with_an_identical_plan_keeps_the_host_in_the_cluster(cluster):
    fleet, hosts, commands, (cfg, inv, plans) = cluster
    before = len(k3s_log(hosts["cp-0"]))
    steps = up(commands, inv, cfg, plans, replace={"worker-0"})  # pulumi up --replace <urn of worker-0>
    assert ops(steps["worker-0"]) == ["create", "delete"] and ops(steps["worker-1"]) == []
    created, deleted = steps["worker-0"]
    assert created.proc.returncode == 0 and deleted.proc.returncode == 0, deleted.proc.stderr
    assert "superseded by a newer delivery; nothing to remove" in deleted.proc.stderr
    assert drained(before, hosts["cp-0"]) == []  # no cordon, drain or Node deletion
    assert "retired" not in hosts["worker-0"].path("/var/lib/flakefleet/deliveries.log").read_text()


def test_a_new_system_is_an_update_and_never_a_removal(cluster):
    fleet, hosts, commands, (cfg, inv, _) = cluster
    before = len(k3s_log(hosts["cp-0"]))
    _, _, _, plans = stack(hosts, fleet, labels={"release": "next"})
    steps = up(commands, inv, cfg, plans)
    assert ops(steps["worker-0"]) == ["update"] and ops(steps["worker-1"]) == ["update"]
    assert all(s.proc.returncode == 0 for s in steps["worker-0"] + steps["worker-1"])
    assert hosts["worker-0"].current_system() == plans["worker-0"].system
    assert drained(before, hosts["cp-0"]) == []


def test_a_replaced_instance_is_delivered_again_and_never_removed(cluster):
    """EC2 replaces an instance delete-first: the new machine (same address, same pinned host key,
    empty disk) gets the system through the Command's update; the dead machine's stale Node (and
    so its etcd member) is deleted before the new one joins; no drain, no removal."""
    fleet, hosts, commands, (cfg, inv, plans) = cluster
    old = hosts["worker-1"]
    old.stop()
    # The EC2 host key is pinned and installed at first boot: the new machine has the same key.
    new = hosts["worker-1"] = add_machine(fleet, "worker-1-new", old.address, host_key_file=old.root / "ssh_host_ed25519_key")
    assert new.host_key.split()[:2] == old.host_key.split()[:2] and new.current_system() is None
    before = len(k3s_log(hosts["cp-0"]))
    steps = up(commands, inv, cfg, plans, instance={"worker-1": "i-0new"})
    assert ops(steps["worker-1"]) == ["update"], steps
    proc = steps["worker-1"][0].proc
    assert proc.returncode == 0, proc.stderr
    assert "delivering: instance changed" in proc.stderr
    assert "a new machine took worker-1's place: deleted its stale Node through cp-0" in proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["instance"] == "i-0new"
    assert new.current_system() == plans["worker-1"].system
    calls = [l.split(" kubectl ", 1)[1] for l in drained(before, hosts["cp-0"])]
    assert calls == ["delete node worker-1 --ignore-not-found"]  # the stale Node only: no cordon, no drain


def test_bookkeeping_changes_run_nothing_on_any_host(cluster):
    """Batches of one instead of two change worker-0's plan (its batch): recorded, no SSH to
    worker-0."""
    fleet, hosts, commands, (cfg, inv, plans) = cluster
    logs = {h: hosts[h].path("/var/lib/flakefleet/deliveries.log").read_text() for h in ("cp-0", "worker-0")}
    cfg2, inv2, _, plans2 = stack(hosts, fleet, max_parallel=1)
    assert plans2["worker-0"].batch != plans["worker-0"].batch and plans2["worker-0"].system == plans["worker-0"].system
    previous = commands["worker-0"].stdout
    steps = up({h: commands[h] for h in plans2}, inv2, cfg2, plans2)
    assert ops(steps["worker-0"]) == ["update"] and ops(steps["cp-0"]) == []  # cp-0's plan did not change
    assert steps["worker-0"][0].proc.returncode == 0
    assert "no command on the host" in steps["worker-0"][0].proc.stderr
    for h in ("cp-0", "worker-0"):
        assert hosts[h].path("/var/lib/flakefleet/deliveries.log").read_text() == logs[h]  # untouched
    assert commands["worker-0"].stdout.strip() == previous.strip()  # the report Pulumi keeps is unchanged


def test_a_host_leaving_the_stack_is_drained_and_no_other_host_is_touched(cluster):
    """Issue 38: worker-1 leaves the stack, in the order `pulumi up` runs it: the other hosts'
    Commands first, then worker-1's delete. cp-0's plan is unchanged (its firewall admits the
    pool's network, not each host), so it runs nothing; worker-0's changes only in its batch
    (bookkeeping: nothing runs on it); then worker-1 is cordoned, drained and its Node deleted,
    while every firewall still admits it."""
    fleet, hosts, commands, (cfg, inv, plans) = cluster
    logs = {h: hosts[h].path("/var/lib/flakefleet/deliveries.log").read_text() for h in ("cp-0", "worker-0")}
    peers = hosts["cp-0"].path("/etc/flakefleet/peers.json").read_text()
    assert json.loads(peers) == {"control-plane": ["127.0.0.0/24"], "worker": ["127.0.0.0/24"]}
    before = len(k3s_log(hosts["cp-0"]))
    cfg2, inv2, _, plans2 = stack(hosts, fleet, drop=("worker-1",))
    assert plans2["cp-0"] == plans["cp-0"] and plans2["worker-0"].files == plans["worker-0"].files
    steps = up({h: commands[h] for h in plans2}, inv2, cfg2, plans2)
    assert ops(steps["cp-0"]) == [] and ops(steps["worker-0"]) == ["update"]
    assert "no command on the host" in steps["worker-0"][0].proc.stderr
    for h in ("cp-0", "worker-0"):
        assert hosts[h].path("/var/lib/flakefleet/deliveries.log").read_text() == logs[h]  # untouched
    assert drained(before, hosts["cp-0"]) == []  # nothing happened to worker-1 yet
    step = commands["worker-1"].destroy()
    assert step.proc.returncode == 0, step.proc.stderr
    assert "worker-1 drained, k3s stopped, node deleted (through cp-0)" in step.proc.stderr
    assert [l.split(" kubectl ", 1)[1] for l in drained(before, hosts["cp-0"])] == [
        "cordon worker-1",
        "drain worker-1 --ignore-daemonsets --delete-emptydir-data --timeout=60s",
        "delete node worker-1 --ignore-not-found",
    ]
    assert "retired" in hosts["worker-1"].path("/var/lib/flakefleet/deliveries.log").read_text()
    assert hosts["cp-0"].path("/etc/flakefleet/peers.json").read_text() == peers
    assert fleet.node("worker-1") is None and fleet.node("worker-0") is not None


def test_a_host_added_back_after_leaving_rejoins_the_cluster(cluster):
    """worker-1 leaves the stack (drained, k3s stopped, Node deleted) and is added back with the
    same system: its new Command switches it again, which starts k3s, so its Node registers."""
    fleet, hosts, commands, (cfg, inv, plans) = cluster
    assert commands["worker-1"].destroy().proc.returncode == 0
    assert fleet.node("worker-1") is None
    commands["worker-1"] = LocalCommand(lambda cmd, env: run_command_as_deployer(fleet, cmd, env))
    steps = up(commands, inv, cfg, plans)
    assert ops(steps["worker-1"]) == ["create"] and steps["worker-1"][0].proc.returncode == 0
    assert "nothing to do" not in steps["worker-1"][0].proc.stderr  # switched again, not only claimed
    assert hosts["worker-1"].sh("systemctl is-active k3s.service").stdout.strip() == "active"
    poll(lambda: fleet.node("worker-1") is not None, 120, "worker-1's Node registered again")


def test_a_dead_host_is_removed_by_force_and_then_leaves_the_stack(cluster, tmp_path):
    """worker-1 dies (no boot comes up): a plain removal could not drain it. `flakefleet remove
    --force` deletes its Node through cp-0; then its delivery Command's delete (the host taken
    out of the stack) finds the Node gone and succeeds without the host."""
    fleet, hosts, commands, _ = cluster
    dead = hosts["worker-1"]
    poll(lambda: fleet.node("worker-1") is not None, 120, "worker-1's Node registered")
    dead.hold()
    dead.power_cut()
    try:
        write_stack_file(tmp_path, stack(hosts, fleet, raw_only=True))
        asked = run_command_as_deployer(
            fleet, f"./scripts/flakefleet remove --stack local --host worker-1 --stacks-dir {tmp_path}", {})
        assert asked.returncode == 1 and "pass --force" in asked.stderr  # never implicit
        proc = run_command_as_deployer(
            fleet, f"./scripts/flakefleet remove --stack local --host worker-1 --force --stacks-dir {tmp_path}", {})
        assert proc.returncode == 0, proc.stderr
        assert "worker-1: Node deleted through cp-0" in proc.stdout
        step = commands["worker-1"].destroy()
        assert step.proc.returncode == 0, step.proc.stderr
        assert "worker-1: its Node is gone already (asked cp-0); nothing to drain" in step.proc.stderr
        again = run_command_as_deployer(
            fleet, f"./scripts/flakefleet remove --stack local --host worker-1 --force --stacks-dir {tmp_path}", {})
        assert again.returncode == 0 and "no Node in the cluster" in again.stdout
    finally:
        dead.reset()


def test_a_failed_host_in_a_batch_is_named_and_its_pool_reported_split(cluster):
    fleet, hosts, commands, (cfg, inv, _) = cluster
    _, _, _, plans = stack(hosts, fleet, labels={"release": "broken-on-worker-0"})
    hosts["worker-0"].set_fault("fail", plans["worker-0"].system)
    steps = up(commands, inv, cfg, plans)
    failed, ok = steps["worker-0"][0].proc, steps["worker-1"][0].proc
    assert failed.returncode == ROLLED_BACK and ok.returncode == 0, (failed.stderr, ok.stderr)
    assert "rolled back to generation" in failed.stderr
    assert "other hosts of its batch (worker-1) may have switched" in failed.stderr
    assert "python -m flakefleet drift" in failed.stderr
    # What the next preview's `pools` output and `flakefleet drift` say (from the hosts' state).
    nodes = {h: NodeRow(pool="workers", wanted=plans[h].system, system=hosts[h].current_system())
             for h in ("worker-0", "worker-1")}
    split = split_pools(nodes)["workers"]
    assert split["hosts"] == 2 and list(split["off_wanted"]) == ["worker-0"]



def test_operator_rollback_and_the_way_back(cluster, tmp_path):
    fleet, hosts, commands, (cfg, inv, base) = cluster
    _, _, _, newer = stack(hosts, fleet, labels={"release": "newer"})
    steps = up(commands, inv, cfg, newer)
    assert all(s.proc.returncode == 0 for ss in steps.values() for s in ss)
    w = hosts["worker-0"]
    assert w.current_system() == newer["worker-0"].system

    write_stack_file(tmp_path, stack(hosts, fleet, raw_only=True))
    proc = run_command_as_deployer(
        fleet, f"./scripts/flakefleet rollback --stack local --host worker-0 --stacks-dir {tmp_path}", {})
    assert proc.returncode == 0, proc.stderr
    assert f"worker-0 rolled back from {newer['worker-0'].system} to {base['worker-0'].system}" in proc.stdout
    assert w.current_system() == base["worker-0"].system
    urn = "urn:pulumi:local::flakefleet::flakefleet:index:Delivery$command:local:Command::ff-local-deliver-worker-0"
    assert f"pulumi up --stack local --replace '{urn}'" in proc.stdout

    nodes = {"worker-0": {"address": w.address, "ssh_port": w.port, "ssh_user": "root", "host_key": w.host_key,
                          "pool": "workers", "wanted": newer["worker-0"].system, "system": newer["worker-0"].system}}
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"nodes": nodes}))
    report = run_command_as_deployer(fleet, f"./scripts/flakefleet drift --outputs {outputs} --json", {})
    assert report.returncode == 2
    row = json.loads(report.stdout)["hosts"][0]
    assert row["status"] == "drifted" and "rolled back by `flakefleet rollback`" in row["detail"]
    assert not row["outside_flakefleet"]  # flakefleet did it, and recorded it

    assert up(commands, inv, cfg, newer) == {h: [] for h in ADDRESSES}  # a plain `pulumi up` runs nothing
    steps = up(commands, inv, cfg, newer, replace={"worker-0"})  # the printed --replace
    assert [s.proc.returncode for s in steps["worker-0"]] == [0, 0]
    assert w.current_system() == newer["worker-0"].system
    assert run_command_as_deployer(fleet, f"./scripts/flakefleet drift --outputs {outputs}", {}).returncode == 0
