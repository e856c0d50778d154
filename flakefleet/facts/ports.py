"""The k3s port matrix, read from `nixos/ports.json` (the same file the NixOS firewall is built from)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PORTS_FILE = Path(__file__).resolve().parents[2] / "nixos" / "ports.json"
ROLES = ("control-plane", "worker")
CIDR_SOURCES = ("admin", "api")


@dataclass(frozen=True)
class PortRule:
    """One allowed flow: `protocol` ports `from_port`..`to_port` on hosts of `targets`, from `sources`."""

    name: str
    protocol: str
    from_port: int
    to_port: int
    targets: tuple[str, ...]
    sources: tuple[str, ...]
    why: str
    when: tuple[str, ...] = ()
    """Cluster features the rule needs, all of them (see `cluster_features`); empty: always."""

    def applies(self, features: frozenset[str]) -> bool:
        return set(self.when) <= features


@cache
def port_rules() -> tuple[PortRule, ...]:
    """All rules of the port table, in file order."""
    raw = json.loads(PORTS_FILE.read_text())
    return tuple(
        PortRule(
            name=r["name"],
            protocol=r["protocol"],
            from_port=r["from_port"],
            to_port=r["to_port"],
            targets=tuple(r["targets"]),
            sources=tuple(r["sources"]),
            why=r["why"],
            when=tuple(r.get("when", ())),
        )
        for r in raw["rules"]
    )


# What a stack without a cluster key (and the old table) means: k3s' own flannel.
DEFAULT_FEATURES = frozenset({"flannel"})


def cluster_features(cni: str, tunnel: str = "vxlan", hubble: bool = False) -> frozenset[str]:
    """The features port rules are conditioned on: the CNI, and for Cilium its tunnel and Hubble.
    nixos/lib/default.nix:clusterFeatures computes the same from the pool spec."""
    if cni != "cilium":
        return frozenset({cni})
    return frozenset({"cilium", tunnel} | ({"hubble"} if hubble else set()))


def listening_ports(role: str, protocol: str, features: frozenset[str] = DEFAULT_FEATURES) -> list[tuple[int, int]]:
    """(from, to) port ranges a host of `role` must open in its firewall for `protocol`."""
    return [(r.from_port, r.to_port) for r in port_rules()
            if role in r.targets and r.protocol == protocol and r.applies(features)]


@dataclass(frozen=True)
class GroupRule:
    """One security-group rule: on `group`, `direction` traffic to/from a peer group or a CIDR."""

    key: str  # unique, stable: used for the Pulumi resource name
    group: str  # "control-plane" | "worker" | "lb"
    direction: str  # "ingress" | "egress"
    protocol: str  # "tcp" | "udp" | "-1" (all)
    from_port: int | None
    to_port: int | None
    peer_group: str | None = None
    cidr: str | None = None
    description: str = ""


def security_group_rules(
    admin_cidrs: list[str], api_cidrs: list[str], with_lb: bool, features: frozenset[str] = DEFAULT_FEATURES
) -> list[GroupRule]:
    """Every security-group rule of the fleet, derived from the port table.

    Nodes get the table's ingress rules and open egress (package fetches, S3, NAT). The API
    load balancer, when there is one, accepts what the table lets reach control planes through
    it and may only talk to control planes on those ports.
    """
    cidrs = {"admin": admin_cidrs, "api": api_cidrs}
    rules: list[GroupRule] = []

    def peers(rule: PortRule, sources: tuple[str, ...]):
        for source in sources:
            if source in ROLES or source == "lb":
                yield source, None, source
            else:
                for k, cidr in enumerate(cidrs[source]):
                    yield None, cidr, f"{source}{k}"

    for rule in (r for r in port_rules() if r.applies(features)):
        sources = tuple(s for s in rule.sources if s != "lb" or with_lb)
        for target in rule.targets:
            for peer, cidr, tag in peers(rule, sources):
                rules.append(
                    GroupRule(f"{target}-{rule.name}-from-{tag}", target, "ingress", rule.protocol,
                              rule.from_port, rule.to_port, peer, cidr, f"{rule.name}: {rule.why}")
                )
        if with_lb and "lb" in rule.sources:
            for peer, cidr, tag in peers(rule, tuple(s for s in rule.sources if s != "lb")):
                rules.append(
                    GroupRule(f"lb-{rule.name}-from-{tag}", "lb", "ingress", rule.protocol,
                              rule.from_port, rule.to_port, peer, cidr, f"{rule.name} through the load balancer")
                )
            for target in rule.targets:
                rules.append(
                    GroupRule(f"lb-{rule.name}-to-{target}", "lb", "egress", rule.protocol,
                              rule.from_port, rule.to_port, target, None, f"{rule.name} to the {target} targets")
                )
    for role in ROLES:
        rules.append(GroupRule(f"{role}-egress-all", role, "egress", "-1", None, None, None, "0.0.0.0/0",
                               "nodes reach NAT, S3 and the binary cache"))
    return rules
