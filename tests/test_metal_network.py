"""Bare metal that survives its install (issue 39): the installed system's network, the machine's
facts before the install and the refusals they ground, BIOS machines, GPUs on your own hardware,
and the user's own NixOS per pool. Tier 1 (rules, units, refusals), tier 2 (the program under
mocks: plans and the preview), tier 3 (the module system: stand-in in CI, real lib in tier 5).
The units on a real systemd-networkd and kernel: tests/test_vm_boot.py."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flakefleet.bootstrap.command import parse_facts
from flakefleet.bootstrap.hardware import describe, firmware_refusal, gpu_refusal, network_refusal, parse_hardware
from flakefleet.config import parse_stack_config
from flakefleet.facts.flake import ROOT
from flakefleet.plan.inventory import plan_inventory
from flakefleet.plan.network import NetworkPlan
from flakefleet.plan.specs import system_specs
from tests.test_config_classes import found
from tests.test_install import FACTS_OUT, bootstrapped, byo, local_bootstrapped
from tests.test_nix_modules import MODULE_SYSTEMS, evaluate_pools

MAC = "0c:c4:7a:00:00:01"
STATIC = {"mac": MAC, "addresses": ["192.168.50.10/32", "2001:db8:1::2/64"], "gateways": ["192.168.50.1", "fe80::1"],
          "dns": ["192.168.50.53"]}


# ----------------------------------------------------------------------------- tier 1: the stack's rules

BAD = [
    ("static-without-mac", lambda: bootstrapped(byo("w-0", "192.168.50.10", network={
        "addresses": ["192.168.50.10/24"]})),
     ["flakefleet:pools[1].hosts[0].network.mac: required for static addressing; interface names change between the "
      "running Linux and NixOS, the MAC does not (`flakefleet facts` lists the host's)"]),
    ("address-not-among-them", lambda: bootstrapped(byo("w-0", "192.168.50.10", network={
        "mac": MAC, "addresses": ["192.168.50.11/24"]})),
     ["flakefleet:pools[1].hosts[0].network.addresses: none is the host's address 192.168.50.10, which delivery "
      "connects to"]),
    ("static-mode-without-addresses", lambda: bootstrapped(byo("w-0", "192.168.50.10", network={
        "mode": "static", "mac": MAC})),
     ["flakefleet:pools[1].hosts[0].network.addresses: required for static addressing, with the host's address "
      "(192.168.50.10/NN)"]),
    ("gateways-with-dhcp", lambda: bootstrapped(byo("w-0", "192.168.50.10", network={
        "mode": "dhcp", "gateways": ["192.168.50.1"]})),
     ["flakefleet:pools[1].hosts[0].network.gateways: only with static addressing (mode: static)"]),
    ("gateway-of-no-family", lambda: bootstrapped(byo("w-0", "192.168.50.10", network={
        "mac": MAC, "addresses": ["192.168.50.10/32"], "gateways": ["fe80::1", "192.168.50.1", "192.168.50.2"]})),
     ["flakefleet:pools[1].hosts[0].network.gateways[0]: fe80::1 is IPv6, and the host has no IPv6 address",
      "flakefleet:pools[1].hosts[0].network.gateways: more than one IPv4 gateway; a host has one default route per "
      "family"]),
    ("v6-gateway-off-link", lambda: bootstrapped(byo("w-0", "192.168.50.10", network={
        **STATIC, "gateways": ["2001:db8:2::1"]})),
     ["flakefleet:pools[1].hosts[0].network.gateways[0]: 2001:db8:2::1 is neither link-local nor in an address's "
      "network"]),
    ("bad-mac", lambda: bootstrapped(byo("w-0", "192.168.50.10", network={**STATIC, "mac": "0C-C4-7A-00-00-01"})),
     ["flakefleet:pools[1].hosts[0].network.mac: String should match pattern '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$'"]),
    ("network-without-bootstrap", lambda: {**bootstrapped(), "pools": [
        bootstrapped()["pools"][0] | {"network": {"mode": "dhcp"}}, bootstrapped(byo("w-0", "192.168.50.10"))["pools"][1]]},
     ["flakefleet:pools[0].hosts[0].network: only for a pool with bootstrap: nixos-anywhere (the install writes it; a "
      "host that runs NixOS already keeps its own network configuration)"]),
    ("one-mac-twice", lambda: bootstrapped(byo("w-0", "192.168.50.10", network=STATIC),
                                           byo("w-1", "192.168.50.11", network={
                                               **STATIC, "addresses": ["192.168.50.11/32", "2001:db8:1::3/64"]})),
     [f"flakefleet:pools[1].hosts[1].network.mac: {MAC} is also hosts[0]'s"]),
    ("bios-needs-a-system-per-host", lambda: bootstrapped(byo("w-0", "192.168.50.10"), disk_layout="bios-single-disk"),
     ["flakefleet:pools[1].per_host_closures: required with layout bios-single-disk boots by BIOS: GRUB is written "
      "to the host's disk, which its system names (one system per host)",
      "flakefleet:pools[1].hosts[0].install_disk: required with layout bios-single-disk boots by BIOS: GRUB is "
      "written to the host's disk, which its system names (`flakefleet facts` lists its disks)"]),
    ("gpu-fields-without-gpu", lambda: bootstrapped(byo("w-0", "192.168.50.10"), gpu_nvswitch=True,
                                                    gpu_open_modules=False),
     ["flakefleet:pools[1].gpu_open_modules: only with gpu: nvidia", "flakefleet:pools[1].gpu_nvswitch: only with "
      "gpu: nvidia"]),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_network_and_hardware_input_is_one_line_each(make, expected):
    assert found(make(), "eu-west-1") == expected


def test_a_pools_network_is_its_hosts_default_and_a_hosts_own_fields_win():
    cfg = bootstrapped(byo("w-0", "192.168.50.10", network={"mac": MAC, "addresses": ["192.168.50.10/24"]}),
                       byo("w-1", "192.168.50.11", network={"mac": "0c:c4:7a:00:00:02",
                                                            "addresses": ["192.168.50.11/24"], "dns": []}),
                       network={"gateways": ["192.168.50.1"], "dns": ["192.168.50.53"]})
    assert found(cfg) == []
    inv = plan_inventory(parse_stack_config({f"flakefleet:{k}": json.dumps(v) for k, v in cfg.items()}, None))
    nets = {h.name: h.install.network for h in inv.hosts if h.install}
    assert nets["w-0"] == NetworkPlan("static", MAC, ("192.168.50.10/24",), ("192.168.50.1",), ("192.168.50.53",))
    assert nets["w-1"].dns == () and nets["w-1"].gateways == ("192.168.50.1",)


# ----------------------------------------------------------------------------- tier 1: the networkd file

def test_a_rented_servers_static_addresses_are_one_file_matched_by_mac():
    """Hetzner-style: an IPv4 /32 with an on-link gateway, a routed IPv6 /64 via fe80::1."""
    plan = NetworkPlan("static", MAC, ("192.168.50.10/32", "2001:db8:1::2/64"), ("192.168.50.1", "fe80::1"),
                       ("192.168.50.53",))
    assert plan.unit() == (
        "# Written by flakefleet's install from the stack (pools[].hosts[].network).\n"
        "[Match]\nMACAddress=0c:c4:7a:00:00:01\n\n"
        "[Network]\nDHCP=no\nIPv6AcceptRA=no\nAddress=192.168.50.10/32\nAddress=2001:db8:1::2/64\n"
        "DNS=192.168.50.53\n\n"
        "[Route]\nGateway=192.168.50.1\nGatewayOnLink=yes\n\n"
        "[Route]\nGateway=fe80::1\n")
    assert plan.summary() == ("static 192.168.50.10/32 2001:db8:1::2/64, via 192.168.50.1 (on-link), via fe80::1, "
                              "DNS 192.168.50.53 on 0c:c4:7a:00:00:01 (systemd-networkd)")


@pytest.mark.parametrize(("plan", "unit"), [
    (NetworkPlan("default"), None),  # nixpkgs' 99-ethernet-default-dhcp does it
    (NetworkPlan("dhcp"), None),
    (NetworkPlan("dhcp", MAC), "[Match]\nMACAddress=0c:c4:7a:00:00:01\n\n[Network]\nDHCP=yes\n"),
    (NetworkPlan("dhcp", None, dns=("1.1.1.1",)), "[Match]\nType=ether\nKind=!*\n\n[Network]\nDHCP=yes\nDNS=1.1.1.1\n"),
    # A gateway inside the address's network needs no on-link flag.
    (NetworkPlan("static", MAC, ("10.0.0.5/24",), ("10.0.0.1",)),
     "[Match]\nMACAddress=0c:c4:7a:00:00:01\n\n[Network]\nDHCP=no\nIPv6AcceptRA=no\nAddress=10.0.0.5/24\n\n"
     "[Route]\nGateway=10.0.0.1\n"),
])
def test_dhcp_and_a_home_lab_take_nixpkgs_default_or_a_short_file(plan, unit):
    got = plan.unit()
    assert (got.split("\n", 1)[1] if got else None) == unit


octet = st.integers(1, 254)


@settings(max_examples=60, deadline=None)
@given(host=octet, prefix=st.integers(8, 32), gw=octet, v6=st.booleans())
def test_every_address_and_gateway_is_in_the_file_and_on_link_exactly_when_outside(host, prefix, gw, v6):
    from ipaddress import ip_interface

    address = f"10.20.30.{host}/{prefix}"
    gateway = f"10.20.{(30 + gw) % 256}.1"
    addresses = (address, "2001:db8::5/64") if v6 else (address,)
    plan = NetworkPlan.from_json(NetworkPlan("static", MAC, addresses, (gateway,)).to_json())
    unit = plan.unit()
    assert all(f"Address={a}\n" in unit for a in addresses)
    on_link = __import__("ipaddress").ip_address(gateway) not in ip_interface(address).network
    assert unit.endswith(f"[Route]\nGateway={gateway}\n" + ("GatewayOnLink=yes\n" if on_link else ""))


# ----------------------------------------------------------------------------- tier 1: the machine's facts

def ip_addr(*links: dict) -> str:
    lo = {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "operstate": "UNKNOWN", "address": "00:00:00:00:00:00",
          "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "valid_life_time": 4294967295}]}
    return json.dumps([lo, *links])


def link(name: str, mac: str, *addrs: tuple[str, int, bool]) -> dict:
    """iproute2's `ip -j address` entry; a leased address has a lifetime and the `dynamic` flag."""
    return {"ifname": name, "flags": ["BROADCAST", "UP"], "operstate": "UP", "address": mac.upper(),
            "addr_info": [{"family": "inet6" if ":" in a else "inet", "local": a, "prefixlen": p,
                           **({"dynamic": True, "valid_life_time": 3600} if dyn else {"valid_life_time": 4294967295})}
                          for a, p, dyn in addrs]}


