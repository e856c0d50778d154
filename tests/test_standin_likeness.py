"""Tier 1: the stand-ins of the host tier against what they restate, case by case.

- tests/standin/nixos.py's compare_units against the cases of switch-to-configuration-ng's own
  unit tests (pkgs/by-name/sw/switch-to-configuration-ng/src/main.rs, `fn compare_units`);
- tests/machines/grub.py (the nspawn machines' boot loader) against GRUB's rules for NixOS'
  grub.cfg (nixos/modules/system/boot/loader/grub/install-grub.pl) and its environment block;
  tests/test_vm_boot.py checks the same prediction against a real GRUB.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.machines import grub

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("standin_nixos", HERE / "standin" / "nixos.py")
standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(standin)


def unit(**sections):
    return {name: {k: v if isinstance(v, list) else [v] for k, v in keys.items()} for name, keys in sections.items()}


# (current, new, expected): the assertions of main.rs' `compare_units` test, in its order.
CASES = [
    ({}, {}, "equal"),
    (unit(Unit={}), {}, "equal"),
    (unit(Unit={"X-Reload-Triggers": "foobar"}), {}, "equal"),
    (unit(foobar={}), {}, "restart"),
    (unit(Mount={"Options": []}), unit(Mount={"Options": "ro"}), "reload"),
    ({}, unit(Unit={"X-Reload-Triggers": "foobar"}), "reload"),
    (unit(Unit={"X-Reload-Triggers": "foobar"}), unit(Unit={"X-Reload-Triggers": "barfoo"}), "reload"),
    ({}, unit(Service={"ExecReload": "foobar"}), "reload"),
    (unit(Service={"ExecReload": "foobar"}), unit(Service={"ExecReload": "barfoo"}), "reload"),
    (unit(Unit={"Description": "x"}), unit(Unit={"Description": "x"}, Service={"ExecStart": "y"}), "restart"),
    (unit(Unit={"Description": "x"}), unit(Unit={"Description": "x"}, Service={"ExecReload": "y"}), "reload"),
    (unit(Service={"ExecStart": "x", "ExecReload": "y"}), unit(Service={"ExecStart": "x"}), "equal"),
    (unit(Service={"ExecReload": "y"}), {}, "equal"),
    (unit(Service={"ExecStart": "x"}), unit(Service={"ExecStart": "x", "ExecReload": "y"}), "reload"),
    (unit(Mount={"Type": "ext4"}), unit(Mount={"Type": "btrfs"}), "restart"),
    # and what delivery relies on
    (unit(Unit={"Description": "k3s"}, Service={"ExecStart": "k3s agent --node-label=a"}),
     unit(Unit={"Description": "k3s"}, Service={"ExecStart": "k3s agent --node-label=b"}), "restart"),
    (unit(Unit={"Description": "old"}), unit(Unit={"Description": "new"}), "equal"),
    # found by the tier-5 comparison with main.rs' own code (tests/test_upstream_switch.py)
    ({}, unit(Unit={}, Service={}), "restart"),  # two new sections, even empty ones
]


@pytest.mark.parametrize("current,new,expected", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_compare_units_as_switch_to_configuration_ng(current, new, expected):
    assert standin.compare_units(current, new) == expected


@pytest.mark.parametrize("name,verdict", [("data.mount", "restart"), ("-.mount", "reload"), ("nix.mount", "reload")])
def test_a_changed_mount_is_remounted_or_restarted(name, verdict):
    plan = {k: set() for k in ("stop", "start", "reload", "restart", "skip")}
    standin.handle_modified(name, {}, plan)
    assert plan[verdict] == {name}


@pytest.mark.parametrize("new,verdict", [
    (unit(Service={"X-ReloadIfChanged": "true"}), "reload"),
    (unit(Service={"X-RestartIfChanged": "false"}), "skip"),
    (unit(Unit={"RefuseManualStop": "yes"}), "skip"),
    (unit(Unit={"X-OnlyManualStart": "yes"}), "skip"),
    (unit(Service={"X-StopIfChanged": "false"}), "restart"),
    ({}, "stop+start"),
])
def test_a_changed_service_is_handled_as_handle_modified_unit(new, verdict):
    plan = {k: set() for k in ("stop", "start", "reload", "restart", "skip")}
    standin.handle_modified("foo.service", new, plan)
    got = "stop+start" if plan["stop"] == plan["start"] == {"foo.service"} else next(k for k, v in plan.items() if v)
    assert got == verdict


def test_units_that_cannot_be_restarted_directly_are_left_alone():
    for name in ("sysinit.target", "basic.target", "multi-user.target", "graphical.target", "a.path", "b.slice"):
        plan = {k: set() for k in ("stop", "start", "reload", "restart", "skip")}
        standin.handle_modified(name, {}, plan)
        assert not any(plan.values()), name


def test_parse_unit_keeps_escapes_and_clears_on_an_empty_value(tmp_path):
    path = tmp_path / "x.service"
    path.write_text("[Unit]\nAfter=dev-disk-by\\x2dlabel-root.device\n[Service]\nExecStart=a\nExecStart=\nExecStart=b\n"
                    "[Install]\nWantedBy=multi-user.target\n[Empty]\n")
    (tmp_path / "x.service.d").mkdir()
    (tmp_path / "x.service.d" / "override.conf").write_text('[Service]\nEnvironment="A=1"\n')  # quotes read off
    parsed = standin.parse_unit(str(path))
    assert parsed == {"Unit": {"After": ["dev-disk-by\\x2dlabel-root.device"]},
                      "Service": {"ExecStart": ["b"], "Environment": ["A=1"]}, "Empty": {}}


# ------------------------------------------------------------------------------- GRUB

NIXOS_CFG = """# Automatically generated.  DO NOT EDIT THIS FILE!

        if [ -s $prefix/grubenv ]; then
          load_env
        fi

        if [ "${next_entry}" ]; then
          set default="${next_entry}"
          set next_entry=
          save_env next_entry
          set timeout=1
          set boot_once=true
        else
          set default=DEFAULT
          set timeout=5
        fi

