"""What a machine is before it is installed, beyond its disks: how it boots, its network as its
Linux runs it, and its GPUs; and the refusals they ground. Pure (the query runs over the pinned
install connection, flakefleet/bootstrap/runner.py and `flakefleet facts`).

Read with the running Linux's own tools, before anything is changed: `/sys/firmware/efi` (the
kernel makes it when the firmware booted it by UEFI), `ip -j address` and `ip -j route`
(iproute2's JSON: each link's MAC, state and addresses, an address's `dynamic` flag when it has
a lease's lifetime, i.e. DHCP or SLAAC), and the PCI devices' vendor/device/class from sysfs.
nixos-anywhere's own `--generate-hardware-config nixos-facter` runs inside the kexec installer
(src/nixos-anywhere.sh, generateHardwareConfig after runKexec), too late to refuse before the
machine is touched, and its report feeds one host's system (`hardware.facter.reportPath`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import ip_address, ip_interface

from flakefleet.plan.network import NetworkPlan

HARDWARE_QUERY = (
    "echo '--hardware'; if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi; "
    "echo '--addresses'; ip -j address show 2>/dev/null || echo null; "
    "echo '--routes'; ip -j -4 route show default 2>/dev/null || echo null; "
    "echo '--routes'; ip -j -6 route show default 2>/dev/null || echo null; "
    # Where this SSH session arrived (sshd's SSH_CONNECTION: client, port, server address, port):
    # the machine's own address for its uplink, also behind NAT or a port forward.
    "echo '--connection'; echo \"$SSH_CONNECTION\"; "
    "echo '--pci'; for d in /sys/bus/pci/devices/*; do [ -r \"$d/class\" ] && "
    "printf '%s %s %s %s\\n' \"${d##*/}\" \"$(cat \"$d/vendor\")\" \"$(cat \"$d/device\")\" \"$(cat \"$d/class\")\"; done"
)
FOREVER = 4294967295  # iproute2's valid_life_time of an address without a lease
NVIDIA = "0x10de"


@dataclass(frozen=True)
class Address:
    cidr: str  # 203.0.113.10/32
    dynamic: bool  # leased (DHCP, SLAAC): it has a finite lifetime


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str
    state: str  # UP, DOWN, UNKNOWN
    loopback: bool
    addresses: tuple[Address, ...] = ()

    def global_addresses(self) -> list[Address]:
        return [a for a in self.addresses if not ip_interface(a.cidr).is_link_local]


@dataclass(frozen=True)
class Route:
    gateway: str
    dev: str


@dataclass(frozen=True)
class Pci:
    slot: str
    vendor: str
    device: str
    cls: str  # 0x030200

    @property
    def nvidia_gpu(self) -> bool:
        return self.vendor == NVIDIA and self.cls.startswith("0x03")

    @property
    def nvswitch(self) -> bool:
        # NVSwitch chips show as NVIDIA "bridge, other" devices (class 0x0680) on HGX boards.
        return self.vendor == NVIDIA and self.cls.startswith("0x0680")


@dataclass(frozen=True)
class Hardware:
    firmware: str = "unknown"  # uefi | bios
    nics: tuple[Nic, ...] = ()
    routes: tuple[Route, ...] = ()
    pci: tuple[Pci, ...] = ()
    readable: bool = False  # ip -j answered (iproute2 4.13+)
    arrived: str = ""  # the machine's address the SSH session came in on (SSH_CONNECTION)

    def nic_of(self, mac: str) -> Nic | None:
        return next((n for n in self.nics if n.mac == mac), None)

    def nic_holding(self, address: str) -> Nic | None:
        """The interface with that address; on loopback, its whole network (Linux answers all of
        127.0.0.0/8 on `lo`)."""
        ip = ip_address(address)
        return next((n for n in self.nics for a in n.addresses if ip_interface(a.cidr).ip == ip
                     or (n.loopback and ip in ip_interface(a.cidr).network)), None)

    def to_json(self) -> dict:
        return {"firmware": self.firmware,
                "nics": [{"name": n.name, "mac": n.mac, "state": n.state,
                          "addresses": [{"cidr": a.cidr, "dynamic": a.dynamic} for a in n.addresses]}
                         for n in self.nics if not n.loopback],
                "routes": [{"gateway": r.gateway, "dev": r.dev} for r in self.routes],
                "gpus": [{"slot": p.slot, "vendor": p.vendor, "device": p.device, "nvswitch": p.nvswitch}
                         for p in self.pci if p.nvidia_gpu or p.nvswitch]}


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("--") and line[2:].isalpha():
            current = line[2:]
            out.setdefault(current, [])
            out[current].append("")
        elif current is not None:
            out[current][-1] += line + "\n"
    return out


def _json(text: str) -> list:
    try:
        value = json.loads(text or "null")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def parse_hardware(text: str) -> Hardware:
    """HARDWARE_QUERY's output (what follows `--hardware`); what is missing stays unknown."""
    parts = _sections("--hardware\n" + text)
    firmware = (parts.get("hardware", [""])[0].strip() or "unknown")
    links = _json(parts.get("addresses", [""])[0])
    nics = tuple(
        Nic(str(link.get("ifname", "")), str(link.get("address", "")).lower(), str(link.get("operstate", "")),
            "LOOPBACK" in (link.get("flags") or []),
            tuple(Address(f"{a['local']}/{a['prefixlen']}",
                          bool(a.get("dynamic")) or int(a.get("valid_life_time", FOREVER)) < FOREVER)
                  for a in link.get("addr_info") or [] if "local" in a and "prefixlen" in a))
        for link in links if isinstance(link, dict))
    routes = tuple(Route(str(r["gateway"]), str(r.get("dev", ""))) for block in parts.get("routes", [])
                   for r in _json(block) if isinstance(r, dict) and r.get("gateway"))
    pci = tuple(Pci(*line.split()[:4]) for line in parts.get("pci", [""])[0].splitlines() if len(line.split()) >= 4)
    connection = parts.get("connection", [""])[0].split()
    arrived = connection[2] if len(connection) == 4 else ""
    return Hardware(firmware if firmware in ("uefi", "bios") else "unknown", nics, routes, pci, readable=bool(links),
                    arrived=arrived)


