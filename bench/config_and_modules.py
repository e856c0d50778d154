"""Validation and module evaluation costs: what issues 10, 12, 16 and 24 added to every preview.

    .venv/bin/python bench/config_and_modules.py      # FLAKEFLEET_NIXPKGS_LIB=<nixpkgs lib/> adds the real one

Prints a Markdown table for docs/benchmarks.md. Each figure is one run (best of 3 for the
warm ones) on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flakefleet.config import parse_stack_config  # noqa: E402
from flakefleet.config.stackfile import read_stack_file, stack_names  # noqa: E402
from tests.test_nix_modules import CNI_SETTINGS, all_specs, combination_specs, matrix_specs  # noqa: E402

DEPLOY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM deploy"


def big_stack(workers: int) -> dict[str, str]:
    pools = [{"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 3, "ip_block": 1},
             {"name": "workers", "role": "worker", "instance_type": "m7i.xlarge", "count": workers, "ip_block": 2}]
    cfg = {"cluster": {"name": "bench", "pod_cidr": "10.64.0.0/14"}, "network": {"az_count": 3},
           "delivery": {"authorized_keys": [DEPLOY]}, "pools": pools}
    return {f"flakefleet:{k}": json.dumps(v) for k, v in cfg.items()}


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def validation_rows() -> list[str]:
    rows = []
    first = timed(lambda: parse_stack_config(big_stack(997), "eu-west-1"))  # loads botocore's EC2 model once
    rows.append(f"| 1,000-host EC2 stack, first in the process (loads botocore's instance types) | {first:.3f} |")
    rows.append(f"| 1,000-host EC2 stack, again | {timed(lambda: parse_stack_config(big_stack(997), 'eu-west-1'), 3):.3f} |")
    for name in stack_names():
        raw = read_stack_file(name)
        rows.append(f"| stack `{name}` (read + validate) | "
                    f"{timed(lambda: parse_stack_config(read_stack_file(name), raw.get('aws:region')), 3):.4f} |")
    return rows


def eval_seconds(lib: str, specs: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        specs_file = Path(tmp) / "specs.json"
        specs_file.write_text(json.dumps(specs))
        expr = (f"import {ROOT}/tests/nixlib/eval-pools.nix {{ lib = import {lib}; flake = {ROOT}/nixos; "
                f"specsFile = {json.dumps(str(specs_file))}; }}")
        start = time.perf_counter()
        subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr], check=True, capture_output=True)
        return time.perf_counter() - start


def module_rows() -> list[str]:
    libs = {"stand-in (tests/nixlib)": str(ROOT / "tests" / "nixlib" / "lib.nix")}
    if os.environ.get("FLAKEFLEET_NIXPKGS_LIB"):
        libs["nixpkgs' real lib"] = os.environ["FLAKEFLEET_NIXPKGS_LIB"]
    rows = []
    for per_host in (False, True):
        specs = all_specs(per_host)
        for label, lib in libs.items():
            rows.append(f"| {len(specs)} {'per-host' if per_host else 'shared'} systems of every stack | {label} | "
                        f"{eval_seconds(lib, specs):.2f} |")
    # Issue 16: a stack with every kind of pool (plain, four GPU pools, a workload), per CNI.
    for cni in CNI_SETTINGS:
        specs = combination_specs(CNI_SETTINGS[cni])
        for label, lib in libs.items():
            rows.append(f"| {len(specs)} systems: {cni}, GPU pools, a workload | {label} | {eval_seconds(lib, specs):.2f} |")
    # Issue 24: the feature matrix of nixos/configurations.json, with nixpkgs' declarations restated.
    specs = matrix_specs()
    for label, lib in libs.items():
        rows.append(f"| {len(specs)} systems of the feature matrix | {label} | {eval_seconds(lib, specs):.2f} |")
    return rows


if __name__ == "__main__":
    print("| validation | seconds |\n|---|---:|")
    print("\n".join(validation_rows()))
    print("\n| module lists evaluated (one nix-instantiate) | module system | seconds |\n|---|---|---:|")
    print("\n".join(module_rows()))
