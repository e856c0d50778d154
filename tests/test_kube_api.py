"""The cluster-facing code against a real Kubernetes API (tests/kube/: etcd, kube-apiserver and
kube-controller-manager at the flake's k3s' Kubernetes release, started as k3s starts them, from
the stack's CAs): every `k3s kubectl` call flakefleet makes, run by the real kubectl with the
identity that makes it in production (the server's admin, or a node's kubelet credentials), and
what the product reads of the answers.

Needs the binaries scripts/kubernetes.sh builds (`make setup` does): skipped without them, failed
under FLAKEFLEET_REQUIRE_ALL=1 (CI).
"""

from __future__ import annotations

import json
import os
import ssl
import socket
import threading
import time

import pytest

from flakefleet.cluster import kubectl as product
from flakefleet.config.rules import kubelet_may_set
from tests.conftest import require
from tests.kube import controlplane, pki
from tests.kube.controlplane import ControlPlane, binaries
from tests.kube.kubelet import Kubelet, Refused
from tests.testhosts import poll


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    found = binaries()
    require(found is not None, "the Kubernetes binaries (scripts/kubernetes.sh; make setup builds them)")
    plane = ControlPlane(tmp_path_factory.mktemp("kube"), found, pki.stack_cas("ff-test"),
                         tls_sans=("api.ff-test.internal",))
    try:
        yield plane.start()
    finally:
        plane.stop()


def run(api: ControlPlane, call: list[str], identity=None, stdin=None):
    """A product command line (`<k3s> kubectl ...`) run by the real kubectl as `identity`."""
    assert call[:2] == [product.K3S, "kubectl"], call
    return api.kubectl(identity or api.admin(), *call[2:], stdin=stdin)


def node(api: ControlPlane, name: str, **kw) -> Kubelet:
    """A registered, Ready node (registered again when an earlier test deleted it)."""
    kubelet = Kubelet(api, name, **kw)
    if api.kubectl(api.admin(), "get", "node", name, "--ignore-not-found", "-o", "name").stdout.strip() == "":
        kubelet.register()
    else:
        kubelet.heartbeat()
    return kubelet


# ----------------------------------------------------------------------------------- the server