def hardware(links: str, routes4: str = "[]", routes6: str = "[]", firmware: str = "uefi", pci: str = "",
             connection: str = "") -> str:
    return (f"{firmware}\n--addresses\n{links}\n--routes\n{routes4}\n--routes\n{routes6}\n--connection\n{connection}\n"
            f"--pci\n{pci}")


RESCUE_STATIC = hardware(ip_addr(link("eth0", MAC, ("192.168.50.10", 32, False), ("2001:db8:1::2", 64, False),
                                      ("fe80::ec4:7aff:fe00:1", 64, False))),
                         '[{"dst": "default", "gateway": "192.168.50.1", "dev": "eth0", "flags": ["onlink"]}]',
                         '[{"dst": "default", "gateway": "fe80::1", "dev": "eth0"}]')
HOME_DHCP = hardware(ip_addr(link("enp3s0", MAC, ("192.168.50.10", 24, True))),
                     '[{"dst": "default", "gateway": "192.168.50.1", "dev": "enp3s0", "protocol": "dhcp"}]',
                     firmware="bios")


@pytest.mark.parametrize(("running", "net", "why"), [
    (RESCUE_STATIC, NetworkPlan("static", MAC, ("192.168.50.10/32", "2001:db8:1::2/64"), ("192.168.50.1", "fe80::1")),
     None),
    (RESCUE_STATIC, NetworkPlan("default"),
     "its Linux addresses it statically (eth0 (0c:c4:7a:00:00:01): 192.168.50.10/32, 2001:db8:1::2/64; default via "
     "192.168.50.1, default via fe80::1), and the stack gives it no network: the installed NixOS would ask DHCP and "
     "might never answer again. Write them in hosts[].network (addresses, gateways, mac), or network.mode: dhcp if "
     "its network does serve DHCP"),
    (RESCUE_STATIC, NetworkPlan("dhcp"), None),  # said explicitly: the user knows its network serves DHCP
    (RESCUE_STATIC, NetworkPlan("static", MAC, ("192.168.50.10/24",)),
     "network.addresses 192.168.50.10/24 are not what it runs on eth0 now (eth0 (0c:c4:7a:00:00:01): "
     "192.168.50.10/32, 2001:db8:1::2/64; default via 192.168.50.1, default via fe80::1): the installed system would "
     "not answer there"),
    (RESCUE_STATIC, NetworkPlan("static", MAC, ("192.168.50.10/32",), ("192.168.50.254",)),
     "network.gateways 192.168.50.254 is not its default route now (eth0 (0c:c4:7a:00:00:01): 192.168.50.10/32, "
     "2001:db8:1::2/64; default via 192.168.50.1, default via fe80::1)"),
    (RESCUE_STATIC, NetworkPlan("static", "0c:c4:7a:00:00:09", ("192.168.50.10/32",)),
     "it has no interface with MAC 0c:c4:7a:00:00:09 (network.mac); it has: eth0 0c:c4:7a:00:00:01"),
    (HOME_DHCP, NetworkPlan("default"), None),  # leased: DHCP is what it runs
    (hardware("null"), NetworkPlan("default"),
     "its addresses could not be read (`ip -j address` failed: iproute2 4.13+ is needed), so the installed network "
     "cannot be checked against them"),
])
def test_an_install_is_refused_where_the_installed_network_would_not_answer(running, net, why):
    assert network_refusal(parse_hardware(running), net, "192.168.50.10") == why


