"""Tier 4: an autoscaled pool's instance pulling its system at first boot, on fresh test machines
(systemd, plain Debian, as a new instance is before its first switch) beside a delivered control
plane. Each instance runs the pull part of the user data the launch template carries
(flakefleet/pull/userdata.py; the first-boot part before it is the EC2 hosts' and tested with
them), which realises the pull agent from the binary cache and starts it in its own unit. The
agent talks to what tests/pullhosts.py serves on loopback: its metadata service (IMDSv2), moto's
S3, SSM and Auto Scaling, and the cache over HTTP (signed narinfos, checked by the machine's Nix).

Checked: a pulled instance switches to the pool's system, is confirmed healthy, joins as a Node
named by its instance id, and completes its launch hook with CONTINUE, the token never in its
journal; a pointer with a bad signature is refused with nothing realised or activated (ABANDON);
a system whose k3s crash-loops fails the health gate, is rolled back by hostctl.sh, and the
instance is abandoned. A pointer move reaches the pool a batch at a time: the instance refresh
is AWS' (moto does not run one), restated here from AWS' documentation (`refresh_batch`) with
the MinHealthyPercentage the stack gives the group; each replaced instance drains first and its
replacement pulls the new pointer's system.

And the end of an instance's life: when its metadata says Terminated (the group's termination
hook holds it), flakefleet-drain.service cordons its own Node and evicts its own pods with the
kubelet's identity (a disruption budget's 429 retried until it allows), then completes the
hook with CONTINUE, its report keeping the system it ran; the kubelet's identity can touch no
other node's pods or Node. On the control plane, the node GC deletes the Nodes of instances EC2
no longer has, and no other."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest

from components.autoscaling import DRAIN_HOOK
from flakefleet.cluster.kubectl import node_names
from flakefleet.plan.contract import PLAN_ENV, PublishPlan
from flakefleet.plan.rollout import pulled_min_healthy
from flakefleet.plan.specs import pool_spec, pulled_facts
from flakefleet.pull.pointer import Pointer, pointer_key, sign, store_hash
from flakefleet.pull.publish import publish_pointer
from flakefleet.pull.userdata import pull_config, pulled_user_data
from flakefleet.nixos.evaluate import evaluate_systems
from tests import pullhosts
from tests.conftest import STANDIN_FLAKE
from tests.local_fleet import TEST_CA_HASH, TOKENS, local_fleet, stack
from tests.machines.machine import add_machine
from tests.testhosts import poll, run_as_deployer

ROOT = Path(__file__).resolve().parent.parent
CP = {"cp-0": "127.0.0.221"}
CACHE_ADDRESS = "127.0.0.222"
# Each test's fresh instance, on its own address (its metadata service listens there too).
INSTANCES = {"joins": "127.0.0.223", "bad-signature": "127.0.0.224", "unhealthy": "127.0.0.225",
             "drains": "127.0.0.226", "old-0": "127.0.0.227", "old-1": "127.0.0.228", "new-0": "127.0.0.230",
             "new-1": "127.0.0.231"}
BUCKET = "ff-test-cache"
TOKEN_PARAMETER = "/flakefleet/ff-local/k3s-agent-token"
JOIN_TOKEN = f"K10{TEST_CA_HASH}::node:{TOKENS['FLAKEFLEET_SECRET_K3S_AGENT_TOKEN']}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The control plane delivered; the pool's system and agent in an HTTP cache; moto's S3
    holding the pointer and SSM the token."""
    root = tmp_path_factory.mktemp("pull")
    with local_fleet(root, CP) as (fleet, hosts), pullhosts.aws() as endpoint:
        # worker-0 is only named: the pool the instances pull is the workers' spec under its own name.
        hosts = {**hosts, "worker-0": SimpleNamespace(address="127.0.0.229", host_key=hosts["cp-0"].host_key)}
        cfg, inv, _, plans = stack(hosts, fleet, drop=("worker-1",))
        proc = run_as_deployer(fleet, ["flakefleet.delivery.runner"], {PLAN_ENV: plans["cp-0"].to_json(), **TOKENS},
                               timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        cache = root / "cache"
        systems = {name: build_and_copy(fleet, cache, spec) for name, spec in pulled_specs(cfg, inv).items()}
        s3 = boto3.client("s3", region_name=pullhosts.REGION, endpoint_url=endpoint,
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": pullhosts.REGION})
        ssm = boto3.client("ssm", region_name=pullhosts.REGION, endpoint_url=endpoint,
                           aws_access_key_id="test", aws_secret_access_key="test")
        ssm.put_parameter(Name=TOKEN_PARAMETER, Value=JOIN_TOKEN, Type="SecureString")
        facts = pulled_facts(inv, "spot")
        for system in systems.values():
            publish_pointer(s3, PublishPlan(pool="spot", system=system.out, drv=system.drv, bucket=BUCKET,
                                            region=pullhosts.REGION, pointer={"cluster": inv.cluster, "pool": "spot",
                                                                              "facts": facts}), fleet.signing_secret)
        with pullhosts.cache_server(cache, CACHE_ADDRESS) as cache_url:
            yield SimpleNamespace(fleet=fleet, hosts=hosts, cfg=cfg, systems=systems, endpoint=endpoint, cache_url=cache_url,
                                  s3=s3, cluster=inv.cluster)


def pulled_specs(cfg, inv) -> dict[str, dict]:
    """The pool's system as the program specs an autoscaled pool (the workers' settings, `pull`),
    one whose k3s the stand-in makes crash-loop (a fault keyed by its path), and the next system
    a rollout moves the pointer to."""
    spec = {**pool_spec(cfg, inv, "workers").as_json(), "pool": "spot", "pull": True,
            "standin_host_dir": str(ROOT / "nixos" / "host")}
    return {"good": spec, "crashing": {**spec, "labels": {"flakefleet.io/test": "crashing"}},
            "next": {**spec, "labels": {"flakefleet.io/test": "next"}}}


def build_and_copy(fleet, cache: Path, spec: dict):
    [system] = evaluate_systems(Path(STANDIN_FLAKE), {"spot": spec})[0].values()
    subprocess.run(["nix-store", "--realise", system.drv], check=True, capture_output=True)
    key = cache.parent / "signing.secret"
    key.write_text(fleet.signing_secret)
    subprocess.run(["nix", "--extra-experimental-features", "nix-command", "copy", "--to",
                    f"file://{cache}?secret-key={key}", system.out], check=True, capture_output=True)
    return system


def boot_instance(world, which: str, system, instance: str, fault: str | None = None,
                  keep: contextlib.ExitStack | None = None, answers: dict[str, str] | None = None):
    """A fresh machine running the pull part of the launch template's user data for `system`,
    with its own metadata service (and a stand-in fault for that system); returns (machine, the
    agent's outcome) once the agent has finished. With `keep`, the metadata service stays up
    until that stack closes, answering `answers` too (the target lifecycle state: InService)."""
    address = INSTANCES[which]
    machine = add_machine(world.fleet, f"pull-{which}", address)
    if fault:
        machine.set_fault(fault, system.out)
    answers = answers if answers is not None else {}
    answers.setdefault("autoscaling/target-lifecycle-state", "InService")
    with contextlib.ExitStack() as own:
        imds = (keep or own).enter_context(pullhosts.imds(instance, address, answers=answers))
        conf = {**pull_config(world.cluster, "spot", pullhosts.REGION, BUCKET,
                              pointer_key(world.cluster, "spot", system.out), store_hash(system.out),
                              world.fleet.signing_public, TOKEN_PARAMETER, f"{world.cluster}-spot", "flakefleet-health",
                              60, 1, drain_hook=DRAIN_HOOK, drain_timeout_s=300),
                "substituter": world.cache_url, "imds": imds,
                "endpoints": {"s3": world.endpoint, "ssm": world.endpoint, "autoscaling": world.endpoint}}
        text = pulled_user_data(conf, system.agent, [], world.fleet.signing_public)
        pull = text[text.index("# flakefleet pull"):]
        machine.sh(pull, timeout=300)
        poll(lambda: machine.show("flakefleet-pull.service", "ActiveState").get("ActiveState") in ("inactive", "failed"),
             600, f"{which}: the pull agent finished")
    outcome = json.loads(machine.path("/var/lib/flakefleet/pull.json").read_text())
    return machine, outcome


def completed(instance: str, hook: str = "flakefleet-health") -> list[str]:
    return [c["LifecycleActionResult"] for c in pullhosts.COMPLETED
            if c["InstanceId"] == instance and c["LifecycleHookName"] == hook]


def profile_system(machine) -> str:
    return machine.sh("readlink -f /nix/var/nix/profiles/system || true", timeout=60).stdout.strip()


def journal(machine) -> str:
    return machine.sh("journalctl --no-pager -u flakefleet-pull.service 2>&1 || true", timeout=60).stdout


def test_a_pulled_instance_switches_joins_and_continues(world):
    system = world.systems["good"]
    machine, outcome = boot_instance(world, "joins", system, "i-0aaaaaaaaaaaaaa01")
    assert outcome["result"] == "joined" and outcome["system"] == system.out, outcome
    assert machine.current_system() == system.out and profile_system(machine) == system.out  # confirmed
    node = poll(lambda: world.fleet.node("i-0aaaaaaaaaaaaaa01"), 120, "the instance's Node registered")
    # What the cluster autoscaler matches its group's instances by (the stand-in IMDS' zone).
    assert node["spec"]["providerID"] == f"aws:///{pullhosts.REGION}a/i-0aaaaaaaaaaaaaa01"
    assert completed("i-0aaaaaaaaaaaaaa01") == ["CONTINUE"]
    report = world.s3.get_object(Bucket=BUCKET, Key=f"flakefleet/reports/{world.cluster}/spot/i-0aaaaaaaaaaaaaa01.json")
    assert json.loads(report["Body"].read())["system"] == system.out  # what status and drift read
    facts = json.loads(machine.path("/etc/flakefleet/host.json").read_text())
    assert facts["name"] == "i-0aaaaaaaaaaaaaa01" and facts["address"] == INSTANCES["joins"] and facts["pool"] == "spot"
    token = machine.path("/var/lib/flakefleet/secrets/k3s-agent-token")
    assert token.read_text() == JOIN_TOKEN and token.stat().st_mode & 0o077 == 0
    secret = TOKENS["FLAKEFLEET_SECRET_K3S_AGENT_TOKEN"]
    assert secret not in journal(machine)
    found = subprocess.run(["grep", "-rlF", secret, str(machine.merged / "nix/store")], capture_output=True, text=True)
    assert found.returncode == 1, found.stdout  # 1: no file holds it


def test_a_pointer_with_a_bad_signature_is_refused_and_nothing_activated(world):
    system = world.systems["good"]
    key = pointer_key(world.cluster, "spot", system.out)
    good = world.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    forged = sign(Pointer(world.cluster, "spot", system.out, {}), world.fleet.signing_secret)
    forged["signature"] = json.loads(good)["signature"]  # the real signature over other facts
    world.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(forged).encode())
    try:
        machine, outcome = boot_instance(world, "bad-signature", system, "i-0bbbbbbbbbbbbbb02")
    finally:
        world.s3.put_object(Bucket=BUCKET, Key=key, Body=good)
    assert outcome["result"] == "refused" and "signature does not verify" in outcome["reason"], outcome
    assert machine.current_system() is None and Path(system.out).name not in machine.store_paths()
    assert completed("i-0bbbbbbbbbbbbbb02") == ["ABANDON"]
    assert "refused the pointer, nothing was realised or activated" in journal(machine)


def test_a_system_that_fails_its_health_gate_is_rolled_back_and_abandoned(world):
    system = world.systems["crashing"]
    machine, outcome = boot_instance(world, "unhealthy", system, "i-0ccccccccccccccc3", fault="crashloop")
    assert outcome["result"] == "failed" and "restarted since the activation" in outcome["reason"], outcome
    assert profile_system(machine) != system.out  # never confirmed: not the profile's, not the boot default
    assert completed("i-0ccccccccccccccc3") == ["ABANDON"]


def pod(fleet, namespace: str, name: str, node: str, labels=None, phase: str | None = None) -> str:
    """A pod bound to `node` in the real API (the stand-in kubelet reports it Running); `phase`
    set by the admin instead (a finished Job's pod)."""
    fleet.kubectl("create", "namespace", namespace)  # once; "already exists" after
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.invalid/app:1"}]}}
    res = fleet.kubectl("create", "-f", "-", stdin=json.dumps(body))
    assert res.returncode == 0, res.stderr
    if phase:
        patched = fleet.kube.request("system:admin", "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                                     {"status": {"phase": phase}})
        assert patched[0] == 200, patched
    return f"{namespace}/{name}"


def exists(fleet, pod_id: str) -> bool:
    namespace, name = pod_id.split("/")
    return fleet.kubectl("get", "pod", name, "-n", namespace, "-o", "name").returncode == 0


def budget(fleet, namespace: str, name: str, match: dict, min_available: int, allowed: int) -> None:
    """A PodDisruptionBudget, and (bounded) the disruption controller's verdict on it."""
    body = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": namespace},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": match}}}
    assert fleet.kubectl("apply", "-f", "-", stdin=json.dumps(body)).returncode == 0

    def settled():
        got = json.loads(fleet.kubectl("get", "pdb", name, "-n", namespace, "-o", "json").stdout or "{}")
        status = got.get("status", {})
        return status.get("observedGeneration") == got["metadata"]["generation"] and status.get("disruptionsAllowed") == allowed
    poll(settled, 120, f"budget {name} allows {allowed}", interval=0.2)