def test_the_api_serves_from_the_stacks_server_ca_with_k3s_flags(api):
    assert api.kubectl(api.admin(), "get", "--raw", "/readyz").stdout.strip() == "ok"
    # The serving certificate chains to the stack's server CA and names the tls-san.
    context = ssl.create_default_context(cadata=api.cas["server-ca"].cert)
    with socket.create_connection((api.address, api.api_port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="api.ff-test.internal") as tls:
            assert tls.version() is not None
    other = ssl.create_default_context(cadata=pki.ca("someone-else").cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection((api.address, api.api_port), timeout=30) as raw:
            other.wrap_socket(raw, server_hostname="api.ff-test.internal")
    # --service-cidr is the API server's service range: the kubernetes Service takes its first address.
    svc = json.loads(api.kubectl(api.admin(), "get", "service", "kubernetes", "-n", "default", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    # Without credentials nothing is answered (anonymous-auth=false).
    anonymous = api.kubectl(api.root / "none.kubeconfig", "get", "nodes")
    assert anonymous.returncode != 0


def test_secrets_are_encrypted_at_rest_as_secrets_encryption_asks(api):
    marker = "flakefleet-plaintext-marker-4f1c"
    created = api.kubectl(api.admin(), "create", "secret", "generic", "enc-check", "-n", "default",
                          f"--from-literal=v={marker}")
    assert created.returncode == 0, created.stderr
    # etcd's write-ahead log holds every value written, as the API server wrote it.
    data = b"".join(p.read_bytes() for p in (api.root / "etcd/data/member/wal").glob("*.wal"))
    assert b"/registry/secrets/default/enc-check" in data
    assert marker.encode() not in data and b"k8s:enc:aescbc:v1:aescbckey" in data


def test_an_unknown_api_server_flag_stops_the_start_as_it_would_stop_k3s(tmp_path):
    found = binaries()
    require(found is not None, "the Kubernetes binaries (scripts/kubernetes.sh)")
    plane = ControlPlane(tmp_path, found, pki.stack_cas("ff-flag"), extra_api_args=("--no-such-flag=1",))
    try:
        with pytest.raises(RuntimeError, match="unknown flag: --no-such-flag"):
            plane.start()
    finally:
        plane.stop()


def held_port() -> socket.socket:
    """A port another process (this one) listens on, as a test control plane's port may be bound
    between its choice and the bind."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_port_taken_after_its_choice_starts_the_process_again_on_another(tmp_path, monkeypatch):
    found = binaries()
    require(found is not None, "the Kubernetes binaries (scripts/kubernetes.sh)")
    taken, chosen = held_port(), []
    real = controlplane.free_ports

    def first_one_taken(address: str, count: int) -> list[int]:
        ports = real(address, count)
        ports[-1:] = [taken.getsockname()[1]] if not chosen else ports[-1:]
        chosen.append(ports)
        return ports

    monkeypatch.setattr(controlplane, "free_ports", first_one_taken)
    plane = ControlPlane(tmp_path, found, pki.stack_cas("ff-race"), wait_for_controllers=False)
    try:
        plane.start()
        assert plane.kubectl(plane.admin(), "get", "--raw", "/readyz").stdout.strip() == "ok"
        races = (tmp_path / "port-races.log").read_text()
        assert races.startswith(f"etcd attempt 1 on 127.0.0.1 {chosen[0]}:") and f"pid={os.getpid()}," in races
        assert chosen[1][-1] != taken.getsockname()[1]
    finally:
        plane.stop()
        taken.close()


def test_a_taken_fixed_api_port_fails_the_start_naming_it(tmp_path):
    found = binaries()
    require(found is not None, "the Kubernetes binaries (scripts/kubernetes.sh)")
    taken = held_port()
    plane = ControlPlane(tmp_path, found, pki.stack_cas("ff-fixed"), api_port=taken.getsockname()[1])
    try:
        with pytest.raises(RuntimeError, match=f"(?s)kube-apiserver exited .*127.0.0.1:{taken.getsockname()[1]}.*"
                                               "address already in use"):
            plane.start()
    finally:
        plane.stop()
        taken.close()


# ----------------------------------------------------------------------------------- readiness


def test_the_readiness_queries_read_real_nodes_and_leases(api):
    node(api, "ready-a")
    b = node(api, "ready-b")
    b.heartbeat(ready=False)
    listing = run(api, product.nodes_query(("ready-a", "ready-b", "never-joined")))
    assert listing.returncode == 0, listing.stderr
    assert product.ready_nodes(listing.stdout) == {"ready-a"}
    assert product.node_names(listing.stdout) == ["ready-a", "ready-b"]  # a missing node is simply absent
    # `get node NAME -o name`: node/NAME when it exists, nothing (and success) when it does not.
    assert run(api, product.node_query("ready-a")).stdout.strip() == "node/ready-a"
    missing = run(api, product.node_query("never-joined"))
    assert (missing.returncode, missing.stdout) == (0, "")
    lease = run(api, product.lease_query("ready-a"))
    renewed = product.lease_renewed(lease.stdout)
    assert renewed is not None and abs(renewed - time.time()) < 600
    assert run(api, product.lease_query("never-joined")).stdout == ""


def test_a_one_node_query_is_read_as_the_node_itself(api):
    """kubectl answers `get nodes NAME -o json` for exactly one name with that Node, not a List
    (the readiness gate of a batch of one, the first control plane's, asks so)."""
    node(api, "single-a")
    answer = run(api, product.nodes_query(("single-a",)))
    assert json.loads(answer.stdout)["kind"] == "Node"
    assert product.ready_nodes(answer.stdout) == {"single-a"}
    assert product.node_names(answer.stdout) == ["single-a"]
    missing = run(api, product.nodes_query(("never-joined",)))
    assert (missing.returncode, missing.stdout, product.ready_nodes(missing.stdout)) == (0, "", set())


def test_etcd_voter_conditions_set_beside_the_kubelets_ready_stay_and_are_read(api):
    """k3s' etcd controller sets EtcdIsVoter on server Nodes with the admin's client; the
    kubelet's status updates merge by condition type and keep it (what the gate reads)."""
    kubelet = node(api, "voter-a")
    condition = {"type": "EtcdIsVoter", "status": "False", "reason": "MemberIsLearner",
                 "message": "Node has not been promoted to voting member of the etcd cluster"}
    patched = api.kubectl(api.admin(), "patch", "node", "voter-a", "--subresource=status", "--type=strategic",
                          "-p", json.dumps({"status": {"conditions": [condition]}}))
    assert patched.returncode == 0, patched.stderr
    kubelet.heartbeat()
    listing = run(api, product.nodes_query(("voter-a",))).stdout
    assert product.ready_nodes(listing) == {"voter-a"}
    assert product.etcd_not_voting(listing, {"voter-a"}) == {
        "voter-a": "MemberIsLearner: Node has not been promoted to voting member of the etcd cluster"}


def test_servers_are_the_nodes_k3s_labels_as_control_planes(api):
    node(api, "label-cp")
    node(api, "label-worker")
    # k3s labels its servers with the admin's client (pkg/agent/... node labels are set by the server).
    labelled = api.kubectl(api.admin(), "label", "node", "label-cp", "--overwrite",
                           f"{product.CONTROL_PLANE_LABEL}=true", "node-role.kubernetes.io/etcd=true")
    assert labelled.returncode == 0, labelled.stderr
    listing = run(api, product.nodes_query(("label-cp", "label-worker"))).stdout
    assert product.servers_in(listing) == {"label-cp"}


# ----------------------------------------------------------------------------------- node identity


LABELS = [
    "flakefleet.io/pool", "team", "example.com/tier", "kubernetes.io/arch", "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone", "kubelet.kubernetes.io/role", "node-restriction.kubernetes.io/secure",
    "example.node-restriction.kubernetes.io/x", "node-role.kubernetes.io/worker", "kubernetes.io/role",
    "k8s.io/anything", "sub.k8s.io/anything",
]


@pytest.mark.parametrize("key", LABELS)
def test_a_label_the_kubelet_may_set_is_one_node_restriction_lets_a_node_register_with(api, key):
    """flakefleet's rule for pool labels (config/rules.py, kubelet_may_set) against the real
    NodeRestriction: a node may register with exactly the labels the rule allows (the API refuses
    node-restriction.kubernetes.io labels and every kubernetes.io or k8s.io label outside the
    kubelet's own set, as the kubelet itself does before registering)."""
    name = f"label-{abs(hash(key)) % 10**8}"
    api.kubectl(api.admin(), "delete", "node", name, "--ignore-not-found")
    try:
        Kubelet(api, name, labels={key: "x"}).register()
        accepted = True
    except Refused as err:
        assert "is not allowed to set the following labels" in str(err), err
        accepted = False
    assert accepted == kubelet_may_set(key)


def test_a_node_may_read_and_change_only_its_own_node(api):
    me, other = node(api, "self-a"), node(api, "self-b")
    assert me.call("get", "node", "self-a", "-o", "name").strip() == "node/self-a"
    with pytest.raises(Refused, match="Forbidden"):
        me.call("get", "node", "self-b")
    with pytest.raises(Refused, match="Forbidden"):
        me.call("get", "nodes")
    with pytest.raises(Refused, match="only its own Node object"):  # kubectl reads before it patches
        me.call("patch", "node", "self-b", "--type=merge", "-p", '{"spec":{"unschedulable":true}}')
    with pytest.raises(Refused, match='node "self-a" is not allowed to modify node "self-b"'):
        me.patch("/api/v1/nodes/self-b", {"spec": {"unschedulable": True}})
    # What the drain service does with these credentials: cordon itself (spec.unschedulable)...
    me.call("patch", "node", "self-a", "--type=merge", "-p", '{"spec":{"unschedulable":true}}')
    assert json.loads(api.kubectl(api.admin(), "get", "node", "self-a", "-o", "json").stdout)["spec"]["unschedulable"]
    # ...but never its taints, nor delete a Node.
    with pytest.raises(Refused, match="is not allowed to modify taints"):
        me.call("patch", "node", "self-a", "--type=merge", "-p",
                '{"spec":{"taints":[{"key":"x","effect":"NoSchedule"}]}}')
    with pytest.raises(Refused, match="Forbidden"):
        me.call("delete", "node", "self-a")
    assert other.name == "self-b"


# ----------------------------------------------------------------------------------- drains


def apply(api: ControlPlane, body: dict) -> dict:
    res = api.kubectl(api.admin(), "apply", "-f", "-", "-o", "json", stdin=json.dumps(body))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def template(labels: dict, pending: bool = False) -> dict:
    meta = {"labels": labels, **({"annotations": {"test/pending": "true"}} if pending else {})}
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "image": "registry.invalid/app:1"}],
                                        "tolerations": [{"operator": "Exists"}]}}


def replicaset(api: ControlPlane, name: str, pending: bool = False) -> None:
    apply(api, {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": "default"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                         "template": template({"app": name}, pending)}})


def daemonset(api: ControlPlane, name: str, node_label: str) -> None:
    tpl = template({"ds": name})
    tpl["spec"]["nodeSelector"] = {node_label: "yes"}
    apply(api, {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"ds": name}}, "template": tpl}})


