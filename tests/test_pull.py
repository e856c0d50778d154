"""Tier 1 and moto: an autoscaled pool's pointer (signed by the publisher, verified by the pull
agent; openssl, an implementation that is not ours, verifies the same bytes), the agent's file
paths against the delivery contract's, the user data (public material only, within EC2's limit),
the refresh batch from `max_unavailable`, and the pointer's publication into S3 and the join
token's read from SSM as the agent makes them (moto)."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from flakefleet.plan import contract, specs
from flakefleet.plan.contract import PublishPlan
from flakefleet.plan.rollout import pulled_min_healthy
from flakefleet.pull import pointer as ptr
from flakefleet.pull.publish import publish_pointer
from flakefleet.pull.userdata import EC2_USER_DATA_MAX, pull_config, pulled_user_data
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "/nix/store/" + "a" * 32 + "-nixos-system-spot"
OTHER = "/nix/store/" + "b" * 32 + "-nixos-system-spot"
FACTS = {"schema": 1, "cluster": "c", "pool": "spot", "role": "worker", "api_endpoint": "https://10.0.0.5:6443",
         "init": False, "server": None}


def agent_module():
    """nixos/host/flakefleet_pull.py, as the pull agent's store path runs it."""
    spec = importlib.util.spec_from_file_location("flakefleet_pull", ROOT / "nixos/host/flakefleet_pull.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AGENT = agent_module()


def nix_key(name: str = "fleet-1") -> tuple[str, str]:
    """(secret, public) in Nix's format: name:base64(seed + public), name:base64(public)."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{name}:{base64.b64encode(seed + public).decode()}", f"{name}:{base64.b64encode(public).decode()}"


SECRET, PUBLIC = nix_key()


def signed(system: str = SYSTEM, pool: str = "spot", cluster: str = "c", key: str = SECRET) -> dict:
    return ptr.sign(ptr.Pointer(cluster, pool, system, FACTS), key)


def test_the_agent_verifies_what_the_publisher_signs():
    body = AGENT.verify(signed(), PUBLIC, "c", "spot", ptr.store_hash(SYSTEM))
    assert body["system"] == SYSTEM and body["facts"] == FACTS


@pytest.mark.parametrize(("obj", "why"), [
    (signed(key=nix_key("fleet-1")[0]), "its signature does not verify with the trusted key 'fleet-1'"),
    (signed(key=nix_key("other-1")[0]), "signed by key 'other-1', not the trusted 'fleet-1'"),
    (signed(pool="gpu"), "a pointer for c/gpu; this host is c/spot"),
    (signed(cluster="d"), "a pointer for d/spot; this host is c/spot"),
    (signed(system=OTHER), f"it names {OTHER}; the launch template names {'a' * 32}"),
    ({"pointer": "{}", "key": "fleet-1"}, "not a pointer object signed with a Nix Ed25519 key"),
], ids=["same-name-other-key", "other-key", "other-pool", "other-cluster", "other-system", "not-a-pointer"])
def test_the_agent_refuses_a_pointer_it_must_not_follow(obj, why):
    with pytest.raises(AGENT.Refused, match="^" + why.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.") + "$"):
        AGENT.verify(obj, PUBLIC, "c", "spot", "a" * 32)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_changed_byte_of_the_text_or_signature_is_refused(data):
    obj = signed()
    field = data.draw(st.sampled_from(["pointer", "signature"]))
    raw = bytearray(obj[field].encode() if field == "pointer" else base64.b64decode(obj[field]))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        changed = {**obj, field: raw.decode() if field == "pointer" else base64.b64encode(bytes(raw)).decode()}
    except UnicodeDecodeError:
        return  # not text: S3 would hand it over as bytes json.loads refuses before verify
    with pytest.raises(AGENT.Refused):
        AGENT.verify(changed, PUBLIC, "c", "spot", "a" * 32)


def test_openssl_verifies_the_pointer_signature(tmp_path):
    """The signed bytes and the key's DER form as another Ed25519 implementation reads them."""
    openssl = require_tool("openssl")
    obj = signed()
    (tmp_path / "msg").write_bytes(ptr.DOMAIN + obj["pointer"].encode())
    (tmp_path / "sig").write_bytes(base64.b64decode(obj["signature"]))
    (tmp_path / "pub.der").write_bytes(ptr.public_key_der(PUBLIC))
    argv = [openssl, "pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey", str(tmp_path / "pub.der"),
            "-rawin", "-in", str(tmp_path / "msg"), "-sigfile", str(tmp_path / "sig")]
    good = subprocess.run(argv, capture_output=True, text=True)
    assert good.returncode == 0 and "Signature Verified Successfully" in good.stdout, good.stdout + good.stderr
    (tmp_path / "msg").write_bytes(ptr.DOMAIN + obj["pointer"].replace("spot", "spou", 1).encode())
    assert subprocess.run(argv, capture_output=True, text=True).returncode != 0


def test_the_agent_writes_the_files_delivery_writes():
    """Its paths restate the delivery contract's (it cannot import flakefleet on the host)."""
    assert AGENT.FACTS_PATH == contract.FACTS_PATH and AGENT.K3S_DROP_IN_PATH == contract.K3S_DROP_IN_PATH
    assert AGENT.AGENT_TOKEN_PATH == specs.AGENT_TOKEN[0] and AGENT.CACHE_CONF_PATH == specs.CACHE_CONF_PATH
    assert AGENT.DOMAIN == ptr.DOMAIN and AGENT.POINTER_SCHEMA == ptr.POINTER_SCHEMA
    assert AGENT.REPORTS == contract.REPORTS
    me = {"instance": "i-0abc", "address": "10.0.3.7", "zone": "eu-west-1b"}
    delivered = specs.k3s_host_config({**FACTS, "name": "i-0abc", "address": "10.0.3.7"})
    assert AGENT.drop_in(me) == {**delivered, "kubelet-arg": ["provider-id=aws:///eu-west-1b/i-0abc"]}


def user_data(**changes) -> str:
    conf = pull_config("c", "spot", "eu-west-1", "c-cache", ptr.pointer_key("c", "spot", SYSTEM), "a" * 32, PUBLIC,
                       "/flakefleet/c/k3s-agent-token", "c-spot", "flakefleet-health", 300, 10)
    return pulled_user_data({**conf, **changes}, "/nix/store/" + "c" * 32 + "-flakefleet-pull",
                            ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM deploy"],
                            PUBLIC)


def test_user_data_is_public_material_within_ec2s_limit():
    text = user_data()
    assert text.startswith("#!/bin/sh\n") and len(text.encode()) < EC2_USER_DATA_MAX
    # No signing key, no private key, no join token (K10<CA hash>::<user>:<password>; a bare "K10"
    # also occurs by chance in the random base64 of the fleet's public key).
    assert SECRET.split(":")[1] not in text and "PRIVATE KEY" not in text
    assert not re.search(r"K10[0-9a-f]{64}::", text) and "::node:" not in text and "::server:" not in text
    assert f"extra-trusted-public-keys = {PUBLIC}" in text
    conf = json.loads(text.split("<<'FLAKEFLEET_EOF'\n")[2].split("\nFLAKEFLEET_EOF")[0])
    assert conf["pointer"] == f"flakefleet/pointers/c/spot/{'a' * 32}.json" and conf["token_parameter"].startswith("/")
    assert "systemd-run --unit=flakefleet-pull" in text and "-flakefleet-pull/bin/flakefleet-pull /etc/flakefleet/pull.json" in text
    syntax = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True)
    assert syntax.returncode == 0, syntax.stderr


