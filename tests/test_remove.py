"""Tier 1: taking a dead host out of the cluster (flakefleet/ops/remove.py) keeps etcd's quorum."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest


class FakeSession:
    """Answers the kubectl calls remove_dead_host makes, per control plane."""

    def __init__(self, planes, nodes, answering):
        from flakefleet.plan.contract import DeliveryPlan, Endpoint

        self.plan = DeliveryPlan(host=planes[0], address="10.0.0.1", port=22, user="root", host_key="k", system="",
                                 drv="", control_planes=tuple(Endpoint(p, "10.0.0.1", 22, "root", "k") for p in planes))
        nodes = dict(nodes)
        self.learners = set(nodes.pop("learners", ()))
        # Members k3s' member controller does not remove when their Node goes (a fault).
        self.kept = set(nodes.pop("kept", ()))
        self.members = {f"{n}-0123abcd" for n in nodes if n.startswith("cp-")}
        self.nodes, self.answering, self.calls, self.said = nodes, answering, [], []

    def say(self, message):
        self.said.append(message)

    def ssh(self, argv, to, timeout):
        import subprocess

        from flakefleet.cluster.kubectl import ETCD_MEMBERS_QUERY

        self.calls.append((to.host, argv[2:5]))
        if to.host not in self.answering:
            return subprocess.CompletedProcess(argv, 255, "", "unreachable")
        if argv == ETCD_MEMBERS_QUERY:  # /db/info: {"members": [etcdserverpb.Member]}
            return subprocess.CompletedProcess(argv, 0, json.dumps({"members": [
                {"ID": 1, "name": m, "peerURLs": ["https://10.0.0.1:2380"]} for m in sorted(self.members)]}), "")
        if argv[2:4] == ["delete", "node"]:  # k3s' member controller: RemovePeer on the Node's removal
            self.nodes.pop(argv[4], None)
            self.members -= {m for m in self.members if m.rpartition("-")[0] == argv[4] and argv[4] not in self.kept}
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
     "cp-2: Node deleted through cp-0, its etcd member gone"),
    # ... and its member stays (k3s did not remove it): said, the machine is to be kept
    ("cp-2", {"cp-0": True, "cp-1": True, "cp-2": False, "kept": ("cp-2",)}, {"cp-0"},
     "cp-2: its etcd member cp-2-0123abcd is still listed on cp-0 0s after its Node was deleted (k3s removes it "
     "with the Node); the machine is kept. Remove the member (etcdctl member remove on cp-0), then run the update "
     "again"),
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
    session.plan = replace(session.plan, health_timeout_s=0)  # the member check polls once
    try:
        said = remove_dead_host(session, host, ["cp-0", "cp-1", "cp-2"])
    except DeliveryFailed as err:
        said = str(err)
    assert said == outcome
    deleted = [c for c in session.calls if c[1][:2] == ["delete", "node"]]
    assert bool(deleted) == ("Node deleted" in outcome or "still listed" in outcome)


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


@pytest.mark.parametrize(("info", "node", "members"), [
    ('{"members": [{"ID": 1, "name": "cp-1-0123abcd"}, {"ID": 2, "name": "cp-10-89abcdef"}]}', "cp-1", ["cp-1-0123abcd"]),
    ('{"members": [{"ID": 1, "name": "cp-0-0123abcd", "isLearner": true}]}', "cp-0", ["cp-0-0123abcd"]),
    ('{"members": [{"ID": 1, "peerURLs": ["https://10.0.0.9:2380"]}]}', "cp-0", []),  # a learner not yet started: no name
    ('{"members": []}', "cp-0", []),
])
def test_a_nodes_etcd_members_are_named_after_it(info, node, members):
    """k3s names a server's member `<node>-<8 hex>` (pkg/etcd/etcd.go, setName)."""
    from flakefleet.cluster.kubectl import etcd_members_of

    assert etcd_members_of(info, node) == members


@pytest.mark.parametrize("info", ["", "Unauthorized", '{"items": []}', '{"members": [1]}'])
def test_what_is_not_a_member_list_is_refused(info):
    from flakefleet.cluster.kubectl import etcd_members_of

    with pytest.raises(ValueError, match="not an etcd member list"):
        etcd_members_of(info, "cp-0")


def test_a_member_list_that_cannot_be_read_is_said_and_the_removal_stands():
    from flakefleet.cluster.kubectl import ETCD_MEMBERS_QUERY
    from flakefleet.ops.remove import remove_dead_host

    session = FakeSession(["cp-0", "cp-1", "cp-2"], {"cp-0": True, "cp-1": True, "cp-2": False}, {"cp-0"})
    answer = session.ssh

    def ssh(argv, to, timeout):
        if argv == ETCD_MEMBERS_QUERY:
            import subprocess
            return subprocess.CompletedProcess(argv, 22, "", "curl: (22) The requested URL returned error: 401")
        return answer(argv, to, timeout)

    session.ssh = ssh
    assert remove_dead_host(session, "cp-2", ["cp-0", "cp-1", "cp-2"]) == \
        "cp-2: Node deleted through cp-0, its etcd member not checked"
    assert session.said == ["could not list the etcd members on cp-0 to check that cp-2's is gone: "
                            "curl: (22) The requested URL returned error: 401"]
