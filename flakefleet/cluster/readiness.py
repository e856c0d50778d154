"""Whether a batch of nodes is Ready, asked on the first control plane that answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flakefleet.cluster.kubectl import etcd_not_voting, lease_query, lease_renewed, node_query, nodes_query, ready_nodes
from flakefleet.plan.contract import Endpoint

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


def batch_ready(run: HostSession, heartbeat_after: float | None = None) -> tuple[bool, str]:
    """Whether every node of the host's batch reports Ready (and every control plane of it is a
    voting etcd member), asked on the first reachable control plane; with `heartbeat_after` (seconds since the epoch, the host's clock), also whether this
    host's kubelet renewed its Lease since then: a Node stays Ready for a while after its kubelet
    stopped, so Ready alone does not say the new system's k3s is up."""
    problems = []
    for cp in run.plan.ready_via:
        res = run.ssh(nodes_query(run.plan.batch), to=cp, timeout=30)
        if res.returncode != 0:
            problems.append(f"{cp.host}: {res.stderr.strip()[-200:] or f'exit {res.returncode}'}")
            continue
        missing = sorted(set(run.plan.batch) - ready_nodes(res.stdout))
        if missing:
            return False, f"not Ready: {', '.join(missing)} (asked {cp.host})"
        # A control plane counts only as a voting etcd member: Ready is not etcd health.
        servers = set(run.plan.batch) & {e.host for e in run.plan.control_planes}
        if learners := etcd_not_voting(res.stdout, servers):
            return False, "not a voting etcd member: " + "; ".join(f"{n} ({why})" for n, why in sorted(learners.items())) \
                + f" (asked {cp.host})"
        if heartbeat_after is not None and run.plan.host in run.plan.batch:
            return heartbeat_since(run, cp, heartbeat_after)
        return True, ""
    return False, "no control plane answered: " + "; ".join(problems)


def heartbeat_since(run: HostSession, cp: Endpoint, since: float) -> tuple[bool, str]:
    """Whether the host's Node Lease was renewed after `since` (asked on `cp`)."""
    res = run.ssh(lease_query(run.plan.host), to=cp, timeout=30)
    renewed = lease_renewed(res.stdout) if res.returncode == 0 else None
    if renewed is not None and renewed > since:
        return True, ""
    when = "never" if renewed is None else f"{since - renewed:.0f}s before the switch ended"
    return False, f"{run.plan.host}'s kubelet has not renewed its Lease since the switch (last: {when}; asked {cp.host})"


def node_exists(run: HostSession, cp: Endpoint) -> bool | None:
    """Whether the host's Node is registered (asked on `cp`); None when `cp` cannot answer."""
    res = run.ssh(node_query(run.plan.host), to=cp, timeout=30)
    return None if res.returncode != 0 else bool(res.stdout.strip())
