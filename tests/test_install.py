"""Bringing your own machine (pools[].bootstrap: nixos-anywhere): the stack's rules (tier 1), the
disk layouts and bootstrapped pools on the module system (tier 3, disko's stand-in in CI), and
against the real upstreams where they were fetched (tier 5: disko's own types, nixos-anywhere's
script, the lock)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest

from flakefleet.config import parse_stack_config
from flakefleet.facts.flake import ROOT, disk_layouts
from flakefleet.plan.inventory import plan_inventory
from flakefleet.plan.specs import system_specs
from tests.conftest import require
from tests.test_config_classes import ECDSA, found, host, metal_stack
from tests.test_nix_modules import MODULE_SYSTEMS, evaluate_pools

INSTALL_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBTxdeoCCpJ8Jrd9q6yIjBmGZOgeZLmVV1nIhxTQPFmX debian"


def bootstrapped(*hosts: dict, **pool) -> dict:
    """metal_stack whose worker pool is installed by nixos-anywhere."""
    cfg = metal_stack(*hosts)
    cfg["pools"][1].update(bootstrap="nixos-anywhere", **pool)
    return cfg


def byo(name: str, address: str, **extra) -> dict:
    """A host to install: its pre-install key pinned, no ssh_host_key (the stack makes it)."""
    return {"name": name, "address": address, "install_host_key": INSTALL_KEY, **extra}


# ----------------------------------------------------------------------------- tier 1: the stack's rules

def test_a_bootstrapped_pool_is_planned_with_its_install():
    cfg = parse_stack_config({f"flakefleet:{k}": json.dumps(v) for k, v in bootstrapped(
        byo("w-0", "192.168.50.10", install_disk="/dev/disk/by-id/nvme-A", reinstall="2026-12-02"),
        byo("w-1", "192.168.50.11")).items()}, None)
    inv = plan_inventory(cfg)
    installs = {h.name: h.install for h in inv.hosts}
    assert installs["cp-0"] is None
    assert (installs["w-0"].layout, installs["w-0"].host_key, installs["w-0"].disk, installs["w-0"].reinstall) == (
        "single-disk", INSTALL_KEY, "/dev/disk/by-id/nvme-A", "2026-12-02")
    assert installs["w-1"].disk is None and installs["w-1"].reinstall is None
    assert {h.name: h.ssh_host_key for h in inv.hosts if h.install} == {"w-0": None, "w-1": None}
    specs = system_specs(cfg, inv)
    assert specs["workers"]["install"] == {"layout": "single-disk", "disk": None} and specs["cp"]["install"] is None


BAD = [
    ("on-ec2", lambda: {**copy.deepcopy(metal_stack()), "pools": [
        {"name": "cp", "role": "control-plane", "provider": "ec2", "instance_type": "m7i.large", "count": 1,
         "bootstrap": "nixos-anywhere", "disk_layout": "single-disk"}]},
     ["flakefleet:pools[0].bootstrap: only for provider metal; an ec2 pool boots the NixOS image itself",
      "flakefleet:pools[0].disk_layout: only for a metal pool with bootstrap: nixos-anywhere"]),
    ("unknown-layout", lambda: bootstrapped(byo("w-0", "192.168.50.10"), disk_layout="single-disc"),
     ["flakefleet:pools[1].disk_layout: the flake has no layout 'single-disc' (did you mean single-disk?) "
      "(nixos/disko/ has: bios-single-disk, single-disk)"]),
    ("layout-without-bootstrap", lambda: {**metal_stack(host("w-0", "192.168.50.10")), "pools": [
        metal_stack()["pools"][0],
        {**metal_stack(host("w-0", "192.168.50.10"))["pools"][1], "disk_layout": "single-disk"}]},
     ["flakefleet:pools[1].disk_layout: only with bootstrap: nixos-anywhere"]),
    ("missing-install-key", lambda: bootstrapped({"name": "w-0", "address": "192.168.50.10"}),
     ["flakefleet:pools[1].hosts[0].install_host_key: required with bootstrap; the Linux it runs before the install "
      "is pinned before the first connection (read it from its /etc/ssh/ssh_host_ed25519_key.pub)"]),
    ("ssh-key-given-too", lambda: bootstrapped(byo("w-0", "192.168.50.10", ssh_host_key=INSTALL_KEY)),
     ["flakefleet:pools[1].hosts[0].ssh_host_key: not with bootstrap; the stack makes the installed system's host "
      "key (placed by the install, pinned before it first answers): remove this line"]),
    ("install-fields-without-bootstrap", lambda: metal_stack(host(
        "w-0", "192.168.50.10", install_host_key=INSTALL_KEY, reinstall="now")),
     ["flakefleet:pools[1].hosts[0].install_host_key: only for a pool with bootstrap: nixos-anywhere",
      "flakefleet:pools[1].hosts[0].reinstall: only for a pool with bootstrap: nixos-anywhere"]),
    ("a-disk-that-is-no-device", lambda: bootstrapped(byo("w-0", "192.168.50.10", install_disk="nvme0n1")),
     ["flakefleet:pools[1].hosts[0].install_disk: 'nvme0n1' is not a device path; use /dev/disk/by-id/..."]),
    ("all-at-once", lambda: bootstrapped({"name": "w-0", "address": "192.168.50.10", "ssh_host_key": INSTALL_KEY},
                                         byo("w-1", "192.168.50.11", install_disk="sdb"), disk_layout="raid9"),
     ["flakefleet:pools[1].disk_layout: the flake has no layout 'raid9' (nixos/disko/ has: bios-single-disk, single-disk)",
      "flakefleet:pools[1].hosts[0].install_host_key: required with bootstrap; the Linux it runs before the install "
      "is pinned before the first connection (read it from its /etc/ssh/ssh_host_ed25519_key.pub)",
      "flakefleet:pools[1].hosts[0].ssh_host_key: not with bootstrap; the stack makes the installed system's host "
      "key (placed by the install, pinned before it first answers): remove this line",
      "flakefleet:pools[1].hosts[1].install_disk: 'sdb' is not a device path; use /dev/disk/by-id/..."]),
]


@pytest.fixture
def real_flake(monkeypatch):
    """The layouts are read from nixos/ (the tests' default flake is the stand-in)."""
    monkeypatch.delenv("FLAKEFLEET_FLAKE", raising=False)


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_bootstrap_input_is_one_line_each(make, expected, real_flake):
    assert found(make(), "eu-west-1") == expected


def test_the_pre_install_key_may_be_any_host_key_type_the_old_linux_serves():
    assert found(bootstrapped(byo("w-0", "192.168.50.10", install_host_key=ECDSA))) == []


def test_the_flake_offers_its_layouts_by_file():
    assert disk_layouts(ROOT / "nixos") == ["bios-single-disk", "single-disk"]
    assert disk_layouts(ROOT / "tests") is None


# ----------------------------------------------------------------------------- tier 3: the module system

def bootstrap_specs() -> dict[str, dict]:
    raw = {f"flakefleet:{k}": json.dumps(v) for k, v in bootstrapped(byo("w-0", "192.168.50.10")).items()}
    cfg = parse_stack_config(raw, None)
    return system_specs(cfg, plan_inventory(cfg))


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_a_bootstrapped_pool_mounts_the_layouts_partitions_by_label(lib, tmp_path):
    specs = bootstrap_specs()
    specs["workers-on-nvme"] = {**specs["workers"], "install": {"layout": "single-disk", "disk": "/dev/disk/by-id/nvme-A"}}
    out = evaluate_pools(lib, ROOT / "nixos", specs, tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["workers"]["fileSystems"] == {
        "/": {"device": "/dev/disk/by-partlabel/disk-main-root", "fsType": "ext4", "options": ["defaults"]},
        "/boot": {"device": "/dev/disk/by-partlabel/disk-main-ESP", "fsType": "vfat", "options": ["umask=0077"]},
    }
    # The pool's shared system names no real disk; the install's names the host's.
    assert r["workers"]["diskoScript"].endswith("/dev/disk/by-id/flakefleet-install-disk-set-at-install")
    assert r["workers-on-nvme"]["diskoScript"].endswith("/dev/disk/by-id/nvme-A")
    assert r["workers-on-nvme"]["fileSystems"] == r["workers"]["fileSystems"]
    # A pool NixOS runs on already keeps metal.nix's labels and has no disko.
    assert r["cp"]["fileSystems"]["/"]["device"] == "/dev/disk/by-label/nixos" and r["cp"]["diskoScript"] is None


# ----------------------------------------------------------------------------- tier 5: the real upstreams

def upstream(name: str) -> Path:
    """A fetched upstream's git directory (FLAKEFLEET_UPSTREAM_<NAME>), else skip: tier 5 is local."""
    variable = f"FLAKEFLEET_UPSTREAM_{name.upper().replace('-', '_')}"
    require(bool(os.environ.get(variable)), f"{variable} (a git directory of {name})")
    return Path(os.environ[variable])


def locked(name: str) -> dict:
    return json.loads((ROOT / "nixos" / "flake.lock").read_text())["nodes"][name]["locked"]


def checkout(name: str, tmp_path: Path) -> Path:
    """The locked revision of `name` as its GitHub tarball has it (git archive: the same tree)."""
    rev, out = locked(name)["rev"], tmp_path / name
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(upstream(name)), "archive", "--format=tar", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


@pytest.mark.upstream
@pytest.mark.parametrize("name", ["disko", "nixos-anywhere", "nixos-images"])
def test_the_lock_pins_each_input_by_the_hash_of_its_source(name, tmp_path):
    tree = checkout(name, tmp_path)
    nar = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "hash", "path", "--type", "sha256",
                          "--sri", str(tree)], check=True, capture_output=True, text=True).stdout.strip()
    when = subprocess.run(["git", "-C", str(upstream(name)), "log", "-1", "--format=%ct", locked(name)["rev"]],
                          check=True, capture_output=True, text=True).stdout.strip()
    assert (nar, int(when)) == (locked(name)["narHash"], locked(name)["lastModified"])