@pytest.mark.parametrize(("max_unavailable", "pool_max", "healthy"), [
    (None, 400, 90), ("10%", 400, 90), ("25%", 10, 75), ("100%", 10, 0), (1, 10, 90), (3, 10, 70), (1, 400, 99),
    (50, 10, 0),
])
def test_the_refresh_batch_follows_max_unavailable(max_unavailable, pool_max, healthy):
    assert pulled_min_healthy(max_unavailable, pool_max) == healthy


@mock_aws
def test_the_pointer_is_published_once_and_read_back_as_the_agent_reads_it():
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="c-cache", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    plan = PublishPlan(pool="spot", system=SYSTEM, drv="/nix/store/x.drv", bucket="c-cache", region="eu-west-1",
                       pointer={"cluster": "c", "pool": "spot", "facts": FACTS})
    key = publish_pointer(s3, plan, SECRET)
    assert key == f"flakefleet/pointers/c/spot/{'a' * 32}.json"
    first = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket="c-cache")["Contents"]}
    assert set(first) == {key, "flakefleet/pointers/c/spot/current.json"}
    obj = json.loads(s3.get_object(Bucket="c-cache", Key=key)["Body"].read())
    assert AGENT.verify(obj, PUBLIC, "c", "spot", "a" * 32)["system"] == SYSTEM
    versions = len(s3.list_object_versions(Bucket="c-cache").get("Versions", []))
    publish_pointer(s3, plan, SECRET)  # the same pointer again: nothing is written
    assert len(s3.list_object_versions(Bucket="c-cache").get("Versions", [])) == versions
    moved = publish_pointer(s3, PublishPlan(**{**plan.__dict__, "system": OTHER}), SECRET)
    current = json.loads(s3.get_object(Bucket="c-cache", Key="flakefleet/pointers/c/spot/current.json")["Body"].read())
    assert json.loads(current["pointer"])["system"] == OTHER and key in first and moved != key
    assert s3.head_object(Bucket="c-cache", Key=key)["ETag"] == first[key]  # the old pointer stays (a rollback's)


@mock_aws
def test_the_join_token_is_read_decrypted_from_its_secure_string():
    ssm = boto3.client("ssm", region_name="eu-west-1")
    ssm.put_parameter(Name="/flakefleet/c/k3s-agent-token", Value="K10" + "f" * 64 + "::node:secret", Type="SecureString")
    clients = AGENT.clients({"region": "eu-west-1"})
    value = clients["ssm"].get_parameter(Name="/flakefleet/c/k3s-agent-token", WithDecryption=True)["Parameter"]
    assert value["Type"] == "SecureString" and value["Value"].endswith("::node:secret")


