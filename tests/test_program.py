"""Tier 2: the real program under Pulumi mocks, for every stack in stacks/.

Each security default is its own test, so a regression names the default it broke.
"""

from __future__ import annotations

import json

import pulumi
import pytest

from tests.conftest import require_tool
from tests.harness import ROOT, RecordingMonitor, FleetMocks, ProgramRun, read_stack_file, run_program, run_stack, stack_names

AWS_STACKS = [s for s in stack_names() if "aws:region" in read_stack_file(s)]
ADMIN_PORTS = {22, 6443, 2379, 2380, 10250}


@pytest.fixture(scope="module", params=stack_names())
def run(request) -> ProgramRun:
    require_tool("nix")  # the program evaluates every pool's system
    return run_stack(request.param)


@pytest.fixture(scope="module", params=AWS_STACKS)
def aws_run(request) -> ProgramRun:
    require_tool("nix")
    return run_stack(request.param)


def instances(run: ProgramRun):
    return run.of_type("aws:ec2/instance:Instance")


def policy_statements(run: ProgramRun, bucket_component: str) -> list[dict]:
    return json.loads(run.one("aws:s3/bucketPolicy:BucketPolicy", f"{bucket_component}-policy").inputs["policy"])["Statement"]


def bucket_names(run: ProgramRun) -> list[str]:
    return [r.name for r in run.of_type("aws:s3/bucket:Bucket")]


# ----------------------------------------------------------------------------- every stack


def test_exports_node_table_with_every_planned_host(run):
    nodes = run.exports["nodes"]
    assert nodes, "no nodes exported"
    for name, row in nodes.items():
        assert set(row) == {"role", "pool", "address", "instance_type", "instance_id", "wanted", "system",
                            "reboot_pending", "last_outcome", "ssh_port", "ssh_user", "host_key"}
        assert row["last_outcome"] == "activated"  # what the (mocked) runner's report said
        assert row["reboot_pending"] is False
        assert row["role"] in ("control-plane", "worker")
        assert row["wanted"] == run.exports["systems"][row["pool"]]
        assert row["system"] == row["wanted"]  # what the (mocked) delivery reported confirming
    by_instance = {r.inputs["privateIp"]: r for r in instances(run)}
    for row in nodes.values():
        if row["instance_id"] is not None:
            assert row["address"] in by_instance
            assert row["instance_type"] == by_instance[row["address"]].inputs["instanceType"]
        else:
            assert row["instance_type"] is None


def test_exports_api_endpoint_known_from_config(run):
    assert run.exports["api_endpoint"].startswith("https://") and run.exports["api_endpoint"].endswith(":6443")


def test_every_aws_resource_belongs_to_a_component(run):
    for r in run.resources:
        if r.custom:
            parent_type = r.parent.split("::")[2].split("$")[-1]
            assert parent_type.startswith("flakefleet:index:"), (r.type, r.name, r.parent)


def test_components_use_the_project_type_token(run):
    for r in run.resources:
        if not r.custom:
            assert r.type.startswith("flakefleet:index:"), r.type


def test_local_stack_creates_no_aws_resource():
    run = run_stack("local")
    assert [r for r in run.resources if r.type.startswith("aws:")] == []
    assert run.exports["buckets"] == {}
    assert {row["instance_id"] for row in run.exports["nodes"].values()} == {None}


# ----------------------------------------------------------------------------- machines


def test_imdsv2_required(aws_run):
    for r in instances(aws_run):
        meta = r.inputs["metadataOptions"]
        assert meta["httpTokens"] == "required", r.name
        assert meta["httpPutResponseHopLimit"] == 1, r.name  # pods cannot reach the node's credentials


def test_root_volumes_encrypted_gp3(aws_run):
    for r in instances(aws_run):
        root = r.inputs["rootBlockDevice"]
        assert root["encrypted"] is True and root["volumeType"] == "gp3", r.name


def test_instances_use_planned_private_addresses(aws_run):
    planned = {row["address"] for row in aws_run.exports["nodes"].values()}
    assert {r.inputs["privateIp"] for r in instances(aws_run)} == planned