def budget(api: ControlPlane, name: str, app: str, max_unavailable: int) -> None:
    apply(api, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": "default"},
                "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": {"app": app}}}})


def unbound(api: ControlPlane, selector: str) -> list[str]:
    listing = api.kubectl(api.admin(), "get", "pods", "-n", "default", "-l", selector, "-o", "json")
    return [p["metadata"]["name"] for p in json.loads(listing.stdout)["items"]
            if not p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]


def bind(api: ControlPlane, selector: str, node_name: str) -> str:
    """Wait (bounded) for the controller's pod, then bind it to `node_name` as the scheduler does
    (the pods/binding subresource: no scheduler runs here)."""
    name = poll(lambda: next(iter(unbound(api, selector)), None), 120, f"a pod for {selector}", interval=0.2)
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": "default"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}
    res = api.kubectl(api.admin(), "create", "--raw", f"/api/v1/namespaces/default/pods/{name}/binding", "-f", "-",
                      stdin=json.dumps(binding))
    assert res.returncode == 0, res.stderr
    return name


def settled_budget(api: ControlPlane, name: str, allowed: int) -> None:
    """Wait (bounded) until the disruption controller computed the budget's status."""
    def ready():
        got = json.loads(api.kubectl(api.admin(), "get", "pdb", name, "-n", "default", "-o", "json").stdout or "{}")
        status = got.get("status", {})
        return status.get("observedGeneration") == got.get("metadata", {}).get("generation") \
            and status.get("disruptionsAllowed") == allowed
    poll(ready, 120, f"budget {name} allows {allowed}", interval=0.2)


