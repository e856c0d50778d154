"""Tier 1: the pulled instance's self-drain (nixos/host/flakefleet_drain.py), pure parts: which pods
a drain evicts, and the drain loop against a fake API (disruption budgets, deadline)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "flakefleet_drain", Path(__file__).resolve().parent.parent / "nixos" / "host" / "flakefleet_drain.py")
drain_mod = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(drain_mod)

ME = "i-0aaaaaaaaaaaaaa01"


def pod(name, node=ME, phase="Running", owner=None, mirror=False, namespace="default"):
    meta = {"name": name, "namespace": namespace}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if mirror:
        meta["annotations"] = {drain_mod.MIRROR: "abc"}
    return {"metadata": meta, "spec": {"nodeName": node}, "status": {"phase": phase}}


@pytest.mark.parametrize("p, evicted", [
    (pod("web"), True),
    (pod("web", owner="ReplicaSet"), True),
    (pod("web", owner="StatefulSet"), True),
    (pod("agent", owner="DaemonSet"), False),  # comes back on the same node: left alone
    (pod("static", mirror=True), False),  # a kubelet's static pod: the API cannot evict it
    (pod("job", phase="Succeeded"), False),
    (pod("job", phase="Failed"), False),
    (pod("pending", phase="Pending"), True),
    (pod("elsewhere", node="i-0other"), False),  # another node's: never this node's to evict
])
def test_which_pods_a_drain_evicts(p, evicted):
    assert (drain_mod.evictable([p], ME) != []) is evicted


class FakeKube:
    """A node's pods as the API holds them; `blocked` pods answer 429 this many times."""

    def __init__(self, pods, blocked=None):
        self.pods_ = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        self.blocked = dict(blocked or {})
        self.cordoned = []

    def cordon(self, node):
        self.cordoned.append(node)

    def pods(self, node):
        return list(self.pods_.values())

    def evict(self, namespace, name):
        if self.blocked.get(name, 0) > 0:
            self.blocked[name] -= 1
            return "blocked"
        self.pods_.pop((namespace, name), None)
        return "evicted"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def pause(self, s):
        self.now += max(s, 0.5)


def test_a_drain_cordons_then_evicts_every_evictable_pod():
    kube = FakeKube([pod("a"), pod("b", namespace="shop"), pod("ds", owner="DaemonSet")])
    clock = Clock()
    result = drain_mod.drain(kube, ME, 60, clock=clock, pause=clock.pause)
    assert kube.cordoned == [ME]
    assert result == {"evicted": ["default/a", "shop/b"], "left": []}


def test_a_disruption_budget_delays_the_drain_within_its_bound():
    kube = FakeKube([pod("a"), pod("guarded")], blocked={"guarded": 3})
    clock = Clock()
    result = drain_mod.drain(kube, ME, 60, clock=clock, pause=clock.pause)
    assert result["left"] == [] and "default/guarded" in result["evicted"]
    assert clock.now > 0  # it waited for the budget


def test_a_drain_stops_at_its_deadline_and_says_what_is_left():
    kube = FakeKube([pod("a"), pod("stuck")], blocked={"stuck": 10**6})
    clock = Clock()
    result = drain_mod.drain(kube, ME, 10, clock=clock, pause=clock.pause)
    assert result == {"evicted": ["default/a"], "left": ["default/stuck"]}
    assert 10 <= clock.now < 13


def test_the_drain_waits_for_terminated_and_asks_again_when_the_metadata_service_fails(monkeypatch):
    answers = iter([None, OSError("connection refused"), OSError("connection refused"), "InService",
                    "Terminated"])

    def state(base):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    said = []
    monkeypatch.setattr(drain_mod, "lifecycle_state", state)
    monkeypatch.setattr(drain_mod, "say", said.append)
    pauses = []
    assert drain_mod.wait_for_termination("http://imds", pause=pauses.append) == "Terminated"
    assert len(pauses) == 4  # one per answer before Terminated
    assert len([m for m in said if "did not answer" in m]) == 1  # said once for the two failures


def test_the_drain_adds_to_the_report_and_keeps_the_pull_outcome():
    pulled = {"instance": ME, "result": "joined", "system": "/nix/store/x-nixos-system-spot", "pointer": "p"}
    report = drain_mod.with_drain(pulled, ME, {"evicted": ["shop/a"], "left": []}, 1700)
    assert {k: report[k] for k in pulled} == pulled  # status still counts it on its system
    assert report["drain"] == {"at": 1700, "result": "drained", "evicted": ["shop/a"], "left": []}
    stuck = drain_mod.with_drain(pulled, ME, {"evicted": [], "left": ["shop/b"]}, 1700)
    assert stuck["drain"]["result"] == "incomplete"
    failed = drain_mod.with_drain({}, ME, {"evicted": [], "left": [], "error": "cordon: forbidden"}, 1700)
    assert failed["drain"]["result"] == "incomplete" and failed["instance"] == ME


def test_the_eviction_is_policy_v1():
    assert drain_mod.eviction("shop", "b") == {"apiVersion": "policy/v1", "kind": "Eviction",
                                               "metadata": {"name": "b", "namespace": "shop"}}


GC_SPEC = importlib.util.spec_from_file_location(
    "flakefleet_node_gc", Path(__file__).resolve().parent.parent / "nixos" / "host" / "flakefleet_node_gc.py")
gc_mod = importlib.util.module_from_spec(GC_SPEC)
GC_SPEC.loader.exec_module(gc_mod)


def node(name, provider, ready):
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {"metadata": {"name": name}, "spec": {"providerID": provider} if provider else {},
            "status": {"conditions": conditions}}


@pytest.mark.parametrize("n, asked", [
    (node("i-01", "aws:///eu-west-1a/i-01", "True"), False),  # Ready: never asked about
    (node("i-01", "aws:///eu-west-1a/i-01", "False"), True),
    (node("i-01", "aws:///eu-west-1a/i-01", "Unknown"), True),
    (node("i-01", "aws:///eu-west-1a/i-01", None), True),  # no condition yet counts as Unknown
    (node("worker-0", "k3s://worker-0", "Unknown"), False),  # a pushed host: not the group's
    (node("worker-0", None, "Unknown"), False),
])
def test_which_nodes_the_gc_asks_aws_about(n, asked):
    assert (gc_mod.candidates([n]) == {"i-01": "i-01"}) is asked


def test_an_instance_is_gone_when_ec2_does_not_know_it_or_it_is_terminated():
    import boto3
    from moto import mock_aws

    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        image = ec2.describe_images()["Images"][0]["ImageId"]
        [kept, ended] = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2)["Instances"]]
        ec2.terminate_instances(InstanceIds=[ended])
        assert not gc_mod.gone(ec2, kept)
        assert gc_mod.gone(ec2, ended)
        assert gc_mod.gone(ec2, "i-0123456789abcdef0")
