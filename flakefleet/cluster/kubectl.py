"""The `k3s kubectl` calls flakefleet makes on a control plane, and what it reads of their answers (pure)."""

from __future__ import annotations

import datetime
import json

K3S = "/run/current-system/sw/bin/k3s"  # NixOS puts k3s there (environment.systemPackages)


def nodes_query(names: tuple[str, ...]) -> list[str]:
    """The kubectl call that reports the given nodes (missing ones are simply absent)."""
    return [K3S, "kubectl", "get", "nodes", *names, "--ignore-not-found", "-o", "json"]


def node_query(name: str) -> list[str]:
    """The kubectl call that prints `node/<name>` when the Node exists, nothing when it does not."""
    return [K3S, "kubectl", "get", "node", name, "--ignore-not-found", "-o", "name"]


def lease_query(name: str) -> list[str]:
    """The kubectl call that prints the node's Lease: its kubelet renews it every 10 s (the Node's
    status, and its Ready condition, only every 5 minutes or on a change; a Node stays Ready for
    the 40 s grace period after its kubelet stops)."""
    return [K3S, "kubectl", "get", "lease", name, "-n", "kube-node-lease", "--ignore-not-found", "-o", "json"]


def lease_renewed(kubectl_json: str) -> float | None:
    """When a Lease (`kubectl get lease -o json`) was last renewed (seconds since the epoch), or None."""
    try:
        stamp = json.loads(kubectl_json)["spec"]["renewTime"]
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def drain_commands(node: str, timeout_s: float) -> list[list[str]]:
    """What removing a node runs on a control plane, before and after its host stops k3s."""
    return [
        [K3S, "kubectl", "cordon", node],
        [K3S, "kubectl", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={int(timeout_s)}s"],
    ]


def uncordon_command(node: str) -> list[str]:
    return [K3S, "kubectl", "uncordon", node]


def delete_node_command(node: str) -> list[str]:
    """Deleting the Node object; for a server, k3s then removes its etcd member."""
    return [K3S, "kubectl", "delete", "node", node, "--ignore-not-found"]


def ready_nodes(kubectl_json: str) -> set[str]:
    """Names of the nodes whose Ready condition is True, from `kubectl get nodes -o json`."""
    try:
        items = json.loads(kubectl_json).get("items", [])
    except (json.JSONDecodeError, AttributeError):
        return set()
    return {
        item["metadata"]["name"]
        for item in items
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in item.get("status", {}).get("conditions", []))
    }


def node_names(kubectl_json: str) -> list[str]:
    """Every node's name in `kubectl get nodes -o json`, sorted."""
    return sorted(i["metadata"]["name"] for i in json.loads(kubectl_json).get("items", []))


# The CA hash in the secure server token k3s writes once a server runs (docs.k3s.io/cli/token:
# "The server token is always written to /var/lib/rancher/k3s/server/token in secure format").
SERVER_TOKEN_FILE = "/var/lib/rancher/k3s/server/token"
CA_HASH_QUERY = ["sed", "-n", "s/^K10\\([0-9a-f]\\{64\\}\\)::.*/\\1/p", SERVER_TOKEN_FILE]
