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


def node_items(kubectl_json: str) -> list[dict]:
    """The Nodes in `kubectl get nodes [NAMES] --ignore-not-found -o json`'s answer: a List, or, when
    exactly one name was asked for, that Node itself (kubectl prints a single object then, and
    nothing at all when it is missing). ValueError when the answer is not JSON."""
    if not kubectl_json.strip():
        return []
    try:
        doc = json.loads(kubectl_json)
    except json.JSONDecodeError as err:
        raise ValueError(f"not kubectl JSON: {kubectl_json.strip()[:200]!r}") from err
    if not isinstance(doc, dict):
        raise ValueError(f"not kubectl JSON: {kubectl_json.strip()[:200]!r}")
    if doc.get("kind") == "Node":
        return [doc]
    return [i for i in doc.get("items") or [] if isinstance(i, dict)]


def ready_nodes(kubectl_json: str) -> set[str]:
    """Names of the nodes whose Ready condition is True, from `kubectl get nodes -o json`."""
    try:
        items = node_items(kubectl_json)
    except ValueError:
        return set()
    return {
        item["metadata"]["name"]
        for item in items
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in item.get("status", {}).get("conditions", []))
    }


def etcd_not_voting(kubectl_json: str, names: set[str]) -> dict[str, str]:
    """Of `names`, the nodes that are not voting etcd members, with why: k3s' member controller
    sets the Node condition EtcdIsVoter on every etcd node, True (MemberNotLearner) for a voter,
    False for a learner, an unhealthy member or none (pkg/etcd/etcd.go, setEtcdStatusCondition);
    not set yet: not known to be a voter."""
    try:
        items = node_items(kubectl_json)
    except ValueError:
        return {n: "no answer" for n in names}
    found = {}
    for item in items:
        name = item.get("metadata", {}).get("name")
        if name in names:
            cond = next((c for c in item.get("status", {}).get("conditions", []) if c.get("type") == "EtcdIsVoter"), None)
            if cond is None:
                found[name] = "no EtcdIsVoter condition yet"
            elif cond.get("status") != "True":
                found[name] = f"{cond.get('reason', '')}: {cond.get('message', '')}"
    return found


def node_names(kubectl_json: str) -> list[str]:
    """Every node's name in `kubectl get nodes -o json`, sorted."""
    return sorted(i["metadata"]["name"] for i in node_items(kubectl_json))


# The CA hash in the secure server token k3s writes once a server runs (docs.k3s.io/cli/token:
# "The server token is always written to /var/lib/rancher/k3s/server/token in secure format").
SERVER_TOKEN_FILE = "/var/lib/rancher/k3s/server/token"
CA_HASH_QUERY = ["sed", "-n", "s/^K10\\([0-9a-f]\\{64\\}\\)::.*/\\1/p", SERVER_TOKEN_FILE]


# The etcd member list, as k3s' supervisor serves it on a server at /db/info (k3s
# pkg/etcd/etcd.go, infoHandler: {"members": [etcdserverpb.Member]}; newer k3s serve it only to
# the `k3s:server` role, pkg/server/router.go, which the server token's password has). Run as
# root on the server: the password is read there from its own token file and handed to curl
# (a NixOS core package, nixos/modules/config/system-path.nix) on stdin, never on a command line.
CURL = "/run/current-system/sw/bin/curl"
ETCD_MEMBERS_QUERY = ["sh", "-c", (
    f"t=$(cat {SERVER_TOKEN_FILE}) || exit 1; pw=${{t#K10*::server:}}; "
    "pw=$(printf %s \"$pw\" | sed 's/[\\\\\"]/\\\\&/g'); "
    f"printf 'user = \"server:%s\"\\n' \"$pw\" | {CURL} -sS --fail --max-time 10 "
    "--cacert /var/lib/rancher/k3s/server/tls/server-ca.crt -K - https://127.0.0.1:6443/db/info")]


def etcd_members_of(info: str, node: str) -> list[str]:
    """The etcd members of `node` in /db/info's JSON (pure): k3s names a server's member
    `<node name>-<8 hex>` (pkg/etcd/etcd.go, setName). Raises ValueError on anything else."""
    try:
        members = json.loads(info)["members"]
        names = [m.get("name", "") for m in members]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"not an etcd member list: {info.strip()[:200]!r}") from err
    return sorted(n for n in names if n.rpartition("-")[0] == node)


CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"  # k3s labels its servers so


def servers_in(listing: str) -> set[str]:
    """Names of the Nodes labelled as control planes in `kubectl get nodes -o json`."""
    try:
        items = node_items(listing)
    except ValueError:
        return set()
    return {i["metadata"]["name"] for i in items if CONTROL_PLANE_LABEL in i.get("metadata", {}).get("labels", {})}


def quorum_problem(listing: str, host: str, members: list[str]) -> str | None:
    """Why removing `host`'s etcd member from `members` would lose quorum (None: it would not): the
    members left must hold a majority of themselves that are Ready voting members (EtcdIsVoter)."""
    ready = ready_nodes(listing)
    learning = etcd_not_voting(listing, set(members))
    live = [m for m in members if m != host and m in ready and m not in learning]
    left = len(members) - 1
    if left == 0 or len(live) <= left // 2:
        return (f"removing it leaves {left} etcd members of which {len(live)} Ready and voting "
                f"({', '.join(live) or 'none'}): no quorum")
    return None
