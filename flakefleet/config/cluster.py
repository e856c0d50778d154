"""`flakefleet:cluster`: the Kubernetes cluster as a whole, its networks and its API address."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from flakefleet.facts import ports
from flakefleet.config.base import DNS_LABEL, NAMESPACE, Model

if TYPE_CHECKING:
    from flakefleet.config.parsed import Parsed

# k3s gives every node one /24 of the pod network (kube-controller-manager node-cidr-mask-size).
NODE_CIDR_PREFIX = 24


class CiliumConfig(Model):
    """`cluster.cilium`: the Cilium the cluster installs itself (a HelmChart k3s deploys)."""

    version: Annotated[str, Field(pattern=r"^1\.\d{2}\.\d{1,2}$")] = Field(
        "1.18.4", description="Cilium's Helm chart version, pinned. Default `1.18.4`."
    )
    tunnel: Literal["vxlan", "geneve"] = Field(
        "vxlan", description="Overlay between nodes: `vxlan` (UDP 8472) or `geneve` (UDP 6081). Default `vxlan`."
    )
    hubble: bool = Field(False, description="Hubble flow visibility (opens TCP 4244 between nodes). Default `false`.")


class ClusterConfig(Model):
    """`flakefleet:cluster` — the Kubernetes cluster as a whole."""

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=24)] = Field(
        description="Cluster name: prefix of AWS resource names and the S3 snapshot folder. "
        "Lowercase DNS label, at most 24 characters. Required."
    )
    pod_cidr: IPv4Network = Field(
        IPv4Network("10.42.0.0/16"),
        description="Pod network (k3s `--cluster-cidr`), one /24 per node: it must hold the fleet. Default `10.42.0.0/16`.",
    )
    service_cidr: IPv4Network = Field(
        IPv4Network("10.43.0.0/16"), description="Service network (k3s `--service-cidr`). Default `10.43.0.0/16`."
    )
    k3s_channel: Annotated[str, Field(pattern=r"^(stable|1\.\d{2})$")] = Field(
        "stable",
        description="k3s release line from the pinned nixpkgs: `stable` is nixpkgs' `k3s`, `1.NN` is `k3s_1_NN`. "
        "Default `stable`.",
    )
    nixos_release: Annotated[str, Field(pattern=r"^\d{2}\.\d{2}$")] | None = Field(
        None,
        description="NixOS release of the boot AMI (`nixos/<release>*` by owner 427812963091); delivery then "
        "switches each host to the flake's closure. Pin an older one only while the flake's release has no AMI "
        "yet (the preview warns: hosts then boot one release and switch to another). Default: the release "
        "`nixos/flake.lock` pins (`nixos-26.05` -> `26.05`).",
    )
    cni: Literal["flannel", "cilium"] = Field(
        "flannel",
        description="The pod network: `flannel` (k3s' own, with its network policy controller) or `cilium` "
        "(eBPF, network policy; installed by the cluster from a pinned Helm chart). Chosen when the cluster is "
        "built: changing it on a running cluster is refused (it needs a rebuild). Default `flannel`.",
    )
    cilium: CiliumConfig = Field(default_factory=CiliumConfig, description="Cilium settings (`cni: cilium` only). Default: the defaults below.")
    @property
    def features(self) -> frozenset[str]:
        """The features the port table's rules are conditioned on (flakefleet/facts/ports.py)."""
        return ports.cluster_features(self.cni, self.cilium.tunnel, self.cilium.hubble)

    api_address: IPv4Address | None = Field(
        None,
        description="Bring-your-own fleets: a virtual address in front of the control planes. Default: none "
        "(the first control plane's address; on AWS the API load balancer).",
    )


def _ports_problems(cluster: ClusterConfig) -> list[str]:
    """A CNI whose ports the table (nixos/ports.json) does not have: the firewall and the security
    groups, both built from it, would silently block the pod network."""
    named = {f for rule in ports.port_rules() for f in rule.when}
    missing = sorted(cluster.features - named)
    if not missing:
        return []
    return [f"{NAMESPACE}:cluster.cni: {cluster.cni} needs port rules for {', '.join(missing)} in nixos/ports.json "
            "(the firewall and the security groups are built from it, so neither would open them)"]


def check(stack: Parsed) -> list[str]:
    """CIDRs that overlap, hosts inside them, a pod network too small for the fleet, an API address on AWS."""
    cluster = stack.cluster
    if cluster is None:
        return []
    p = f"{NAMESPACE}:"
    problems: list[str] = []
    # Only ranges as written: a dropped (invalid) one would be compared as its default.
    nets = [(key, net) for key, net in (("cluster.pod_cidr", cluster.pod_cidr), ("cluster.service_cidr", cluster.service_cidr))
            if stack.known(key)]
    if stack.uses_ec2 and stack.known("network.vpc_cidr"):
        nets.insert(0, ("network.vpc_cidr", stack.network.vpc_cidr))
    for a in range(len(nets)):
        for b in range(a + 1, len(nets)):
            if nets[a][1].overlaps(nets[b][1]):
                problems.append(f"{p}{nets[b][0]}: {nets[b][1]} overlaps {nets[a][0]} {nets[a][1]}")
    for i, pool in stack.valid_pools:
        for j, host in stack.indexed(f"pools[{i}].hosts", pool.hosts) if pool.provider == "metal" else []:
            for key, net in nets:
                if host.address in net:
                    problems.append(f"{p}pools[{i}].hosts[{j}].address: {host.address} lies inside {key} {net}")
    if stack.pools_complete and stack.known("cluster.pod_cidr"):
        nodes = sum(pool.capacity for _, pool in stack.valid_pools)
        room = 2 ** max(0, NODE_CIDR_PREFIX - cluster.pod_cidr.prefixlen)
        if cluster.pod_cidr.prefixlen > NODE_CIDR_PREFIX or nodes > room:
            problems.append(
                f"{p}cluster.pod_cidr: {cluster.pod_cidr} holds {room if cluster.pod_cidr.prefixlen <= NODE_CIDR_PREFIX else 0} "
                f"nodes at k3s' /24 per node, but the stack has {nodes} hosts; use a shorter prefix "
                f"(e.g. /{max(8, NODE_CIDR_PREFIX - max(nodes - 1, 1).bit_length())})"
            )
    if cluster.api_address is not None and stack.uses_ec2:
        problems.append(f"{p}cluster.api_address: only for bring-your-own fleets; on AWS the API load balancer is the address")
    if not stack.known("cluster.cni"):
        return problems  # its own line says what is wrong with it; what depends on it is unknown
    if cluster.cni != "cilium" and "cilium" in cluster.model_fields_set:
        problems.append(f"{p}cluster.cilium: only with cni: cilium (this cluster's CNI is {cluster.cni})")
    if stack.known("cluster.cilium"):
        problems += _ports_problems(cluster)
    return problems