class Running:
    """The node's kubelet syncing its pods in the background while a drain runs."""

    def __init__(self, kubelet: Kubelet):
        self.kubelet, self.stop = kubelet, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            try:
                self.kubelet.sync_pods()
            except Refused:
                pass
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def pods_on(api: ControlPlane, node_name: str) -> set[str]:
    listing = api.kubectl(api.admin(), "get", "pods", "-A", "--field-selector", f"spec.nodeName={node_name}", "-o", "json")
    return {p["metadata"]["name"] for p in json.loads(listing.stdout)["items"]}


def test_a_removal_drain_waits_for_a_budget_skips_daemonsets_and_evicts_pending_pods(api):
    """drain_commands as the removal runs them (the server's admin): a budget that allows no
    disruption holds the drain until its timeout; the DaemonSet's pod stays; a Pending pod is
    evicted despite its budget (the eviction API protects running pods only)."""
    kubelet = node(api, "drain-a", labels={"drain-ds": "yes"})
    replicaset(api, "web")
    replicaset(api, "queued", pending=True)
    daemonset(api, "agent", "drain-ds")
    budget(api, "web", "web", 0)
    budget(api, "queued", "queued", 0)
    with Running(kubelet):
        web, queued, agent = (bind(api, sel, "drain-a") for sel in ("app=web", "app=queued", "ds=agent"))
        poll(lambda: all(p.get("status", {}).get("phase") == "Running" for p in kubelet.pods()
                         if p["metadata"]["name"] in (web, agent)), 120, "pods running", interval=0.2)
        settled_budget(api, "web", 0)
        cordon, drain = product.drain_commands("drain-a", 5)
        assert run(api, cordon).returncode == 0
        held = run(api, drain)
        assert held.returncode != 0 and "Cannot evict pod as it would violate the pod's disruption budget" in held.stderr
        poll(lambda: pods_on(api, "drain-a") == {web, agent}, 60, "the Pending pod evicted", interval=0.2)
        budget(api, "web", "web", 1)
        settled_budget(api, "web", 1)
        done = run(api, product.drain_commands("drain-a", 60)[1])
        assert done.returncode == 0, done.stderr
    assert pods_on(api, "drain-a") == {agent}
    assert run(api, product.uncordon_command("drain-a")).returncode == 0
    assert not json.loads(api.kubectl(api.admin(), "get", "node", "drain-a", "-o", "json").stdout)["spec"].get(
        "unschedulable")


