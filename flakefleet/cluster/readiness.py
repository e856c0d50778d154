"""Whether a batch of nodes is Ready, asked on the first control plane that answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flakefleet.cluster.kubectl import node_query, nodes_query, ready_nodes
from flakefleet.plan.contract import Endpoint

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession


def batch_ready(run: HostSession) -> tuple[bool, str]:
    """Whether every node of the host's batch reports Ready, asked on the first reachable control plane."""
    problems = []
    for cp in run.plan.ready_via:
        res = run.ssh(nodes_query(run.plan.batch), to=cp, timeout=30)
        if res.returncode != 0:
            problems.append(f"{cp.host}: {res.stderr.strip()[-200:] or f'exit {res.returncode}'}")
            continue
        missing = sorted(set(run.plan.batch) - ready_nodes(res.stdout))
        return not missing, f"not Ready: {', '.join(missing)} (asked {cp.host})" if missing else ""
    return False, "no control plane answered: " + "; ".join(problems)


def node_exists(run: HostSession, cp: Endpoint) -> bool | None:
    """Whether the host's Node is registered (asked on `cp`); None when `cp` cannot answer."""
    res = run.ssh(node_query(run.plan.host), to=cp, timeout=30)
    return None if res.returncode != 0 else bool(res.stdout.strip())
