"""The VM tier: a qemu guest (software emulation) with a real Debian kernel and a real GRUB on a
BIOS disk, delivered to by the real runner. What only a kernel and a boot loader show:

- GRUB reads NixOS' grub.cfg (as the stand-in's install-grub writes it) and the environment block
  `grub-reboot` writes: it boots the one-shot entry once and clears it, exactly as the nspawn
  machines' boot loader (tests/machines/grub.py) predicts from the same two files;
- a one-shot boot that never comes up (a kernel panic) has used the entry up: a reset boots the
  default, the confirmed generation;
- the runner's reboot path end to end: boot-stage, grub-reboot, reboot, check-boot, confirm-boot.

A handful of boots (five), each about a minute of emulated machine: marker `vm`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from flakefleet.nixos.evaluate import evaluate_systems
from flakefleet.plan.contract import PLAN_ENV, ROLLED_BACK, DeliveryPlan
from tests.conftest import STANDIN_FLAKE
from tests.machines import grub
from tests.machines.vm import KERNEL_PARAMS, booted_guest, ssh, wait_ssh
from tests.test_delivery_hosts import SECRET
from tests.test_health_hosts import files, spec
from tests.testhosts import run_as_deployer

pytestmark = pytest.mark.vm
ADDRESS = "127.0.0.131"


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    with booted_guest("vm0", ADDRESS, tmp_path_factory.mktemp("vm")) as booted:
        yield booted


def system_specs(image) -> dict:
    """Stand-in systems that boot the guest's own kernel, each with its own kernel parameters."""
    real = {"standin_kernel_image": str(image.kernel), "standin_initrd": str(image.initrd)}
    params = {
        "a": KERNEL_PARAMS + " flakefleet.test=a",
        "b": KERNEL_PARAMS + " flakefleet.test=b",
        # A kernel that cannot start its init: the boot never comes up (panic, no reboot).
        "broken": KERNEL_PARAMS + " flakefleet.test=broken init=/bin/false",
        "d": KERNEL_PARAMS + " flakefleet.test=d",
    }
    return {k: spec(k, standin_kernel="6.1.0-vm", standin_kernel_params=p, **real) for k, p in params.items()}


def deliver(fleet, vm, system, **overrides):
    fields = dict(host=vm.name, address=vm.address, port=vm.port, user="root", host_key=vm.host_key,
                  system=system.out, drv=system.drv, files=files(vm.name, vm.address, "worker"),
                  identity_file=str(fleet.client_key), boot_timeout_s=900, health_timeout_s=600,
                  deadman_margin_s=120, settle_s=2)
    plan = DeliveryPlan(**{**fields, **overrides})
    return run_as_deployer(fleet, ["flakefleet.delivery.runner"],
                           {PLAN_ENV: plan.to_json(), "FLAKEFLEET_SECRET_AGENT_TOKEN": SECRET}, timeout=2400)


def cmdline(fleet, vm) -> str:
    return ssh(vm, fleet, "cat /proc/cmdline").stdout


def boot_files(fleet, vm, tmp: Path) -> Path:
    """Copies of the guest's grub.cfg and grubenv, for the emulation to read."""
    out = ssh(vm, fleet, "base64 -w0 /boot/grub/grub.cfg; echo; base64 -w0 /boot/grub/grubenv").stdout.split()
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "grub.cfg").write_bytes(base64.b64decode(out[0]))
    (tmp / "grubenv").write_bytes(base64.b64decode(out[1]))
    return tmp / "grub.cfg"


def test_real_grub_boots_one_shot_entries_once_as_the_emulation_predicts(guest, tmp_path):
    image, fleet, vm = guest
    systems, _ = evaluate_systems(Path(STANDIN_FLAKE), system_specs(image), tmp_path / "cache")

    # A fresh machine (Debian's kernel, no NixOS system booted): both systems switch live, and
    # the confirmed one's `switch-to-configuration boot` writes NixOS' grub.cfg.
    for key in ("a", "b"):
        proc = deliver(fleet, vm, systems[key])
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.splitlines()[-1])["outcome"] == "activated"
    cfg = boot_files(fleet, vm, tmp_path / "before")
    assert grub.default_entry(cfg).toplevel == systems["b"].out

    # One-shot: generation 1 (a), with the real grub-reboot; the emulation's prediction first.
    title = next(e.title for e in grub.entries(cfg.read_text()) if "Configuration 1 " in e.title)
    assert ssh(vm, fleet, f"grub-reboot '{title}'").returncode == 0
    cfg = boot_files(fleet, vm, tmp_path / "oneshot")
    assert grub.read_env(cfg.with_name("grubenv"))["next_entry"] == title
    predicted = grub.boot(cfg)  # consumes the copy's entry, as GRUB will on the disk
    assert predicted.toplevel == systems["a"].out
    boots = vm.boots
    ssh(vm, fleet, "systemctl reboot --no-block")
    wait_ssh(vm, fleet)
    assert vm.boots == boots + 1
    assert f"init={systems['a'].out}/init" in cmdline(fleet, vm) and "flakefleet.test=a" in cmdline(fleet, vm)
    assert ssh(vm, fleet, "readlink /run/booted-system").stdout.strip() == systems["a"].out
    after = boot_files(fleet, vm, tmp_path / "after")
    assert grub.read_env(after.with_name("grubenv")) == grub.read_env(cfg.with_name("grubenv"))  # cleared alike
    assert grub.read_env(after.with_name("grubenv"))["next_entry"] == ""

    # A new kernel command line: the reboot path. The one-shot boot never comes up; after a
    # reset GRUB boots the default (the one-shot was used by the boot that hung).
    proc = deliver(fleet, vm, systems["broken"], boot_timeout_s=90)
    assert proc.returncode == ROLLED_BACK, proc.stderr
    assert "did not come back within 90s after rebooting into" in proc.stderr
    vm.reset()
    wait_ssh(vm, fleet)
    assert "flakefleet.test=b" in cmdline(fleet, vm)  # the confirmed generation, b
    again = deliver(fleet, vm, systems["broken"], boot_timeout_s=90)
    assert again.returncode == ROLLED_BACK, again.stderr
    assert f"fell back on a reset after its boot into {systems['broken'].out} was never confirmed" in again.stderr

    # And the whole reboot path with a kernel command line that boots.
    proc = deliver(fleet, vm, systems["d"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["outcome"] == "rebooted"
    assert "flakefleet.test=d" in cmdline(fleet, vm)
    final = boot_files(fleet, vm, tmp_path / "final")
    assert grub.default_entry(final).toplevel == systems["d"].out
    assert grub.read_env(final.with_name("grubenv")).get("next_entry", "") == ""
