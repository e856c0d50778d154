"""Rebuilding a cluster from an etcd snapshot, on its hosts: the first control plane restores the
snapshot (`k3s server --cluster-reset`), the others wipe their old etcd data and join; afterwards
the Nodes the snapshot brought back for hosts the stack does not have are deleted."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from flakefleet.cluster.kubectl import K3S, delete_node_command, node_names
from flakefleet.common.ssh import pinned_ssh, remote_command
from flakefleet.host import protocol as hostctl
from flakefleet.host.protocol import HostState
from flakefleet.plan.contract import DeliveryFailed, PrunePlan

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


class PruneFailed(Exception):
    """The stale Nodes could not be listed or deleted; the message says which and where."""


def restore(run: HostSession) -> None:
    """Before the switch starts k3s: restore the snapshot (first control plane) or wipe the old
    etcd data so the host joins the restored cluster (other control planes). Once per restore."""
    plan = run.plan
    if plan.restore_args:
        # The token comes from the staged copy: the files are installed only at activation.
        args = [a.replace("@STAGE@", f"/run/flakefleet/{run.token}/files") for a in plan.restore_args]
        res = run.hostctl(hostctl.restore(plan.restore_id, plan.system, args))
        what = "restoring the snapshot"
    else:
        res = run.hostctl(hostctl.wipe_etcd(plan.restore_id))
        what = "wiping the old etcd data"
    if res.returncode != 0:
        raise DeliveryFailed(f"{what} on {plan.host} failed; nothing was activated: {res.stderr.strip()[-1000:]}")
    run.say(res.stdout.strip().splitlines()[-1] if res.stdout.strip() else what)


def snapshot_before_upgrade(run: HostSession, state: HostState) -> None:
    """The first server of a k3s minor upgrade: an on-demand etcd snapshot before its new system
    (on the node's local snapshot directory and, with `dr`, the stack's bucket: k3s' etcd-snapshot
    reads the same config as the server), once; a snapshot that fails stops the upgrade."""
    name = run.plan.snapshot_before
    if not name or not state.etcd_data or state.current == run.plan.system:
        return
    if run.previous.get("snapshot") == name:
        run.report.snapshot = name
        return
    res = run.ssh([K3S, "etcd-snapshot", "save", "--name", name], timeout=900)
    if res.returncode != 0:
        raise DeliveryFailed(f"the etcd snapshot before the k3s upgrade failed on {run.plan.host}; nothing was changed: "
                             f"{res.stderr.strip()[-500:]}")
    run.report.snapshot = name
    run.say(f"etcd snapshot {name} taken before the k3s upgrade")


def stale_nodes(kubectl_json: str, keep: set[str]) -> list[str]:
    """Node names in `kubectl get nodes -o json` that are not hosts of this stack (pure)."""
    return [name for name in node_names(kubectl_json) if name not in keep]


def prune(plan: PrunePlan, identity: str | None) -> list[str]:
    """Delete the stale Nodes through the control plane in `plan` (`endpoint`, `keep`), over pinned SSH."""
    e = plan.endpoint
    with pinned_ssh(e.address, e.port, e.user, e.host_key, identity) as ssh:
        res = subprocess.run([*ssh, f"{K3S} kubectl get nodes -o json"], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise PruneFailed(f"cannot list nodes on {e.host}: {res.stderr.strip()[-300:]}")
        stale = stale_nodes(res.stdout, set(plan.keep))
        for node in stale:
            res = subprocess.run([*ssh, remote_command(delete_node_command(node))], capture_output=True, text=True,
                                 timeout=120)
            if res.returncode != 0:
                raise PruneFailed(f"cannot delete stale node {node} on {e.host}: {res.stderr.strip()[-300:]}")
    return stale
