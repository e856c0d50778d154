"""What a bring-your-own host is beyond its address: how it is addressed once NixOS runs
(`network`, per pool and per host) and which NVIDIA driver its GPUs take (`gpu_*`).

The installed system's network is systemd-networkd's (NixOS `networking.useNetworkd`): a host
with `network` gets one `.network` file matched by its interface's MAC (interface names differ
between the rescue Linux and NixOS), written by the install (flakefleet/plan/network.py). A host
without one takes DHCP on every Ethernet interface (nixpkgs' `99-ethernet-default-dhcp`).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from flakefleet.config.base import Model

if TYPE_CHECKING:
    from flakefleet.config.pools import MetalHost, PoolConfig

MAC = r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"


class HostNetwork(Model):
    """How a bootstrapped host is addressed once NixOS runs: DHCP, or static addresses."""

    mode: Literal["dhcp", "static"] | None = Field(
        None, description="`dhcp` or `static`. Default: `static` when `addresses` are given, else `dhcp` (and an "
        "install then refuses a host whose running Linux is addressed statically: say `dhcp` to mean it).")
    mac: Annotated[str, Field(pattern=MAC)] | None = Field(
        None, description="The interface, by its MAC address (lower case, `0c:c4:7a:12:34:56`): names change "
        "between the rescue Linux and NixOS. Required for `static`. Default: DHCP on every Ethernet interface.")
    addresses: list[IPv4Interface | IPv6Interface] = Field(
        default_factory=list, description="`static`: the addresses with their prefix (`203.0.113.10/32`, "
        "`2001:db8:1::2/64`); one of them is the host's `address`. Default: none.")
    gateways: list[IPv4Address | IPv6Address] = Field(
        default_factory=list, description="`static`: the default gateway of each family, at most one each. An IPv4 "
        "gateway outside the addresses' networks is on-link (a /32 with its provider's gateway); an IPv6 one is "
        "link-local (`fe80::1`) or inside an address's network. Default: none.")
    dns: list[IPv4Address | IPv6Address] = Field(
        default_factory=list, description="DNS servers (systemd-resolved). Default: DHCP's, or none for `static`.")

    @property
    def static(self) -> bool:
        return self.mode == "static" or (self.mode is None and bool(self.addresses))


def effective_network(pool: PoolConfig, host: MetalHost) -> HostNetwork | None:
    """The pool's `network` with the host's fields over it (None: neither names one)."""
    if pool.network is None and host.network is None:
        return None
    base = pool.network.model_dump(exclude_unset=True) if pool.network else {}
    mine = host.network.model_dump(exclude_unset=True) if host.network else {}
    return HostNetwork(**{**base, **mine})


def network_problems(at: str, pool: PoolConfig, host: MetalHost) -> list[str]:
    """One line per problem of the host's network, at `at` (its key path)."""
    net = effective_network(pool, host)
    if net is None:
        return []
    where = f"{at}.network"
    if pool.bootstrap is None:
        return [f"{where}: only for a pool with bootstrap: nixos-anywhere (the install writes it; a host that "
                "runs NixOS already keeps its own network configuration)"]
    if not net.static:
        return [f"{where}.{k}: only with static addressing (mode: static)" for k in ("addresses", "gateways")
                if getattr(net, k)]
    problems = []
    if net.mac is None:
        problems.append(f"{where}.mac: required for static addressing; interface names change between the running "
                        "Linux and NixOS, the MAC does not (`flakefleet facts` lists the host's)")
    if not net.addresses:
        problems.append(f"{where}.addresses: required for static addressing, with the host's address "
                        f"({host.address}/NN)")
    elif host.address not in [a.ip for a in net.addresses]:
        problems.append(f"{where}.addresses: none is the host's address {host.address}, which delivery connects to")
    for k, gw in enumerate(net.gateways):
        if not any(a.version == gw.version for a in net.addresses):
            problems.append(f"{where}.gateways[{k}]: {gw} is IPv{gw.version}, and the host has no IPv{gw.version} "
                            "address")
        elif gw.version == 6 and not gw.is_link_local and not any(gw in a.network for a in net.addresses):
            problems.append(f"{where}.gateways[{k}]: {gw} is neither link-local nor in an address's network")
    for version in (4, 6):
        if sum(1 for gw in net.gateways if gw.version == version) > 1:
            problems.append(f"{where}.gateways: more than one IPv{version} gateway; a host has one default route "
                            "per family")
    return problems


def unique_macs(at: str, hosts: list[tuple[int, MetalHost]], pool: PoolConfig) -> list[str]:
    """Two hosts of one pool with one MAC: a copy-paste slip that would address the wrong interface."""
    seen: dict[str, int] = {}
    problems = []
    for j, host in hosts:
        net = effective_network(pool, host)
        if net is None or net.mac is None or host.network is None or "mac" not in host.network.model_fields_set:
            continue
        if net.mac in seen:
            problems.append(f"{at}.hosts[{j}].network.mac: {net.mac} is also hosts[{seen[net.mac]}]'s")
        seen.setdefault(net.mac, j)
    return problems


def gpu_problems(at: str, pool: PoolConfig) -> list[str]:
    """`gpu_open_modules` / `gpu_nvswitch`: bring-your-own GPUs, said by the pool."""
    problems = []
    for field in ("gpu_open_modules", "gpu_nvswitch"):
        if getattr(pool, field) is None:
            continue
        if pool.provider != "metal":
            problems.append(f"{at}.{field}: only for provider metal; an ec2 pool's follows from its instance type")
        elif pool.gpu is None:
            problems.append(f"{at}.{field}: only with gpu: nvidia")
    if pool.gpu_nvswitch and pool.arch != "x86_64":
        problems.append(f"{at}.gpu_nvswitch: NVSwitch needs NVIDIA's data-center driver with the fabric manager; "
                        "nixpkgs builds it for x86_64 only")
    return problems


NETWORK_FIELD = Field(
    None, description="`metal` pools with `bootstrap` only: how the installed NixOS addresses the host "
    "(`{mode, mac, addresses, gateways, dns}`); a pool's `network` is its hosts' defaults, a host's own fields "
    "win. Default: DHCP on every Ethernet interface.")

__all__ = ["HostNetwork", "effective_network", "network_problems", "unique_macs", "gpu_problems", "NETWORK_FIELD"]