@pytest.mark.upstream
def test_the_lock_is_the_one_nix_writes_for_the_flakes_inputs(tmp_path):
    """nix flake lock of a copy whose inputs are the locked sources as paths (nixpkgs a stub):
    every input and follows as in nixos/flake.lock, with the same hashes."""
    import shutil

    copy_ = tmp_path / "flake"
    shutil.copytree(ROOT / "nixos", copy_)
    (copy_ / "flake.lock").unlink()
    stub = tmp_path / "nixpkgs"
    stub.mkdir()
    (stub / "flake.nix").write_text("{ outputs = _: { lib = { }; }; }\n")
    text = (copy_ / "flake.nix").read_text().replace("github:NixOS/nixpkgs/nixos-26.05", f"path:{stub}")
    for name in ("disko", "nixos-images", "nixos-anywhere"):
        text = text.replace(f'"github:nix-community/{name}"', f'"path:{checkout(name, tmp_path)}"')
    (copy_ / "flake.nix").write_text(text)
    subprocess.run(["nix", "--extra-experimental-features", "nix-command flakes", "flake", "lock", str(copy_)],
                   check=True, capture_output=True)
    made = json.loads((copy_ / "flake.lock").read_text())["nodes"]
    ours = json.loads((ROOT / "nixos" / "flake.lock").read_text())["nodes"]
    assert {n: v.get("inputs") for n, v in made.items()} == {n: v.get("inputs") for n, v in ours.items()}
    for name in ("disko", "nixos-images", "nixos-anywhere"):
        assert made[name]["locked"]["narHash"] == ours[name]["locked"]["narHash"]


