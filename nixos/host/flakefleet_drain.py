"""flakefleet-drain: an autoscaled pool's instance drains its own Node before its group terminates it.

Run by flakefleet-drain.service (nixos/mixins/pull.nix) on every pulled instance, as root:

    flakefleet-drain CONFIG        # CONFIG: /etc/flakefleet/pull.json (public, from user data)

1. Poll the instance's target lifecycle state (IMDSv2 `autoscaling/target-lifecycle-state`, as
   AWS' "Retrieve the target lifecycle state through instance metadata" describes) until it
   reads `Terminated`: the group is about to terminate it (an instance refresh, a lowered max, a
   rebalance, the cluster autoscaler), held by the termination hook `drain_hook`.
2. Cordon its own Node, then evict its own pods (not DaemonSet-owned pods, which would come back,
   nor mirror pods, which the API cannot evict), retrying a PodDisruptionBudget's 429 until the
   deadline, and wait (bounded) for them to be gone.
3. Complete the termination hook with CONTINUE and add the drain's outcome to the instance's
   report (its pull outcome kept: status still sees which system it ran).

Its Kubernetes identity is the kubelet's own (k3s: <data-dir>/agent/kubelet.kubeconfig,
`system:node:<name>`), which may do exactly this and only for this node (kubernetes
plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go, NodeRules: pods read, pods/eviction
create, nodes get/patch, no node delete; plugin/pkg/admission/noderestriction/admission.go:
evictions of pods bound to itself, changes to its own Node but not its taints). `kubectl drain`
is not used: it reads each pod's DaemonSet, which that identity may not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

KUBELET_KUBECONFIG = "/var/lib/rancher/k3s/agent/kubelet.kubeconfig"  # k3s pkg/agent/config/config.go
POLL_S = 5.0
TERMINATED = "Terminated"
MIRROR = "kubernetes.io/config.mirror"  # k8s.io/api core/v1: MirrorPodAnnotationKey


def say(message: str) -> None:
    print(f"flakefleet-drain: {message}", file=sys.stderr, flush=True)


def evictable(pods: list[dict], node: str) -> list[tuple[str, str]]:
    """(namespace, name) of the pods a drain evicts from `node`: bound to it, still running or
    pending, not a mirror pod and not owned by a DaemonSet (pure)."""
    chosen = []
    for pod in pods:
        meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        if spec.get("nodeName") != node or status.get("phase") in ("Succeeded", "Failed"):
            continue
        if MIRROR in (meta.get("annotations") or {}):
            continue
        if any(o.get("kind") == "DaemonSet" and o.get("controller") for o in meta.get("ownerReferences") or []):
            continue
        chosen.append((meta.get("namespace", "default"), meta["name"]))
    return sorted(chosen)


def eviction(namespace: str, name: str) -> dict:
    """The Eviction a drain posts (policy/v1)."""
    return {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}


class Kube:
    """`k3s kubectl` with the kubelet's own credentials."""

    def __init__(self, kubeconfig: str = KUBELET_KUBECONFIG, program: tuple[str, ...] = ("k3s", "kubectl")):
        self.base = [*program, "--kubeconfig", kubeconfig]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base, *args], input=stdin, capture_output=True, text=True, timeout=120)

    def cordon(self, node: str) -> None:
        res = self.run("patch", "node", node, "--type=merge", "-p", '{"spec":{"unschedulable":true}}')
        if res.returncode != 0:
            raise RuntimeError(f"cordon {node}: {res.stderr.strip()[-300:]}")

    def pods(self, node: str) -> list[dict]:
        res = self.run("get", "pods", "--all-namespaces", "--field-selector", f"spec.nodeName={node}", "-o", "json")
        if res.returncode != 0:
            raise RuntimeError(f"list pods on {node}: {res.stderr.strip()[-300:]}")
        return json.loads(res.stdout).get("items", [])

    def evict(self, namespace: str, name: str) -> str:
        """'evicted', 'gone' or 'blocked' (a disruption budget says not now: HTTP 429)."""
        res = self.run("create", "--raw", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", "-f", "-",
                       stdin=json.dumps(eviction(namespace, name)))
        if res.returncode == 0:
            return "evicted"
        if "NotFound" in res.stderr or "not found" in res.stderr:
            return "gone"
        if "TooManyRequests" in res.stderr or "429" in res.stderr or "disruption budget" in res.stderr:
            return "blocked"
        raise RuntimeError(f"evict {namespace}/{name}: {res.stderr.strip()[-300:]}")


