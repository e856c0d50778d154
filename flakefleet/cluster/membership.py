"""A host joining and leaving the cluster: a replaced first control plane joins instead of
starting a second cluster, a new machine in a gone machine's place drops the stale Node (and so
its etcd member), and a host leaving the stack is drained and deleted."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from flakefleet.cluster.kubectl import (CA_HASH_QUERY, ETCD_MEMBERS_QUERY, K3S, delete_node_command, drain_commands,
                                       etcd_members_of, node_names, nodes_query, quorum_problem)
from flakefleet.cluster.readiness import node_exists
from flakefleet.common.retry import poll
from flakefleet.host.files import HostFile, files_digest
from flakefleet.host import protocol as hostctl
from flakefleet.host.protocol import HostState
from flakefleet.plan.contract import FACTS_PATH, K3S_DROP_IN_PATH, DeliveryFailed, Endpoint

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


def join_instead_of_init(contents: list[HostFile]) -> list[HostFile] | None:
    """The host files of an initializing control plane rewritten to join through the API endpoint
    (for when the cluster already exists: a replaced first control plane must not start a second
    cluster). None when the files do not initialize a cluster."""
    files = {path: (mode, data) for path, mode, data in contents}
    if K3S_DROP_IN_PATH not in files or FACTS_PATH not in files:
        return None
    drop_in = json.loads(files[K3S_DROP_IN_PATH][1])
    if not drop_in.pop("cluster-init", False):
        return None
    facts = json.loads(files[FACTS_PATH][1])
    drop_in["server"] = facts["server"] = facts["api_endpoint"]
    facts["init"] = False
    files[K3S_DROP_IN_PATH] = (files[K3S_DROP_IN_PATH][0], (json.dumps(drop_in, sort_keys=True) + "\n").encode())
    files[FACTS_PATH] = (files[FACTS_PATH][0], (json.dumps(facts, sort_keys=True) + "\n").encode())
    return [(path, mode, data) for path, (mode, data) in files.items()]


def existing_cluster_check(run: HostSession, contents: list[HostFile], state: HostState) -> list[HostFile]:
    """An initializing control plane joins instead when it has no etcd data of its own while
    another control plane already runs the cluster (it was replaced): a second `cluster-init`
    would split the cluster. A host that joined that way keeps joining; one with its own etcd
    data keeps its planned files. Initializing is for the stack's first delivery of this host,
    or a restore: a host this stack delivered before (its Command's last report names a system)
    that lost its etcd data and reaches no other control plane stops instead (a partition, a
    security group that blocks etcd) rather than start a second, empty cluster."""
    joining = join_instead_of_init(contents)
    if joining is None:
        return contents
    if state.applied == files_digest(run.plan.system, joining):
        return joining
    if state.etcd_data:
        return contents
    others = [cp for cp in run.plan.control_planes if cp.host != run.plan.host]
    for cp in others:
        if run.ssh([K3S, "kubectl", "get", "nodes", "-o", "name"], to=cp, timeout=20).returncode == 0:
            run.say(f"the cluster already runs on {cp.host}: joining it instead of initializing one")
            return joining
    if run.previous.get("system") and run.plan.restore_id is None:
        asked = ", ".join(cp.host for cp in others) or "none in the stack"
        raise DeliveryFailed(
            f"{run.plan.host} initialized this stack's cluster before (delivered {run.previous['system']}) and "
            f"has no etcd data now, and no other control plane answers (asked: {asked}): refusing to start a "
            "second, empty cluster. Make the other control planes reachable (ports 6443 and 2379-2380 from this "
            "host), or rebuild the cluster from a snapshot (docs/disaster-recovery.md)")
    return contents


def cluster_ca(run: HostSession) -> None:
    """The CA hash this host's secure tokens carry: the cluster's own, read off a server that runs
    it (this host when it is one, else the control planes delivered before it, over pinned SSH),
    else the stack's server CA (the first server starts with it). A cluster older than the stack's
    CAs made its own; its joins pin that one."""
    me = [cp for cp in run.plan.control_planes if cp.host == run.plan.host]
    for cp in (*me, *(cp for cp in run.plan.ready_via if cp.host != run.plan.host)):
        found = run.ssh(CA_HASH_QUERY, to=None if cp.host == run.plan.host else cp, timeout=30).stdout.strip()
        if len(found) == 64:
            if found != run.plan.ca_hash and found != run.ca_hash:
                run.say(f"the cluster's CA is its own, not the stack's (it predates it): joins pin it "
                        f"(sha256 {found[:12]}…, read on {cp.host})")
            run.ca_hash = found
            break
    run.report.ca_hash = run.ca_hash


def forget_stale_node(run: HostSession) -> None:
    """A fresh machine (nothing delivered on it yet) whose Node already exists took the place of
    a machine that is gone (a replaced instance, a re-imaged host): delete the stale Node through
    another control plane first, so k3s also drops the old machine's etcd member and quorum
    counts only live servers. The Node is registered again when this host's k3s starts."""
    for cp in run.plan.control_planes:
        if cp.host == run.plan.host:
            continue
        exists = node_exists(run, cp)
        if exists is None:
            continue
        if exists:
            res = run.ssh(delete_node_command(run.plan.host), to=cp, timeout=120)
            if res.returncode != 0:
                raise DeliveryFailed(f"deleting the stale node {run.plan.host} on {cp.host} failed; nothing "
                                     f"was changed on the new machine: {res.stderr.strip()[-500:]}")
            run.say(f"a new machine took {run.plan.host}'s place: deleted its stale Node through {cp.host}")
        return


def superseded(run: HostSession, state: HostState | None) -> bool:
    """Whether a newer delivery holds the host (this Command's delete belongs to a replacement)."""
    if state is None:
        return False
    mine = run.previous.get("owner")
    if mine and state.owner:
        return state.owner != mine
    # A Command from before ownership: compare what it applied with what the host has.
    applied = state.applied
    return bool(applied) and applied != files_digest(run.plan.system, run.file_contents())


def removal_quorum(listing: str, host: str) -> str | None:
    """Whether `host`'s member may go (pure): the members are the control planes whose Nodes the
    listing (`kubectl get nodes <control planes> -o json`) holds, and `host`."""
    try:
        present = set(node_names(listing))
    except (ValueError, AttributeError, KeyError):
        present = set()
    return quorum_problem(listing, host, sorted(present | {host}))


def etcd_member_gone(run: HostSession, host: str, via: Endpoint, timeout_s: float) -> str:
    """Wait, at most `timeout_s`, until `via`'s etcd member list (k3s' /db/info) has no member of
    `host` any more: k3s' member controller removes it when the Node goes (pkg/etcd/
    member_controller.go, OnRemove: RemovePeer). Raises DeliveryFailed when it stays, so the
    machine is not deleted while it is still a member; a list that cannot be read is said, not
    fatal (the removal has happened; only its check is missing)."""
    seen: dict[str, list[str]] = {}

    def gone() -> tuple[bool, str]:
        res = run.ssh(ETCD_MEMBERS_QUERY, to=via, timeout=30)
        if res.returncode != 0:
            raise LookupError(res.stderr.strip()[-300:] or f"exit {res.returncode}")
        seen["left"] = etcd_members_of(res.stdout, host)
        return not seen["left"], ""

    try:
        done, _ = poll(gone, time.monotonic() + timeout_s)
    except (LookupError, ValueError) as err:
        run.say(f"could not list the etcd members on {via.host} to check that {host}'s is gone: {err}")
        return "its etcd member not checked"
    if not done:
        raise DeliveryFailed(
            f"{host}: its etcd member {', '.join(seen['left'])} is still listed on {via.host} {timeout_s:.0f}s after "
            "its Node was deleted (k3s removes it with the Node); the machine is kept. Remove the member "
            f"(etcdctl member remove on {via.host}), then run the update again")
    return "its etcd member gone"


def remove(run: HostSession) -> str:
    """Take the host out of the cluster: cordon and drain its node, stop k3s on it, delete the
    Node. Does nothing when a newer delivery holds the host: Pulumi deletes the old Command of
    every replacement (forced, trigger, instance) after the new one has claimed the host.
    Draining that fails stops the removal (a dead host: `flakefleet remove --force` deletes its
    Node first, and then this finds nothing to drain); with no control plane left to ask (the
    whole cluster is being destroyed), there is nothing to drain."""
    state = answered_state(run)
    if superseded(run, state):
        return f"{run.plan.host} was superseded by a newer delivery; nothing to remove"
    return take_out(run, state)


def answered_state(run: HostSession) -> HostState | None:
    """The host's `state`, None when it does not answer."""
    res = run.hostctl(hostctl.state(timeout=30))
    return HostState.parse(res.stdout) if res.returncode == 0 else None


def take_out(run: HostSession, state: HostState | None) -> str:
    """`remove` once it is known the host is to go (its delivery's delete, or a reinstall that
    wipes it): drained through another control plane, k3s stopped, its Node and etcd member gone.
    `state` is the host's `state` (None: it does not answer, and has nothing to stop)."""
    plan = run.plan
    others = [cp for cp in plan.control_planes if cp.host != plan.host]
    via = next((cp for cp in others if run.ssh(["true"], to=cp, timeout=30).returncode == 0), None)
    if via is None:
        return f"{plan.host}: no other control plane reachable; nothing to drain (cluster being removed)"
    server = plan.host in {cp.host for cp in plan.control_planes}
    if node_exists(run, via) is False:
        # Taken out already (`flakefleet remove --force` for a dead host): nothing left to drain.
        if state is not None:
            run.hostctl(hostctl.retire())
        member = f", {etcd_member_gone(run, plan.host, via, plan.health_timeout_s)}" if server else ""
        return f"{plan.host}: its Node is gone already (asked {via.host}){member}; nothing to drain"
    if server:
        # Its etcd member goes with its Node: the members left must keep a voting majority. The
        # members are the control planes whose Nodes exist (one removed before is gone already).
        listing = run.ssh(nodes_query(tuple(cp.host for cp in plan.control_planes)), to=via, timeout=30)
        if problem := removal_quorum(listing.stdout if listing.returncode == 0 else "", plan.host):
            raise DeliveryFailed(f"{plan.host}: {problem} (asked {via.host}); it stays in the cluster")
    for argv in drain_commands(plan.host, plan.health_timeout_s):
        res = run.ssh(argv, to=via, timeout=plan.health_timeout_s + 60)
        if res.returncode != 0:
            raise DeliveryFailed(f"draining {plan.host} on {via.host} failed; it stays in the cluster: "
                                 f"{res.stderr.strip()[-500:]}")
    if state is not None:
        run.hostctl(hostctl.retire())
    res = run.ssh(delete_node_command(plan.host), to=via, timeout=120)
    if res.returncode != 0:
        raise DeliveryFailed(f"deleting node {plan.host} on {via.host} failed: {res.stderr.strip()[-500:]}")
    member = ""
    if server:
        member = f", {etcd_member_gone(run, plan.host, via, plan.health_timeout_s)}"
        if state is not None:
            run.hostctl(hostctl.forget_etcd())  # added back, it joins as a new member
    return f"{plan.host} drained, k3s stopped, node deleted{member} (through {via.host})"