def test_a_drain_refuses_a_pod_no_controller_would_bring_back(api):
    """A bare pod (no ReplicaSet, Job or DaemonSet behind it) would be gone for good: kubectl
    drain without --force refuses, and the removal stops with the host still in the cluster."""
    node(api, "drain-bare")
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "namespace": "default"},
            "spec": {"nodeName": "drain-bare", "containers": [{"name": "c", "image": "registry.invalid/app:1"}]}}
    assert api.kubectl(api.admin(), "create", "-f", "-", stdin=json.dumps(body)).returncode == 0
    refused = run(api, product.drain_commands("drain-bare", 10)[1])
    assert refused.returncode != 0 and "cannot delete Pods that declare no controller" in refused.stderr
    assert "bare" in pods_on(api, "drain-bare")


def test_the_node_object_goes_with_delete_node_and_a_second_delete_is_not_an_error(api):
    node(api, "gone-a")
    first = run(api, product.delete_node_command("gone-a"))
    assert first.returncode == 0, first.stderr
    assert run(api, product.node_query("gone-a")).stdout == ""
    again = run(api, product.delete_node_command("gone-a"))
    assert again.returncode == 0, again.stderr


# ----------------------------------------------------------------------------------- host services


def host_module(name: str):
    """A script of nixos/host/ (it runs on the hosts, not from the flakefleet package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "nixos/host" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_drain_service_drains_its_own_node_with_the_kubelets_credentials(api):
    """flakefleet-drain on a pulled instance (nixos/host/flakefleet_drain.py), as system:node:<it>:
    cordons itself, evicts its own pods (not the DaemonSet's), and leaves a pod its budget
    protects until the deadline."""
    drain = host_module("flakefleet_drain")
    me = "i-0dra1n000000001"
    kubelet = node(api, me, labels={"svc-ds": "yes"}, provider_id=f"aws:///eu-west-1a/{me}")
    replicaset(api, "svc")
    daemonset(api, "svc-agent", "svc-ds")
    budget(api, "svc", "svc", 0)
    kube = drain.Kube(kubeconfig=str(kubelet.kubeconfig), program=(str(api.bin / "kubectl"),))
    with Running(kubelet):
        svc, agent = bind(api, "app=svc", me), bind(api, "ds=svc-agent", me)
        poll(lambda: {p["metadata"]["name"] for p in kubelet.pods() if p.get("status", {}).get("phase") == "Running"}
             >= {svc, agent}, 120, "pods running", interval=0.2)
        settled_budget(api, "svc", 0)
        held = drain.drain(kube, me, 3)
        assert held == {"evicted": [], "left": [f"default/{svc}"]}
        budget(api, "svc", "svc", 1)
        settled_budget(api, "svc", 1)
        done = drain.drain(kube, me, 120)
        assert done == {"evicted": [f"default/{svc}"], "left": []}
    assert pods_on(api, me) == {agent}
    assert json.loads(api.kubectl(api.admin(), "get", "node", me, "-o", "json").stdout)["spec"]["unschedulable"]


def test_node_gc_deletes_the_nodes_of_instances_ec2_no_longer_has(api, tmp_path, monkeypatch):
    """flakefleet-node-gc on a server (nixos/host/flakefleet_node_gc.py), `k3s kubectl` as its admin:
    a NotReady Node whose instance is terminated goes; a NotReady Node whose instance lives, and a
    pushed host's (k3s:// providerID), stay."""
    import boto3
    from moto import mock_aws

    gc = host_module("flakefleet_node_gc")
    shim = tmp_path / "k3s"  # k3s' multicall `k3s kubectl`: kubectl with the server's admin kubeconfig
    shim.write_text(f'#!/bin/sh\n[ "$1" = kubectl ] && shift\nexec {api.bin / "kubectl"} --kubeconfig {api.admin()} "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        live, dead = (i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2)["Instances"])
        ec2.terminate_instances(InstanceIds=[dead])
        for name, provider in (("gc-live", f"aws:///eu-west-1a/{live}"), ("gc-dead", f"aws:///eu-west-1a/{dead}"),
                               ("gc-pushed", "k3s://gc-pushed")):
            node(api, name, provider_id=provider).heartbeat(ready=False)
        assert gc.main(["eu-west-1"]) == 0
    listing = api.kubectl(api.admin(), "get", "nodes", "gc-live", "gc-dead", "gc-pushed", "--ignore-not-found", "-o", "json")
    assert product.node_names(listing.stdout) == ["gc-live", "gc-pushed"]


# ----------------------------------------------------------------------------------- manifests


def deployed_objects() -> list[dict]:
    """Every object the control planes of the flake's own configurations deploy
    (services.k3s.manifests of every stack's pools and of the feature matrix), each variant once."""
    from pathlib import Path

    from tests.test_nix_modules import STANDIN_LIB, evaluate_pools

    root = Path(__file__).resolve().parent.parent
    out = evaluate_pools(str(STANDIN_LIB), root / "nixos", None, Path("/nonexistent"))
    assert out.returncode == 0, out.stderr
    seen = {}
    for system in json.loads(out.stdout).values():
        for content in system["manifestObjects"].values():
            for obj in content if isinstance(content, list) else [content]:
                seen[json.dumps(obj, sort_keys=True)] = obj
    return list(seen.values())


def test_every_manifest_the_control_planes_deploy_passes_server_side_dry_run(api):
    """Applied as k3s' deploy controller applies them, with strict field validation and
    k3s' HelmChart CRD in place: an unknown field, a wrong type or an invalid value is refused."""
    from tests.kube.crds import HELMCHART

    crd = api.kubectl(api.admin(), "apply", "-f", "-", stdin=json.dumps(HELMCHART))
    assert crd.returncode == 0, crd.stderr
    established = api.kubectl(api.admin(), "wait", "--for=condition=Established", "--timeout=120s",
                              "crd/helmcharts.helm.cattle.io")
    assert established.returncode == 0, established.stderr
    objects = deployed_objects()
    assert {o["kind"] for o in objects} >= {"HelmChart", "DaemonSet", "RuntimeClass", "Deployment", "Service"}
    for obj in objects:
        res = api.kubectl(api.admin(), "apply", "--server-side", "--dry-run=server", "--validate=strict",
                          "--field-manager=k3s", "-f", "-", stdin=json.dumps(obj))
        assert res.returncode == 0, f"{obj['kind']} {obj['metadata']['name']}: {res.stderr}"
    # The same check refuses what the controller would not understand.
    wrong = {**[o for o in objects if o["kind"] == "HelmChart"][0]}
    wrong["spec"] = {**wrong["spec"], "valuesContnet": "x"}
    res = api.kubectl(api.admin(), "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-",
                      stdin=json.dumps(wrong))
    assert res.returncode != 0 and "valuesContnet" in res.stderr


# ----------------------------------------------------------------------------------- the stand-in


class RealSide:
    """A scenario's cluster on the real API."""

    def __init__(self, api: ControlPlane, prefix: str):
        self.api, self.p = api, prefix

    def node(self, name: str, ready: bool = True, server: bool = False, learner: bool = False) -> None:
        kubelet = node(self.api, self.p + name)
        kubelet.heartbeat(ready=ready)
        if server:  # k3s' etcd controller sets EtcdIsVoter on every etcd node (pkg/etcd/etcd.go)
            status = ("False", "MemberIsLearner", "Node has not been promoted to voting member of the etcd cluster") \
                if learner else ("True", "MemberNotLearner", "Node is a voting member of the etcd cluster")
            condition = dict(zip(("status", "reason", "message"), status), type="EtcdIsVoter")
            code, answer = self.api.request("system:admin", "PATCH", f"/api/v1/nodes/{self.p + name}/status",
                                            {"status": {"conditions": [condition]}})
            assert code == 200, answer

    def pod(self, name: str, on: str, running: bool, app: str) -> None:
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": self.p + name, "namespace": "default",
                                                                "labels": {"app": self.p + app}},
                "spec": {"nodeName": self.p + on, "containers": [{"name": "c", "image": "registry.invalid/app:1"}]}}
        assert self.api.kubectl(self.api.admin(), "create", "-f", "-", stdin=json.dumps(body)).returncode == 0
        if running:
            Kubelet(self.api, self.p + on).patch(f"/api/v1/namespaces/default/pods/{self.p + name}/status",
                                                 {"status": {"phase": "Running"}})

    def budget(self, name: str, app: str) -> None:
        budget(self.api, self.p + name, self.p + app, 0)
        settled_budget(self.api, self.p + name, 0)

    def run(self, call: list[str], as_node: str | None = None, stdin: str | None = None):
        who = self.api.node(self.p + as_node) if as_node else self.api.admin()
        return run(self.api, call, who, stdin)


