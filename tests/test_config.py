"""Tier 1: stack-config validation. Every bad input gets one line naming its key path."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from flakefleet.config import ConfigError, StackConfig, host_key_problem, parse_stack_config
from flakefleet.plan.inventory import plan_inventory
from tests.harness import read_stack_file, stack_names

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDGlv9IUYqOMO0XDWoRC/ARLiSapuRe4Nvcrzcfdynnh"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK9QgGZMwef4vWRoILbOe7MKwvkik6zMRsCiUf1aeMAr"
DEPLOY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM deploy"


def base() -> dict[str, Any]:
    """A valid EC2 stack: 3 control planes over 3 zones, one worker pool, one metal pool."""
    return {
        "cluster": {"name": "t"},
        "network": {"az_count": 3, "admin_cidrs": ["10.200.0.0/16"]},
        "delivery": {"authorized_keys": [DEPLOY]},
        "pools": [
            {"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 3},
            {"name": "workers", "role": "worker", "instance_type": "m7i.large", "count": 2},
            {
                "name": "byo",
                "role": "worker",
                "provider": "metal",
                "hosts": [{"name": "rack-1", "address": "192.168.50.10", "ssh_host_key": KEY}],
            },
        ],
    }


def parse(cfg: dict[str, Any], region: str | None = "eu-west-1") -> StackConfig:
    return parse_stack_config({f"flakefleet:{k}": json.dumps(v) for k, v in cfg.items()}, region)


def problems(cfg: dict[str, Any], region: str | None = "eu-west-1") -> list[str]:
    """The problems `load_stack` would report: validation first, then address planning."""
    try:
        plan_inventory(parse(cfg, region))
    except ConfigError as err:
        return err.problems
    pytest.fail("the config was accepted")


def mutate(**changes):
    """A mutation of base(): dotted paths (pools.1.count) to values; a value of DELETE removes the key."""

    def apply() -> dict[str, Any]:
        cfg = copy.deepcopy(base())
        for path, value in changes.items():
            *parents, last = path.split("__")
            node: Any = cfg
            for part in parents:
                node = node[int(part)] if part.isdigit() else node[part]
            key = int(last) if last.isdigit() else last
            if value is DELETE:
                del node[key]
            else:
                node[key] = value
        return cfg

    return apply


DELETE = object()

# (case id, mutation, expected problem line)
X86_GPUS = "g3, g3s, p3, p3dn, g4dn, g5, g6, g6e, g6f, gr6, gr6f, g7e, p4d, p4de, p5, p5e, p5en, p6-b200, p6-b300"
BAD = [
    ("settle-not-shorter-than-the-health-timeout", mutate(delivery={"settle_s": 300}),
     "flakefleet:delivery.settle_s: 300 is not shorter than delivery.health_timeout_s (300): no host could be "
     "confirmed healthy in time"),
    ("gpu-on-a-type-without-one", mutate(pools__1__gpu="nvidia"),
     f"flakefleet:pools[1].gpu: m7i.large has no NVIDIA GPU; x86_64 GPU families: {X86_GPUS}"),
    ("gpu-aarch64-without-one", mutate(pools__1__gpu="nvidia", pools__1__instance_type="m7g.large", pools__1__arch="aarch64",
                                       pools__1__build="target"),
     "flakefleet:pools[1].gpu: m7g.large has no NVIDIA GPU; aarch64 GPU families: g5g, p6e-gb200"),
    ("gpu-aarch64-family-on-x86", mutate(pools__1__gpu="nvidia", pools__1__instance_type="g5g.xlarge"),
     "flakefleet:pools[1].instance_type: g5g.xlarge is aarch64 but the pool's arch is x86_64"),
    ("gpu-vendor", mutate(pools__1__gpu="amd"), "flakefleet:pools[1].gpu: Input should be 'nvidia'"),
    ("cni-unknown", mutate(cluster__cni="calico"), "flakefleet:cluster.cni: Input should be 'flannel' or 'cilium'"),
    ("cilium-settings-on-flannel", mutate(cluster__cilium={"hubble": True}),
     "flakefleet:cluster.cilium: only with cni: cilium (this cluster's CNI is flannel)"),
    ("cilium-version", mutate(cluster__cni="cilium", cluster__cilium={"version": "latest"}),
     "flakefleet:cluster.cilium.version: String should match pattern '^1\\.\\d{2}\\.\\d{1,2}$'"),
    ("cilium-tunnel", mutate(cluster__cni="cilium", cluster__cilium={"tunnel": "ipip"}),
     "flakefleet:cluster.cilium.tunnel: Input should be 'vxlan' or 'geneve'"),
    ("workload-on-a-pool-that-does-not-exist", mutate(workloads=[{"name": "hello", "pools": ["wrkers"]}]),
     "flakefleet:workloads[0].pools[0]: no pool 'wrkers' in this stack (did you mean workers?)"),
    ("workload-without-pools", mutate(workloads=[{"name": "hello", "pools": []}]),
     "flakefleet:workloads[0].pools: List should have at least 1 item after validation, not 0"),
    ("workload-twice", mutate(workloads=[{"name": "hello", "pools": ["workers"]}, {"name": "hello", "pools": ["cp"]}]),
     "flakefleet:workloads[1].name: workload 'hello' is listed twice (also workloads[0])"),
    ("workload-on-an-empty-pool", mutate(pools__1__count=0, workloads=[{"name": "hello", "pools": ["workers"]}]),
     "flakefleet:workloads[0].pools[0]: pool 'workers' has no hosts to run hello"),
    ("workloads-not-a-list", mutate(workloads={"hello": ["workers"]}), "flakefleet:workloads: must be a list of workloads"),
    ("cp-even", mutate(pools__0__count=2),
     "flakefleet:pools[0].count: 2 control planes; embedded etcd needs an odd number (1, 3, 5) to keep quorum"),
    ("cp-zero", mutate(pools__0__count=0),
     "flakefleet:pools[0].count: no control-plane host; a cluster needs 1, 3 or 5 control planes"),
    ("cp-none", mutate(pools__0__role="worker"),
     "flakefleet:pools: no control-plane host; a cluster needs 1, 3 or 5 control planes"),
    ("cp-negative", mutate(pools__0__count=-1),
     "flakefleet:pools[0].count: Input should be greater than or equal to 0"),
    ("dup-pool", mutate(pools__1__name="cp"),
     "flakefleet:pools[1].name: duplicate pool name 'cp' (also pools[0])"),
    ("dup-host-generated-vs-metal", mutate(pools__2__hosts__0__name="workers-1"),
     "flakefleet:pools[2].hosts[0].name: duplicate host name 'workers-1' (also pools[1].count)"),
    ("dup-host-metal", mutate(pools__2__hosts=[
        {"name": "a", "address": "192.168.50.10", "ssh_host_key": KEY},
        {"name": "a", "address": "192.168.50.11", "ssh_host_key": KEY2}]),
     "flakefleet:pools[2].hosts[1].name: duplicate host name 'a' (also pools[2].hosts[0].name)"),
    ("dup-address", mutate(pools__2__hosts=[
        {"name": "a", "address": "192.168.50.10", "ssh_host_key": KEY},
        {"name": "b", "address": "192.168.50.10", "ssh_host_key": KEY2}]),
     "flakefleet:pools[2].hosts[1].address: duplicate address 192.168.50.10 (also pools[2].hosts[0].address)"),
    ("pod-overlaps-vpc", mutate(cluster={"name": "t", "pod_cidr": "10.0.128.0/17"}),
     "flakefleet:cluster.pod_cidr: 10.0.128.0/17 overlaps network.vpc_cidr 10.0.0.0/16"),
    ("service-overlaps-pod", mutate(cluster={"name": "t", "service_cidr": "10.42.0.0/24"}),
     "flakefleet:cluster.service_cidr: 10.42.0.0/24 overlaps cluster.pod_cidr 10.42.0.0/16"),
    ("metal-host-in-pod-cidr", mutate(pools__2__hosts__0__address="10.42.0.9"),
     "flakefleet:pools[2].hosts[0].address: 10.42.0.9 lies inside cluster.pod_cidr 10.42.0.0/16"),
    ("cidr-host-bits", mutate(network__vpc_cidr="10.0.0.1/16"),
     "flakefleet:network.vpc_cidr: Input is not a valid IPv4 network"),
    ("vpc-too-small", mutate(network__vpc_cidr="10.0.0.0/24"),
     "flakefleet:network.vpc_cidr: prefix /24 out of range; use /16 to /22"),
    ("arch-mismatch-graviton", mutate(pools__1__instance_type="m7g.large"),
     "flakefleet:pools[1].instance_type: m7g.large is aarch64 but the pool's arch is x86_64"),
    ("arch-mismatch-intel", mutate(pools__1__arch="aarch64"),
     "flakefleet:pools[1].instance_type: m7i.large is x86_64 but the pool's arch is aarch64"),
    ("metal-type-without-flag", mutate(pools__1__instance_type="m7i.metal-24xl"),
     "flakefleet:pools[1].instance_type: m7i.metal-24xl is bare metal; set bare_metal: true on the pool "
     "(delivery then waits for its long boot)"),
    ("metal-flag-virtual-type", mutate(pools__1__bare_metal=True),
     "flakefleet:pools[1].bare_metal: true but m7i.large is virtual; use a *.metal type"),
    ("bad-instance-type", mutate(pools__1__instance_type="large"),
     "flakefleet:pools[1].instance_type: 'large' is not an EC2 instance type (botocore's EC2 model lists every type)"),
    ("ec2-no-type", mutate(pools__1__instance_type=DELETE),
     "flakefleet:pools[1].instance_type: required for provider ec2"),
    ("ec2-no-count", mutate(pools__1__count=DELETE),
     "flakefleet:pools[1].count: required for provider ec2 (or autoscaling: {min, max} for a worker pool)"),
    ("ec2-with-hosts", mutate(pools__1__hosts=[{"name": "x", "address": "192.168.1.1", "ssh_host_key": KEY2}]),
     "flakefleet:pools[1].hosts: only for provider metal; an ec2 pool's hosts are created from count"),
    ("metal-with-type", mutate(pools__2__instance_type="m7i.large"),
     "flakefleet:pools[2].instance_type: only for provider ec2; a metal pool is its list of hosts"),
    ("metal-with-count", mutate(pools__2__count=4),
     "flakefleet:pools[2].count: only for provider ec2; a metal pool is its list of hosts"),
    ("metal-bare-metal-flag", mutate(pools__2__bare_metal=True),
     "flakefleet:pools[2].bare_metal: only for provider ec2; metal hosts are bare metal already"),
    ("metal-host-outside-networks", mutate(pools__2__networks=["192.168.60.0/24", "10.9.0.0/16"]),
     "flakefleet:pools[2].hosts[0].address: 192.168.50.10 is in none of the pool's networks "
     "(192.168.60.0/24, 10.9.0.0/16)"),
    ("metal-network-too-wide", mutate(pools__2__networks=["192.168.50.0/24", "0.0.0.0/0"]),
     "flakefleet:pools[2].networks[1]: 0.0.0.0/0 is wider than /8; the fleet's firewalls would open etcd, the "
     "kubelet and the overlay to all of it (name the networks the hosts live in)"),
    ("metal-network-host-bits", mutate(pools__2__networks=["192.168.50.1/24"]),
     "flakefleet:pools[2].networks[0]: Input is not a valid IPv4 network"),
    ("ec2-with-networks", mutate(pools__1__networks=["10.0.0.0/24"]),
     "flakefleet:pools[1].networks: only for provider metal; an ec2 pool's addresses are planned in its blocks"),
    ("metal-no-hosts", mutate(pools__2__hosts=[]),
     "flakefleet:pools[2].hosts: required for provider metal (name, address, ssh_host_key of each host)"),
    ("metal-no-host-key", mutate(pools__2__hosts__0__ssh_host_key=DELETE),
     "flakefleet:pools[2].hosts[0].ssh_host_key: required; host keys are pinned before the first connection "
     "(read it from the host's /etc/ssh/ssh_host_ed25519_key.pub)"),
    ("metal-bad-host-key", mutate(pools__2__hosts__0__ssh_host_key="ssh-ed25519 bm90LWEta2V5"),
     "flakefleet:pools[2].hosts[0].ssh_host_key: key data does not encode a ssh-ed25519 key"),
    ("metal-host-key-type", mutate(pools__2__hosts__0__ssh_host_key="ssh-dss AAAA"),
     "flakefleet:pools[2].hosts[0].ssh_host_key: must be an OpenSSH public key line '<type> <base64>' with type "
     "one of ssh-ed25519"),
    ("too-many-azs", mutate(network__az_count=4),
     "flakefleet:network.az_count: 4 zones requested but eu-west-1 has 3 (eu-west-1a, eu-west-1b, eu-west-1c)"),
    ("az-count-above-six", mutate(network__az_count=7),
     "flakefleet:network.az_count: Input should be less than or equal to 6"),
    ("zone-of-other-region", mutate(network={"availability_zones": ["eu-west-1a", "us-east-1b", "eu-west-1c"]}),
     "flakefleet:network.availability_zones[1]: 'us-east-1b' is not a zone of eu-west-1"),
    ("zones-and-count-disagree", mutate(network={"availability_zones": ["eu-west-1a"], "az_count": 3}),
     "flakefleet:network.az_count: 3 but availability_zones names 1; give one or the other"),
    ("admin-world", mutate(network__admin_cidrs=["0.0.0.0/0"]),
     "flakefleet:network.admin_cidrs[0]: 0.0.0.0/0 opens SSH to the whole internet; "
     "set network.allow_world_access: true to accept that"),
    ("api-world", mutate(network__api_cidrs=["10.1.0.0/16", "0.0.0.0/0"]),
     "flakefleet:network.api_cidrs[1]: 0.0.0.0/0 opens the Kubernetes API to the whole internet; "
     "set network.allow_world_access: true to accept that"),
    ("unknown-pool-key", mutate(pools__1__instance_count=3),
     "flakefleet:pools[1].instance_count: unknown key"),
    ("unknown-network-key", mutate(network__vpc="10.0.0.0/16"),
     "flakefleet:network.vpc: unknown key"),
    ("unknown-stack-key", mutate(clusters={"name": "x"}),
     "flakefleet:clusters: unknown stack key (did you mean cluster?) (known: cluster, network, pools, storage, delivery, "
     "dr, workloads, signing_key, server_token)"),
    ("missing-cluster", mutate(cluster=DELETE), "flakefleet:cluster: required"),
    ("cluster-name-case", mutate(cluster={"name": "Prod"}),
     "flakefleet:cluster.name: must be a lowercase DNS label (a-z, 0-9, '-', not starting or ending with '-')"),
    ("pool-name-underscore", mutate(pools__1__name="big_workers"),
     "flakefleet:pools[1].name: must be a lowercase DNS label (a-z, 0-9, '-', not starting or ending with '-')"),
    ("bad-role", mutate(pools__1__role="master"),
     "flakefleet:pools[1].role: Input should be 'control-plane' or 'worker'"),
    ("restricted-label", mutate(pools__1__labels={"kubernetes.io/role": "big"}),
     "flakefleet:pools[1].labels.kubernetes.io/role: kubelets may set only their own labels under kubernetes.io/ "
     "and k8s.io/ (e.g. topology.kubernetes.io/zone, node.kubernetes.io/*); use node.kubernetes.io/ or your own prefix"),
    ("bad-label-value", mutate(pools__1__labels={"team": "a b"}),
     "flakefleet:pools[1].labels.team: value 'a b' is not a valid Kubernetes label value"),
    ("bad-taint-effect", mutate(pools__1__taints=[{"key": "gpu", "effect": "NoRun"}]),
     "flakefleet:pools[1].taints[0].effect: Input should be 'NoSchedule', 'PreferNoSchedule' or 'NoExecute'"),
    ("api-address-on-aws", mutate(cluster={"name": "t", "api_address": "10.0.0.9"}),
     "flakefleet:cluster.api_address: only for bring-your-own fleets; on AWS the API load balancer is the address"),
    ("bad-k3s-channel", mutate(cluster={"name": "t", "k3s_channel": "latest"}),
     "flakefleet:cluster.k3s_channel: String should match pattern '^(stable|1\\.\\d{2})$'"),
    ("bad-ami", mutate(pools__1__ami="ubuntu"),
     "flakefleet:pools[1].ami: String should match pattern '^ami-[0-9a-f]{8,17}$'"),
    ("pinned-blocks-overlap", mutate(pools__0__ip_block=3, pools__1__ip_block=3),
     "flakefleet:pools[1].ip_block: blocks 3-3 overlap pool cp"),
    ("pool-too-big-for-vpc", mutate(network__vpc_cidr="10.0.0.0/22", pools__1__count=400,
                                    cluster={"name": "t", "pod_cidr": "10.64.0.0/14"}),
     "flakefleet:pools[1].count: 134 hosts per zone need 17 free address blocks of 8; "
     "widen network.vpc_cidr, add zones or shrink the pool"),
    ("no-deploy-key", mutate(delivery={}),
     "flakefleet:delivery.authorized_keys: required; the deploy key must stay authorized on the hosts after a switch"),
    ("bad-deploy-key", mutate(delivery={"authorized_keys": ["ssh-ed25519 AAAA"]}),
     "flakefleet:delivery.authorized_keys[0]: key data does not encode a ssh-ed25519 key"),
    ("restore-without-bucket", mutate(dr={"restore_from": "latest"}),
     "flakefleet:dr.restore_from: needs dr.restore_bucket, the bucket holding the snapshot"),
    ("restore-without-token", mutate(dr={"restore_from": "latest", "restore_bucket": "old"}),
     "flakefleet:dr.restore_from: needs flakefleet:server_token, the original cluster's server token "
     "(pulumi stack output --show-secrets k3s_server_token on the old stack)"),
    ("restore-metal-control-planes", mutate(pools__0={"name": "cp", "role": "control-plane", "provider": "metal",
        "hosts": [{"name": "m1", "address": "192.168.60.1", "ssh_host_key": KEY2}]},
        dr={"restore_from": "latest", "restore_bucket": "old"}),
     "flakefleet:dr.restore_from: restoring from S3 needs the control planes on EC2 (their instance profile reads "
     "the snapshot; flakefleet stores no keys)"),
    ("bad-snapshot-schedule", mutate(dr={"snapshot_schedule": "hourly"}),
     "flakefleet:dr.snapshot_schedule: 'hourly' is not a cron schedule: five fields (minute hour day-of-month month "
     "day-of-week)"),
    ("parallel-zero", mutate(delivery={"authorized_keys": [DEPLOY], "max_parallel": 0}),
     "flakefleet:delivery.max_parallel: Input should be greater than or equal to 1"),
    ("retention-zero", mutate(storage={"snapshot_noncurrent_days": 0}),
     "flakefleet:storage.snapshot_noncurrent_days: Input should be greater than or equal to 1"),
    ("max-unavailable-over-100", mutate(delivery={"authorized_keys": [DEPLOY], "max_unavailable": "150%"}),
     "flakefleet:delivery.max_unavailable: '150%' is neither a count of workers (1 or more) nor a percentage from "
     "1% to 100%"),
    ("max-unavailable-zero", mutate(delivery={"authorized_keys": [DEPLOY], "max_unavailable": 0}),
     "flakefleet:delivery.max_unavailable: 0 is neither a count of workers (1 or more) nor a percentage from 1% to "
     "100%"),
    ("bad-reboot-mode", mutate(pools__1__reboot="sometimes"),
     "flakefleet:pools[1].reboot: Input should be 'auto', 'always' or 'never'"),
    ("root-volume-tiny", mutate(pools__1__root_volume={"size_gib": 4}),
     "flakefleet:pools[1].root_volume.size_gib: Input should be greater than or equal to 16"),
    ("ssh-user-not-root", mutate(delivery={"authorized_keys": [DEPLOY], "ssh_user": "admin"}),
     "flakefleet:delivery.ssh_user: 'admin': delivery logs in as root (the nodes authorize the deploy keys for root "
     "only, nixos/common/openssh.nix, and switching a system needs root); leave it out or set root"),
    # pools[].autoscaling (issue 28): EC2 workers only, sane bounds, a cache to pull from.
    ("autoscaling-on-a-control-plane", mutate(pools__0__autoscaling={"min": 1, "max": 3}),
     "flakefleet:pools[0].autoscaling: only for worker pools; a control plane is an etcd member, which a scale-in "
     "would take away without a quorum-safe removal"),
    ("autoscaling-on-metal", mutate(pools__2__autoscaling={"min": 0, "max": 2}),
     "flakefleet:pools[2].autoscaling: only for provider ec2; a metal pool is its list of hosts"),
    ("autoscaling-min-above-max", mutate(pools__1__count=DELETE, pools__1__autoscaling={"min": 5, "max": 3}),
     "flakefleet:pools[1].autoscaling.min: 5 is more than max 3"),
    ("autoscaling-desired-outside", mutate(pools__1__count=DELETE, pools__1__autoscaling={"min": 1, "max": 3, "desired": 9}),
     "flakefleet:pools[1].autoscaling.desired: 9 is outside min..max (1..3)"),
    ("autoscaling-with-count", mutate(pools__1__autoscaling={"min": 0, "max": 3}),
     "flakefleet:pools[1].count: not with autoscaling; the group's size is autoscaling.min..max"),
    ("autoscaling-on-bare-metal", mutate(pools__1__count=DELETE, pools__1__instance_type="m7i.metal-24xl",
                                         pools__1__bare_metal=True, pools__1__autoscaling={"min": 0, "max": 3}),
     "flakefleet:pools[1].instance_type: m7i.metal-24xl is bare metal, which boots in 10+ minutes: too slow for a "
     "pool that scales with load; use a virtual type"),
    ("autoscaling-with-per-host-closures", mutate(pools__1__count=DELETE, pools__1__per_host_closures=True,
                                                  pools__1__autoscaling={"min": 0, "max": 3}),
     "flakefleet:pools[1].per_host_closures: not with autoscaling; the group's hosts are not known ahead, they share "
     "the pool's system"),
    ("autoscaling-without-a-cache", mutate(pools__1__count=DELETE, pools__1__autoscaling={"min": 0, "max": 3},
                                           storage={"enabled": False}),
     "flakefleet:pools[1].autoscaling: its instances pull their system from the stack's binary cache; set "
     "delivery.cache.enabled: true with storage.enabled: true (or a delivery.cache.bucket)"),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config_is_reported_with_its_key_path(make, expected):
    found = problems(make())
    assert expected in found, "\n".join(found)


def test_cilium_without_its_ports_in_the_table_is_refused(monkeypatch):
    """The port table is what both the firewall and the security groups open: a CNI whose rules
    it lacks would have its overlay and health checks blocked, so the stack is refused."""
    from flakefleet.facts import ports

    without = tuple(r for r in ports.port_rules() if "cilium" not in r.when)
    monkeypatch.setattr(ports, "port_rules", lambda: without)
    cfg = mutate(cluster__cni="cilium", cluster__cilium={"hubble": True})()
    assert problems(cfg) == ["flakefleet:cluster.cni: cilium needs port rules for cilium, hubble, vxlan in "
                             "nixos/ports.json (the firewall and the security groups are built from it, so neither "
                             "would open them)"]
    assert parse(mutate(cluster__cni="flannel")(), "eu-west-1")  # flannel's rules are still there


def test_bad_case_table_is_large_and_distinct():
    assert len(BAD) >= 30
    assert len({c[0] for c in BAD}) == len(BAD)
    assert len({c[2] for c in BAD}) == len(BAD)


def test_an_autoscaled_pool_with_count_is_one_line_and_a_good_one_none():
    """Only real problems: `count` beside `autoscaling` is one line (not also "count required"),
    and the same pool without `count` plans no host of its own."""
    cfg = mutate(pools__1__autoscaling={"min": 0, "max": 200})()
    assert [line for line in problems(cfg) if "pools[1]" in line] == [
        "flakefleet:pools[1].count: not with autoscaling; the group's size is autoscaling.min..max"]
    del cfg["pools"][1]["count"]
    inv = plan_inventory(parse(cfg))
    assert not inv.pool_hosts("workers") and len(inv.hosts) == 4


def test_every_problem_is_reported_at_once():
    cfg = base()
    cfg["pools"][0]["count"] = 2
    cfg["pools"][1]["instance_type"] = "m7g.large"
    cfg["pools"][2]["hosts"][0].pop("ssh_host_key")
    cfg["network"]["admin_cidrs"] = ["0.0.0.0/0"]
    cfg["network"]["bogus"] = 1
    found = problems(cfg)
    assert len(found) == 5, found
    assert all(line.startswith("flakefleet:") for line in found)
    assert all("\n" not in line for line in found)


def test_restore_with_the_original_token_is_accepted():
    cfg = base()
    cfg["dr"] = {"restore_from": "latest", "restore_bucket": "old-snapshots"}
    raw = {f"flakefleet:{k}": json.dumps(v) for k, v in cfg.items()}
    raw["flakefleet:server_token"] = "original-token"
    raw["flakefleet:signing_key"] = "t-1:" + "A" * 86 + "=="
    stack = parse_stack_config(raw, "eu-west-1", {"flakefleet:server_token", "flakefleet:signing_key"})
    assert stack.dr.restore_from == "latest" and stack.server_token == "original-token"
    assert "original-token" not in repr(stack)


def test_plain_server_token_is_refused():
    raw = {f"flakefleet:{k}": json.dumps(v) for k, v in base().items()}
    raw.update({"flakefleet:server_token": "t", "flakefleet:signing_key": "t-1:" + "A" * 86 + "=="})
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw, "eu-west-1", {"flakefleet:signing_key"})
    assert err.value.problems == [
        "flakefleet:server_token: must be a Pulumi secret, not plain config: pulumi config set --secret "
        "flakefleet:server_token ..."
    ]


def test_region_required_for_ec2():
    assert "aws:region: required when a pool runs on EC2" in problems(base(), region=None)


def test_unknown_region_asks_for_explicit_zones():
    assert (
        "aws:region: mx-central-1 is not in flakefleet's zone table; name its zones in network.availability_zones"
        in problems(base(), region="mx-central-1")
    )


def test_unknown_region_with_explicit_zones_is_accepted():
    cfg = base()
    cfg["network"] = {"availability_zones": ["mx-central-1a", "mx-central-1b", "mx-central-1c"]}
    assert parse(cfg, region="mx-central-1").zones == ["mx-central-1a", "mx-central-1b", "mx-central-1c"]


def test_world_access_is_accepted_with_explicit_opt_in():
    cfg = base()
    cfg["network"].update(admin_cidrs=["0.0.0.0/0"], allow_world_access=True)
    assert str(parse(cfg).network.admin_cidrs[0]) == "0.0.0.0/0"


def test_metal_only_stack_needs_no_region():
    cfg = {
        "cluster": {"name": "t"},
        "storage": {"enabled": False},
        "delivery": {"authorized_keys": [DEPLOY]},
        "pools": [
            {"name": "cp", "role": "control-plane", "provider": "metal",
             "hosts": [{"name": "a", "address": "127.0.0.11", "ssh_host_key": KEY}]},
        ],
    }
    stack = parse(cfg, region=None)
    assert not stack.uses_aws


def test_defaults_are_documented_values():
    stack = parse(base())
    assert str(stack.cluster.pod_cidr) == "10.42.0.0/16"
    assert str(stack.cluster.service_cidr) == "10.43.0.0/16"
    assert stack.delivery.ssh_user == "root"
    assert stack.network.flow_logs is True
    assert stack.storage.enabled is True
    assert stack.pools[0].root_volume.size_gib == 50


@pytest.mark.parametrize("stack", stack_names())
def test_checked_in_stacks_are_valid(stack):
    raw = read_stack_file(stack)
    region = raw.pop("aws:region", None)
    parse_stack_config(raw, region)


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        (KEY, True),
        (KEY + " root@host", True),
        ("ssh-ed25519", False),
        ("ssh-ed25519 !!!!", False),
        ("ecdsa-sha2-nistp256 " + KEY.split()[1], False),  # data says ed25519
    ],
)
def test_host_key_check(key, ok):
    assert (host_key_problem(key) is None) is ok


@pytest.mark.parametrize(
    ("max_parallel", "max_unavailable", "workers", "batch"),
    [
        (10, None, 100, 10),  # max_parallel alone, as before
        (10, 3, 100, 3),
        (10, "10%", 1000, 10),  # 100, capped by the deployer's max_parallel
        (256, "10%", 1000, 100),
        (256, "25%", 7, 1),  # 1.75 rounds down to 1
        (256, "10%", 5, 1),  # never 0
        (256, "100%", 40, 40),
    ],
)
def test_batches_by_count_or_percentage(max_parallel, max_unavailable, workers, batch):
    from flakefleet.config import DeliveryConfig

    delivery = DeliveryConfig(authorized_keys=[DEPLOY], max_parallel=max_parallel, max_unavailable=max_unavailable)
    assert delivery.batch_size(workers) == batch


def test_rollout_waves_follow_max_unavailable():
    from flakefleet.plan.rollout import waves

    cfg = base()
    cfg["pools"][1]["count"] = 8
    cfg["delivery"] = {"authorized_keys": [DEPLOY], "max_unavailable": "50%"}
    stack = parse(cfg)
    inv = plan_inventory(stack)
    sizes = [len(w) for w in waves(stack, inv)]
    assert sizes == [1, 1, 1, 4, 4, 1]  # 3 control planes one by one, then 9 workers in halves (4, 4, 1)