def test_the_uplink_is_where_the_session_arrived_and_a_test_host_on_loopback_has_none():
    # The test machines share the deployer's network: reached on their own loopback.
    test_host = parse_hardware(hardware(ip_addr(), connection="127.0.0.1 50000 127.0.0.12 2222"))
    assert test_host.arrived == "127.0.0.12"
    assert network_refusal(test_host, NetworkPlan("default"), "127.0.0.12") is None
    # A guest behind a port forward: 127.0.0.132 on the deployer, arrived at its own address.
    forwarded = parse_hardware(hardware(ip_addr(link("ens2", MAC, ("10.0.2.50", 32, False))),
                                        connection="10.0.2.2 40000 10.0.2.50 22"))
    assert network_refusal(forwarded, NetworkPlan("default"), "127.0.0.132").startswith(
        "its Linux addresses it statically (ens2")
    # Behind NAT with no session address read: the interface of its default route counts.
    natted = parse_hardware(RESCUE_STATIC)
    assert network_refusal(natted, NetworkPlan("default"), "203.0.113.7").startswith("its Linux addresses it statically")


def test_the_facts_say_firmware_nics_and_gpus_and_the_install_keeps_them():
    pci = "0000:00:02.0 0x8086 0x46a6 0x030000\n0000:17:00.0 0x10de 0x20b0 0x030200\n0000:c1:00.0 0x10de 0x1af1 0x068000\n"
    facts = parse_facts(FACTS_OUT + "--hardware\n" + hardware(ip_addr(link("eth0", MAC, ("192.168.50.10", 32, False))),
                                                              pci=pci))
    assert facts.hardware.firmware == "uefi"
    kept = facts.to_json()
    assert kept["firmware"] == "uefi" and kept["nics"] == [{"name": "eth0", "mac": MAC, "state": "UP", "addresses": [
        {"cidr": "192.168.50.10/32", "dynamic": False}]}]
    assert kept["gpus"] == [{"slot": "0000:17:00.0", "vendor": "0x10de", "device": "0x20b0", "nvswitch": False},
                            {"slot": "0000:c1:00.0", "vendor": "0x10de", "device": "0x1af1", "nvswitch": True}]
    assert describe(facts.hardware, ["/dev/nvme0n1  1920 GB"]) == [
        "firmware: UEFI", "disks:", "  /dev/nvme0n1  1920 GB", "network:",
        "  eth0 (0c:c4:7a:00:00:01): 192.168.50.10/32; link up", "gpus:",
        "  0000:17:00.0 NVIDIA 0x20b0", "  0000:c1:00.0 NVIDIA 0x1af1 (NVSwitch)"]
    # Facts read before this release (no hardware section): nothing is refused for want of them.
    old = parse_facts(FACTS_OUT).hardware
    assert old.firmware == "unknown" and firmware_refusal(old, "single-disk", "uefi") is None
    assert gpu_refusal(old, {"nvswitch": False}) is None