def drain(kube: Kube, node: str, timeout_s: float, clock=time.monotonic, pause=time.sleep) -> dict:
    """Cordon, evict until none is left or the deadline: {evicted, left} (pods by namespace/name)."""
    kube.cordon(node)
    deadline, evicted = clock() + timeout_s, set()
    while True:
        left = evictable(kube.pods(node), node)
        pending = [p for p in left if p not in evicted]
        for namespace, name in pending:
            if kube.evict(namespace, name) in ("evicted", "gone"):
                evicted.add((namespace, name))
        if not left or clock() >= deadline:
            return {"evicted": sorted(f"{n}/{p}" for n, p in evicted), "left": [f"{n}/{p}" for n, p in left]}
        pause(min(2.0, max(0.0, deadline - clock())))


def lifecycle_state(base: str) -> str | None:
    """The instance's target lifecycle state, through an IMDSv2 session token; None if the
    metadata service has none (not an Auto Scaling instance)."""
    put = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    token = urllib.request.urlopen(put, timeout=10).read().decode()
    req = urllib.request.Request(f"{base}/latest/meta-data/autoscaling/target-lifecycle-state",
                                 headers={"X-aws-ec2-metadata-token": token})
    try:
        return urllib.request.urlopen(req, timeout=10).read().decode().strip()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def wait_for_termination(base: str, pause=time.sleep) -> str:
    """Poll until the target lifecycle state reads Terminated. A metadata service that does not
    answer for a while is asked again (said once, not every poll)."""
    quiet = False
    while True:
        try:
            state, quiet = lifecycle_state(base), False
        except OSError as err:  # urllib's URLError and HTTPError are OSErrors
            if not quiet:
                say(f"the metadata service did not answer ({err}); asking again every {POLL_S:.0f}s")
            state, quiet = None, True
        if state == TERMINATED:
            return state
        pause(POLL_S)


def with_drain(previous: dict, instance: str, result: dict, at: int) -> dict:
    """The instance's report with the drain's outcome added: its pull outcome (result, system)
    is kept, so status and drift still see what it ran (pure)."""
    done = not result["left"] and "error" not in result
    return {**previous, "instance": instance,
            "drain": {"at": at, "result": "drained" if done else "incomplete", **result}}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        say("usage: flakefleet-drain CONFIG")
        return 3
    import flakefleet_pull as pull  # the same directory (nixos/host/default.nix installs both)

    conf = json.loads(Path(argv[0]).read_text())
    base = conf.get("imds") or "http://169.254.169.254"
    state = wait_for_termination(base)
    me = pull.metadata(base)
    aws = pull.clients(conf)
    say(f"{me['instance']} is to be terminated ({state}): draining its node")
    try:
        result = drain(Kube(), me["instance"], float(conf.get("drain_timeout_s", 300)))
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as err:
        result = {"evicted": [], "left": [], "error": str(err)}
    say(f"evicted {len(result['evicted'])} pods, {len(result['left'])} left: {', '.join(result['left']) or '-'}")
    try:
        previous = json.loads((pull.STATE / "pull.json").read_text())
    except (OSError, ValueError):
        previous = {"pointer": conf["pointer"]}
    pull.record(aws, conf, with_drain(previous, me["instance"], result, int(time.time())))
    # CONTINUE either way: the group terminates the instance when the hook times out regardless.
    aws["autoscaling"].complete_lifecycle_action(LifecycleHookName=conf["drain_hook"], AutoScalingGroupName=conf["group"],
                                                 LifecycleActionResult="CONTINUE", InstanceId=me["instance"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