@pytest.mark.upstream
def test_the_patch_removes_nixos_anywheres_unpinned_ssh_options_exactly_once(tmp_path):
    """The flake's nixos-anywhere drops the two options that would override the pins: the text
    its substituteInPlace --replace-fail removes is in the locked script once, and nowhere else
    does the script turn host key checking off."""
    import re

    flake = (ROOT / "nixos" / "flake.nix").read_text()
    removed = re.search(r"--replace-fail \\\n\s*'([^']+)' \"\"", flake).group(1)
    script = (checkout("nixos-anywhere", tmp_path) / "src" / "nixos-anywhere.sh").read_text()
    assert script.count(removed) == 1
    patched = script.replace(removed, "")
    assert "StrictHostKeyChecking" not in patched and "UserKnownHostsFile" not in patched.replace(
        "'--ssh-option UserKnownHostsFile=./known_hosts'", "")
    assert 'declare -a sshArgs=("-o" "IdentitiesOnly=yes" "-i" "$tempDir/nixos-anywhere")' in patched


@pytest.mark.upstream
def test_the_layouts_are_valid_disko_configurations(tmp_path):
    """Each layout through disko's own types (lib/default.nix `toplevel`) on nixpkgs' real lib:
    the partitions, their labels, and the NixOS fileSystems disko derives from them."""
    lib = os.environ.get("FLAKEFLEET_NIXPKGS_LIB")
    require(bool(lib), "FLAKEFLEET_NIXPKGS_LIB (nixpkgs' lib directory)")
    disko = checkout("disko", tmp_path)
    for layout in disk_layouts(ROOT / "nixos"):
        expr = f"""
          let
            lib = import {lib};
            diskoLib = import {disko}/lib {{ inherit lib; makeTest = null; eval-config = null; qemu-common = null; }};
            eval = lib.evalModules {{ modules = [
              {{ options.disko.devices = lib.mkOption {{ type = diskoLib.toplevel; }};
                 options.flakefleet.install.disk = lib.mkOption {{ type = lib.types.str; }};
                 options.flakefleet.install.firmware = lib.mkOption {{ type = lib.types.str; }};
                 config.flakefleet.install.disk = "/dev/disk/by-id/nvme-A"; }}
              {ROOT / 'nixos' / 'disko' / (layout + '.nix')}
            ]; }};
            # `_config.fileSystems` is the mkMerge disko's module puts into the system's fileSystems.
            fileSystems = lib.foldl' lib.recursiveUpdate {{ }} eval.config.disko.devices._config.fileSystems.contents;
            # gpt.nix `_config`: a disk with an EF02 partition is where GRUB is written.
            grub = lib.concatMap (c: c.boot.loader.grub.devices or [ ]) (lib.flatten eval.config.disko.devices.disk.main._config);
          in {{
            fileSystems = builtins.mapAttrs (_: f: {{ inherit (f) device fsType options; }}) fileSystems;
            inherit grub;
          }}
        """
        out = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        root = {"/": {"device": "/dev/disk/by-partlabel/disk-main-root", "fsType": "ext4", "options": ["defaults"]}}
        assert json.loads(out.stdout) == {
            "single-disk": {"fileSystems": {**root, "/boot": {"device": "/dev/disk/by-partlabel/disk-main-ESP",
                                                             "fsType": "vfat", "options": ["umask=0077"]}}, "grub": []},
            "bios-single-disk": {"fileSystems": root, "grub": ["/dev/disk/by-id/nvme-A"]},
        }[layout], layout


