"""A rolling kernel update on test machines that really reboot (tests/machines: systemd in nspawn,
GRUB's choice emulated at each boot): 1 control plane and 4 workers (batches of 2). Prints each
host's phases (drain, boot stage, reboot, confirm), each wave's wall time, the machines' own boot
and reboot times, and with --vm one qemu guest's boot (a real kernel and GRUB, emulated CPU), as
Markdown for docs/benchmarks.md. Needs root.

    sudo .venv/bin/python bench/rolling_reboot.py [--vm]

The health gate is the stack's default (k3s up 10 s without a restart); the stand-in kubelets
renew their Lease every second (a real kubelet: every 10 s, so up to 10 s more per wave).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flakefleet.config import parse_stack_config  # noqa: E402
from flakefleet.config.stackfile import read_stack_file  # noqa: E402
from flakefleet.nixos.evaluate import evaluate_systems  # noqa: E402
from flakefleet.plan.contract import PLAN_ENV  # noqa: E402
from flakefleet.plan.hostplans import delivery_plans  # noqa: E402
from flakefleet.plan.inventory import plan_inventory  # noqa: E402
from flakefleet.plan.rollout import waves  # noqa: E402
from flakefleet.plan.specs import system_specs  # noqa: E402
from tests.conftest import OFFLINE_NIX_CONFIG, STANDIN_FLAKE  # noqa: E402
from tests.local_fleet import TOKENS  # noqa: E402
from tests.machines.machine import running_machines  # noqa: E402
from tests.testhosts import run_as_deployer  # noqa: E402

HOSTS = {"cp-0": "127.0.0.141", **{f"worker-{i}": f"127.0.0.{142 + i}" for i in range(4)}}


def plans_for(fleet, hosts, kernel: str):
    raw = read_stack_file("local")
    raw["flakefleet:pools"] = json.dumps([
        {"name": "cp", "role": "control-plane", "provider": "metal", "hosts": [
            {"name": "cp-0", "address": HOSTS["cp-0"], "ssh_port": 2222, "ssh_host_key": hosts["cp-0"].host_key}]},
        {"name": "workers", "role": "worker", "provider": "metal", "hosts": [
            {"name": n, "address": a, "ssh_port": 2222, "ssh_host_key": hosts[n].host_key}
            for n, a in HOSTS.items() if n.startswith("worker")]}])
    raw["flakefleet:delivery"] = json.dumps({**json.loads(raw["flakefleet:delivery"]), "max_parallel": 2})
    raw["flakefleet:signing_key"] = fleet.signing_secret
    cfg = parse_stack_config(raw, None, {"flakefleet:signing_key"})
    inv = plan_inventory(cfg)
    specs = {k: {**s, "standin_kernel": kernel} for k, s in system_specs(cfg, inv).items()}
    systems, _ = evaluate_systems(Path(STANDIN_FLAKE), specs)
    return cfg, inv, delivery_plans(cfg, inv, systems, {n: h.host_key for n, h in hosts.items()})


def roll(fleet, cfg, inv, plans):
    rows, walls = {}, []
    for number, wave in enumerate(waves(cfg, inv)):
        start = time.perf_counter()
        with ThreadPoolExecutor(len(wave)) as pool:
            done = dict(pool.map(lambda h: (h.name, run_as_deployer(
                fleet, ["flakefleet.delivery.runner"], {PLAN_ENV: plans[h.name].to_json(), **TOKENS}, timeout=900)), wave))
        walls.append((number, [h.name for h in wave], time.perf_counter() - start))
        for name, proc in done.items():
            if proc.returncode != 0:
                raise SystemExit(f"{name}: {proc.stderr}")
            rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rows, walls


def machines_part() -> None:
    start = time.perf_counter()
    with running_machines(Path(tempfile.mkdtemp(prefix="bench-reboot-")), HOSTS) as (fleet, hosts):
        booted = time.perf_counter() - start
        cfg, inv, plans = plans_for(fleet, hosts, "6.12.0")
        roll(fleet, cfg, inv, plans)  # the fleet on the first kernel (live: fresh machines)
        reboots = {}
        for name, host in hosts.items():  # each machine booted from it: a real reboot each
            t = time.perf_counter()
            host.reboot()
            reboots[name] = time.perf_counter() - t
        cfg, inv, plans = plans_for(fleet, hosts, "6.13.0")
        rows, walls = roll(fleet, cfg, inv, plans)
    print(f"{len(HOSTS)} machines booted to `running` with sshd up in {booted:.1f} s (at once); "
          f"`systemctl reboot` back to `running`: {min(reboots.values()):.1f}-{max(reboots.values()):.1f} s\n")
    print("| host | outcome | drain | boot stage | reboot | confirm | total (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        t = r["timings"]
        print(f"| {name} | {r['outcome']} | {t.get('drain', 0):.2f} | {t.get('boot-stage', 0):.2f} | "
              f"{t.get('reboot', 0):.2f} | {t.get('confirm', 0):.2f} | {t.get('total', 0):.2f} |")
    print("\n| wave | hosts | wall (s) |\n|---:|---|---:|")
    for number, names, wall in walls:
        print(f"| {number} | {', '.join(names)} | {wall:.2f} |")
    print(f"\nwhole rolling kernel update: {sum(w for _, _, w in walls):.1f} s")


def vm_part() -> None:
    from tests.machines.vm import VM, ssh, vm_fleet, vm_image, wait_ssh

    t = time.perf_counter()
    image = vm_image()
    built = time.perf_counter() - t
    fleet = vm_fleet(image)
    vm = VM("bench-vm", "127.0.0.149", 2222, Path(tempfile.mkdtemp(prefix="bench-vm-")), image)
    start = time.perf_counter()
    vm.start()
    try:
        wait_ssh(vm, fleet)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        ssh(vm, fleet, "systemctl reboot --no-block")
        time.sleep(1)  # let it go down before polling for it to come back (bench only)
        wait_ssh(vm, fleet)
        again = time.perf_counter() - start
    finally:
        vm.stop()
    print(f"\nqemu guest (TCG, 1 vCPU): image {'cached' if built < 5 else f'built in {built:.0f} s'}; "
          f"BIOS -> GRUB -> kernel -> sshd: {cold:.0f} s cold, {again:.0f} s for a reboot")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vm", action="store_true", help="also boot one qemu guest (slow)")
    args = parser.parse_args()
    os.environ.update(FLAKEFLEET_FLAKE=STANDIN_FLAKE, NIX_CONFIG=OFFLINE_NIX_CONFIG,
                      FLAKEFLEET_CACHE_DIR=tempfile.mkdtemp(prefix="bench-cache-"))
    machines_part()
    if args.vm:
        vm_part()


if __name__ == "__main__":
    main()
