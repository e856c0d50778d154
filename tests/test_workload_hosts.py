"""Tier 4: Cilium, a GPU pool and a Nix-built workload on test hosts, as the stand-in k3s sees them.

The stand-in systems render the k3s flags the real modules render (mixins/cilium.nix,
hardware/nvidia.nix, mixins/workload-images.nix) and carry the workloads' image tarballs, which
switching links into k3s' image directory as nixpkgs' tmpfiles rules do; the stand-in k3s
records its flags and the image files its containerd would import at start.
"""

from __future__ import annotations

import json

import pytest

from tests.local_fleet import k3s_log, local_fleet, run_waves, stack

ADDRESSES = {"cp-0": "127.0.0.101", "worker-0": "127.0.0.102", "worker-1": "127.0.0.103"}
IMAGES = "/var/lib/rancher/k3s/agent/images"


@pytest.fixture(scope="module")
def fleet_hosts(tmp_path_factory):
    with local_fleet(tmp_path_factory.mktemp("workloads"), ADDRESSES) as (fleet, hosts):
        yield fleet, hosts


def cilium_gpu_hello(workloads: bool):
    def edit(raw: dict) -> None:
        raw["flakefleet:cluster"] = json.dumps({**json.loads(raw["flakefleet:cluster"]), "cni": "cilium"})
        pools = json.loads(raw["flakefleet:pools"])
        for pool in pools:
            if pool["role"] == "worker":
                pool["gpu"] = "nvidia"
        raw["flakefleet:pools"] = json.dumps(pools)
        if workloads:
            raw["flakefleet:workloads"] = json.dumps([{"name": "hello", "pools": ["workers"]}])

    return edit


def last_start(host) -> str:
    return [line for line in k3s_log(host) if " start " in line][-1]


def deliver(fleet, hosts, workloads: bool):
    cfg, inv, _, plans = stack(hosts, fleet, edit=cilium_gpu_hello(workloads))
    results = run_waves(fleet, cfg, inv, plans)
    assert all(r.returncode == 0 for r in results.values()), {h: r.stderr[-2000:] for h, r in results.items()}
    return results


def test_k3s_starts_with_the_cni_gpu_flags_and_the_preloaded_image(fleet_hosts):
    fleet, hosts = fleet_hosts
    deliver(fleet, hosts, workloads=True)
    cp = last_start(hosts["cp-0"])
    assert "--flannel-backend=none" in cp and "--disable-network-policy" in cp  # k3s' own CNI off: Cilium's turn
    assert cp.endswith("| images ")  # the control planes run no workload pods
    for name in ("worker-0", "worker-1"):
        start = last_start(hosts[name])
        assert start.split(" start ", 1)[1].startswith("agent ") and "--flannel-backend" not in start
        assert "--node-label=nvidia.com/gpu.present=true" in start and "--node-taint=nvidia.com/gpu=present:NoSchedule" in start
        assert "--node-label=flakefleet.io/pool=workers" in start
        assert start.endswith("| images hello.tar.gz ")  # what containerd imports when k3s starts
        link = hosts[name].path(f"{IMAGES}/hello.tar.gz")
        assert link.is_symlink() and str(link.readlink()).startswith("/nix/store/")
        assert hosts[name].path(str(link.readlink())).read_text() == "standin image hello"  # in the host's own store


def test_a_workload_taken_off_the_stack_is_pruned_from_the_cluster_and_the_nodes(fleet_hosts):
    """tmpfiles leaves a link no rule names any more (the stand-in restates that), and k3s never
    deletes what a removed manifest made: delivery deletes the workload's objects through the
    control plane and removes the stale manifest and image links (flakefleet/delivery/prune.py)."""
    fleet, hosts = fleet_hosts
    deliver(fleet, hosts, workloads=True)
    manifest = hosts["cp-0"].path("/var/lib/rancher/k3s/server/manifests/workload-hello.yaml")
    assert manifest.is_symlink()
    before = len(k3s_log(hosts["cp-0"]))
    results = deliver(fleet, hosts, workloads=False)
    calls = [l.split(" kubectl ", 1)[1] for l in k3s_log(hosts["cp-0"])[before:] if " kubectl delete " in l]
    assert calls == ["delete -f /var/lib/rancher/k3s/server/manifests/workload-hello.yaml --ignore-not-found",
                     "delete addon -n kube-system workload-hello --ignore-not-found"]
    assert not manifest.is_symlink() and not manifest.exists()
    assert "pruned what the stack no longer has: workload-hello.yaml" in results["cp-0"].stderr
    for name in ("worker-0", "worker-1"):
        assert json.loads(results[name].stdout.splitlines()[-1])["pruned"] == ["hello.tar.gz"]
        assert not hosts[name].path(f"{IMAGES}/hello.tar.gz").is_symlink()
        assert "--node-label=flakefleet.io/pool=workers" not in last_start(hosts[name])