# ----------------------------------------------------------------------------- tier 2: the program under mocks

def local_bootstrapped(reinstall: str | None = None) -> dict:
    """The local stack with its workers installed by nixos-anywhere."""
    from flakefleet.config.stackfile import read_stack_file

    raw = read_stack_file("local")
    pools = json.loads(raw["flakefleet:pools"])
    workers = next(p for p in pools if p["role"] == "worker")
    workers["bootstrap"] = "nixos-anywhere"
    workers["hosts"] = [{"name": h["name"], "address": h["address"], "ssh_port": h["ssh_port"],
                         "install_host_key": INSTALL_KEY, **({"reinstall": reinstall} if reinstall and i == 1 else {})}
                        for i, h in enumerate(workers["hosts"])]
    raw["flakefleet:pools"] = json.dumps(pools)
    return raw


def test_each_bootstrapped_host_is_installed_in_its_wave_before_its_delivery():
    from flakefleet.plan.contract import INSTALL_PLAN_ENV, INSTALLED_KEY_ENV, InstallPlan
    from flakefleet.plan.contract import PLAN_ENV, DeliveryPlan
    from tests.harness import run_program

    run = run_program(local_bootstrapped("2026-12-02"), stack="local")
    keys = {r.name: r for r in run.of_type("tls:index/privateKey:PrivateKey") if "-install-" in r.name}
    assert {n: r.inputs["algorithm"] for n, r in keys.items()} == {
        "ff-local-install-worker-0-host-key": "ED25519", "ff-local-install-worker-1-host-key": "ED25519"}
    installs = {r.name.rsplit("-", 2)[-2] + "-" + r.name.rsplit("-", 1)[-1]: r for r in run.of_type("command:local:Command")
                if INSTALL_PLAN_ENV in r.inputs.get("environment", {})}
    assert set(installs) == {"worker-0", "worker-1"}
    deliveries = {r.name.split("-deliver-", 1)[1]: r for r in run.of_type("command:local:Command")
                  if PLAN_ENV in r.inputs.get("environment", {})}
    for name, reg in installs.items():
        assert reg.parent.split("::")[2].endswith("flakefleet:index:Installs")
        assert (reg.inputs["create"], reg.inputs["update"]) == ("./scripts/flakefleet install",
                                                                "./scripts/flakefleet install --update")
        assert "delete" not in reg.inputs  # nothing runs when it goes: the delivery's delete removes the node
        assert reg.inputs["triggers"] == (["2026-12-02"] if name == "worker-1" else [""])
        # The private key only in the secret environment; the plan pins its public half.
        assert "environment" in reg.secret_inputs
        assert reg.inputs["environment"][INSTALLED_KEY_ENV].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        plan = InstallPlan.from_json(reg.inputs["environment"][INSTALL_PLAN_ENV])
        assert "PRIVATE KEY" not in reg.inputs["environment"][INSTALL_PLAN_ENV]
        assert plan.install_host_key == INSTALL_KEY and plan.layout == "single-disk" and plan.spec["install"] == {
            "layout": "single-disk", "disk": None}  # the install's own evaluation names the disk
        delivered = DeliveryPlan.from_json(deliveries[name].inputs["environment"][PLAN_ENV])
        assert plan.host_key == delivered.host_key and delivered.host_key.startswith("ssh-ed25519 ")
        assert "\n" not in delivered.host_key  # pinned as one line
        assert plan.system == delivered.system and DeliveryPlan.from_json(plan.delivery) == delivered
        # The delivery waits for the install; the install for the wave before (the control plane).
        assert reg.urn in deliveries[name].dependencies
        assert deliveries["cp-0"].urn in reg.dependencies
    assert run.exports["nodes"]["worker-0"]["host_key"] == DeliveryPlan.from_json(
        deliveries["worker-0"].inputs["environment"][PLAN_ENV]).host_key


