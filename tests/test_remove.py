"""Tier 1: taking a dead host out of the cluster (flakefleet/ops/remove.py) keeps etcd's quorum."""

from __future__ import annotations

import json

import pytest


class FakeSession:
    """Answers the kubectl calls remove_dead_host makes, per control plane."""

    def __init__(self, planes, nodes, answering):
        from flakefleet.plan.contract import DeliveryPlan, Endpoint

        self.plan = DeliveryPlan(host=planes[0], address="10.0.0.1", port=22, user="root", host_key="k", system="",
                                 drv="", control_planes=tuple(Endpoint(p, "10.0.0.1", 22, "root", "k") for p in planes))
        nodes = dict(nodes)
        self.learners = set(nodes.pop("learners", ()))
        self.nodes, self.answering, self.calls = nodes, answering, []

    def ssh(self, argv, to, timeout):
        import subprocess

        self.calls.append((to.host, argv[2:5]))
        if to.host not in self.answering:
            return subprocess.CompletedProcess(argv, 255, "", "unreachable")
        if argv[2:4] == ["get", "node"]:
            return subprocess.CompletedProcess(argv, 0, f"node/{argv[4]}\n" if argv[4] in self.nodes else "", "")
        if argv[2:4] == ["get", "nodes"]:
            # k3s' etcd member controller marks servers' Nodes (EtcdIsVoter, pkg/etcd/etcd.go).
            items = [{"metadata": {"name": n, "labels": {}}, "status": {"conditions": [
                {"type": "Ready", "status": "True" if ready else "Unknown"},
                *([{"type": "EtcdIsVoter", "status": "False" if n in self.learners else "True"}] if n.startswith("cp-") else [])]}}
                for n, ready in self.nodes.items()]
            return subprocess.CompletedProcess(argv, 0, json.dumps({"items": items}), "")
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.mark.parametrize(("host", "nodes", "answering", "outcome"), [
    # a dead worker: its Node is deleted through the first control plane that answers
    ("w-9", {"cp-0": True, "cp-1": True, "cp-2": True, "w-9": False}, {"cp-1"}, "w-9: Node deleted through cp-1"),
    # a dead server of three: two Ready remain, quorum of two holds
    ("cp-2", {"cp-0": True, "cp-1": True, "cp-2": False}, {"cp-0"},
     "cp-2: Node deleted and its etcd member (k3s removes it with the Node) through cp-0"),
    # a dead server while another is down too: one Ready of two members left, no quorum
    ("cp-2", {"cp-0": True, "cp-1": False, "cp-2": False}, {"cp-0"},
     "cp-2: removing it leaves 2 etcd members of which 1 Ready and voting (cp-0): no quorum; refused"),
    # two Ready servers left, but one is still a learner: no voting majority
    ("cp-2", {"cp-0": True, "cp-1": True, "cp-2": False, "learners": ("cp-1",)}, {"cp-0"},
     "cp-2: removing it leaves 2 etcd members of which 1 Ready and voting (cp-0): no quorum; refused"),
    ("w-9", {"cp-0": True}, {"cp-0"}, "w-9: no Node in the cluster (asked cp-0); nothing to remove"),
    ("w-9", {"cp-0": True, "w-9": False}, set(), "w-9: no control plane answers; nothing was changed"),
])
def test_a_dead_host_s_removal_keeps_etcd_quorum(host, nodes, answering, outcome):
    from flakefleet.ops.remove import remove_dead_host
    from flakefleet.plan.contract import DeliveryFailed

    session = FakeSession(["cp-0", "cp-1", "cp-2"], nodes, answering)
    try:
        said = remove_dead_host(session, host, ["cp-0", "cp-1", "cp-2"])
    except DeliveryFailed as err:
        said = str(err)
    assert said == outcome
    deleted = [c for c in session.calls if c[1][:2] == ["delete", "node"]]
    assert bool(deleted) == ("Node deleted" in outcome)


def test_a_control_plane_leaves_only_when_a_voting_majority_stays():
    """The members are the control planes whose Nodes exist: in a whole-cluster destroy, cp-2
    went first, so cp-1 may then go with cp-0 alone left; a learner does not count."""
    from flakefleet.cluster.membership import removal_quorum

    def listing(**servers):
        return json.dumps({"items": [{"metadata": {"name": n}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "EtcdIsVoter", "status": "True" if voter else "False"}]}}
            for n, voter in servers.items()]})

    assert removal_quorum(listing(**{"cp-0": True, "cp-1": True, "cp-2": True}), "cp-2") is None
    assert removal_quorum(listing(**{"cp-0": True, "cp-1": True}), "cp-1") is None  # cp-2 gone already
    assert "no quorum" in removal_quorum(listing(**{"cp-0": True, "cp-1": False, "cp-2": True}), "cp-2")
    assert "no quorum" in removal_quorum("", "cp-1")  # nobody answered: nothing is known to stay
