"""The VM tier (issue 39): a bring-your-own machine's network across its install, on a real
kernel, real systemd-networkd and real firmware (qemu's SeaBIOS).

The guest starts as a rented server's Linux does here: Debian on DHCP (qemu's user network
leases it 10.0.2.15). What the install reads of it is read for real (the install's own query
over pinned SSH: `ip -j address`, `ip -j route`, /sys/firmware/efi), and so the refusals are
decided on a real machine's answers. Then the install's network file for a static address
(10.0.2.50/32 with the on-link gateway 10.0.2.2, matched by the guest's MAC) is laid onto its
root as nixos-anywhere's --extra-files lays it, the old system's own network file is gone as a
wipe takes it, and the guest reboots: it must answer at its static address, on which a second
port forward of qemu's lands (the first, to the lease, then finds nobody).

Two boots, about a minute each of emulated machine: marker `vm`.
"""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest

from flakefleet.bootstrap.command import FACTS_QUERY, parse_facts
from flakefleet.bootstrap.hardware import firmware_refusal, network_refusal
from flakefleet.bootstrap.runner import extra_files
from flakefleet.plan.contract import INSTALLED_KEY_ENV, InstallPlan
from flakefleet.plan.network import UNIT_PATH, NetworkPlan
from tests.machines.vm import BOOT_TIMEOUT, booted_guest, ssh
from tests.testhosts import poll

pytestmark = pytest.mark.vm
ADDRESS, STATIC_PORT = "127.0.0.132", 2223
QEMU_MAC = "52:54:00:12:34:56"  # qemu's default for the first NIC
# A rented server's shape on qemu's user network (10.0.2.0/24 and fec0::/64, its router 10.0.2.2
# and fe80::2, its DNS 10.0.2.3): an IPv4 /32 with an on-link gateway, an IPv6 /64 via a
# link-local router, a DNS server.
STATIC = NetworkPlan("static", QEMU_MAC, ("10.0.2.50/32", "fec0::50/64"), ("10.0.2.2", "fe80::2"), ("10.0.2.3",))


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    with booted_guest("vm-net", ADDRESS, tmp_path_factory.mktemp("vm"),
                      forwards=(f"tcp:{ADDRESS}:{STATIC_PORT}-10.0.2.50:22",)) as (_, fleet, vm):
        yield fleet, vm


def facts(vm, fleet):
    out = ssh(vm, fleet, FACTS_QUERY[2])
    assert out.returncode == 0, out.stderr
    return parse_facts(out.stdout).hardware


def boot_id(vm, fleet) -> str:
    return ssh(vm, fleet, "cat /proc/sys/kernel/random/boot_id").stdout.strip()


def test_a_statically_addressed_install_answers_at_its_address_after_the_reboot(guest, tmp_path):
    fleet, vm = guest
    # 1. As it runs now: a lease, by BIOS. The install reads that for real.
    hw = facts(vm, fleet)
    nic = hw.nic_of(QEMU_MAC)
    # qemu's user network leases 10.0.2.15 and advertises fec0::/64 (SLAAC): both leased.
    assert nic is not None and [(a.cidr, a.dynamic) for a in nic.global_addresses()] == [
        ("10.0.2.15/24", True), ("fec0::5054:ff:fe12:3456/64", True)]
    assert hw.firmware == "bios"
    assert "booted by BIOS" in firmware_refusal(hw, "single-disk", "uefi")
    assert firmware_refusal(hw, "bios-single-disk", "bios") is None
    # Reached through qemu's forward (NAT): the uplink is its default route's interface.
    assert network_refusal(hw, NetworkPlan("default"), vm.address) is None  # DHCP is what it runs
    assert network_refusal(hw, STATIC, vm.address).startswith(
        "network.addresses 10.0.2.50/32, fec0::50/64 are not what it runs on ens")

    # 2. The install's files laid on its root (nixos-anywhere --extra-files), the old system's
    # network configuration wiped, then the reboot.
    plan = InstallPlan(host=vm.name, address=vm.address, port=vm.port, user="root", install_host_key="",
                       host_key=vm.host_key, layout="bios-single-disk", system="", network=STATIC.to_json())
    root = extra_files(plan, {INSTALLED_KEY_ENV: "-----BEGIN OPENSSH PRIVATE KEY-----\nunused\n"}, tmp_path)
    unit = (root / UNIT_PATH).read_text()
    before = boot_id(vm, fleet)
    placed = ssh(vm, fleet, f"rm -f /etc/systemd/network/10-dhcp.network && printf %s {shlex.quote(unit)} > "
                            f"/{UNIT_PATH} && systemctl reboot --no-block")
    assert placed.returncode == 0, placed.stderr

    # 3. It answers at the static address (the forward to 10.0.2.50), after a reboot.
    static = dataclasses.replace(vm, port=STATIC_PORT)
    poll(lambda: ssh(static, fleet, "true", timeout=30).returncode == 0 and boot_id(static, fleet) not in ("", before),
         BOOT_TIMEOUT, f"guest {vm.name} answering at 10.0.2.50 after its reboot (console: {vm.console})", interval=2)
    links = json.loads(ssh(static, fleet, "ip -j address show").stdout)
    mine = next(link for link in links if link.get("address") == QEMU_MAC)
    assert [(a["local"], a["prefixlen"]) for a in mine["addr_info"] if a["family"] == "inet"] == [("10.0.2.50", 32)]
    v6 = [(a["local"], a["prefixlen"]) for a in mine["addr_info"]
          if a["family"] == "inet6" and not a["local"].startswith("fe80:")]  # fec0:: is scope "site"
    assert v6 == [("fec0::50", 64)]  # no address from router advertisements: IPv6AcceptRA=no
    routes = json.loads(ssh(static, fleet, "ip -j -4 route show default").stdout)
    assert [(r["gateway"], "onlink" in r.get("flags", [])) for r in routes] == [("10.0.2.2", True)]
    routes6 = json.loads(ssh(static, fleet, "ip -j -6 route show default").stdout)
    assert [r["gateway"] for r in routes6] == ["fe80::2"]
    # What networkd says it applied to the link: our file, and its DNS server.
    status = ssh(static, fleet, f"networkctl status {mine['ifname']} --no-pager").stdout
    assert "10-flakefleet-uplink.network" in status and "10.0.2.3" in status, status
    # And what a reinstall would read now: static, as the stack says; the default is refused.
    hw = facts(static, fleet)
    assert network_refusal(hw, STATIC, static.address) is None
    assert network_refusal(hw, NetworkPlan("default"), static.address).startswith("its Linux addresses it statically")
