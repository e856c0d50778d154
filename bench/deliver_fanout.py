"""Delivery fan-out on real test hosts: 1, 4 and 8 hosts delivered in parallel, with and without
the binary cache.

    sudo .venv/bin/python bench/deliver_fanout.py [sizes...]     # default: 1 4 8

Each size and route gets fresh test hosts (empty stores). Without the cache the deployer copies
the closure to every host over SSH; with it, the deployer publishes it once (signed, to a moto
bucket, what `flakefleet cache` does before the first wave) and the hosts substitute it over
HTTP from that bucket's layout. Prints a Markdown table: bytes leaving the deployer (store
bytes over SSH, or the one upload), wall time of the first delivery (publish included) and its
ratio to one host, and the unchanged redelivery (which must copy nothing and activate nothing).
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

from flakefleet.plan.contract import K3S_DROP_IN_PATH, PoolSpec  # noqa: E402
from flakefleet.plan.contract import PLAN_ENV, SIGNING_KEY_ENV, DeliveryPlan, FileSpec  # noqa: E402
from flakefleet.plan.specs import AGENT_TOKEN  # noqa: E402
from flakefleet.nixos.evaluate import evaluate_systems  # noqa: E402
from tests.conftest import OFFLINE_NIX_CONFIG  # noqa: E402
from tests.testhosts import prerequisites, running_fleet  # noqa: E402

PAYLOAD_KIB = 4096


def system(cache: Path):
    spec = {
        **PoolSpec(cluster="bench", pool="fanout", role="worker", hardware="metal", system="x86_64-linux",
                   api_endpoint="https://127.0.0.51:6443", authorized_keys=[]).as_json(),
        "standin_payload_kib": PAYLOAD_KIB, "nonce": time.time_ns(),  # a new system each run: a cold copy
    }
    systems, _ = evaluate_systems(ROOT / "tests" / "standin", {"fanout": spec}, cache)
    return systems["fanout"]


def deliver_all(fleet, hosts, sys_, substituters=()):
    def one(host):
        plan = DeliveryPlan(host=host.name, address=host.address, port=host.port, user="root", host_key=host.host_key,
                            system=sys_.out, drv=sys_.drv, identity_file=str(fleet.client_key),
                            files=(FileSpec("/etc/flakefleet/host.json", content=json.dumps({"name": host.name})),
                                   FileSpec(K3S_DROP_IN_PATH, content=json.dumps({"node-name": host.name})),
                                   FileSpec(AGENT_TOKEN[0], secret_env=AGENT_TOKEN[1])),
                            substituters=tuple(substituters))
        env = {**os.environ, PLAN_ENV: plan.to_json(), SIGNING_KEY_ENV: fleet.signing_secret, "PYTHONPATH": str(ROOT),
               AGENT_TOKEN[1]: "bench-agent-token"}
        proc = subprocess.run([sys.executable, "-m", "flakefleet.delivery.runner"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    start = time.perf_counter()
    with ThreadPoolExecutor(len(hosts)) as pool:
        reports = list(pool.map(one, hosts))
    return time.perf_counter() - start, reports


def one_route(tmp: Path, n: int, sys_, cached: bool) -> dict:
    """Fresh hosts; first delivery (with the publish when cached), then an unchanged one."""
    from flakefleet.plan.contract import PublishPlan
    from flakefleet.delivery.cache import publish
    from tests.cachehosts import REGION, s3_bucket, served

    addresses = {f"b{n}-{i}": f"127.0.0.{51 + i}" for i in range(n)}
    with running_fleet(tmp / f"fleet-{n}-{cached}", addresses) as (fleet, hosts), s3_bucket("bench") as bucket:
        hosts = list(hosts.values())
        with served(bucket, "bench", "127.0.0.70") as cache:
            start = time.perf_counter()
            sent = 0
            if cached:
                plan = PublishPlan("fanout", sys_.out, sys_.drv, "bench", REGION)
                sent = publish(plan, fleet.signing_secret, bucket).uploaded_bytes
            route = (cache.url,) if cached else ()
            _, first = deliver_all(fleet, hosts, sys_, route)
            first_s = time.perf_counter() - start
            again_s, again = deliver_all(fleet, hosts, sys_, route)
            served_bytes = cache.bytes_served
        shutil.rmtree(fleet.root, ignore_errors=True)
    return {"hosts": n, "cached": cached, "sent": sent + sum(r["bytes_copied"] for r in first), "first_s": first_s,
            "again_s": again_s, "served": served_bytes, "again_copied": sum(r["bytes_copied"] for r in again),
            "again_activated": any(r["outcome"] != "up to date" for r in again)}


def main(argv: list[str]) -> None:
    missing = prerequisites()
    if missing:
        sys.exit(f"test hosts need: {', '.join(missing)}")
    os.environ["NIX_CONFIG"] = "\n".join(filter(None, [os.environ.get("NIX_CONFIG"), OFFLINE_NIX_CONFIG]))
    sizes = [int(a) for a in argv] or [1, 4, 8]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FLAKEFLEET_CACHE_DIR"] = str(Path(tmp) / "cache")
        sys_ = system(Path(tmp) / "cache")
        for cached in (False, True):
            for n in sizes:
                rows.append(one_route(Path(tmp), n, sys_, cached))
    print("| route | hosts | bytes leaving the deployer | first delivery (s) | ratio to 1 host | bytes hosts fetched "
          "from the cache | unchanged redelivery (s) | bytes sent / activated |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        base = next(b for b in rows if b["cached"] == r["cached"] and b["hosts"] == min(sizes))
        print(f"| {'cache' if r['cached'] else 'SSH copy'} | {r['hosts']} | {r['sent']:,} | {r['first_s']:.2f} | "
              f"{r['first_s'] / base['first_s']:.2f} | {r['served']:,} | {r['again_s']:.2f} | "
              f"{r['again_copied']} / {'YES' if r['again_activated'] else 'no'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