def standin_log(machine) -> str:
    path = machine.path("/var/lib/flakefleet/standin-k3s.log")
    return path.read_text() if path.exists() else ""


def as_kubelet(machine, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`k3s kubectl` on the instance with the kubelet's own kubeconfig, as flakefleet-drain runs it."""
    words = " ".join(["/run/current-system/sw/bin/k3s", "kubectl", "--kubeconfig",
                      "/var/lib/rancher/k3s/agent/kubelet.kubeconfig", *args])
    return machine.sh(f"printf '%s' '{stdin}' | {words}", timeout=60, check=False)


def test_a_terminating_instance_drains_its_own_node_then_continues(world):
    """On the real API, with the kubelet's credentials (DaemonSet and mirror pods, which the drain
    leaves, are tier 1's and tests/test_kube_api.py's: the real API keeps neither without its
    controller or kubelet)."""
    instance, fleet = "i-0ddddddddddddddd4", world.fleet
    lifecycle: dict[str, str] = {}
    with contextlib.ExitStack() as keep:
        machine, outcome = boot_instance(world, "drains", world.systems["good"], instance, keep=keep, answers=lifecycle)
        assert outcome["result"] == "joined", outcome
        poll(lambda: fleet.node(instance), 120, "the instance's Node registered")
        poll(lambda: machine.show("flakefleet-drain.service", "ActiveState").get("ActiveState") == "active", 120,
             "flakefleet-drain.service runs, waiting for the lifecycle state")
        pods = {"web-1": pod(fleet, "shop", "web-1", instance, labels={"app": "web"}),
                "cache-1": pod(fleet, "shop", "cache-1", instance),
                "job": pod(fleet, "shop", "job-1", instance, phase="Succeeded"),
                "elsewhere": pod(fleet, "shop", "web-0", "cp-0", labels={"app": "web"})}
        budget(fleet, "shop", "web", {"app": "web"}, min_available=2, allowed=0)
        lifecycle["autoscaling/target-lifecycle-state"] = "Terminated"  # the group wants it gone
        poll(lambda: not exists(fleet, pods["cache-1"]), 120, "cache-1 evicted")
        poll(lambda: sum("eviction" in l and "web-1" in l for l in standin_log(machine).splitlines()) >= 2, 120,
             "web-1's eviction refused by its budget, and asked again")
        assert fleet.node(instance)["spec"]["unschedulable"] is True  # cordoned: nothing new lands on it meanwhile
        assert exists(fleet, pods["web-1"]) and completed(instance, DRAIN_HOOK) == []  # held while the budget says no
        budget(fleet, "shop", "web", {"app": "web"}, min_available=1, allowed=1)  # a replacement became ready elsewhere
        poll(lambda: completed(instance, DRAIN_HOOK) == ["CONTINUE"], 120, "the drain completed its hook")
    assert not exists(fleet, pods["web-1"])
    assert all(exists(fleet, pods[k]) for k in ("job", "elsewhere"))  # not a drain's to evict
    report = json.loads(world.s3.get_object(
        Bucket=BUCKET, Key=f"flakefleet/reports/{world.cluster}/spot/{instance}.json")["Body"].read())
    assert report["result"] == "joined" and report["system"] == world.systems["good"].out  # what it ran, kept
    assert report["drain"]["result"] == "drained" and report["drain"]["left"] == []
    assert report["drain"]["evicted"] == ["shop/cache-1", "shop/web-1"]
    calls = [l for l in standin_log(machine).splitlines() if " kubectl " in l and "eviction" in l and "create" in l]
    assert calls and all("--kubeconfig /var/lib/rancher/k3s/agent/kubelet.kubeconfig" in l for l in calls)
    # What the kubelet's identity may not do: another node's pod, another Node, any Node's deletion.
    other = as_kubelet(machine, "create", "--raw", "/api/v1/namespaces/shop/pods/web-0/eviction", "-f", "-",
                       stdin=json.dumps({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web-0"}}))
    assert other.returncode != 0 and "can only evict pods with spec.nodeName set to itself" in other.stderr
    assert "only its own Node object" in as_kubelet(machine, "patch", "node", "cp-0", "--type=merge", "-p",
                                                    '{"spec":{"unschedulable":true}}').stderr
    assert 'cannot delete resource "nodes"' in as_kubelet(machine, "delete", "node", "cp-0").stderr
    assert exists(fleet, pods["elsewhere"]) and fleet.node("cp-0") is not None


def test_the_control_plane_deletes_the_nodes_of_instances_ec2_no_longer_has(world):
    ec2 = boto3.client("ec2", region_name=pullhosts.REGION, endpoint_url=world.endpoint,
                       aws_access_key_id="test", aws_secret_access_key="test")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    terminated, running, terminated_ready = [
        i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3)["Instances"]]
    ec2.terminate_instances(InstanceIds=[terminated, terminated_ready])
    never = "i-0123456789abcdef0"  # EC2 has no such instance: NotFound
    # Nodes without kubelets behind them, as the API has them: Unknown (the node lifecycle
    # controller's verdict on a silent kubelet) or still Ready.
    nodes = {terminated: "Unknown", running: "Unknown", terminated_ready: "True", never: "Unknown"}
    for name, ready in [*nodes.items(), ("pushed-0", "Unknown")]:
        provider = "k3s://pushed-0" if name == "pushed-0" else f"aws:///{pullhosts.REGION}a/{name}"
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"providerID": provider}}
        assert world.fleet.kubectl("apply", "-f", "-", stdin=json.dumps(body)).returncode == 0
        code, answer = world.fleet.kube.request("system:admin", "PATCH", f"/api/v1/nodes/{name}/status",
                                                {"status": {"conditions": [{"type": "Ready", "status": ready}]}})
        assert code == 200, answer
    cp = world.hosts["cp-0"]
    script = cp.path("/root/flakefleet_node_gc.py")
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text((ROOT / "nixos" / "host" / "flakefleet_node_gc.py").read_text())
    # One pass of flakefleet-node-gc.service (nixos/addons/cluster-autoscaler.nix: k3s on its PATH).
    run = cp.sh("env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test PATH=/run/current-system/sw/bin:/usr/bin:/bin "
                f"python3 /root/flakefleet_node_gc.py {pullhosts.REGION} {world.endpoint}", timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    left = set(node_names(world.fleet.kubectl("get", "nodes", "-o", "json").stdout))
    assert terminated not in left and never not in left
    assert {running, terminated_ready, "pushed-0", "cp-0"} <= left  # running, Ready, or not the group's
    assert f"deleting node {terminated}: instance {terminated} no longer exists" in run.stderr


def refresh_batch(desired: int, min_healthy: int) -> int:
    """How many instances an instance refresh replaces at a time. The Rolling strategy with
    MaxHealthyPercentage at its default, 100 (components/autoscaling.py sets none), terminates a
    batch and then launches its replacements, keeping MinHealthyPercentage of the desired
    capacity, rounded up, in service (docs.aws.amazon.com/autoscaling/ec2/userguide/
    instance-refresh-overview.html; RefreshPreferences.MinHealthyPercentage); at least one."""
    return max(1, desired - math.ceil(desired * min_healthy / 100))


def test_a_pointer_move_reaches_the_pool_a_batch_at_a_time(world):
    old, new = world.systems["good"], world.systems["next"]
    min_healthy = pulled_min_healthy(1, 2)  # delivery.max_unavailable 1, a pool of max 2
    batch = refresh_batch(2, min_healthy)
    assert (min_healthy, batch) == (50, 1)
    with contextlib.ExitStack() as keep:
        live: dict[str, SimpleNamespace] = {}
        for k in range(2):
            answers: dict[str, str] = {}
            instance = f"i-0eeeeeeeeeeeeee0{k}"
            machine, outcome = boot_instance(world, f"old-{k}", old, instance, keep=keep, answers=answers)
            assert outcome["result"] == "joined" and outcome["system"] == old.out, outcome
            live[instance] = SimpleNamespace(machine=machine, answers=answers, system=old.out)
        replaced = 0
        while victims := [i for i in sorted(live) if live[i].system == old.out][:batch]:
            staying = [i for i in live if i not in victims]
            assert len(staying) >= math.ceil(2 * min_healthy / 100)  # the refresh's floor, kept
            for victim in victims:
                live[victim].answers["autoscaling/target-lifecycle-state"] = "Terminated"
            for victim in victims:
                poll(lambda: completed(victim, DRAIN_HOOK) == ["CONTINUE"], 120, f"{victim} drained")
                assert all(live[i].machine.current_system() == live[i].system for i in staying)  # still serving
                live.pop(victim).machine.stop()  # the group terminates it
            for _ in victims:
                instance = f"i-0ffffffffffffff0{replaced}"
                machine, outcome = boot_instance(world, f"new-{replaced}", new, instance, keep=keep)
                assert outcome["result"] == "joined" and outcome["system"] == new.out, outcome
                assert completed(instance) == ["CONTINUE"]  # in service: the refresh goes on
                live[instance] = SimpleNamespace(machine=machine, answers={}, system=new.out)
                replaced += 1
    assert replaced == 2 and sorted(v.system for v in live.values()) == [new.out, new.out]
    for k in range(2):
        report = json.loads(world.s3.get_object(
            Bucket=BUCKET, Key=f"flakefleet/reports/{world.cluster}/spot/i-0eeeeeeeeeeeeee0{k}.json")["Body"].read())
        assert report["system"] == old.out and report["drain"]["result"] == "drained"
