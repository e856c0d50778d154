"""`flakefleet:workloads`: Nix-built workloads of the flake (nixos/workloads/), and the pools that run them.

Each workload is an image built by nixpkgs' dockerTools and the Kubernetes manifests that run it,
both defined in the flake. The listed pools' nodes preload the image (containerd imports it at
start: no registry), the control planes deploy the manifests, and the pods run only on those pools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from flakefleet.config.base import NAMESPACE, DnsLabel, Model, did_you_mean
from flakefleet.facts.flake import resolve_flake, workload_names

if TYPE_CHECKING:
    from flakefleet.config.parsed import Parsed


class WorkloadConfig(Model):
    """One entry of `flakefleet:workloads`."""

    name: DnsLabel = Field(description="A workload of the flake: `nixos/workloads/<name>.nix`. Required.")
    pools: Annotated[list[DnsLabel], Field(min_length=1)] = Field(
        description="Pools whose nodes preload its image and run it (at least one). Required."
    )
    replicas: Annotated[int, Field(ge=0, le=1000)] = Field(1, description="Pods to run, 0-1000. Default 1.")


def check(stack: Parsed) -> list[str]:
    """Workloads the flake does not have, pools that do not exist, pools without hosts, a workload
    listed twice."""
    p = f"{NAMESPACE}:workloads"
    pools = {pool.name: pool for _, pool in stack.valid_pools}
    problems, seen = [], {}
    flake = resolve_flake(stack.delivery.flake if stack.delivery else None)
    offered = workload_names(flake) if stack.known("delivery.flake") else None
    for i, workload in stack.indexed("workloads", [w for w in stack.workloads if w is not None]):
        if offered is not None and workload.name not in offered:
            problems.append(f"{p}[{i}].name: the flake has no workload {workload.name!r}{did_you_mean(workload.name, offered)} "
                            f"({flake.name}/workloads/ has: {', '.join(offered) or 'none'})")
        if workload.name in seen:
            problems.append(f"{p}[{i}].name: workload {workload.name!r} is listed twice (also workloads[{seen[workload.name]}])")
        seen.setdefault(workload.name, i)
        for j, name in enumerate(workload.pools):
            if name not in pools:
                if stack.pools_complete:
                    problems.append(f"{p}[{i}].pools[{j}]: no pool {name!r} in this stack{did_you_mean(name, pools)}")
            elif pools[name].capacity == 0 and stack.pools_complete:
                problems.append(f"{p}[{i}].pools[{j}]: pool {name!r} has no hosts to run {workload.name}")
    return problems
