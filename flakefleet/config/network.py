"""`flakefleet:network`: the VPC, its zones, and who may reach the nodes."""

from __future__ import annotations

import re
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from flakefleet.facts.aws import region_zones
from flakefleet.config.base import NAMESPACE, Model

if TYPE_CHECKING:
    from flakefleet.config.parsed import Parsed


class NetworkConfig(Model):
    """`flakefleet:network` — the VPC and who may reach it. Used only when a pool runs on EC2."""

    vpc_cidr: IPv4Network = Field(IPv4Network("10.0.0.0/16"), description="VPC range, /16 to /22. Default `10.0.0.0/16`.")
    az_count: Annotated[int, Field(ge=1, le=6)] | None = Field(
        None, description="Availability zones to spread hosts over, 1-6. Default: 1, or the length of `availability_zones`."
    )
    availability_zones: list[str] | None = Field(
        None, description="Explicit zone names, for regions or accounts the built-in zone table does not know. Default: none."
    )
    admin_cidrs: list[IPv4Network] = Field(
        default_factory=list, description="CIDRs allowed to SSH to the nodes (delivery runs from here). Default: none."
    )
    api_cidrs: list[IPv4Network] = Field(
        default_factory=list, description="CIDRs allowed to reach the Kubernetes API (6443). Default: none (nodes only)."
    )
    allow_world_access: bool = Field(
        False, description="Explicit opt-in to let `admin_cidrs` or `api_cidrs` contain 0.0.0.0/0. Default `false`."
    )
    nat: Literal["none", "single", "per-az"] = Field(
        "single",
        description="NAT gateways for the private node subnets: `single` (cheapest), `per-az` (zone-independent "
        "egress) or `none` (no route to the internet; S3 still reachable through the gateway endpoint). With `none` the "
        "hosts substitute only from the stack's cache, and what comes from the internet (store paths only "
        "cache.nixos.org holds, the Cilium chart, container images k3s pulls) does not arrive: not an air-gapped "
        "mode. Default `single`.",
    )
    flow_logs: bool = Field(True, description="VPC flow logs to an S3 bucket (CIS AWS 3.7). Default `true`.")


def zone_names(network: NetworkConfig, region: str | None) -> tuple[list[str], int]:
    """The zones hosts can be spread over (named, else the region's from the zone table) and how
    many of them the stack uses (`az_count`, else all that are named, else one)."""
    names = network.availability_zones or region_zones(region or "") or []
    return names, network.az_count or (len(network.availability_zones or []) or 1)


def _zones(network: NetworkConfig, region: str) -> list[str]:
    p = f"{NAMESPACE}:"
    problems = []
    zones = network.availability_zones
    if zones is not None:
        for k, zone in enumerate(zones):
            if not re.fullmatch(re.escape(region) + r"[a-z]", zone):
                problems.append(f"{p}network.availability_zones[{k}]: {zone!r} is not a zone of {region}")
        if len(set(zones)) != len(zones):
            problems.append(f"{p}network.availability_zones: zones repeat")
        if network.az_count is not None and network.az_count != len(zones):
            problems.append(
                f"{p}network.az_count: {network.az_count} but availability_zones names {len(zones)}; give one or the other"
            )
        return problems
    known = region_zones(region)
    if known is None:
        problems.append(f"aws:region: {region} is not in flakefleet's zone table; name its zones in network.availability_zones")
    elif (network.az_count or 1) > len(known):
        problems.append(
            f"{p}network.az_count: {network.az_count} zones requested but {region} has {len(known)} ({', '.join(known)})"
        )
    return problems


def check(stack: Parsed) -> list[str]:
    """The VPC's size, region and zones (when EC2 is used), and no world access unless opted in."""
    p = f"{NAMESPACE}:"
    network = stack.network
    problems: list[str] = []
    if stack.uses_ec2:
        if not 16 <= network.vpc_cidr.prefixlen <= 22:
            problems.append(f"{p}network.vpc_cidr: prefix /{network.vpc_cidr.prefixlen} out of range; use /16 to /22")
        if stack.region is None:
            problems.append("aws:region: required when a pool runs on EC2")
        elif stack.region_known and stack.known("network.availability_zones") and stack.known("network.az_count"):
            problems += _zones(network, stack.region)
    for key in ("admin_cidrs", "api_cidrs"):
        for k, net in enumerate(getattr(network, key)):
            if net.prefixlen == 0 and not network.allow_world_access:
                problems.append(
                    f"{p}network.{key}[{k}]: {net} opens {'SSH' if key == 'admin_cidrs' else 'the Kubernetes API'} to "
                    "the whole internet; set network.allow_world_access: true to accept that"
                )
    return problems