def test_a_stack_without_bootstrapped_pools_has_no_installs():
    from tests.harness import run_stack

    run = run_stack("local")
    assert not [r for r in run.resources if "Installs" in r.type or "-install-" in r.name]


# ----------------------------------------------------------------------------- tier 1: what an install reads and runs

# FACTS_QUERY's output on a rented server running Debian (lsblk from util-linux 2.38, JSON booleans).
FACTS_OUT = """x86_64
{
   "blockdevices": [
      {"name": "zram0", "size": 4294967296, "type": "disk", "rm": false, "ro": false, "model": null, "serial": null},
      {"name": "nvme0n1", "size": 1920383410176, "type": "disk", "rm": false, "ro": false,
       "model": "SAMSUNG MZQL21T9HCJR-00A07", "serial": "S64GNE0R123456"},
      {"name": "sr0", "size": 1073741312, "type": "rom", "rm": true, "ro": false, "model": "Virtual CDROM", "serial": null}
   ]
}
--by-id
/dev/disk/by-id/nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R123456 /dev/nvme0n1
/dev/disk/by-id/nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R123456-part1 /dev/nvme0n1p1
/dev/disk/by-id/nvme-eui.002538b411b2c3d4 /dev/nvme0n1
--state
"""
NVME = "/dev/disk/by-id/nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R123456"


def test_the_facts_name_the_disks_by_their_stable_names():
    from flakefleet.bootstrap.command import parse_facts

    facts = parse_facts(FACTS_OUT)
    assert (facts.arch, facts.flakefleet, facts.nixos) == ("x86_64-linux", False, False)
    assert [(d.name, d.by_id) for d in facts.disks] == [
        ("zram0", ()), ("nvme0n1", ("/dev/disk/by-id/nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R123456",
                                    "/dev/disk/by-id/nvme-eui.002538b411b2c3d4"))]
    # Older lsblk prints "0"/"1" and sizes as strings.
    old = FACTS_OUT.replace('"rm": false', '"rm": "0"').replace('"size": 1920383410176', '"size": "1920383410176"')
    assert parse_facts(old).disks == facts.disks
    assert parse_facts(FACTS_OUT.replace("--state\n", "--state\nflakefleet\nnixos\n")).flakefleet
    assert facts.missing == ()