def test_a_pool_view_sorts_instances_by_their_reports():
    from flakefleet.ops.pulled import classify

    reports = {"i-1": {"result": "joined", "system": SYSTEM}, "i-2": {"result": "joined", "system": OTHER},
               "i-3": {"result": "failed", "reason": "unhealthy"}, "i-9": {"result": "joined", "system": SYSTEM}}
    view = classify("spot", "c-spot", SYSTEM, ["i-4", "i-3", "i-2", "i-1"], reports)
    assert (view.on_pointer, view.stragglers, view.failed, view.unreported) == (("i-1",), ("i-2",), ("i-3",), ("i-4",))
    assert view.instances == 4 and not view.healthy
    assert classify("spot", "c-spot", SYSTEM, ["i-1", "i-4"], reports).healthy  # booting is not a problem


@pytest.mark.parametrize("state, leaving", [
    ("Pending", False), ("Pending:Wait", False), ("Pending:Proceed", False), ("InService", False),
    ("Standby", False), ("Terminating", True), ("Terminating:Wait", True), ("Terminating:Proceed", True),
    ("Terminated", True),
])
def test_an_instance_being_terminated_is_leaving_not_behind(state, leaving):
    from dataclasses import replace

    from flakefleet.ops.pulled import by_lifecycle, classify, render

    live, gone = by_lifecycle([{"InstanceId": "i-1", "LifecycleState": state}])
    assert (gone == ["i-1"], live == ["i-1"]) == (leaving, not leaving)
    view = replace(classify("spot", "c-spot", SYSTEM, live, {"i-1": {"result": "joined", "system": OTHER}}),
                   leaving=tuple(gone))
    assert view.healthy is leaving  # a draining old instance is not a straggler
    assert render([view])[0].endswith(", 1 leaving") is leaving


@mock_aws
def test_status_reads_a_pool_from_its_group_pointer_and_reports():
    """As status and drift read a pulled pool: the group's live instances (moto launches them),
    the current pointer, the instances' reports as the agent writes them."""
    from flakefleet.common.outputs import PulledPoolRow
    from flakefleet.ops.pulled import read_pool, render

    ec2 = boto3.client("ec2", region_name="eu-west-1")
    template = ec2.create_launch_template(LaunchTemplateName="c-spot", LaunchTemplateData={
        "ImageId": "ami-12c6146b", "InstanceType": "m6i.large"})["LaunchTemplate"]["LaunchTemplateId"]
    subnet = ec2.create_subnet(VpcId=ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"],
                               CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    autoscaling = boto3.client("autoscaling", region_name="eu-west-1")
    autoscaling.create_auto_scaling_group(AutoScalingGroupName="c-spot", MinSize=0, MaxSize=5, DesiredCapacity=3,
                                          LaunchTemplate={"LaunchTemplateId": template, "Version": "1"},
                                          VPCZoneIdentifier=subnet)
    live = sorted(i["InstanceId"] for i in autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=["c-spot"])["AutoScalingGroups"][0]["Instances"])
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="c-cache", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    publish_pointer(s3, PublishPlan(pool="spot", system=SYSTEM, drv="/nix/store/x.drv", bucket="c-cache",
                                    region="eu-west-1", pointer={"cluster": "c", "pool": "spot", "facts": FACTS}), SECRET)
    for instance, system in zip(live, (SYSTEM, OTHER)):
        s3.put_object(Bucket="c-cache", Key=f"{AGENT.REPORTS}/c/spot/{instance}.json",
                      Body=json.dumps({"instance": instance, "result": "joined", "system": system}).encode())
    view = read_pool(s3, autoscaling, "spot", PulledPoolRow(group="c-spot", bucket="c-cache", cluster="c"))
    assert view.system == SYSTEM and view.instances == 3
    assert (view.on_pointer, view.stragglers, view.unreported) == ((live[0],), (live[1],), (live[2],))
    assert render([view])[0] == (f"pool spot (group c-spot): 3 instances, 1 on {SYSTEM.rsplit('/', 1)[-1]}, 1 behind, "
                                 "0 failed, 1 not reported yet")


def test_the_plan_names_an_autoscaled_pool_and_how_it_rolls(tmp_path):
    """`python -m flakefleet plan`: the group's pool under the planned hosts, with its bounds."""
    from flakefleet.__main__ import main

    stack = (ROOT / "stacks/Pulumi.dev.yaml").read_text().replace(
        "  flakefleet:pools:\n",
        "  flakefleet:pools:\n    - name: spot\n      role: worker\n      instance_type: m6i.large\n"
        "      autoscaling: {min: 0, max: 50}\n", 1)
    (tmp_path / "Pulumi.asg.yaml").write_text(stack)
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "--stack", "asg", "--stacks-dir", str(tmp_path)]) == 0
    lines = out.getvalue().splitlines()
    assert lines[-1] == "pool spot (autoscaled, its group's hosts): 0..50 hosts, new system via instance refresh, 10% at a time"
    assert not [line for line in lines if line.startswith("spot-")]