class StandinSide:
    """The same scenario on tests/standin/k3s.py's API server directory (as the systemd test
    machines share it), or on the namespace hosts' files when `directory` is False."""

    def __init__(self, tmp_path, monkeypatch, directory: bool = True):
        import importlib.util
        from pathlib import Path

        spec = importlib.util.spec_from_file_location("standin_k3s", Path(__file__).parent / "standin" / "k3s.py")
        self.mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.mod)
        for name, path in (("API", "apiserver"), ("KUBECONFIG", "k3s.yaml"), ("LOG", "standin-k3s.log"),
                           ("NODES_FILE", "standin-nodes"), ("NOTREADY_FILE", "standin-notready")):
            monkeypatch.setattr(self.mod, name, str(tmp_path / path))
        if directory:
            (tmp_path / "apiserver").mkdir()
        (tmp_path / "k3s.yaml").write_text("admin\n")
        self.tmp, self.p = tmp_path, ""

    def node(self, name: str, ready: bool = True, server: bool = False, learner: bool = False) -> None:
        if not __import__("os").path.isdir(self.mod.API):
            return  # the namespace hosts: every node asked for exists
        self.mod.write_node(name, renewTime=time.time(), role="server" if server else "agent", kubelet="v1.35.4+k3s1")
        for flag, file in ((not ready, "notready"), (learner, "learners")):
            if flag:
                with open(f"{self.mod.API}/{file}", "a") as f:
                    f.write(name + "\n")

    def pod(self, name: str, on: str, running: bool, app: str) -> None:
        path = self.tmp / "apiserver/pods/default" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
                                    "spec": {"nodeName": on}, "status": {"phase": "Running" if running else "Pending"}}))

    def budget(self, name: str, app: str) -> None:
        path = self.tmp / "apiserver/pdbs/default" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": app}}},
                                    "status": {"disruptionsAllowed": 0}}))

    def run(self, call: list[str], as_node: str | None = None, stdin: str | None = None):
        import contextlib
        import io
        import subprocess
        import sys

        args = call[2:]
        if as_node:
            cert = self.tmp / f"{as_node}.crt"
            cert.write_text(f"standin CN=system:node:{as_node} O=system:nodes\n")
            config = self.tmp / f"{as_node}.kubeconfig"
            config.write_text(f"client-certificate: {cert}\n")
            args = ["--kubeconfig", str(config), *args]
        out, err = io.StringIO(), io.StringIO()
        saved, sys.stdin = sys.stdin, io.StringIO(stdin or "")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = self.mod.kubectl(args)
        finally:
            sys.stdin = saved
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def observe(side) -> dict:
    """What the product reads of each answer, for one scenario, on either side."""
    side.node("a")
    side.node("b", ready=False)
    side.node("s", server=True, learner=True)
    side.pod("web", "a", running=True, app="web")
    side.pod("queued", "a", running=False, app="queued")
    side.pod("elsewhere", "b", running=True, app="other")
    side.budget("web", "web")
    side.budget("queued", "queued")
    p = side.p
    many = side.run(product.nodes_query((p + "a", p + "b", p + "missing")))
    one = side.run(product.nodes_query((p + "a",)))
    lease = side.run(product.lease_query(p + "a"))

    def evict(pod, as_node=None):
        path = f"/api/v1/namespaces/default/pods/{p + pod}/eviction"
        body = json.dumps({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": p + pod}})
        res = side.run([product.K3S, "kubectl", "create", "--raw", path, "-f", "-"], as_node=as_node, stdin=body)
        return res.returncode == 0, next((w for w in ("disruption budget", "can only evict pods", "not found")
                                          if w in res.stderr), res.stderr[:80])

    other = side.run([product.K3S, "kubectl", "get", "nodes", p + "b", "-o", "json"], as_node="a" if not p else p + "a")
    return {
        "ready of many": sorted(n.removeprefix(p) for n in product.ready_nodes(many.stdout)),
        "names of many": [n.removeprefix(p) for n in product.node_names(many.stdout)],
        "one is a Node": json.loads(one.stdout).get("kind"),
        "ready of one": sorted(n.removeprefix(p) for n in product.ready_nodes(one.stdout)),
        "node query": run_text(side.run(product.node_query(p + "a")), p),
        "missing node query": run_text(side.run(product.node_query(p + "missing")), p),
        "missing nodes query": run_text(side.run(product.nodes_query((p + "missing",))), p),
        "lease renewed": product.lease_renewed(lease.stdout) is not None,
        "missing lease": run_text(side.run(product.lease_query(p + "missing")), p),
        "not voting": {n.removeprefix(p): why for n, why in product.etcd_not_voting(
            side.run(product.nodes_query((p + "s",))).stdout, {p + "s"}).items()},
        "a node reads another": (other.returncode, "only its own Node object" in other.stderr),
        "evict running under a budget": evict("web"),
        "evict pending under a budget": evict("queued"),
        "a node evicts another node's pod": evict("elsewhere", as_node="a" if not p else p + "a"),
    }


def run_text(res, prefix: str):
    return res.returncode, res.stdout.replace(prefix, "")


def test_the_standin_k3s_answers_as_the_real_api_does(api, tmp_path, monkeypatch):
    """The host tier's stand-in (tests/standin/k3s.py) and the real API, through the same calls:
    what the product reads of the answers is the same (found by this test: a one-name query is
    the Node itself, not a List; a Pending pod is evicted whatever its budget)."""
    real = observe(RealSide(api, "like-"))
    assert observe(StandinSide(tmp_path, monkeypatch)) == real
    assert real["one is a Node"] == "Node" and real["evict pending under a budget"] == (True, "")


def test_on_the_namespace_hosts_a_node_asked_for_by_name_exists(tmp_path, monkeypatch):
    """The demo's hosts have no API server directory: every node asked for exists, by `get node`
    as by `get nodes` (before, `get node NAME` answered nothing, so every removal there skipped
    its drain as "its Node is gone already")."""
    side = StandinSide(tmp_path, monkeypatch, directory=False)
    assert run_text(side.run(product.node_query("worker-1")), "") == (0, "node/worker-1\n")
    assert product.ready_nodes(side.run(product.nodes_query(("worker-1",))).stdout) == {"worker-1"}


def test_on_the_namespace_hosts_a_removal_drains_the_node(tmp_path, monkeypatch):
    """A worker's removal through the demo's first control plane: it finds the Node and runs the
    drain (cordon, drain) and the deletion through the stand-in, as on a real cluster."""
    import subprocess

    from flakefleet.cluster.membership import take_out
    from flakefleet.plan.contract import DeliveryPlan, Endpoint

    side = StandinSide(tmp_path, monkeypatch, directory=False)
    cp = Endpoint("cp-0", "127.0.0.11", 2222, "root", "k")

    class Session:
        plan = DeliveryPlan(host="worker-1", address="127.0.0.13", port=2222, user="root", host_key="k", system="",
                            drv="", control_planes=(cp,), health_timeout_s=30)
        calls: list[list[str]] = []

        def ssh(self, argv, to, timeout):
            if argv[:2] != [product.K3S, "kubectl"]:
                return subprocess.CompletedProcess(argv, 0, "", "")  # `true`: the control plane answers
            self.calls.append(argv[2:4])
            return side.run(argv)

        def hostctl(self, call):
            return subprocess.CompletedProcess([], 0, "", "")

        def say(self, message):
            pass

    session = Session()
    assert take_out(session, None) == "worker-1 drained, k3s stopped, node deleted (through cp-0)"
    assert session.calls[:3] == [["get", "node"], ["cordon", "worker-1"], ["drain", "worker-1"]]
