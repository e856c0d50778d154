"""How the program scales with fleet size: the real __main__.py under Pulumi mocks.

    .venv/bin/python bench/plan_scale.py [sizes...]     # default: 10 100 1000

Each size runs in a fresh interpreter so peak memory is that size's own. Prints a Markdown
table: hosts, resources registered, wall time, peak RSS, and time per resource (flat when
registration grows linearly with hosts).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fleet_config(hosts: int) -> dict[str, str]:
    """3 control planes over 3 zones; the rest split between an x86 and an arm worker pool."""
    workers = hosts - 3
    pools = [
        {"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 3, "ip_block": 1},
        {"name": "x86", "role": "worker", "instance_type": "m7i.xlarge", "count": workers - workers // 2, "ip_block": 2},
        {"name": "arm", "role": "worker", "instance_type": "m7g.xlarge", "arch": "aarch64", "count": workers // 2,
         "ip_block": 4},
    ]
    return {
        "aws:region": "eu-west-1",
        "flakefleet:cluster": json.dumps({"name": "bench"}),
        "flakefleet:network": json.dumps({"az_count": 3, "admin_cidrs": ["10.200.0.0/16"]}),
        "flakefleet:pools": json.dumps(pools),
    }


def measure_one(hosts: int) -> dict:
    from tests.harness import run_program

    start = time.perf_counter()
    run = run_program(fleet_config(hosts), stack="bench")
    wall = time.perf_counter() - start
    assert len(run.exports["nodes"]) == hosts
    return {
        "hosts": hosts,
        "resources": len(run.resources),
        "wall_s": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(measure_one(int(argv[1]))))
        return
    sizes = [int(a) for a in argv] or [10, 100, 1000]
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| hosts | resources | wall (s) | peak RSS (MiB) | ms per resource | resources per host |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['hosts']} | {r['resources']} | {r['wall_s']:.2f} | {r['peak_rss_mib']:.0f} | "
            f"{1000 * r['wall_s'] / r['resources']:.2f} | {r['resources'] / r['hosts']:.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
