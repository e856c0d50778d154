"""Delivery fan-out on real test hosts: 1, 4 and 8 hosts delivered in parallel.

    sudo .venv/bin/python bench/deliver_fanout.py [sizes...]     # default: 1 4 8

Each size gets fresh test hosts (empty stores). Prints a Markdown table: wall time of the first
delivery and its ratio to one host, paths and bytes copied per host on the first delivery,
and the same for an unchanged redelivery (which must copy nothing and activate nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flakefleet.deliver import K3S_DROP_IN_PATH, PLAN_ENV, SIGNING_KEY_ENV, DeliveryPlan, FileSpec  # noqa: E402
from flakefleet.nixos import AGENT_TOKEN  # noqa: E402
from flakefleet.systems import evaluate_systems  # noqa: E402
from tests.conftest import OFFLINE_NIX_CONFIG  # noqa: E402
from tests.testhosts import prerequisites, running_fleet  # noqa: E402

PAYLOAD_KIB = 4096


def system(cache: Path):
    spec = {
        "schema": 1, "cluster": "bench", "pool": "fanout", "role": "worker", "hardware": "metal",
        "system": "x86_64-linux", "api_endpoint": "https://127.0.0.51:6443", "tls_sans": [],
        "pod_cidr": "10.42.0.0/16", "service_cidr": "10.43.0.0/16", "k3s_channel": "stable", "labels": {},
        "taints": [], "authorized_keys": [], "trusted_public_keys": [], "host": None,
        "standin_payload_kib": PAYLOAD_KIB, "nonce": time.time_ns(),  # a new system each run: a cold copy
    }  # fmt: skip
    systems, _ = evaluate_systems(ROOT / "tests" / "standin", {"fanout": spec}, cache)
    return systems["fanout"]


def deliver_all(fleet, hosts, sys_):
    def one(host):
        plan = DeliveryPlan(host=host.name, address=host.address, port=host.port, user="root", host_key=host.host_key,
                            system=sys_.out, drv=sys_.drv, identity_file=str(fleet.client_key),
                            files=(FileSpec("/etc/flakefleet/host.json", content=json.dumps({"name": host.name})),
                                   FileSpec(K3S_DROP_IN_PATH, content=json.dumps({"node-name": host.name})),
                                   FileSpec(AGENT_TOKEN[0], secret_env=AGENT_TOKEN[1])))
        env = {**os.environ, PLAN_ENV: plan.to_json(), SIGNING_KEY_ENV: fleet.signing_secret, "PYTHONPATH": str(ROOT),
               AGENT_TOKEN[1]: "bench-agent-token"}
        proc = subprocess.run([sys.executable, "-m", "flakefleet.deliver"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    start = time.perf_counter()
    with ThreadPoolExecutor(len(hosts)) as pool:
        reports = list(pool.map(one, hosts))
    return time.perf_counter() - start, reports


def main(argv: list[str]) -> None:
    missing = prerequisites()
    if missing:
        sys.exit(f"test hosts need: {', '.join(missing)}")
    os.environ["NIX_CONFIG"] = "\n".join(filter(None, [os.environ.get("NIX_CONFIG"), OFFLINE_NIX_CONFIG]))
    sizes = [int(a) for a in argv] or [1, 4, 8]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sys_ = system(Path(tmp) / "cache")
        for n in sizes:
            addresses = {f"b{n}-{i}": f"127.0.0.{51 + i}" for i in range(n)}
            with running_fleet(Path(tmp) / f"fleet-{n}", addresses) as (fleet, hosts):
                first, first_reports = deliver_all(fleet, list(hosts.values()), sys_)
                again, again_reports = deliver_all(fleet, list(hosts.values()), sys_)
            shutil.rmtree(fleet.root, ignore_errors=True)
            rows.append((n, first, first_reports, again, again_reports))
    base = rows[0][1] if rows and rows[0][0] == 1 else None
    print("| hosts | first delivery (s) | ratio to 1 host | paths / bytes copied per host | "
          "unchanged redelivery (s) | paths / bytes copied | activated |")
    print("|---:|---:|---:|---|---:|---|---|")
    for n, first, fr, again, ar in rows:
        ratio = f"{first / base:.2f}" if base else "-"
        print(f"| {n} | {first:.2f} | {ratio} | {fr[0]['paths_copied']} / {fr[0]['bytes_copied']:,} | {again:.2f} | "
              f"{sum(r['paths_copied'] for r in ar)} / {sum(r['bytes_copied'] for r in ar)} | "
              f"{'no' if all(r['outcome'] == 'up to date' for r in ar) else 'YES'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