def test_new_ami_does_not_replace_nodes(aws_run):
    for r in instances(aws_run):
        assert "ami" in r.options["ignore_changes"], r.name


def test_instances_use_official_nixos_ami_lookup(aws_run):
    assert {r.inputs["ami"] for r in instances(aws_run)} == {"ami-0123456789abcdef0"}


def test_ami_lookup_is_official_nixos_per_architecture():
    run = run_stack("prod")
    lookups = [args for token, args in run.calls if token == "aws:ec2/getAmi:getAmi"]
    assert lookups
    for args in lookups:
        assert args["owners"] == ["427812963091"] and args["mostRecent"] is True
        assert {"name": "name", "values": ["nixos/26.05*"]} in args["filters"]
    arches = {f["values"][0] for args in lookups for f in args["filters"] if f["name"] == "architecture"}
    assert arches == {"x86_64"}  # prod's aarch64 pool has count 0: no lookup, no machine


def ami_release_run(cluster: dict) -> tuple[list[str], list[str]]:
    """The AMI name filters and the warnings of a dev run with `cluster` as its cluster key."""
    config = read_stack_file("dev")
    config["flakefleet:cluster"] = json.dumps(cluster)
    warned: list[str] = []
    original = pulumi.log.warn
    pulumi.log.warn = lambda message, *a, **k: warned.append(message)
    try:
        run = run_program(config, stack="dev")
    finally:
        pulumi.log.warn = original
    names = sorted({v for token, args in run.calls if token == "aws:ec2/getAmi:getAmi"
                    for f in args["filters"] if f["name"] == "name" for v in f["values"]})
    return names, [w for w in warned if "nixos_release" in w]


def test_the_ami_release_follows_the_flake_unless_pinned():
    """No pin: the release nixos/flake.lock's nixpkgs branch names, silently. A pin: that AMI,
    and one line saying the hosts boot one release and switch to another."""
    assert ami_release_run({"name": "ff-dev"}) == (["nixos/26.05*"], [])
    assert ami_release_run({"name": "ff-dev", "nixos_release": "26.05"}) == (["nixos/26.05*"], [])
    names, warned = ami_release_run({"name": "ff-dev", "nixos_release": "25.11"})
    assert names == ["nixos/25.11*"]
    assert warned == ["flakefleet:cluster.nixos_release 25.11 differs from the flake's nixpkgs (nixos-26.05): "
                      "EC2 hosts boot the 25.11 AMI and their first delivery switches them to 26.05"]


def test_aarch64_pool_looks_up_arm64_ami():
    config = read_stack_file("prod")
    pools = json.loads(config["flakefleet:pools"])
    next(p for p in pools if p["name"] == "arm")["count"] = 2
    config["flakefleet:pools"] = json.dumps(pools)
    run = run_program(config, stack="prod")
    arches = {f["values"][0] for token, args in run.calls if token == "aws:ec2/getAmi:getAmi"
              for f in args["filters"] if f["name"] == "architecture"}
    assert arches == {"x86_64", "arm64"}
    arm = [r for r in instances(run) if r.inputs["tags"]["flakefleet:pool"] == "arm"]
    assert [r.inputs["instanceType"] for r in arm] == ["m7g.2xlarge"] * 2


def test_metal_pools_get_metal_instance_types():
    run = run_stack("prod")
    metal = [r for r in instances(run) if r.inputs["tags"]["flakefleet:pool"] == "metal"]
    assert metal and all(r.inputs["instanceType"].split(".")[1].startswith("metal") for r in metal)


def test_worker_profile_cannot_touch_snapshots(aws_run):
    worker_policy = [r for r in aws_run.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("-worker-s3")]
    assert worker_policy
    doc = json.loads(worker_policy[0].inputs["policy"])
    assert all("snapshots" not in json.dumps(s["Resource"]) for s in doc["Statement"])
    assert all(s["Action"] in ("s3:GetObject", "s3:ListBucket") for s in doc["Statement"])


