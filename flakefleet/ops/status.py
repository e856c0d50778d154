"""Status: one table of the fleet, from the stack's outputs and the cluster itself.

    flakefleet status --stack S [--json]          # the outputs read with `pulumi stack output --json --stack S`
    flakefleet status --outputs outputs.json [--json]

Per host: pool, role, Ready, the k3s its kubelet reports, whether it is a voting etcd member
(k3s' EtcdIsVoter Node condition; control planes only), the system wanted against the one it
runs (asked on the host over pinned SSH, as drift does), a pending reboot, and its last
delivery's outcome; then per autoscaled pool, its instances on the pointer's system, behind it,
failed, and not reported yet (flakefleet/ops/pulled.py). The cluster is asked on the first
control plane that answers. Exit 0 when every host is Ready, in sync, every control plane votes
and no pulled instance is behind or failed; 2 when not; 3 when any host, the whole cluster or
the pulled pools could not be asked. Before the first update (outputs `{}`) there is nothing to
ask: one line says so, exit 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from flakefleet.cluster.kubectl import etcd_not_voting, node_items, nodes_query, ready_nodes
from flakefleet.common.ssh import pinned_ssh, remote_command
from flakefleet.ops import pulled
from flakefleet.ops.drift import IN_SYNC, UNCHECKED, HostDrift, report
from flakefleet.common.outputs import NodeRow, add_report_arguments, read_state
from flakefleet.common.cli import OK, main_of, print_json
from flakefleet.plan.contract import IDENTITY_ENV


@dataclass(frozen=True)
class HostStatus:
    host: str
    pool: str
    role: str
    ready: str  # yes | no | unknown
    k3s: str
    etcd: str  # voter | the reason it is not | - (workers)
    system: str  # in sync | drifted | unreachable
    reboot_pending: bool
    last_delivery: str
    detail: str


def cluster_view(nodes: dict[str, NodeRow], identity: str | None) -> tuple[str, str]:
    """(`kubectl get nodes <every host> -o json` from the first control plane that answers, which
    one or why none)."""
    problems = []
    for name, node in sorted(nodes.items()):
        if node.role != "control-plane":
            continue
        with pinned_ssh(node.address, node.ssh_port, node.ssh_user, node.host_key, identity) as ssh:
            try:
                res = subprocess.run([*ssh, remote_command(nodes_query(tuple(sorted(nodes))))],
                                     capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                res = subprocess.CompletedProcess(ssh, 255, "", "timed out")
        if res.returncode == 0:
            return res.stdout, name
        problems.append(f"{name}: {res.stderr.strip()[-200:] or f'exit {res.returncode}'}")
    return "", "no control plane answered: " + "; ".join(problems)


def kubelet_versions(listing: str) -> dict[str, str]:
    try:
        items = node_items(listing)
    except ValueError:
        return {}
    return {i["metadata"]["name"]: i.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "") for i in items}


def combine(nodes: dict[str, NodeRow], drift: list[HostDrift], listing: str) -> list[HostStatus]:
    """The table's rows (pure): the outputs, the hosts' own state, the cluster's view."""
    by_host = {d.host: d for d in drift}
    ready = ready_nodes(listing) if listing else set()
    versions = kubelet_versions(listing) if listing else {}
    servers = {h for h, n in nodes.items() if n.role == "control-plane"}
    learning = etcd_not_voting(listing, servers) if listing else {h: "unknown" for h in servers}
    rows = []
    for host, node in sorted(nodes.items()):
        d = by_host.get(host)
        etcd = "-" if host not in servers else ("voter" if host not in learning else learning[host])
        rows.append(HostStatus(
            host=host, pool=node.pool, role=node.role,
            ready="unknown" if not listing else ("yes" if host in ready else "no"),
            k3s=versions.get(host, "") or "-", etcd=etcd,
            system=d.status if d else UNCHECKED, reboot_pending=bool(d and d.reboot_pending) or node.reboot_pending,
            last_delivery=node.last_outcome or "-", detail=d.detail if d else "",
        ))
    return rows


def render(rows: list[HostStatus]) -> str:
    header = ("host", "pool", "role", "ready", "k3s", "etcd", "system", "reboot", "last delivery")
    table = [header] + [(r.host, r.pool, r.role, r.ready, r.k3s, r.etcd, r.system,
                         "pending" if r.reboot_pending else "-", r.last_delivery) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def exit_code(rows: list[HostStatus], cluster_known: bool) -> int:
    if not cluster_known or any(r.system == UNCHECKED for r in rows):
        return 3
    healthy = all(r.ready == "yes" and r.system == IN_SYNC and r.etcd in ("voter", "-") for r in rows)
    return 0 if healthy else 2


configure = add_report_arguments


def run(args) -> int:
    outputs = read_state(args)
    nodes = outputs.nodes
    identity = os.environ.get(IDENTITY_ENV)
    listing, via = cluster_view(nodes, identity) if nodes else ("", "no control plane yet")
    rows = combine(nodes, report(nodes, identity), listing)
    pools, problem = pulled.view(outputs.pulled_pools)
    if args.json:
        print_json({"updated": outputs.updated, "cluster": via if listing else None,
                    "problem": None if listing or not nodes else via,
                    "hosts": [asdict(r) for r in rows], "pulled_pools": [asdict(p) for p in pools],
                    "pulled_problem": problem})
    elif nodes or pools or problem:
        print(render(rows))
        for line in pulled.render(pools) + ([problem] if problem else []):
            print(line)
        print(f"(cluster asked on {via})" if listing else via)
    if not nodes and not pools:
        return 3 if problem else OK  # nothing deployed: nothing unhealthy
    code = exit_code(rows, bool(listing)) if nodes else OK
    return 3 if problem else max(code, 0 if all(p.healthy for p in pools) else 2)


main = main_of("flakefleet status", configure, run, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
