"""Tier 1: the status table from the stack's outputs, the hosts' own state and the cluster's
Node list (as `kubectl get nodes -o json` gives it, with k3s' EtcdIsVoter condition)."""

from __future__ import annotations

import json

from flakefleet.common.outputs import NodeRow
from flakefleet.ops.drift import HostDrift
from flakefleet.ops.status import combine, exit_code, render

NODES = {name: NodeRow.of(row) for name, row in {
    "cp-0": {"role": "control-plane", "pool": "cp", "last_outcome": "activated", "reboot_pending": False},
    "cp-1": {"role": "control-plane", "pool": "cp", "last_outcome": "up to date", "reboot_pending": False},
    "w-0": {"role": "worker", "pool": "workers", "last_outcome": "rebooted", "reboot_pending": False},
}.items()}


def node(name, ready=True, voter=None, version="v1.33.7+k3s3"):
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if voter is not None:
        conditions.append({"type": "EtcdIsVoter", "status": "True" if voter else "False", "reason":
                           "MemberNotLearner" if voter else "MemberIsLearner",
                           "message": "Node has not been promoted to voting member of the etcd cluster"})
    return {"metadata": {"name": name}, "status": {"conditions": conditions, "nodeInfo": {"kubeletVersion": version}}}


def drift(host, status="in sync", pending=False):
    return HostDrift(host, status, "/nix/store/s", "/nix/store/s", False, "", pending)


def test_a_healthy_fleet():
    listing = json.dumps({"items": [node("cp-0", voter=True), node("cp-1", voter=True), node("w-0")]})
    rows = combine(NODES, [drift("cp-0"), drift("cp-1"), drift("w-0", pending=True)], listing)
    assert [(r.host, r.ready, r.k3s, r.etcd, r.system, r.reboot_pending, r.last_delivery) for r in rows] == [
        ("cp-0", "yes", "v1.33.7+k3s3", "voter", "in sync", False, "activated"),
        ("cp-1", "yes", "v1.33.7+k3s3", "voter", "in sync", False, "up to date"),
        ("w-0", "yes", "v1.33.7+k3s3", "-", "in sync", True, "rebooted"),
    ]
    assert exit_code(rows, True) == 0
    table = render(rows).splitlines()
    assert table[0].split() == ["host", "pool", "role", "ready", "k3s", "etcd", "system", "reboot", "last", "delivery"]
    assert table[3].split()[:8] == ["w-0", "workers", "worker", "yes", "v1.33.7+k3s3", "-", "in", "sync"]


def test_a_learner_a_not_ready_worker_and_an_unreachable_host():
    listing = json.dumps({"items": [node("cp-0", voter=True), node("cp-1", voter=False), node("w-0", ready=False)]})
    rows = combine(NODES, [drift("cp-0"), drift("cp-1"), drift("w-0", status="unreachable")], listing)
    assert rows[1].etcd.startswith("MemberIsLearner: Node has not been promoted")
    assert rows[2].ready == "no" and rows[2].system == "unreachable"
    assert exit_code(rows, True) == 3
    assert exit_code(rows[:2], True) == 2


def test_no_control_plane_answering_leaves_the_cluster_columns_unknown():
    rows = combine(NODES, [drift(h) for h in NODES], "")
    assert {(r.ready, r.k3s) for r in rows} == {("unknown", "-")} and rows[0].etcd == "unknown"
    assert exit_code(rows, False) == 3


def test_a_manifest_is_tracked_as_the_addon_of_its_base_name():
    from flakefleet.delivery.prune import addon_name

    assert addon_name("/var/lib/rancher/k3s/server/manifests/workload-hello.yaml") == "workload-hello"
    assert addon_name("/var/lib/rancher/k3s/server/manifests/cilium.yml") == "cilium"
    assert addon_name("/var/lib/rancher/k3s/server/manifests/plain") == "plain"
