"""Tier 4: etcd membership as control planes leave, on three servers with the stand-in k3s (its
members as k3s keeps them, its /db/info as the supervisor serves it, tests/standin/k3s.py).

A server's delivery Command's delete (the host taken out of the stack) drains it, deletes its
Node, and waits until its etcd member is gone from the member list before it succeeds, so the
machine is never deleted while it is still a member; its etcd data is set aside so the host,
added back, joins as a new member. A member k3s did not remove stops the removal.

Every test first brings the three servers up through fresh Command state, so each passes alone
and in any order.
"""

from __future__ import annotations

import json

import pytest

from flakefleet.cluster.kubectl import ETCD_MEMBERS_QUERY, etcd_members_of
from tests.lifecycle import LocalCommand
from tests.local_fleet import local_fleet, stack, up
from tests.testhosts import poll, run_command_as_deployer

ADDRESSES = {"cp-0": "127.0.0.171", "cp-1": "127.0.0.172", "cp-2": "127.0.0.173"}


def three_servers(raw: dict) -> None:
    """The local stack with three control planes and no workers."""
    pools = json.loads(raw["flakefleet:pools"])
    cp = next(p for p in pools if p["role"] == "control-plane")
    cp["hosts"] = [{**cp["hosts"][0], "name": name} for name in ADDRESSES]
    raw["flakefleet:pools"] = json.dumps([cp])


@pytest.fixture(scope="module")
def fleet_hosts(tmp_path_factory):
    with local_fleet(tmp_path_factory.mktemp("etcd"), ADDRESSES) as (fleet, hosts):
        yield fleet, hosts


@pytest.fixture
def servers(fleet_hosts):
    """The three servers up on the stack's system, every one a member, and fresh Command state."""
    fleet, hosts = fleet_hosts
    (fleet.apiserver / "members-kept").unlink(missing_ok=True)
    cfg, inv, _, plans = stack(hosts, fleet, edit=three_servers, health_timeout_s=30)
    commands = {h: LocalCommand(lambda cmd, env: run_command_as_deployer(fleet, cmd, env)) for h in ADDRESSES}
    steps = up(commands, inv, cfg, plans)
    assert all(s.proc.returncode == 0 for ss in steps.values() for s in ss), \
        {h: [s.proc.stderr for s in ss] for h, ss in steps.items()}
    poll(lambda: all(listed(hosts, "cp-0", h) for h in ADDRESSES), 120, "every server an etcd member")
    return fleet, hosts, commands


def members(hosts, on: str, node: str) -> list[str]:
    """`node`'s members in the member list as `on` serves it (the query delivery makes)."""
    return etcd_members_of(hosts[on].sh(ETCD_MEMBERS_QUERY[2]).stdout, node)


def listed(hosts, on: str, node: str) -> list[str]:
    """As `members`, empty while `on` does not serve the list yet (k3s starting)."""
    proc = hosts[on].sh(ETCD_MEMBERS_QUERY[2], check=False)
    return etcd_members_of(proc.stdout, node) if proc.returncode == 0 else []


def test_every_server_is_a_member_named_after_its_node(servers):
    _, hosts, _ = servers
    for on in ADDRESSES:
        listed = {h: members(hosts, on, h) for h in ADDRESSES}
        assert all(len(names) == 1 and names[0].startswith(f"{h}-") for h, names in listed.items()), listed


def test_the_member_list_is_served_to_the_server_token_only(servers):
    _, hosts, _ = servers
    wrong = ETCD_MEMBERS_QUERY[2].replace('pw=${t#K10*::server:}', 'pw=not-the-password')
    proc = hosts["cp-1"].sh(wrong, check=False)
    assert proc.returncode == 22 and "401" in proc.stderr and proc.stdout == ""


def test_a_server_leaving_the_stack_leaves_etcd_before_it_goes_and_rejoins_as_a_new_member(servers):
    fleet, hosts, commands = servers
    [old] = members(hosts, "cp-0", "cp-2")
    step = commands["cp-2"].destroy()
    assert step.proc.returncode == 0, step.proc.stderr
    assert "cp-2 drained, k3s stopped, node deleted, its etcd member gone (through cp-0)" in step.proc.stderr
    assert members(hosts, "cp-0", "cp-2") == [] and len(members(hosts, "cp-1", "cp-1")) == 1
    etcd_dirs = hosts["cp-2"].sh("ls /var/lib/rancher/k3s/server/db").stdout.split()
    assert "etcd" not in etcd_dirs and any(d.startswith("etcd-backup-") for d in etcd_dirs)  # set aside
    # Added back: switched again, k3s joins as a new member (its old one stays removed).
    cfg, inv, _, plans = stack(hosts, fleet, edit=three_servers, health_timeout_s=30)
    commands["cp-2"] = LocalCommand(lambda cmd, env: run_command_as_deployer(fleet, cmd, env))
    steps = up(commands, inv, cfg, plans)
    assert steps["cp-2"][0].proc.returncode == 0, steps["cp-2"][0].proc.stderr
    poll(lambda: listed(hosts, "cp-0", "cp-2") not in ([], [old]), 120, "cp-2 a member again, by a new name")


def test_a_member_k3s_did_not_remove_stops_the_removal_and_keeps_the_machine(servers):
    fleet, hosts, commands = servers
    (fleet.apiserver / "members-kept").write_text("cp-1\n")  # k3s' member controller did not remove it
    try:
        step = commands["cp-1"].destroy()
    finally:
        (fleet.apiserver / "members-kept").unlink()
    assert step.proc.returncode != 0
    [kept] = members(hosts, "cp-0", "cp-1")
    assert f"cp-1: its etcd member {kept} is still listed on cp-0 30s after its Node was deleted" in step.proc.stderr
    assert "etcd" in hosts["cp-1"].sh("ls /var/lib/rancher/k3s/server/db").stdout.split()  # its data untouched