def test_control_plane_profile_writes_only_its_cluster_folder(aws_run):
    policy = next(r for r in aws_run.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("-control-plane-s3"))
    doc = json.loads(policy.inputs["policy"])
    write = next(s for s in doc["Statement"] if s["Sid"] == "ReadWriteSnapshots")
    cluster = json.loads(read_stack_file_for(aws_run)["flakefleet:cluster"])["name"]
    assert write["Resource"].endswith(f"-snapshots-bkt/{cluster}/*")


def read_stack_file_for(run: ProgramRun) -> dict:
    stack = run.resources[0].urn.split("::")[0].removeprefix("urn:pulumi:")
    return read_stack_file(stack)


# ----------------------------------------------------------------------------- buckets


def test_buckets_block_all_public_access(aws_run):
    blocks = {r.name: r.inputs for r in aws_run.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")}
    for bucket in bucket_names(aws_run):
        b = blocks[f"{bucket}-public-access"]
        assert (b["blockPublicAcls"], b["blockPublicPolicy"], b["ignorePublicAcls"], b["restrictPublicBuckets"]) == (True,) * 4


def test_buckets_deny_non_tls(aws_run):
    for bucket in bucket_names(aws_run):
        deny = [s for s in policy_statements(aws_run, bucket) if s["Effect"] == "Deny"]
        assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert deny[0]["Principal"] == "*" and deny[0]["Action"] == "s3:*"


def test_buckets_versioned(aws_run):
    versioning = {r.name: r.inputs for r in aws_run.of_type("aws:s3/bucketVersioning:BucketVersioning")}
    for bucket in bucket_names(aws_run):
        assert versioning[f"{bucket}-versioning"]["versioningConfiguration"]["status"] == "Enabled"


def test_buckets_encrypted(aws_run):
    sse = {r.name: r.inputs for r in aws_run.of_type(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")}
    for bucket in bucket_names(aws_run):
        rule = sse[f"{bucket}-encryption"]["rules"][0]
        assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms")


def test_buckets_acls_disabled(aws_run):
    owner = {r.name: r.inputs for r in aws_run.of_type("aws:s3/bucketOwnershipControls:BucketOwnershipControls")}
    for bucket in bucket_names(aws_run):
        assert owner[f"{bucket}-ownership"]["rule"]["objectOwnership"] == "BucketOwnerEnforced"


def test_old_snapshot_versions_expire(aws_run):
    lifecycle = next(r for r in aws_run.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
                     if r.name.endswith("-snapshots-lifecycle"))
    rule = lifecycle.inputs["rules"][0]
    assert rule["status"] == "Enabled" and rule["noncurrentVersionExpiration"]["noncurrentDays"] >= 1


def test_bucket_policy_waits_for_public_access_block(aws_run):
    for bucket in bucket_names(aws_run):
        policy = aws_run.one("aws:s3/bucketPolicy:BucketPolicy", f"{bucket}-policy")
        block = aws_run.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", f"{bucket}-public-access")
        assert block.urn in policy.dependencies


# ----------------------------------------------------------------------------- network


def test_default_security_group_has_no_rules(aws_run):
    (default,) = aws_run.of_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert default.inputs["ingress"] == [] and default.inputs["egress"] == []


def test_no_world_access_to_admin_ports(aws_run):
    for r in aws_run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        if r.inputs.get("cidrIpv4") == "0.0.0.0/0":
            ports = set(range(int(r.inputs["fromPort"]), int(r.inputs["toPort"]) + 1))
            assert not ports & ADMIN_PORTS, r.name


def test_ssh_only_from_admin_cidrs(aws_run):
    admin = set(json.loads(read_stack_file_for(aws_run)["flakefleet:network"])["admin_cidrs"])
    ssh = [r for r in aws_run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if r.inputs["fromPort"] == 22]
    assert ssh and {r.inputs["cidrIpv4"] for r in ssh} == admin


def test_etcd_only_from_control_planes(aws_run):
    etcd = [r for r in aws_run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if r.inputs["fromPort"] == 2379]
    assert etcd
    for r in etcd:
        assert r.inputs["securityGroupId"].endswith("-control-plane-id")
        assert r.inputs["referencedSecurityGroupId"].endswith("-control-plane-id")
        assert "cidrIpv4" not in r.inputs


def test_vxlan_never_from_cidrs(aws_run):
    vxlan = [r for r in aws_run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if r.inputs["fromPort"] == 8472]
    assert vxlan and all("cidrIpv4" not in r.inputs and r.inputs["ipProtocol"] == "udp" for r in vxlan)


def test_nodes_live_in_private_subnets_without_public_ips(aws_run):
    subnets = aws_run.of_type("aws:ec2/subnet:Subnet")
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)
    private_ids = {f"{s.name}-id" for s in subnets if "-private-" in s.name}
    assert all(r.inputs["subnetId"] in private_ids for r in instances(aws_run))


def test_flow_logs_to_s3(aws_run):
    (flow,) = aws_run.of_type("aws:ec2/flowLog:FlowLog")
    assert flow.inputs["logDestinationType"] == "s3" and flow.inputs["trafficType"] == "ALL"
    statements = policy_statements(aws_run, next(b for b in bucket_names(aws_run) if "flow-logs" in b))
    writer = next(s for s in statements if s["Sid"] == "AWSLogDeliveryWrite")
    assert writer["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"


def test_s3_reached_through_gateway_endpoint(aws_run):
    (endpoint,) = aws_run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint.inputs["vpcEndpointType"] == "Gateway"
    assert endpoint.inputs["serviceName"] == "com.amazonaws.eu-west-1.s3"


def test_nat_gateway_count_follows_config():
    assert len(run_stack("prod").of_type("aws:ec2/natGateway:NatGateway")) == 3  # per-az
    assert len(run_stack("staging").of_type("aws:ec2/natGateway:NatGateway")) == 1  # single


# ----------------------------------------------------------------------------- API load balancer


def test_api_load_balancer_only_with_several_control_planes(aws_run):
    lbs = aws_run.of_type("aws:lb/loadBalancer:LoadBalancer")
    control = [row for row in aws_run.exports["nodes"].values() if row["role"] == "control-plane"]
    assert len(lbs) == (1 if len(control) > 1 else 0)
    assert (aws_run.exports["api_lb_dns_name"] is not None) == bool(lbs)


@pytest.mark.parametrize("stack", [s for s in AWS_STACKS if s != "dev"])
def test_api_load_balancer_internal_on_fixed_addresses(stack):
    run = run_stack(stack)
    (lb,) = run.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert lb.inputs["internal"] is True and lb.inputs["loadBalancerType"] == "network"
    addresses = [m["privateIpv4Address"] for m in lb.inputs["subnetMappings"]]
    assert run.exports["api_endpoint"] == f"https://{addresses[0]}:6443"
    (listener,) = run.of_type("aws:lb/listener:Listener")
    assert (listener.inputs["port"], listener.inputs["protocol"]) == (6443, "TCP")
    (group,) = run.of_type("aws:lb/targetGroup:TargetGroup")
    assert group.inputs["healthCheck"]["protocol"] == "TCP"
    targets = {r.inputs["targetId"] for r in run.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment")}
    assert targets == {row["address"] for row in run.exports["nodes"].values() if row["role"] == "control-plane"}


# ----------------------------------------------------------------------------- bad input


def test_bad_config_stops_before_any_resource():
    config = read_stack_file("dev")
    pools = json.loads(config["flakefleet:pools"])
    pools[0]["count"] = 2
    config["flakefleet:pools"] = json.dumps(pools)
    config["flakefleet:network"] = json.dumps({"admin_cidrs": ["0.0.0.0/0"]})
    monitor = RecordingMonitor(FleetMocks())
    with pytest.raises(pulumi.RunError) as err:
        run_program(config, stack="dev", monitor=monitor)
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid configuration for stack dev:"
    assert sorted(line.strip().split(":")[1] for line in lines[1:]) == ["network.admin_cidrs[0]", "pools[0].count"]
    assert monitor.records == []


# ----------------------------------------------------------------------------- NixOS systems


def test_exports_one_system_per_pool_with_hosts(run):
    pools_with_hosts = {row["pool"] for row in run.exports["nodes"].values()}
    systems = run.exports["systems"]
    assert set(systems) == pools_with_hosts
    assert all(out.startswith("/nix/store/") and "-nixos-system-" in out for out in systems.values())


def test_evaluation_failure_stops_before_any_resource(tmp_path, monkeypatch):
    require_tool("nix")
    (tmp_path / "flake.nix").write_text('{ outputs = { self }: { lib.toplevel = spec: throw "no system for ${spec.pool}"; }; }')
    monkeypatch.setenv("FLAKEFLEET_FLAKE", str(tmp_path))
    monitor = RecordingMonitor(FleetMocks())
    with pytest.raises(pulumi.RunError) as err:
        run_program(read_stack_file("dev"), stack="dev", monitor=monitor)
    text = str(err.value)
    assert text.startswith("cannot evaluate the NixOS systems of stack dev")
    assert "pool cp: nix could not evaluate its system:" in text and "no system for cp" in text
    assert "pool workers:" in text
    assert monitor.records == []


def with_cluster(stack: str, **changes) -> dict:
    raw = read_stack_file(stack)
    raw["flakefleet:cluster"] = json.dumps({**json.loads(raw["flakefleet:cluster"]), **changes})
    return raw


def test_a_cni_switch_of_a_running_cluster_is_refused_before_any_resource():
    """The last update ran flannel, the stack now says cilium: one line, and nothing is registered
    (every component waits for the check; the last update's outputs are read by an invoke)."""
    from pulumi.errors import RunError

    from tests.harness import FleetMocks, RecordingMonitor

    monitor = RecordingMonitor(FleetMocks(previous_outputs={"cluster_cni": "flannel"}))
    with pytest.raises(RunError) as err:
        run_program(with_cluster("staging", cni="cilium"), stack="staging", preview=True, monitor=monitor)
    assert str(err.value) == (
        "flakefleet:cluster.cni: the cluster runs flannel; switching a running cluster to cilium is refused "
        "(pods keep flannel's addresses and policies): rebuild the cluster with cilium (docs/nixos.md) or keep cni: flannel")
    assert list(monitor.resources.values()) == []
    assert "pulumi:pulumi:readStackOutputs" in [token for token, _ in monitor.mocks.calls]


def test_the_last_update_is_read_by_an_invoke_not_a_resource():
    """A StackReference to the stack itself was a resource whose outputs changed with every
    update, so an unchanged preview showed them all as `~ outputs`: the program reads them with
    the builtin invoke instead, naming its own stack, and registers no StackReference."""
    run = run_stack("local")
    assert not run.of_type("pulumi:pulumi:StackReference")
    reads = [args["name"] for token, args in run.calls if token == "pulumi:pulumi:readStackOutputs"]
    assert len(reads) == 1 and reads[0].endswith("/flakefleet/local")  # org/project/stack (no organization under mocks)


class CheckpointRace(FleetMocks):
    """The engine failing `readStackOutputs` `failures` times first, as the file backend does when
    the read meets the checkpoint being written (the error as the engine sends it: a gRPC error)."""

    def __init__(self, failures: int, **kw):
        super().__init__(**kw)
        self.failures = failures

    def call(self, args: pulumi.runtime.MockCallArgs):
        import grpc

        if args.token == "pulumi:pulumi:readStackOutputs" and self.failures:
            self.failures -= 1
            self.calls.append((args.token, dict(args.args)))

            class EngineError(grpc.RpcError):
                def code(self):
                    return grpc.StatusCode.UNKNOWN

                def details(self):
                    return ("invocation of pulumi:pulumi:readStackOutputs returned an error: failed to load "
                            "checkpoint: EOF")
            raise EngineError()
        return super().call(args)


def test_a_read_of_the_last_update_that_meets_the_checkpoint_being_written_is_read_again(monkeypatch):
    """Seen with the real engine on a file backend (about one first update in five): the program
    reads again, and goes on with what the last update exported."""
    import program.last_update as last_update

    pauses: list[float] = []
    monkeypatch.setattr(last_update.time, "sleep", pauses.append)
    keys = {name: f"ssh-ed25519 AAAA{name}" for name in ("cp-0", "worker-0", "worker-1")}
    mocks = CheckpointRace(2, previous_outputs={"nodes": {n: {"host_key": k} for n, k in keys.items()}})
    run = run_program(read_stack_file("local"), stack="local", monitor=RecordingMonitor(mocks))
    assert [t for t, _ in run.calls].count("pulumi:pulumi:readStackOutputs") == 3 and pauses == [0.2, 0.4]
    assert run.of_type("command:local:Command")


def test_a_last_update_that_cannot_be_read_stops_the_program_in_one_line_before_any_resource(monkeypatch):
    from pulumi.errors import RunError

    import program.last_update as last_update

    monkeypatch.setattr(last_update.time, "sleep", lambda _: None)
    monitor = RecordingMonitor(CheckpointRace(99))
    with pytest.raises(RunError) as err:
        run_program(read_stack_file("local"), stack="local", monitor=monitor)
    assert str(err.value) == (
        "cannot read this stack's last outputs (pulumi:pulumi:readStackOutputs, 5 attempts): invoke of "
        "pulumi:pulumi:readStackOutputs failed: invocation of pulumi:pulumi:readStackOutputs returned an error: "
        "failed to load checkpoint: EOF")
    assert list(monitor.resources.values()) == []


@pytest.mark.parametrize("previous", [{}, {"cluster_cni": "cilium"}], ids=["first-update", "same-cni"])
def test_a_new_cluster_or_the_same_cni_goes_ahead_and_exports_it(previous):
    from tests.harness import FleetMocks, RecordingMonitor

    run = run_program(with_cluster("staging", cni="cilium"), stack="staging",
                      monitor=RecordingMonitor(FleetMocks(previous_outputs=previous)))
    assert run.exports["cluster_cni"] == "cilium"
    udp = {(r.inputs.get("fromPort"), r.inputs.get("ipProtocol")) for r in run.of_type(
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if r.name.endswith("-cilium-vxlan-from-worker")}
    assert udp == {(8472, "udp")}
    assert not [r for r in run.resources if "flannel-vxlan" in r.name]  # the flannel rule is gone with flannel


def test_no_resource_of_an_existing_stack_is_renamed_or_reparented():
    """The URNs every stack registered when the code was regrouped (tests/golden/urns.txt) are all
    still registered: a move that changed a name, a type or a parent would replace the resource
    (the Delivery Command's replacement, say, would run the host's removal)."""
    golden = [line for line in (ROOT / "tests" / "golden" / "urns.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    for stack in stack_names():
        registered = {r.urn for r in run_stack(stack).resources}
        missing = [u for u in golden if u.startswith(f"urn:pulumi:{stack}::") and u not in registered]
        assert missing == [], f"stack {stack}: {missing[:3]}"


def test_hosts_are_granted_the_cache_they_substitute_from():
    """With `delivery.cache.bucket` set the hosts substitute from that bucket (their nix.conf),
    so that is the bucket their instance profiles may read, not the stack's own cache."""
    config = read_stack_file("dev")
    config["flakefleet:delivery"] = json.dumps({**json.loads(config["flakefleet:delivery"]),
                                                "cache": {"bucket": "shared-fleet-cache"}})
    run = run_program(config, stack="dev")
    for policy in run.of_type("aws:iam/rolePolicy:RolePolicy"):
        doc = json.loads(policy.inputs["policy"])
        cache = [s["Resource"] for s in doc["Statement"] if s["Sid"] in ("ReadCache", "ListCache")]
        assert cache == ["arn:aws:s3:::shared-fleet-cache/*", "arn:aws:s3:::shared-fleet-cache"], policy.name