def firmware_refusal(hw: Hardware, layout: str, needs: str) -> str | None:
    """A layout written for the other firmware would install a system the machine cannot boot."""
    if hw.firmware == "unknown" or hw.firmware == needs:
        return None
    other = "bios-single-disk" if hw.firmware == "bios" else "single-disk"
    return (f"the machine booted by {hw.firmware.upper()}, and layout {layout} is for {needs.upper()} machines: it "
            f"would not boot. Use disk_layout: {other} (or a layout of yours for {hw.firmware.upper()})")


def _runs(nic: Nic, hw: Hardware) -> str:
    addrs = ", ".join(a.cidr + (" (leased)" if a.dynamic else "") for a in nic.global_addresses()) or "no address"
    via = ", ".join(f"default via {r.gateway}" for r in hw.routes if r.dev == nic.name)
    return f"{nic.name} ({nic.mac}): {addrs}" + (f"; {via}" if via else "")


def network_refusal(hw: Hardware, net: NetworkPlan, address: str) -> str | None:
    """Why the installed system would not answer where this one does (None: it would, as far as
    the running Linux shows). The uplink is the interface the SSH session arrived on (behind NAT
    or a port forward too), else the one holding `address`, else the default route's; a machine
    reached on its own loopback (the test machines) has none to check."""
    if net.mode == "dhcp":
        return None
    if not hw.readable:
        return ("its addresses could not be read (`ip -j address` failed: iproute2 4.13+ is needed), so the "
                "installed network cannot be checked against them")
    if net.mode == "default":
        holder = hw.nic_holding(hw.arrived or address)
        if holder is not None and holder.loopback:
            return None
        uplink = holder or next((n for r in hw.routes for n in hw.nics if n.name == r.dev), None)
        if uplink is None or not uplink.global_addresses() or any(a.dynamic for a in uplink.global_addresses()):
            return None
        return (f"its Linux addresses it statically ({_runs(uplink, hw)}), and the stack gives it no network: the "
                "installed NixOS would ask DHCP and might never answer again. Write them in hosts[].network "
                "(addresses, gateways, mac), or network.mode: dhcp if its network does serve DHCP")
    nic = hw.nic_of(net.mac or "")
    if nic is None:
        macs = ", ".join(f"{n.name} {n.mac}" for n in hw.nics if not n.loopback) or "none"
        return f"it has no interface with MAC {net.mac} (network.mac); it has: {macs}"
    have = {a.cidr for a in nic.addresses}
    missing = [a for a in net.addresses if a not in have]
    if missing:
        return (f"network.addresses {', '.join(missing)} are not what it runs on {nic.name} now ({_runs(nic, hw)}): "
                "the installed system would not answer there")
    for gw in net.gateways:
        family = ip_address(gw).version
        running = [r.gateway for r in hw.routes if r.dev == nic.name and ip_address(r.gateway).version == family]
        if running and gw not in running:
            return f"network.gateways {gw} is not its default route now ({_runs(nic, hw)})"
    return None


def gpu_refusal(hw: Hardware, gpu: dict | None) -> str | None:
    """A GPU pool's host without NVIDIA GPUs, or NVSwitch where the pool says none (or the reverse):
    the driver the pool's system carries would not fit (the fabric manager fails without NVSwitch,
    and GPUs on NVSwitch do not work without it)."""
    if gpu is None or not hw.pci:
        return None
    gpus = [p for p in hw.pci if p.nvidia_gpu]
    if not gpus:
        return "its pool has gpu: nvidia, but the machine shows no NVIDIA GPU on its PCI bus"
    switches = any(p.nvswitch for p in hw.pci)
    if switches != bool(gpu.get("nvswitch")):
        return (f"its GPUs {'hang off' if switches else 'have no'} NVSwitch, but its pool says gpu_nvswitch: "
                f"{str(bool(gpu.get('nvswitch'))).lower()}; set gpu_nvswitch: {str(switches).lower()}")
    return None


def describe(hw: Hardware, disks: list[str]) -> list[str]:
    """`flakefleet facts`: the machine in lines (disks as the caller lists them)."""
    lines = [f"firmware: {hw.firmware.upper() if hw.firmware != 'unknown' else 'unknown'}", "disks:",
             *(f"  {d}" for d in disks or ["none"]), "network:"]
    lines += [f"  {_runs(n, hw)}; link {n.state.lower()}" for n in hw.nics if not n.loopback] or ["  unknown"]
    gpus = [p for p in hw.pci if p.nvidia_gpu or p.nvswitch]
    lines += ["gpus:"] + ([f"  {p.slot} NVIDIA {p.device}" + (" (NVSwitch)" if p.nvswitch else "") for p in gpus]
                         or ["  none"])
    return lines
