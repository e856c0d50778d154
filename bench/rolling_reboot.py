"""A rolling reboot on test hosts: 1 control plane and 4 workers (batches of 2), every host's
kernel changed. Prints each host's phases (drain, boot stage, reboot, confirm) and each wave's
wall time as a Markdown table for docs/benchmarks.md. Needs root (test hosts).

    sudo .venv/bin/python bench/rolling_reboot.py

The reboot itself is emulated (tests/reboots.py: sshd and services stop, the boot loader's
entry is booted, sshd returns after BOOT_S seconds): the figures are flakefleet's own cost
around a reboot, not a real machine's boot time.
"""

from __future__ import annotations

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
from flakefleet.plan.contract import PLAN_ENV  # noqa: E402
from flakefleet.plan.inventory import plan_inventory  # noqa: E402
from flakefleet.plan.specs import system_specs  # noqa: E402
from flakefleet.plan.hostplans import delivery_plans  # noqa: E402
from flakefleet.plan.rollout import waves  # noqa: E402
from flakefleet.config.stackfile import read_stack_file  # noqa: E402
from flakefleet.nixos.evaluate import evaluate_systems  # noqa: E402
from tests.conftest import OFFLINE_NIX_CONFIG, STANDIN_FLAKE  # noqa: E402
from tests.local_fleet import TOKENS  # noqa: E402
from tests.reboots import Reboots  # noqa: E402
from tests.testhosts import run_as_deployer, running_fleet  # noqa: E402

HOSTS = {"cp-0": "127.0.0.91", **{f"worker-{i}": f"127.0.0.{92 + i}" for i in range(4)}}
BOOT_S = 1.0


def plans_for(fleet, hosts, kernel: str):
    raw = read_stack_file("local")
    raw["flakefleet:pools"] = json.dumps([
        {"name": "cp", "role": "control-plane", "provider": "metal", "hosts": [
            {"name": "cp-0", "address": HOSTS["cp-0"], "ssh_port": 2222, "ssh_host_key": hosts["cp-0"].host_key}]},
        {"name": "workers", "role": "worker", "provider": "metal", "hosts": [
            {"name": n, "address": a, "ssh_port": 2222, "ssh_host_key": hosts[n].host_key}
            for n, a in HOSTS.items() if n.startswith("worker")]}])
    raw["flakefleet:delivery"] = json.dumps({**json.loads(raw["flakefleet:delivery"]), "max_parallel": 2,
                                             "health_timeout_s": 30})
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
                fleet, ["flakefleet.delivery.runner"], {PLAN_ENV: plans[h.name].to_json(), **TOKENS}, timeout=600)), wave))
        walls.append((number, [h.name for h in wave], time.perf_counter() - start))
        for name, proc in done.items():
            if proc.returncode != 0:
                raise SystemExit(f"{name}: {proc.stderr}")
            rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rows, walls


def main() -> None:
    os.environ.update(FLAKEFLEET_FLAKE=STANDIN_FLAKE, NIX_CONFIG=OFFLINE_NIX_CONFIG,
                      FLAKEFLEET_CACHE_DIR=tempfile.mkdtemp(prefix="bench-cache-"))
    with running_fleet(Path(tempfile.mkdtemp(prefix="bench-reboot-")), HOSTS) as (fleet, hosts), \
            Reboots(hosts, delay=BOOT_S) as _:
        cfg, inv, plans = plans_for(fleet, hosts, "6.12.0")
        roll(fleet, cfg, inv, plans)  # the fleet on the first kernel, each host booted from it
        hosts["cp-0"].path("/etc/flakefleet/standin-nodes").write_text(" ".join(HOSTS) + "\n")
        for host in hosts.values():
            (host.root / "run" / "booted-system").symlink_to(host.current_system())
        cfg, inv, plans = plans_for(fleet, hosts, "6.13.0")
        rows, walls = roll(fleet, cfg, inv, plans)
    print(f"| host | outcome | drain | boot stage | reboot (emulated boot {BOOT_S:.0f} s) | confirm | total (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        t = r["timings"]
        print(f"| {name} | {r['outcome']} | {t.get('drain', 0):.2f} | {t.get('boot-stage', 0):.2f} | "
              f"{t.get('reboot', 0):.2f} | {t.get('confirm', 0):.2f} | {t.get('total', 0):.2f} |")
    print("\n| wave | hosts | wall (s) |\n|---:|---|---:|")
    for number, names, wall in walls:
        print(f"| {number} | {', '.join(names)} | {wall:.2f} |")
    print(f"\nwhole rolling reboot: {sum(w for _, _, w in walls):.1f} s")


if __name__ == "__main__":
    main()