menuentry "NixOS - Default" --class nixos --unrestricted {
  linux /nix/store/k3-linux/bzImage init=/nix/store/s3-nixos-system/init loglevel=4
  initrd /nix/store/k3-linux/initrd
}

submenu "NixOS - All configurations" --class submenu {
menuentry "NixOS - Configuration 3 (2026-12-01 - 26.05)" --class nixos {
  linux /nix/store/k3-linux/bzImage init=/nix/store/s3-nixos-system/init loglevel=4
  initrd /nix/store/k3-linux/initrd
}

menuentry "NixOS - Configuration 2 (2026-11-30 - 26.05)" --class nixos {
  linux /nix/store/k2-linux/bzImage init=/nix/store/s2-nixos-system/init loglevel=4
  initrd /nix/store/k2-linux/initrd
}

}
"""


def write(tmp_path, default="0", env=None, cfg=NIXOS_CFG):
    path = tmp_path / "grub.cfg"
    path.write_text(cfg.replace("DEFAULT", default))
    if env is not None:
        grub.write_env(tmp_path / "grubenv", env)
    return path


@pytest.mark.parametrize("default,env,boots", [
    ("0", {}, "/nix/store/s3-nixos-system"),  # "NixOS - Default"
    ("0", {"next_entry": "NixOS - All configurations>NixOS - Configuration 2 (2026-11-30 - 26.05)"},
     "/nix/store/s2-nixos-system"),  # grub-reboot's one-shot
    ("0", {"next_entry": ""}, "/nix/store/s3-nixos-system"),  # a used one-shot
    ("0", {"next_entry": "no such entry"}, "/nix/store/s3-nixos-system"),  # unknown: entry 0
    ("1", {}, "/nix/store/s3-nixos-system"),  # a submenu's index: its first entry
    ('"${saved_entry}"', {"saved_entry": "NixOS - All configurations>NixOS - Configuration 2 (2026-11-30 - 26.05)"},
     "/nix/store/s2-nixos-system"),  # boot.loader.grub.default = "saved"
])
def test_grub_boots_what_nixos_grub_cfg_says(tmp_path, default, env, boots):
    assert grub.boot(write(tmp_path, default, env)).toplevel == boots


def test_a_one_shot_entry_is_used_once(tmp_path):
    path = write(tmp_path, env={"next_entry": "NixOS - All configurations>NixOS - Configuration 2 (2026-11-30 - 26.05)",
                                "saved_entry": "x"})
    assert grub.boot(path).toplevel == "/nix/store/s2-nixos-system"
    assert grub.read_env(tmp_path / "grubenv") == {"next_entry": "", "saved_entry": "x"}  # save_env next_entry
    assert grub.boot(path).toplevel == "/nix/store/s3-nixos-system"
    assert (tmp_path / "grubenv").stat().st_size == 1024


def test_without_the_one_shot_stanza_next_entry_is_ignored(tmp_path):
    cfg = NIXOS_CFG.replace("save_env next_entry", "")
    path = write(tmp_path, env={"next_entry": "NixOS - All configurations>NixOS - Configuration 2 (2026-11-30 - 26.05)"},
                 cfg=cfg)
    assert grub.boot(path).toplevel == "/nix/store/s3-nixos-system"


def test_peeking_changes_nothing(tmp_path):
    env = {"next_entry": "NixOS - All configurations>NixOS - Configuration 2 (2026-11-30 - 26.05)"}
    path = write(tmp_path, env=env)
    assert grub.default_entry(path).toplevel == "/nix/store/s3-nixos-system"
    assert grub.choose(path, consume=False).toplevel == "/nix/store/s2-nixos-system"
    assert grub.read_env(tmp_path / "grubenv") == env


def test_the_environment_block_round_trips_as_grub_editenv_writes_it(tmp_path):
    path = tmp_path / "grubenv"
    grub.write_env(path, {"a": "1", "weird": "back\\slash\nnewline"})
    raw = path.read_bytes()
    assert raw.startswith(b"# GRUB Environment Block\na=1\nweird=back\\\\slash\\nnewline\n") and len(raw) == 1024
    assert grub.read_env(path) == {"a": "1", "weird": "back\\slash\nnewline"}


def test_the_standin_writes_grub_cfg_the_emulation_reads(tmp_path, monkeypatch):
    """install_grub's output parses to the entries it was given (the two stand-ins agree)."""
    top = tmp_path / "system"
    (top / "kernel-params").parent.mkdir(parents=True)
    (top / "kernel-params").write_text("loglevel=4 x=1")
    (top / "nixos-version").write_text("flakefleet-standin")
    (top / "kernel").write_text("")
    (top / "initrd").write_text("")
    entry = standin.grub_entry("NixOS - Default", str(top), "--class nixos --unrestricted")
    parsed = grub.entries(entry)
    assert [e.title for e in parsed] == ["NixOS - Default"]
    assert parsed[0].toplevel == str(top.resolve()) and parsed[0].params[-2:] == ("loglevel=4", "x=1")


def test_the_standin_flake_offers_the_disk_layouts_nixos_disko_offers():
    """Config validation reads a flake's layouts from its disko/ folder: the stand-in offers the
    same names as nixos/disko/, so a layout the real flake lacks (raid10) is refused under the
    tests too, before any resource (it was accepted while the stand-in had no such folder)."""
    from flakefleet.facts.flake import DEFAULT_FLAKE, disk_layouts, layout_firmware

    standin = Path(__file__).resolve().parent / "standin"
    assert disk_layouts(standin) == disk_layouts(DEFAULT_FLAKE) == ["bios-single-disk", "single-disk"]
    # ... and each for the same firmware, which validation and the install read from the file.
    assert {n: layout_firmware(standin, n) for n in disk_layouts(standin)} == {
        n: layout_firmware(DEFAULT_FLAKE, n) for n in disk_layouts(DEFAULT_FLAKE)} == {
        "bios-single-disk": "bios", "single-disk": "uefi"}
