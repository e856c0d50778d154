"""`make demo` from nothing with the real Kubernetes API and with the stand-in's own (issue 37):
what the real control plane adds to a newcomer's first command.

    .venv/bin/python bench/demo_api.py [RUNS]

Needs root, the demo's prerequisites and the binaries scripts/kubernetes.sh builds. Runs, RUNS
times each and alternately (default 3): `scripts/demo.py down` then `scripts/demo.py up`
without the Pulumi engine, once with the binaries (the API is etcd, kube-apiserver and
kube-controller-manager on cp-0) and once with FLAKEFLEET_CACHE pointed at an empty directory
(no binaries: the stand-in k3s answers). The demo's state is a directory of this run's own, and
it is brought down at the end. Prints a Markdown table (min / median / max seconds of `up`).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scripts" / "demo.py"


def without_engine() -> str:
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "pulumi").exists())


def demo(command: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, str(DEMO), command], cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"demo {command} failed: {res.stderr.strip() or res.stdout[-2000:]}")
    return time.perf_counter() - start


def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="flakefleet-bench-") as tmp:
        base = {**os.environ, "PATH": without_engine(), "FLAKEFLEET_DEMO_DIR": str(Path(tmp) / "demo")}
        sides = {"real API (binaries built)": base,
                 "stand-in API (no binaries)": {**base, "FLAKEFLEET_CACHE": str(Path(tmp) / "empty")}}
        times: dict[str, list[float]] = {name: [] for name in sides}
        try:
            for _ in range(runs):
                for name, env in sides.items():
                    demo("down", env)
                    times[name].append(demo("up", env))
        finally:
            demo("down", base)
    print("| `scripts/demo.py up` from nothing | runs | min s | median s | max s |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {len(values)} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
