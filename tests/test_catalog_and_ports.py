"""Tier 1: instance-type shapes, the port table and the security-group rules derived from it."""

from __future__ import annotations

import pytest

from flakefleet.facts.aws import instance_shape, region_zones
from flakefleet.plan.iam import node_policy
from flakefleet.facts.ports import listening_ports, port_rules, security_group_rules


@pytest.mark.parametrize(
    ("instance_type", "arch", "metal"),
    [
        ("m7i.large", "x86_64", False),
        ("m7i.metal-24xl", "x86_64", True),
        ("c5.metal", "x86_64", True),
        ("m7g.2xlarge", "aarch64", False),
        ("m7g.metal", "aarch64", True),
        ("c6gn.16xlarge", "aarch64", False),
        ("r8gd.large", "aarch64", False),
        ("t4g.small", "aarch64", False),
        ("a1.large", "aarch64", False),
        ("im4gn.large", "aarch64", False),
        ("is4gen.medium", "aarch64", False),
        ("g5g.xlarge", "aarch64", False),
        ("g4dn.xlarge", "x86_64", False),
        ("g6e.2xlarge", "x86_64", False),
        ("m7i-flex.large", "x86_64", False),
        ("c7i-flex.large", "x86_64", False),
        ("t3.large", "x86_64", False),
        ("m7a.large", "x86_64", False),
    ],
)
def test_instance_shape(instance_type, arch, metal):
    shape = instance_shape(instance_type)
    assert shape is not None
    assert (shape.arch, shape.metal) == (arch, metal)


@pytest.mark.parametrize("bad", ["large", "m7i", "M7I.LARGE", "mac2.metal", ".large", "m7i."])
def test_malformed_instance_types(bad):
    assert instance_shape(bad) is None


def test_region_zones():
    assert region_zones("eu-west-1") == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    assert region_zones("nowhere-1") is None


def test_port_table_has_the_k3s_matrix():
    by_name = {r.name: r for r in port_rules()}
    assert (by_name["k3s-api"].from_port, by_name["k3s-api"].targets) == (6443, ("control-plane",))
    assert (by_name["etcd"].from_port, by_name["etcd"].to_port, by_name["etcd"].sources) == (2379, 2380, ("control-plane",))
    assert by_name["flannel-vxlan"].protocol == "udp" and "api" not in by_name["flannel-vxlan"].sources
    assert by_name["ssh"].sources == ("admin",)


def test_firewall_ports_per_role():
    assert listening_ports("worker", "tcp") == [(10250, 10250), (22, 22)]
    assert listening_ports("worker", "udp") == [(8472, 8472)]
    assert (2379, 2380) in listening_ports("control-plane", "tcp")


def test_no_rule_admits_the_world_unless_configured():
    rules = security_group_rules(["10.200.0.0/16"], ["10.201.0.0/16"], with_lb=True)
    ingress = [r for r in rules if r.direction == "ingress"]
    assert all(r.cidr != "0.0.0.0/0" for r in ingress)
    assert {r.cidr for r in ingress if r.from_port == 22} == {"10.200.0.0/16"}


def test_etcd_only_between_control_planes():
    rules = security_group_rules([], [], with_lb=False)
    etcd = [r for r in rules if r.from_port == 2379]
    assert [(r.group, r.peer_group) for r in etcd] == [("control-plane", "control-plane")]


def test_load_balancer_rules_only_with_a_load_balancer():
    assert not [r for r in security_group_rules([], [], with_lb=False) if "lb" in (r.group, r.peer_group)]
    lb = [r for r in security_group_rules([], ["10.9.0.0/16"], with_lb=True) if r.group == "lb"]
    assert {(r.direction, r.peer_group or r.cidr) for r in lb} == {
        ("ingress", "control-plane"), ("ingress", "worker"), ("ingress", "10.9.0.0/16"), ("egress", "control-plane")
    }


def test_rule_keys_are_unique():
    rules = security_group_rules(["10.1.0.0/16", "10.2.0.0/16"], ["10.3.0.0/16"], with_lb=True)
    assert len({r.key for r in rules}) == len(rules)


def test_worker_policy_reads_cache_only():
    policy = node_policy("worker", "c", "arn:aws:s3:::cache", "arn:aws:s3:::snap")
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"s3:GetObject", "s3:ListBucket"}
    assert all("snap" not in s["Resource"] for s in policy["Statement"])


def test_control_plane_policy_is_scoped_to_its_cluster_folder():
    policy = node_policy("control-plane", "c", None, "arn:aws:s3:::snap")
    write = next(s for s in policy["Statement"] if "s3:PutObject" in s["Action"])
    assert write["Resource"] == "arn:aws:s3:::snap/c/*"
    listing = next(s for s in policy["Statement"] if s["Sid"] == "ListSnapshots")
    assert listing["Condition"]["StringLikeIfExists"]["s3:prefix"] == ["c/*", "c/"]


def allows(statement: dict, context: dict[str, str]) -> bool:
    """An Allow statement's condition as IAM evaluates StringLike and StringLikeIfExists (a key
    absent from the request fails StringLike and passes its IfExists form)."""
    import fnmatch

    for operator, keys in statement.get("Condition", {}).items():
        for key, patterns in keys.items():
            if key not in context:
                if not operator.endswith("IfExists"):
                    return False
            elif not any(fnmatch.fnmatchcase(context[key], p) for p in patterns):
                return False
    return True


@pytest.mark.parametrize(("request_context", "allowed"), [
    ({}, True),  # HeadBucket: k3s' BucketExists check before every snapshot (pkg/etcd/s3/s3.go)
    ({"s3:prefix": "c/"}, True),  # its retention listing of the cluster's folder
    ({"s3:prefix": "c/etcd-snapshot-1"}, True),
    ({"s3:prefix": "other/"}, False),  # another cluster's folder
])
def test_the_snapshot_listing_lets_k3s_check_the_bucket_and_list_only_its_folder(request_context, allowed):
    policy = node_policy("control-plane", "c", None, "arn:aws:s3:::snap")
    listing = next(s for s in policy["Statement"] if s["Sid"] == "ListSnapshots")
    assert allows(listing, request_context) is allowed


@pytest.mark.parametrize(("region", "arn"), [("eu-west-1", "arn:aws:s3:::b"), ("cn-north-1", "arn:aws-cn:s3:::b"),
                                             ("us-gov-west-1", "arn:aws-us-gov:s3:::b"), (None, "arn:aws:s3:::b")])
def test_a_named_cache_bucket_is_granted_in_its_partition(region, arn):
    from flakefleet.plan.iam import bucket_arn

    assert bucket_arn("b", region) == arn


def test_no_policy_without_buckets():
    assert node_policy("worker", "c", None, None) is None
