"""How the program scales with fleet size: the real __main__.py under Pulumi mocks.

    .venv/bin/python bench/plan_scale.py [sizes...]     # default: 10 100 1000

Each size runs in a fresh interpreter so peak memory is that size's own, against the offline
stand-in flake. Prints a Markdown table: systems evaluated and the evaluation time with an
empty cache and a warm one, resources registered, the program's wall time (warm cache), peak
RSS, and time per resource (flat when registration grows linearly with hosts).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standin"
DEPLOY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM bench"
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
        "flakefleet:cluster": json.dumps({"name": "bench", "pod_cidr": "10.64.0.0/14"}),  # 1,024 nodes
        "flakefleet:network": json.dumps({"az_count": 3, "admin_cidrs": ["10.200.0.0/16"]}),
        "flakefleet:pools": json.dumps(pools),
        "flakefleet:delivery": json.dumps({"authorized_keys": [DEPLOY_KEY]}),
    }


def measure_one(hosts: int) -> dict:
    """Evaluate the fleet's systems with an empty cache and again warm, then run the program once."""
    from flakefleet.config import parse_stack_config
    from flakefleet.inventory import plan_inventory
    from flakefleet.nixos import system_specs
    from flakefleet.systems import evaluate_systems
    from tests.harness import run_program

    config = fleet_config(hosts)
    with tempfile.TemporaryDirectory() as cache:
        os.environ.update(FLAKEFLEET_FLAKE=str(STANDIN), FLAKEFLEET_CACHE_DIR=cache)
        cfg = parse_stack_config(config, config["aws:region"])
        specs = system_specs(cfg, plan_inventory(cfg))
        evals = []
        for _ in range(2):
            start = time.perf_counter()
            evaluate_systems(STANDIN, specs, Path(cache))
            evals.append(time.perf_counter() - start)
        start = time.perf_counter()
        run = run_program(config, stack="bench")
        wall = time.perf_counter() - start
    assert len(run.exports["nodes"]) == hosts
    return {
        "hosts": hosts,
        "resources": len(run.resources),
        "systems": len(run.exports["systems"]),
        "eval_cold_s": evals[0],
        "eval_warm_s": evals[1],
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
    print("| hosts | systems | eval, cold cache (s) | eval, warm (s) | resources | program (s) | peak RSS (MiB) "
          "| ms per resource | resources per host |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['hosts']} | {r['systems']} | {r['eval_cold_s']:.3f} | {r['eval_warm_s']:.4f} | {r['resources']} | "
            f"{r['wall_s']:.2f} | {r['peak_rss_mib']:.0f} | {1000 * r['wall_s'] / r['resources']:.2f} | "
            f"{r['resources'] / r['hosts']:.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
