"""Tier 1: the inventory planner. Properties over generated fleets, plus pinned examples."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flakefleet.config import ConfigError, parse_stack_config
from flakefleet.plan.inventory import BLOCKS_PER_SUBNET, carve_zones, plan_inventory
from tests.harness import read_stack_file

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDGlv9IUYqOMO0XDWoRC/ARLiSapuRe4Nvcrzcfdynnh"
REGION = "us-east-1"  # six zones
DEPLOY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM deploy"


def build(pools: list[dict], az_count: int, vpc: str = "10.0.0.0/16"):
    raw = {
        # A /14 pod network: room for 1,024 nodes at k3s' /24 each (the large-pool cases).
        "flakefleet:cluster": json.dumps({"name": "prop", "pod_cidr": "10.64.0.0/14"}),
        "flakefleet:network": json.dumps({"vpc_cidr": vpc, "az_count": az_count}),
        "flakefleet:pools": json.dumps(pools),
        "flakefleet:delivery": json.dumps({"authorized_keys": [DEPLOY]}),
    }
    return plan_inventory(parse_stack_config(raw, REGION))


pool_names = st.lists(
    st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=1, max_size=6, unique=True
)


@st.composite
def fleets(draw):
    """A valid fleet: one control-plane pool of 1/3/5 and up to five worker pools."""
    names = draw(pool_names)
    pools = [{"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": draw(st.sampled_from([1, 3, 5]))}]
    for name in names:
        if name == "cp":
            continue
        pools.append({"name": f"w{name}", "role": "worker", "instance_type": "c7g.large", "arch": "aarch64", "build": "target",
                      "count": draw(st.integers(0, 120))})
    return pools, draw(st.integers(1, 6)), draw(st.sampled_from(["10.0.0.0/16", "172.16.0.0/18", "10.8.0.0/20"]))


def fitting(pools, az, vpc):
    """The plan of a fleet; fleets too big for their VPC are discarded (that error is tested in test_config)."""
    try:
        return build(pools, az, vpc)
    except ConfigError:
        assume(False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_addresses_unique_and_inside_their_subnet(fleet):
    inv = fitting(*fleet)
    addresses = [h.address for h in inv.hosts]
    assert len(addresses) == len(set(addresses))
    for h in inv.hosts:
        assert h.address in h.subnet
        assert h.address != h.subnet.network_address
        assert h.address != h.subnet.broadcast_address  # AWS reserves the last address
        assert int(h.address) - int(h.subnet.network_address) >= 4  # and the first four
        assert h.address not in inv.api_lb_addresses


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["10.0.0.0/16", "192.168.0.0/17", "10.1.4.0/22"]), st.integers(1, 6))
def test_subnets_inside_vpc_and_disjoint(vpc, az_count):
    net = IPv4Network(vpc)
    zones = carve_zones(net, [f"z{i}" for i in range(az_count)])
    subnets = [z.private for z in zones] + [z.public for z in zones]
    for s in subnets:
        assert s.subnet_of(net)
    for i, a in enumerate(subnets):
        for b in subnets[i + 1:]:
            assert not a.overlaps(b)


@settings(max_examples=100, deadline=None)
@given(fleets(), st.randoms(use_true_random=False))
def test_stable_under_reordering_of_pools(fleet, rnd):
    pools, az, vpc = fleet
    inv = fitting(pools, az, vpc)
    shuffled = list(pools)
    rnd.shuffle(shuffled)
    again = build(shuffled, az, vpc)
    assert {h.name: h.address for h in inv.hosts} == {h.name: h.address for h in again.hosts}
    assert inv.api_address == again.api_address


@settings(max_examples=100, deadline=None)
@given(fleets(), st.integers(0, 5))
def test_scaling_within_its_blocks_moves_no_host(fleet, extra):
    """Scaling a pool moves no host, its own or another's, while every pool keeps its blocks.
    (A pool growing into more blocks, or a new auto-placed pool, may move auto-placed pools:
    that is why long-lived stacks pin ip_block; see test_pinned_pools_never_move.)"""
    pools, az, vpc = fleet
    assume(len(pools) >= 2)
    inv = fitting(pools, az, vpc)
    grown = [dict(p) for p in pools]
    grown[-1]["count"] += extra
    after = fitting(grown, az, vpc)
    assume(inv.pool_blocks == after.pool_blocks)
    before_map = {h.name: h.address for h in inv.hosts}
    after_map = {h.name: h.address for h in after.hosts}
    assert all(after_map[n] == a for n, a in before_map.items())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=2, max_size=5), st.integers(0, 4), st.integers(0, 30))
def test_pinned_pools_never_move(counts, which, new_count):
    """With pinned blocks, adding, removing or scaling any pool moves no other pool's host."""
    def pools(cs):
        return [{"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 1, "ip_block": 1}] + [
            {"name": f"w{i}", "role": "worker", "instance_type": "m7i.large", "count": c, "ip_block": 2 + i}
            for i, c in enumerate(cs) if c is not None
        ]
    before = build(pools(counts), az_count=1)
    changed = list(counts)
    changed[which % len(counts)] = new_count if new_count % 7 else None  # sometimes remove the pool
    after = build(pools(changed), az_count=1)
    untouched = {f"w{i}" for i, c in enumerate(counts) if i != which % len(counts)} | {"cp"}
    before_map = {h.name: h.address for h in before.hosts if h.pool in untouched}
    assert before_map == {h.name: h.address for h in after.hosts if h.pool in untouched}


def test_hosts_round_robin_over_zones():
    inv = build([{"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 3}], az_count=3)
    assert [h.zone for h in inv.control_planes] == ["us-east-1a", "us-east-1b", "us-east-1c"]


def test_api_endpoint_is_the_load_balancer_address_with_several_control_planes():
    inv = build([{"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 3}], az_count=3)
    assert inv.api_lb_addresses == (IPv4Address("10.0.0.4"), IPv4Address("10.0.32.4"), IPv4Address("10.0.64.4"))
    assert inv.api_endpoint == "https://10.0.0.4:6443"


def test_api_endpoint_is_the_only_control_plane_without_load_balancer():
    inv = build([{"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 1}], az_count=1)
    assert inv.api_lb_addresses == ()
    assert inv.api_address == inv.control_planes[0].address


def test_pinned_block_places_pool_exactly():
    inv = build([{"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 1, "ip_block": 1}], 1)
    # /16 -> /19 private subnets cut into 16 blocks of 512 addresses: block 1 starts at .2.0
    assert inv.control_planes[0].address == IPv4Address("10.0.2.0")
    assert inv.pool_blocks == {"cp": (1, 1)}


def test_large_pool_spans_blocks():
    inv = build(
        [{"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 1, "ip_block": 1},
         {"name": "big", "role": "worker", "instance_type": "m7i.large", "count": 1000, "ip_block": 2}],
        az_count=1,
    )
    assert inv.pool_blocks["big"] == (2, 2)
    assert len({h.address for h in inv.workers}) == 1000
    assert BLOCKS_PER_SUBNET == 16


def test_control_planes_come_first_and_init_server_is_stable():
    inv = build(
        [{"name": "a", "role": "worker", "instance_type": "m7i.large", "count": 2},
         {"name": "z", "role": "control-plane", "instance_type": "m7i.large", "count": 3}],
        az_count=3,
    )
    assert [h.role for h in inv.hosts] == ["control-plane"] * 3 + ["worker"] * 2
    assert inv.control_planes[0].name == "z-0"


def test_local_stack_uses_configured_addresses_and_no_vpc():
    raw = read_stack_file("local")
    inv = plan_inventory(parse_stack_config(raw, None))
    assert inv.vpc is None and inv.zones == ()
    assert [str(h.address) for h in inv.hosts] == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert all(h.ssh_port == 2222 and h.ssh_host_key for h in inv.hosts)
    assert inv.api_endpoint == "https://127.0.0.11:6443"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_aws_stack_hosts_fit_their_vpc(stack):
    raw = read_stack_file(stack)
    region = raw.pop("aws:region")
    inv = plan_inventory(parse_stack_config(raw, region))
    assert all(h.address in inv.vpc for h in inv.hosts)
