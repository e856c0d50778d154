"""A kubelet's calls to the API, made with its own node credentials (system:node:<name>), so the
Node authorizer and NodeRestriction judge them as they judge a kubelet's. No containers run: a
pod bound to the node is reported Running, and a pod being deleted is finished as the kubelet's
status manager finishes it. Restated from kubernetes pkg/kubelet:
  - kubelet_node_status.go (registerWithAPIServer, initialNode): the Node is created by the node
    itself with its labels (`--node-labels`, k3s' --node-label, and the well-known
    kubernetes.io/hostname, os and arch), its taints (`--register-with-taints`, k3s'
    --node-taint) and spec.providerID (`--provider-id`);
  - tryUpdateNodeStatus: a strategic-merge PATCH of nodes/status (the Ready condition, keyed by
    type, so conditions others set, such as k3s' EtcdIsVoter, stay; nodeInfo.kubeletVersion);
  - nodelease (component-helpers/apimachinery/lease/controller.go): the Lease in
    kube-node-lease, holderIdentity the node, leaseDurationSeconds 40, renewed every 10 s;
  - status/status_manager.go: pod status PATCHes; a pod with a deletionTimestamp is deleted with
    grace period 0 once its containers stopped (here: at once).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from tests.kube.controlplane import ControlPlane


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Refused(RuntimeError):
    """The API refused a kubelet's call (the message is kubectl's)."""


@dataclass
class Kubelet:
    """One node's kubelet (see the module docstring)."""

    __test__ = False

    api: ControlPlane
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = ()  # key[=value]:Effect, as --register-with-taints takes them
    provider_id: str | None = None
    version: str = "v1.35.4+k3s1"

    @property
    def kubeconfig(self) -> Path:
        return self.api.node(self.name)

    def call(self, *args: str, stdin: str | None = None) -> str:
        res = self.api.kubectl(self.kubeconfig, *args, stdin=stdin)
        if res.returncode != 0:
            raise Refused(res.stderr.strip())
        return res.stdout

    def patch(self, path: str, body: dict) -> dict:
        """A strategic-merge PATCH as the kubelet sends it (no read first: a node may not read
        nodes/status)."""
        self.kubeconfig  # the node's certificate exists
        code, answer = self.api.request(f"system:node:{self.name}", "PATCH", path, body)
        if code >= 300:
            raise Refused(f"{code}: {answer.get('message', answer)}")
        return answer

    def register(self) -> None:
        taints = []
        for t in self.taints:
            kv, effect = t.rsplit(":", 1)
            key, _, value = kv.partition("=")
            taints.append({"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect})
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64", **self.labels}
        spec = {"taints": taints} if taints else {}
        if self.provider_id:
            spec["providerID"] = self.provider_id
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels}, "spec": spec}
        self.call("create", "-f", "-", stdin=json.dumps(node))
        self.heartbeat()

    def heartbeat(self, ready: bool = True) -> None:
        """The node status update and the Lease renewal of one kubelet sync."""
        stamp = now()
        condition = {"type": "Ready", "status": "True" if ready else "False", "lastHeartbeatTime": stamp,
                     "lastTransitionTime": stamp, "reason": "KubeletReady" if ready else "KubeletNotReady",
                     "message": "kubelet is posting ready status" if ready else "container runtime is down"}
        status = {"status": {"conditions": [condition], "nodeInfo": {
            "kubeletVersion": self.version, "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "", "osImage": "NixOS", "containerRuntimeVersion": "containerd://2.1", "operatingSystem": "linux",
            "architecture": "amd64"}}}
        self.patch(f"/api/v1/nodes/{self.name}/status", status)
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": stamp}}
        self.call("apply", "--server-side", "--force-conflicts", "--field-manager=kubelet", "-f", "-",
                  stdin=json.dumps(lease))

    def pods(self) -> list[dict]:
        return json.loads(self.call("get", "pods", "--all-namespaces", "--field-selector",
                                    f"spec.nodeName={self.name}", "-o", "json"))["items"]

    def sync_pods(self) -> None:
        """Report the node's pods Running; finish the ones being deleted."""
        for pod in self.pods():
            meta = pod["metadata"]
            where = ["-n", meta["namespace"]]
            if meta.get("deletionTimestamp"):
                self.call("delete", "pod", meta["name"], *where, "--grace-period=0", "--force", "--wait=false")
            elif pod.get("status", {}).get("phase") != "Running" and not meta.get("annotations", {}).get("test/pending"):
                running = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                                      "startTime": now()}}
                self.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status", running)
