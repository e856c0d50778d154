"""Tier 2: the program with an autoscaled pool (pools[].autoscaling) under mocks. One group and one
launch template per pool and no resource per host (the count is the same at 10 and 10,000
hosts); IMDSv2, encrypted gp3, user data without secrets; the instance role reads only its own
pool's pointers, the cache's paths and the token; the token is a SecureString from a secret; the
group waits for its pool's publish and leaves the desired capacity to the cluster autoscaler;
the planned hosts' blocks are reserved; the preview and the PR comment say how a new system
reaches the pool."""

from __future__ import annotations

import base64
import json
from collections import Counter

import pytest

from flakefleet.preview.compare import PoolHosts, Side, compare
from flakefleet.preview.manifest import Manifest
from flakefleet.preview.render import markdown, pool_text
from flakefleet.common.outputs import StackOutputs
from flakefleet.preview.sides import deployed_side
from tests.harness import TEST_SIGNING_KEY, read_stack_file, reaches, run_program

SPOT = {"name": "spot", "role": "worker", "instance_type": "m6i.large", "labels": {"tier": "batch"},
        "taints": [{"key": "spot", "value": "true", "effect": "NoSchedule"}]}


def stack(max_hosts: int = 40, **spot) -> dict:
    raw = read_stack_file("dev")
    pools = json.loads(raw["flakefleet:pools"])
    raw["flakefleet:pools"] = json.dumps([*pools, {**SPOT, "autoscaling": {"min": 0, "max": max_hosts}, **spot}])
    # Room for 10,000 nodes at k3s' /24 per node (the rule that counts a pool's `max`).
    raw["flakefleet:cluster"] = json.dumps({**json.loads(raw["flakefleet:cluster"]), "pod_cidr": "100.64.0.0/10"})
    return raw


@pytest.fixture(scope="module")
def run():
    return run_program(stack(), stack="dev")


def test_a_pool_is_one_group_and_one_template_and_no_host_resource(run):
    assert len(run.of_type("aws:autoscaling/group:Group")) == 1
    assert len(run.of_type("aws:ec2/launchTemplate:LaunchTemplate")) == 1
    names = [r.name for r in run.resources]
    assert not [n for n in names if "spot-0" in n or "spot-1" in n]
    big = run_program(stack(10_000), stack="dev")
    assert Counter(r.type for r in big.resources) == Counter(r.type for r in run.resources)
    assert run.exports["pulled_pools"] == {"spot": {"group": "ff-dev-spot", "bucket": run.exports["buckets"]["cache"],
                                                    "cluster": "ff-dev", "region": "eu-west-1"}}