def test_a_machine_without_what_the_installer_needs_is_refused_before_anything():
    from flakefleet.bootstrap.command import parse_facts, tools_refusal

    assert tools_refusal(parse_facts(FACTS_OUT)) is None
    assert tools_refusal(parse_facts(FACTS_OUT + "missing-cpio\n")) == (
        "the machine lacks cpio, which nixos-anywhere needs to boot its installer (kexec): install it first (Debian, "
        "Ubuntu: apt-get install cpio)")


@pytest.mark.parametrize(("out", "message"), [
    ("riscv64\n{\"blockdevices\": []}\n--by-id\n--state\n", "unsupported architecture 'riscv64'"),
    ("x86_64\nlsblk: command not found\n--by-id\n--state\n", "lsblk gave no device list"),
])
def test_facts_that_are_not_as_expected_are_refused(out, message):
    from flakefleet.bootstrap.command import parse_facts

    with pytest.raises(ValueError, match=message):
        parse_facts(out)


def two_disks():
    from flakefleet.bootstrap.command import parse_facts

    return parse_facts(FACTS_OUT.replace(
        '{"name": "sr0"', '{"name": "sda", "size": 480103981056, "type": "disk", "rm": false, "ro": false, '
        '"model": "INTEL SSDSC2KB48", "serial": "X"},\n      {"name": "sr0"'))


@pytest.mark.parametrize(("facts", "wanted", "chosen", "why"), [
    ("one", None, NVME, ""),
    ("one", NVME, NVME, ""),
    ("one", "/dev/nvme0n1", "/dev/nvme0n1", ""),
    ("one", "/dev/disk/by-id/ata-NOPE", None,
     "the machine has no disk /dev/disk/by-id/ata-NOPE (it has: " + NVME + " (1920 GB, SAMSUNG MZQL21T9HCJR-00A07))"),
    ("two", None, None, "the machine has 2 fixed disks (" + NVME + " (1920 GB, SAMSUNG MZQL21T9HCJR-00A07), /dev/sda "
     "(480 GB, INTEL SSDSC2KB48)): name the one to install on in hosts[].install_disk"),
    ("two", "/dev/sda", "/dev/sda", ""),
])
def test_the_disk_is_the_one_named_or_the_only_one(facts, wanted, chosen, why):
    from flakefleet.bootstrap.command import choose_disk, parse_facts

    found_ = parse_facts(FACTS_OUT) if facts == "one" else two_disks()
    assert choose_disk(found_, wanted) == (chosen, why)


@pytest.mark.parametrize(("state", "reinstall", "refused"), [
    ("", None, False), ("", "2026-12-02", False),
    ("flakefleet\nnixos\n", None, True),  # a node (or one that was): never wiped by accident
    ("flakefleet\nnixos\n", "2026-12-02", False),
    ("nixos\n", None, False),  # NixOS, never delivered to by flakefleet
])
def test_a_machine_a_delivery_ran_on_is_wiped_only_when_asked(state, reinstall, refused):
    from flakefleet.bootstrap.command import parse_facts, wipe_refusal

    why = wipe_refusal(parse_facts(FACTS_OUT.replace("--state\n", "--state\n" + state)), reinstall)
    assert (why is not None) == refused
    if refused:
        assert why.startswith("it runs a flakefleet system already") and "hosts[].reinstall" in why


def test_the_pre_install_key_is_pinned_at_its_port_and_where_the_installer_listens():
    from flakefleet.bootstrap.command import known_hosts_text

    key = INSTALL_KEY.split()[1]
    assert known_hosts_text("192.168.50.10", 2222, INSTALL_KEY) == (
        f"[192.168.50.10]:2222 ssh-ed25519 {key}\n192.168.50.10 ssh-ed25519 {key}\n")
    assert known_hosts_text("192.168.50.10", 22, INSTALL_KEY) == f"192.168.50.10 ssh-ed25519 {key}\n"


