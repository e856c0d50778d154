"""A bootstrapped host's network once NixOS runs: the systemd-networkd file the install writes.

NixOS with `networking.useNetworkd` (nixos/mixins/install.nix) runs systemd-networkd and, while
`networking.useDHCP` stays on, adds `99-ethernet-default-dhcp.network` (DHCP on every physical
Ethernet interface; nixpkgs nixos/modules/tasks/network-interfaces-systemd.nix). networkd applies
to each interface the first file, in lexical order, whose [Match] fits it (systemd.network(5)),
so a host's own `10-flakefleet-uplink.network`, matched by MAC, wins on its uplink. NixOS links
its own units into /etc/systemd/network one file at a time (networkd.nix: `environment.etc`), so
the directory is a real one and a file the install places there outlives every switch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from ipaddress import ip_address, ip_interface
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flakefleet.config.metal import HostNetwork

UNIT_PATH = "etc/systemd/network/10-flakefleet-uplink.network"  # under the new root


@dataclass(frozen=True)
class NetworkPlan:
    """mode: dhcp (explicit: `dhcp`; the default: `default`) or static; the rest as the stack says."""

    mode: str  # "default" | "dhcp" | "static"
    mac: str | None = None
    addresses: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()

    @classmethod
    def of(cls, net: HostNetwork | None) -> NetworkPlan:
        if net is None:
            return cls("default")
        return cls("static" if net.static else (net.mode or "default"), net.mac,
                   tuple(map(str, net.addresses)), tuple(map(str, net.gateways)), tuple(map(str, net.dns)))

    @classmethod
    def from_json(cls, value: dict | None) -> NetworkPlan:
        if not value:
            return cls("default")
        return cls(value["mode"], value.get("mac"), *(tuple(value.get(k) or ()) for k in ("addresses", "gateways", "dns")))

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def on_link(self, gateway: str) -> bool:
        """An IPv4 gateway outside every address's network (a /32 behind its provider's router)."""
        gw = ip_address(gateway)
        return gw.version == 4 and not any(gw in ip_interface(a).network for a in self.addresses
                                           if ip_interface(a).version == 4)

    def unit(self) -> str | None:
        """The `.network` file, or None where nixpkgs' DHCP default does the job."""
        if self.mode != "static" and self.mac is None and not self.dns:
            return None
        match = f"MACAddress={self.mac}" if self.mac else "Type=ether\nKind=!*"
        lines = ["# Written by flakefleet's install from the stack (pools[].hosts[].network).",
                 "[Match]", match, "", "[Network]"]
        if self.mode == "static":
            # No router advertisement may add a second default route beside the stack's.
            lines += ["DHCP=no", "IPv6AcceptRA=no", *(f"Address={a}" for a in self.addresses)]
        else:
            lines += ["DHCP=yes"]
        lines += [f"DNS={d}" for d in self.dns]
        for gw in self.gateways if self.mode == "static" else ():
            lines += ["", "[Route]", f"Gateway={gw}"] + (["GatewayOnLink=yes"] if self.on_link(gw) else [])
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """One line for the preview: what the installed system's network will be."""
        if self.mode != "static":
            where = f"on {self.mac}" if self.mac else "on every Ethernet interface"
            dns = f", DNS {' '.join(self.dns)}" if self.dns else ""
            return f"DHCP {where}{dns} (systemd-networkd)"
        routes = [f"via {gw}" + (" (on-link)" if self.on_link(gw) else "") for gw in self.gateways]
        parts = [" ".join(self.addresses), *routes] + ([f"DNS {' '.join(self.dns)}"] if self.dns else [])
        return f"static {', '.join(parts)} on {self.mac} (systemd-networkd)"
