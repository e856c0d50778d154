"""How the program scales with fleet size: the real __main__.py under Pulumi mocks.

    .venv/bin/python bench/plan_scale.py [sizes...]     # default: 10 100 1000
    .venv/bin/python bench/plan_scale.py --autoscaled [workers...]   # default: 10 1000 10000

Each size runs in a fresh interpreter so peak memory is that size's own, against the offline
stand-in flake. Prints a Markdown table: systems evaluated and the evaluation time with an
empty cache and a warm one, resources registered, the program's wall time (warm cache), peak
RSS, time per resource (flat when registration grows linearly with hosts), and the floor: the
same number of bare resources (no inputs, no dependencies) registered under the same mocks in a
fresh interpreter, as Commands and as the program's own resource types, and the program's cost
over each.
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

import pulumi

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
        {"name": "arm", "role": "worker", "instance_type": "m7g.xlarge", "arch": "aarch64", "build": "target", "count": workers // 2,
         "ip_block": 4},
    ]
    return {
        "aws:region": "eu-west-1",
        "flakefleet:cluster": json.dumps({"name": "bench", "pod_cidr": "10.64.0.0/14"}),  # 1,024 nodes
        "flakefleet:network": json.dumps({"az_count": 3, "admin_cidrs": ["10.200.0.0/16"]}),
        "flakefleet:pools": json.dumps(pools),
        "flakefleet:delivery": json.dumps({"authorized_keys": [DEPLOY_KEY]}),
    }


def autoscaled_config(workers: int) -> dict[str, str]:
    """3 control planes and one autoscaled pool of up to `workers` (issue 28): no host of its own."""
    config = fleet_config(6)
    pools = [json.loads(config["flakefleet:pools"])[0],
             {"name": "spot", "role": "worker", "instance_type": "m7i.xlarge", "autoscaling": {"min": 0, "max": workers}}]
    return {**config, "flakefleet:pools": json.dumps(pools),
            "flakefleet:cluster": json.dumps({"name": "bench", "pod_cidr": "100.64.0.0/10"})}  # 16,384 nodes


FLOOR_TYPES = {"tls:index/privateKey:PrivateKey": "key", "aws:ec2/instance:Instance": "instance"}


def bare_floor(counts: dict[str, int]) -> float:
    """Seconds to register bare resources (no inputs, no dependencies, no outputs used) under the
    same mocks in a fresh interpreter: `counts` maps "key"/"instance"/"command" to how many."""
    import pulumi_aws as aws
    import pulumi_command as command
    import pulumi_tls as tls
    from pulumi.runtime.settings import SETTINGS
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from tests.harness import FleetMocks, RecordingMonitor

    make = {
        "key": lambda name: tls.PrivateKey(name, algorithm="ED25519"),  # its one required input
        "instance": aws.ec2.Instance,
        "command": command.local.Command,
    }
    monitor = RecordingMonitor(FleetMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="flakefleet", stack="floor", preview=False, monitor=monitor)
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()
    start = time.perf_counter()
    _sync_await(run_pulumi_func(lambda: [make[t](f"{t}-{i}") for t, n in counts.items() for i in range(n)]))
    elapsed = time.perf_counter() - start
    assert len(monitor.records) == sum(counts.values())
    return elapsed


def measure_autoscaled(workers: int) -> dict:
    """The whole plan of a stack whose workers are one autoscaled pool: validation, evaluation (cold
    cache) and the program, in one fresh interpreter."""
    from tests.harness import run_program

    with tempfile.TemporaryDirectory() as cache:
        os.environ.update(FLAKEFLEET_FLAKE=str(STANDIN), FLAKEFLEET_CACHE_DIR=cache)
        start = time.perf_counter()
        run = run_program(autoscaled_config(workers), stack="bench")
        wall = time.perf_counter() - start
    return {"workers": workers, "resources": len(run.resources), "wall_s": wall,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_one(hosts: int) -> dict:
    """Evaluate the fleet's systems with an empty cache and again warm, then run the program once."""
    from flakefleet.config import parse_stack_config
    from flakefleet.plan.inventory import plan_inventory
    from flakefleet.plan.specs import system_specs
    from flakefleet.nixos.evaluate import evaluate_systems
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
    kinds = [FLOOR_TYPES.get(r.type, "command") for r in run.resources]
    return {
        "floor_counts": {k: kinds.count(k) for k in ("key", "instance", "command")},
        "hosts": hosts,
        "resources": len(run.resources),
        "systems": len(run.exports["systems"]),
        "eval_cold_s": evals[0],
        "eval_warm_s": evals[1],
        "wall_s": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def fresh(*args: str) -> dict | float:
    """One measurement in a fresh interpreter."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(measure_one(int(argv[1]))))
        return
    if argv[:1] == ["--floor"]:
        print(json.dumps(bare_floor(json.loads(argv[1]))))
        return
    if argv[:1] == ["--autoscaled-one"]:
        print(json.dumps(measure_autoscaled(int(argv[1]))))
        return
    if argv[:1] == ["--autoscaled"]:
        print("| autoscaled workers (max) | resources | whole plan (s) | peak RSS (MiB) |")
        print("|---:|---:|---:|---:|")
        for n in [int(a) for a in argv[1:]] or [10, 1000, 10000]:
            r = fresh("--autoscaled-one", str(n))
            print(f"| {r['workers']} | {r['resources']} | {r['wall_s']:.2f} | {r['peak_rss_mib']:.0f} |")
        return
    sizes = [int(a) for a in argv] or [10, 100, 1000]
    rows = []
    for n in sizes:
        row = fresh("--one", str(n))
        # Two floors: as many bare Commands as the program registers, and the program's own
        # resource types (host keys, instances, Commands: an aws Instance has ~80 outputs).
        row["floor_s"] = fresh("--floor", json.dumps({"command": row["resources"]}))
        row["type_floor_s"] = fresh("--floor", json.dumps(row["floor_counts"]))
        rows.append(row)
    print("| hosts | systems | eval, cold cache (s) | eval, warm (s) | resources | program (s) | peak RSS (MiB) "
          "| ms per resource | resources per host | bare Commands (s) | program / that | bare, same types (s) "
          "| program / that |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['hosts']} | {r['systems']} | {r['eval_cold_s']:.3f} | {r['eval_warm_s']:.4f} | {r['resources']} | "
            f"{r['wall_s']:.2f} | {r['peak_rss_mib']:.0f} | {1000 * r['wall_s'] / r['resources']:.2f} | "
            f"{r['resources'] / r['hosts']:.2f} | {r['floor_s']:.2f} | {r['wall_s'] / r['floor_s']:.2f} | "
            f"{r['type_floor_s']:.2f} | {r['wall_s'] / r['type_floor_s']:.2f} |"
        )
    per_resource = {r["hosts"]: r["wall_s"] / r["resources"] for r in rows}
    if 100 in per_resource and 1000 in per_resource:
        print(f"\nper-resource cost, 1000 hosts over 100 hosts: {per_resource[1000] / per_resource[100]:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