@pytest.mark.parametrize("identity", [None, "/home/sre/.ssh/deploy"])
def test_nixos_anywhere_installs_the_built_paths_with_every_connection_pinned(identity):
    from flakefleet.bootstrap.command import nixos_anywhere_argv

    argv = nixos_anywhere_argv("/nix/store/a-nixos-anywhere/bin/nixos-anywhere", "/nix/store/d-disko", "/nix/store/s-nixos",
                               "/nix/store/k-kexec/k.tar.gz", Path("/tmp/x/root"), Path("/tmp/x/known_hosts"),
                               "192.168.50.10", 2222, "root", identity)
    assert argv[:10] == ["/nix/store/a-nixos-anywhere/bin/nixos-anywhere", "--store-paths", "/nix/store/d-disko",
                         "/nix/store/s-nixos", "--kexec", "/nix/store/k-kexec/k.tar.gz", "--extra-files", "/tmp/x/root",
                         "--ssh-port", "2222"]
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "--ssh-option"]
    assert options == ["UserKnownHostsFile=/tmp/x/known_hosts", "GlobalKnownHostsFile=/dev/null",
                       "StrictHostKeyChecking=yes"]
    assert "StrictHostKeyChecking=no" not in " ".join(argv) and "accept-new" not in " ".join(argv)
    assert argv[-2:] == ["--target-host", "root@192.168.50.10"]
    assert ("-i" in argv) == (identity is not None)
    assert argv[argv.index("--phases") + 1] == "kexec,disko,install,reboot"


def install_lines(previous: dict, raw: dict) -> list[str]:
    """What a preview of `raw` logs about installs, after an update that exported `previous`."""
    import pulumi

    from tests.harness import FleetMocks, RecordingMonitor, run_program

    logged: list[str] = []
    original = pulumi.log.info
    pulumi.log.info = lambda message, *a, **k: logged.append(message)
    try:
        run_program(raw, stack="local", preview=True, monitor=RecordingMonitor(FleetMocks(previous_outputs=previous)))
    finally:
        pulumi.log.info = original
    return [m for m in logged if m.startswith("worker-")]


def test_the_preview_says_which_hosts_are_wiped():
    from tests.harness import run_program

    first = run_program(local_bootstrapped(), stack="local").exports
    assert first["nodes"]["worker-0"]["install"] == {"layout": "single-disk", "reinstall": None, "network": "DHCP on every Ethernet interface (systemd-networkd)"}
    assert install_lines({}, local_bootstrapped()) == [
        f"worker-{i} will be installed: its disks wiped (layout single-disk), NixOS installed by nixos-anywhere, "
        "then delivered to; its network: DHCP on every Ethernet interface (systemd-networkd)" for i in (0, 1)]
    assert install_lines({"nodes": first["nodes"]}, local_bootstrapped()) == []
    assert install_lines({"nodes": first["nodes"]}, local_bootstrapped(reinstall="2026-12-02")) == [
        "worker-1 will be wiped and reinstalled (reinstall: 2026-12-02): drained and taken out of the cluster "
        "first, in its wave"]
    before = {n: {k: v for k, v in row.items() if k != "install"} for n, row in first["nodes"].items()}
    assert install_lines({"nodes": before}, local_bootstrapped())[0].startswith(
        "worker-0: its pool is installed by the stack now, but it runs a delivered system already")


def test_a_deployer_without_a_ssh_directory_gets_one_for_ssh_copy_id(tmp_path, monkeypatch):
    """ssh-copy-id (which nixos-anywhere retries until it works) fails without ~/.ssh: a deployer
    that never ran ssh would wait out the install's timeout. The runner makes it, 0700."""
    from flakefleet.bootstrap.runner import ssh_dir_for_ssh_copy_id

    monkeypatch.setenv("HOME", str(tmp_path))
    ssh_dir_for_ssh_copy_id()
    ssh_dir_for_ssh_copy_id()  # and leaves one that is there
    assert (tmp_path / ".ssh").is_dir() and (tmp_path / ".ssh").stat().st_mode & 0o777 == 0o700