@pytest.mark.parametrize(("firmware", "layout", "needs", "why"), [
    ("uefi", "single-disk", "uefi", None),
    ("bios", "bios-single-disk", "bios", None),
    ("bios", "single-disk", "uefi", "the machine booted by BIOS, and layout single-disk is for UEFI machines: it would "
     "not boot. Use disk_layout: bios-single-disk (or a layout of yours for BIOS)"),
    ("uefi", "bios-single-disk", "bios", "the machine booted by UEFI, and layout bios-single-disk is for BIOS machines: "
     "it would not boot. Use disk_layout: single-disk (or a layout of yours for UEFI)"),
])
def test_a_layout_for_the_other_firmware_is_refused(firmware, layout, needs, why):
    assert firmware_refusal(parse_hardware(hardware("[]", firmware=firmware)), layout, needs) == why


@pytest.mark.parametrize(("pci", "gpu", "why"), [
    ("0000:17:00.0 0x10de 0x20b0 0x030200\n", {"nvswitch": False}, None),
    ("0000:17:00.0 0x10de 0x20b0 0x030200\n", None, None),
    ("0000:00:02.0 0x8086 0x46a6 0x030000\n", {"nvswitch": False},
     "its pool has gpu: nvidia, but the machine shows no NVIDIA GPU on its PCI bus"),
    ("0000:17:00.0 0x10de 0x20b0 0x030200\n0000:c1:00.0 0x10de 0x1af1 0x068000\n", {"nvswitch": False},
     "its GPUs hang off NVSwitch, but its pool says gpu_nvswitch: false; set gpu_nvswitch: true"),
    ("0000:17:00.0 0x10de 0x20b0 0x030200\n", {"nvswitch": True},
     "its GPUs have no NVSwitch, but its pool says gpu_nvswitch: true; set gpu_nvswitch: false"),
])
def test_a_gpu_pools_host_must_show_the_gpus_the_pool_says(pci, gpu, why):
    assert gpu_refusal(parse_hardware(hardware("[]", pci=pci)), gpu) == why


