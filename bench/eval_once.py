"""One evaluation per pool (issue 36): what evaluating a stack's systems costs when the toplevel,
the boot files, the k3s links and the pull agent are each derived from the spec (four module
system evaluations per pool, as before) and when they come from one evaluation
(flakefleet/nixos/evaluate.nix, now).

    FLAKEFLEET_NIXPKGS_LIB=<nixpkgs lib/> .venv/bin/python bench/eval_once.py

The module system is nixpkgs' real lib when FLAKEFLEET_NIXPKGS_LIB points at one (tier 5: a
fetched nix-community/nixpkgs.lib), else tests/nixlib's stand-in; the NixOS options are
tests/nixlib's and the toplevel tests/nixlib/nixos-build.nix's, so the figures count our modules'
evaluation, not nixpkgs' own modules (which this machine does not have). Counts are Nix's
NIX_SHOW_STATS (function calls, thunks); seconds are the best of three wall times of one
`nix-instantiate --eval --strict`. Prints a Markdown table for docs/benchmarks.md.
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
from flakefleet.config.stackfile import read_stack_file  # noqa: E402
from flakefleet.plan.inventory import plan_inventory  # noqa: E402
from flakefleet.plan.specs import system_specs  # noqa: E402
from tests.test_nix_modules import matrix_specs  # noqa: E402

MODES = ("per-value", "once")


def stack_specs(name: str) -> dict[str, dict]:
    raw = read_stack_file(name)
    cfg = parse_stack_config(raw, raw.get("aws:region"))
    return system_specs(cfg, plan_inventory(cfg))


def measure(lib: str, specs: dict, mode: str) -> tuple[int, int, float]:
    """(function calls, thunks, best wall seconds of three) of evaluating `specs` in `mode`."""
    with tempfile.TemporaryDirectory() as tmp:
        specs_file, stats_file = Path(tmp) / "specs.json", Path(tmp) / "stats.json"
        specs_file.write_text(json.dumps(specs))
        expr = (f"import {ROOT}/tests/nixlib/eval-once.nix {{ lib = import {lib}; flake = {ROOT}/nixos; "
                f"specsFile = {json.dumps(str(specs_file))}; mode = {json.dumps(mode)}; }}")
        env = {**os.environ, "NIX_SHOW_STATS": "1", "NIX_SHOW_STATS_PATH": str(stats_file)}
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
                           check=True, capture_output=True, env=env)
            best = min(best, time.perf_counter() - start)
        stats = json.loads(stats_file.read_text())
    return stats["nrFunctionCalls"], stats["nrThunks"], best


def main() -> None:
    lib = os.environ.get("FLAKEFLEET_NIXPKGS_LIB")
    label = "nixpkgs' real lib" if lib else "stand-in (tests/nixlib)"
    lib = lib or str(ROOT / "tests" / "nixlib" / "lib.nix")
    modes = sys.argv[1:] or list(MODES)
    print("| systems | module system | evaluation | function calls | thunks | seconds |\n|---|---|---|---:|---:|---:|")
    for what, specs in (("stack `prod`", stack_specs("prod")), ("the feature matrix", matrix_specs())):
        for mode in modes:
            calls, thunks, seconds = measure(lib, specs, mode)
            print(f"| {len(specs)} of {what} | {label} | {mode} | {calls:,} | {thunks:,} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