def test_instances_boot_with_imdsv2_encrypted_gp3_and_public_user_data(run):
    [template] = run.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    t = template.inputs
    assert t["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1}
    [volume] = t["blockDeviceMappings"]
    assert volume["deviceName"] == "/dev/xvda" and volume["ebs"]["encrypted"] == "true" and volume["ebs"]["volumeType"] == "gp3"
    text = base64.b64decode(t["userData"]).decode()
    secret = TEST_SIGNING_KEY.split(":")[1]
    tokens = [r.inputs.get("result", "") for r in run.of_type("random:index/randomPassword:RandomPassword")]
    assert secret not in text and "PRIVATE KEY" not in text and not [x for x in tokens if x and x in text]
    assert "flakefleet/pointers/ff-dev/spot/" in text and "-flakefleet-pull/bin/flakefleet-pull" in text
    assert "userData" not in template.secret_inputs  # nothing secret went in


def test_the_instance_role_reads_its_own_pointer_the_cache_and_the_token_only(run):
    policy = next(r for r in run.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("-pulled-spot"))
    doc = json.loads(policy.inputs["policy"])
    grants = {s["Sid"]: (s["Action"], s["Resource"]) for s in doc["Statement"]}
    [param] = run.of_type("aws:ssm/parameter:Parameter")
    bucket = next(r for r in run.of_type("aws:s3/bucket:Bucket") if "cache" in r.name)
    arn = f"arn:aws:s3:::{bucket.name}-bkt"
    assert grants["ReadOwnPointers"] == ("s3:GetObject", f"{arn}/flakefleet/pointers/ff-dev/spot/*")
    assert grants["ReadCachePaths"] == ("s3:GetObject", [f"{arn}/nix-cache-info", f"{arn}/*.narinfo", f"{arn}/nar/*"])
    assert grants["ReportOutcome"] == ("s3:PutObject", f"{arn}/flakefleet/reports/ff-dev/spot/*")
    assert grants["ReadJoinToken"] == ("ssm:GetParameter", "arn:aws:ssm:eu-west-1:123456789012:parameter/flakefleet/ff-dev/k3s-agent-token")
    action, group = grants["CompleteOwnLaunch"]
    assert action == "autoscaling:CompleteLifecycleAction" and group.endswith(":autoScalingGroupName/ff-dev-spot")
    assert all(r != "*" for _, res in grants.values() for r in ([res] if isinstance(res, str) else res))
    assert param.inputs["type"] == "SecureString" and "value" in param.secret_inputs
    assert param.inputs["value"].startswith("K10") and "::node:" in param.inputs["value"]


def test_the_group_waits_for_its_publish_and_leaves_its_size_to_the_autoscaler(run):
    [group] = run.of_type("aws:autoscaling/group:Group")
    g = group.inputs
    publish = next(r for r in run.of_type("command:local:Command") if r.name.endswith("-publish-spot"))
    assert reaches(run, group.urn, publish.urn)
    assert group.options["ignore_changes"] == ["desiredCapacity"]
    assert (g["minSize"], g["maxSize"], g["desiredCapacity"]) == (0, 40, 0)
    launch, drain = g["initialLifecycleHooks"]
    assert launch["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING" and launch["defaultResult"] == "ABANDON"
    # The instance's own drain holds a termination; an overrun goes on with it (never kept).
    assert drain["name"] == "flakefleet-drain" and drain["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert drain["defaultResult"] == "CONTINUE" and drain["heartbeatTimeout"] == 300 + 60 <= 7200
    prefs = g["instanceRefresh"]["preferences"]
    assert g["instanceRefresh"]["strategy"] == "Rolling" and prefs["autoRollback"] and prefs["minHealthyPercentage"] == 90
    assert g["launchTemplate"]["version"] == "1"  # a version, not $Latest: refreshes and rollbacks need one
    tags = {t["key"]: t["value"] for t in g["tags"]}
    assert tags["k8s.io/cluster-autoscaler/enabled"] == "true" and tags["k8s.io/cluster-autoscaler/ff-dev"] == "owned"
    assert tags["k8s.io/cluster-autoscaler/node-template/label/tier"] == "batch"
    assert tags["k8s.io/cluster-autoscaler/node-template/taint/spot"] == "true:NoSchedule"


def test_the_planned_hosts_blocks_are_reserved_from_the_groups(run):
    reservations = run.of_type("aws:ec2/subnetCidrReservation:SubnetCidrReservation")
    assert {r.inputs["reservationType"] for r in reservations} == {"explicit"}
    cidrs = {r.inputs["cidrBlock"] for r in reservations}
    instances = [r.inputs["privateIp"] for r in run.of_type("aws:ec2/instance:Instance")]
    from ipaddress import ip_address, ip_network

    assert all(any(ip_address(a) in ip_network(c) for c in cidrs) for a in instances)
    plain = run_program(read_stack_file("dev"), stack="dev")
    assert not plain.of_type("aws:ec2/subnetCidrReservation:SubnetCidrReservation")


def test_the_preview_and_the_pr_comment_say_how_a_new_system_reaches_the_pool():
    old, new = Manifest(system="old", packages={"k3s": {"1.33.1": "a"}}), Manifest(system="new", packages={"k3s": {"1.33.2": "b"}})
    pulled = "0..400 hosts, new system via instance refresh, 10% at a time"
    before = deployed_side(StackOutputs({"system_manifests": {"spot": old.pack()}, "nodes": {},
                                         "pulled_pools": {"spot": {"group": "c-spot", "bucket": "c-cache", "cluster": "c"}}}))
    head = Side({"spot": PoolHosts((), pulled=pulled)}, {"spot": new})
    [change] = compare(before, head)
    assert change.status == "changed" and not change.hosts and not change.reboots
    assert pool_text(change).splitlines()[0] == f"pool spot: {pulled}"
    assert "k3s" in pool_text(change) and pulled in markdown("dev", "main", [change])
    [same] = compare(before, Side({"spot": PoolHosts((), pulled=pulled)}, {"spot": old}))
    assert same.status == "unchanged"
    [added] = compare(Side({}, {}), head)
    assert pool_text(added) == f"pool spot: added (1 packages, 0 units); {pulled}"


def test_the_control_planes_may_scale_the_pools_groups_and_nothing_else(run):
    """The cluster autoscaler runs on the control planes (nixos/addons/cluster-autoscaler.nix)
    with their instance role: it reads groups anywhere (Describe calls take no resource scope)
    and resizes or shrinks only the stack's autoscaled groups."""
    policies = {r.name: json.loads(r.inputs["policy"]) for r in run.of_type("aws:iam/rolePolicy:RolePolicy")}
    cp = next(doc for name, doc in policies.items() if name.endswith("-control-plane-s3"))
    grants = {s["Sid"]: s for s in cp["Statement"]}
    assert grants["AutoscalerScales"]["Resource"] == [
        "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/ff-dev-spot"]
    assert set(grants["AutoscalerScales"]["Action"]) == {"autoscaling:SetDesiredCapacity",
                                                         "autoscaling:TerminateInstanceInAutoScalingGroup"}
    assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in grants["AutoscalerReads"]["Action"])
    # flakefleet-node-gc: whether a NotReady Node's instance still exists, nothing more.
    assert grants["NodeLifecycleReads"]["Action"] == "ec2:DescribeInstances"
    worker = next(doc for name, doc in policies.items() if name.endswith("-worker-s3"))
    assert not [s for s in worker["Statement"] if s["Sid"].startswith(("Autoscaler", "NodeLifecycle"))]
    plain = run_program(read_stack_file("dev"), stack="dev")
    assert not [s for r in plain.of_type("aws:iam/rolePolicy:RolePolicy")
                for s in json.loads(r.inputs["policy"])["Statement"] if s["Sid"].startswith("Autoscaler")]


def test_a_flake_without_a_pull_agent_is_one_line(monkeypatch):
    """A stack's own flake (delivery.flake) without lib.pullAgent: refused before any resource."""
    import pulumi

    from flakefleet.plan.contract import System
    from program import systems as program_systems

    real = program_systems.evaluate_systems

    def without_agents(flake, specs, *args):
        found, origin = real(flake, specs, *args)
        return {k: System(**{**v.__dict__, "agent": None}) for k, v in found.items()}, origin

    monkeypatch.setattr(program_systems, "evaluate_systems", without_agents)
    with pytest.raises(pulumi.RunError) as err:
        run_program(stack(), stack="dev")
    [line] = str(err.value).splitlines()
    assert line.startswith("flakefleet:pools[2].autoscaling: the flake at ") and "no pull agent (lib.pullAgent" in line


def test_user_data_over_ec2s_limit_is_one_line_naming_the_keys():
    import pulumi

    raw = stack()
    delivery = json.loads(raw["flakefleet:delivery"])
    key = delivery["authorized_keys"][0].split()
    delivery["authorized_keys"] = [f"{key[0]} {key[1]} deploy-{i}" for i in range(200)]
    raw["flakefleet:delivery"] = json.dumps(delivery)
    with pytest.raises(pulumi.RunError) as err:
        run_program(raw, stack="dev")
    [line] = str(err.value).splitlines()
    assert line.startswith("flakefleet:delivery.authorized_keys: an autoscaled pool's user data would be ")
    assert line.endswith("bytes, over EC2's 16384: authorize fewer deploy keys")