# ----------------------------------------------------------------------------- tier 1: the install's files

def test_the_install_writes_the_hosts_network_file_onto_the_new_root(tmp_path):
    from flakefleet.bootstrap.runner import extra_files
    from flakefleet.plan.contract import INSTALLED_KEY_ENV, InstallPlan

    plan = InstallPlan(host="w-0", address="192.168.50.10", port=22, user="root", install_host_key="k", host_key="ssh-ed25519 A",
                       layout="single-disk", system="/nix/store/s", network=NetworkPlan("static", MAC, (
                           "192.168.50.10/32",), ("192.168.50.1",)).to_json())
    root = extra_files(plan, {INSTALLED_KEY_ENV: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"}, tmp_path)
    unit = root / "etc/systemd/network/10-flakefleet-uplink.network"
    assert unit.read_text() == NetworkPlan.from_json(plan.network).unit() and oct(unit.stat().st_mode)[-3:] == "644"
    plain = InstallPlan(**{**json.loads(plan.to_json()), "network": {}})
    assert not (extra_files(plain, {INSTALLED_KEY_ENV: "-----BEGIN OPENSSH PRIVATE KEY-----\n"}, tmp_path / "b")
                / "etc/systemd").exists()


# ----------------------------------------------------------------------------- tier 2: the program and the preview

def with_network(raw: dict, network: dict | None, **pool) -> dict:
    pools = json.loads(raw["flakefleet:pools"])
    workers = next(p for p in pools if p["role"] == "worker")
    workers.update(pool)
    if network is not None:
        workers["hosts"][0]["network"] = network
    return {**raw, "flakefleet:pools": json.dumps(pools)}


LOCAL_STATIC = {"mac": MAC, "addresses": ["127.0.0.12/8"], "gateways": ["127.0.0.1"]}


def test_each_install_plan_carries_the_hosts_network_its_layouts_firmware_and_the_pools_gpus():
    from flakefleet.plan.contract import INSTALL_PLAN_ENV, InstallPlan
    from tests.harness import run_program

    raw = with_network(local_bootstrapped(), LOCAL_STATIC, gpu="nvidia", gpu_nvswitch=True)
    run = run_program(raw, stack="local")
    plans = {p.host: p for p in (InstallPlan.from_json(r.inputs["environment"][INSTALL_PLAN_ENV])
                                 for r in run.of_type("command:local:Command")
                                 if INSTALL_PLAN_ENV in r.inputs.get("environment", {}))}
    assert plans["worker-0"].network == {"mode": "static", "mac": MAC, "addresses": ["127.0.0.12/8"],
                                         "gateways": ["127.0.0.1"], "dns": []}
    assert plans["worker-1"].network["mode"] == "default"
    assert {p.firmware for p in plans.values()} == {"uefi"}
    assert plans["worker-0"].gpu == {"vendor": "nvidia", "openModules": True, "nvswitch": True}
    assert run.exports["nodes"]["worker-0"]["install"]["network"] == (
        "static 127.0.0.12/8, via 127.0.0.1 on 0c:c4:7a:00:00:01 (systemd-networkd)")


def test_the_preview_shows_each_installs_network_a_later_change_and_the_gpu_driver():
    from tests.harness import run_program
    from tests.test_install import install_lines

    raw = with_network(local_bootstrapped(), LOCAL_STATIC)
    assert install_lines({}, raw)[0] == (
        "worker-0 will be installed: its disks wiped (layout single-disk), NixOS installed by nixos-anywhere, then "
        "delivered to; its network: static 127.0.0.12/8, via 127.0.0.1 on 0c:c4:7a:00:00:01 (systemd-networkd)")
    first = run_program(raw, stack="local").exports
    assert install_lines({"nodes": first["nodes"]}, raw) == []
    changed = with_network(local_bootstrapped(), {**LOCAL_STATIC, "dns": ["127.0.0.53"]})
    assert install_lines({"nodes": first["nodes"]}, changed) == [
        "worker-0: its network in the stack changed (static 127.0.0.12/8, via 127.0.0.1, DNS 127.0.0.53 on "
        "0c:c4:7a:00:00:01 (systemd-networkd)); it is written at an install only, and the running system keeps its "
        "own: set hosts[].reinstall to install it anew"]


@pytest.mark.parametrize(("pool", "line"), [
    ({"gpu": "nvidia"}, "pool workers: NVIDIA open kernel modules, no NVSwitch, the default for your own hardware "
     "(Turing or newer); say gpu_open_modules, gpu_nvswitch otherwise"),
    ({"gpu": "nvidia", "gpu_open_modules": False}, "pool workers: NVIDIA closed (proprietary) kernel modules, no "
     "NVSwitch, as the pool says"),
    ({"gpu": "nvidia", "gpu_nvswitch": True}, "pool workers: NVIDIA open kernel modules, with NVSwitch (data-center "
     "driver, fabric manager), as the pool says"),
])
def test_the_preview_says_which_nvidia_driver_a_metal_gpu_pool_gets(pool, line):
    from flakefleet.config.stackfile import read_stack_file
    from program.last_update import gpu_notes

    cfg = parse_stack_config(with_network(read_stack_file("local"), None, **pool))
    assert gpu_notes(cfg) == [line]
    spec = system_specs(cfg, plan_inventory(cfg))["workers"]["gpu"]
    assert (spec["openModules"], spec["nvswitch"]) == (pool.get("gpu_open_modules", True),
                                                       pool.get("gpu_nvswitch", False))


# ----------------------------------------------------------------------------- tier 3: the module system

def bios_specs() -> dict[str, dict]:
    cfg = bootstrapped(byo("w-0", "192.168.50.10", install_disk="/dev/disk/by-id/ata-A"),
                       disk_layout="bios-single-disk", per_host_closures=True)
    parsed = parse_stack_config({f"flakefleet:{k}": json.dumps(v) for k, v in cfg.items()}, None)
    specs = system_specs(parsed, plan_inventory(parsed))
    uefi = bootstrapped(byo("w-0", "192.168.50.10"))
    parsed = parse_stack_config({f"flakefleet:{k}": json.dumps(v) for k, v in uefi.items()}, None)
    return {**specs, "uefi-workers": system_specs(parsed, plan_inventory(parsed))["workers"]}


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_a_bios_machines_system_boots_grub_from_its_own_disk(lib, tmp_path):
    specs = bios_specs()
    assert specs["workers/w-0"]["install"] == {"layout": "bios-single-disk", "disk": "/dev/disk/by-id/ata-A"}
    out = evaluate_pools(lib, ROOT / "nixos", specs, tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    bios, uefi = r["workers/w-0"], r["uefi-workers"]
    assert bios["boot"] == {"systemdBoot": False, "grub": True, "grubDevices": ["/dev/disk/by-id/ata-A"]}
    assert bios["fileSystems"] == {"/": {"device": "/dev/disk/by-partlabel/disk-main-root", "fsType": "ext4",
                                         "options": ["defaults"]}}  # no EFI system partition
    assert uefi["boot"] == {"systemdBoot": True, "grub": False, "grubDevices": []}
    # Installed hosts run networkd (their network file, or nixpkgs' DHCP default); a pool that
    # ran NixOS before keeps whatever network it had.
    assert bios["networkd"] and uefi["networkd"] and not r["cp"]["networkd"]


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_a_teams_site_and_pool_files_reach_every_pool_and_only_their_pool(lib, tmp_path):
    flake = tmp_path / "nixos"
    shutil.copytree(ROOT / "nixos", flake)
    (flake / "site.nix").write_text('{ ... }: { boot.kernel.sysctl."net.core.wmem_max" = 1048576; }\n')
    (flake / "pools").mkdir()
    # A plain definition in the pool's file overrides our mkDefault ones (imported after ours).
    (flake / "pools" / "workers.nix").write_text(
        '{ ... }: { boot.kernel.sysctl."net.core.rmem_max" = 4194304; boot.kernel.sysctl."kernel.printk" = 3; }\n')
    cfg = bootstrapped(byo("w-0", "192.168.50.10"))
    parsed = parse_stack_config({f"flakefleet:{k}": json.dumps(v) for k, v in cfg.items()}, None)
    out = evaluate_pools(lib, flake, system_specs(parsed, plan_inventory(parsed)), tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["workers"]["sysctl"]["net.core.rmem_max"] == 4194304 and r["workers"]["sysctl"]["kernel.printk"] == 3
    assert r["cp"]["sysctl"].get("net.core.rmem_max") != 4194304 and r["cp"]["sysctl"]["kernel.printk"] != 3
    assert r["cp"]["sysctl"]["net.core.wmem_max"] == r["workers"]["sysctl"]["net.core.wmem_max"] == 1048576


def test_the_flake_imports_the_teams_files_only_where_they_exist():
    """The checked-in flake has none: pools keep their systems until a team adds one."""
    assert not (ROOT / "nixos" / "site.nix").exists() and not (ROOT / "nixos" / "pools").exists()
    text = (ROOT / "nixos" / "flake.nix").read_text()
    assert "builtins.pathExists ./site.nix" in text and 'builtins.pathExists (./pools + "/${spec.pool}.nix")' in text
