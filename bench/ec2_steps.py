"""What only EC2 hosts go through (issue 25), on test machines that really power off and boot
again behind a stand-in EC2 (tests/ec2hosts.py: moto's API over HTTP, the machine's power bound
to its instance's state): the host-key step (console fingerprint, ssh-keyscan, compare) and a
resize (drain, stop, modify, start, health gate, uncordon) of a worker and of the control plane.
Prints Markdown for docs/benchmarks.md. Needs root.

    sudo .venv/bin/python bench/ec2_steps.py [runs]      # default 3
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flakefleet.delivery.hostkey import TARGET_ENV  # noqa: E402
from flakefleet.plan.contract import INSTANCE_ENV, PLAN_ENV, PREVIOUS_STDOUT_ENV  # noqa: E402
from tests.conftest import OFFLINE_NIX_CONFIG, STANDIN_FLAKE  # noqa: E402
from tests.ec2hosts import REGION, standin_ec2  # noqa: E402
from tests.local_fleet import TOKENS, local_fleet, run_waves, stack  # noqa: E402
from tests.testhosts import run_as_deployer, run_command_as_deployer  # noqa: E402

HOSTS = {"cp-0": "127.0.0.161", "worker-0": "127.0.0.162", "worker-1": "127.0.0.163"}
TYPES = ("m6i.large", "m6i.xlarge")


def host_key(fleet, ec2, host, name, instance) -> float:
    target = {"host": name, "address": host.address, "port": host.port, "region": REGION}
    start = time.monotonic()
    proc = run_command_as_deployer(fleet, "./scripts/flakefleet host-key",
                                   {INSTANCE_ENV: instance, TARGET_ENV: json.dumps(target), **ec2.env})
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - start


def resize(fleet, ec2, plan, instance, have, want) -> tuple[float, dict]:
    previous = {"host": plan.host, "system": plan.system, "instance": instance, "instance_type": have}
    env = {PLAN_ENV: replace(plan, instance_type=want, region=REGION).to_json(), INSTANCE_ENV: instance,
           PREVIOUS_STDOUT_ENV: json.dumps(previous), **TOKENS, **ec2.env}
    start = time.monotonic()
    proc = run_as_deployer(fleet, ["flakefleet.delivery.runner", "--update"], env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - start, json.loads(proc.stdout.splitlines()[-1])["timings"]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    os.environ.update(FLAKEFLEET_FLAKE=STANDIN_FLAKE, NIX_CONFIG=OFFLINE_NIX_CONFIG)
    with tempfile.TemporaryDirectory() as tmp, local_fleet(Path(tmp), HOSTS) as (fleet, hosts), standin_ec2() as ec2:
        instances = {n: ec2.add(h, TYPES[0]) for n, h in hosts.items()}
        cfg, inv, _, plans = stack(hosts, fleet, settle_s=10)
        first = run_waves(fleet, cfg, inv, plans)
        assert all(r.returncode == 0 for r in first.values()), {n: r.stderr[-800:] for n, r in first.items()}
        keys = [host_key(fleet, ec2, hosts["worker-0"], "worker-0", instances["worker-0"]) for _ in range(runs)]
        rows = []
        for name in ("worker-0", "cp-0"):
            for i in range(runs):
                have, want = TYPES[i % 2], TYPES[(i + 1) % 2]
                wall, timings = resize(fleet, ec2, plans[name], instances[name], have, want)
                rows.append((name, wall, timings.get("drain", 0.0), timings.get("resize", 0.0)))
    print("| step | runs | wall (s): median (min-max) |")
    print("|---|---|---|")
    keys.sort()
    print(f"| host key (console, keyscan, compare) | {runs} | {keys[len(keys) // 2]:.2f} ({keys[0]:.2f}-{keys[-1]:.2f}) |")
    for name in ("worker-0", "cp-0"):
        walls = sorted(w for n, w, _, _ in rows if n == name)
        print(f"| resize {name} (drain, stop, modify, start, settle 10 s, uncordon) | {runs} | "
              f"{walls[len(walls) // 2]:.1f} ({walls[0]:.1f}-{walls[-1]:.1f}) |")


if __name__ == "__main__":
    main()
