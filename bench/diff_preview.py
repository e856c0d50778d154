"""What `flakefleet diff` and the per-pool preview lines cost (issue 15).

    .venv/bin/python bench/diff_preview.py

Part 1 (pure): a derivation graph the size of a real NixOS server system, as `nix derivation
show -r` prints it, read into a manifest; two manifests compared and rendered; the packed
manifest a stack output keeps. Part 2 (Nix): `flakefleet diff` on a repository holding the
stand-in flake with N fake packages, cold (nothing cached) and warm (both sides cached).
Prints Markdown tables for docs/benchmarks.md; best of 3 where it says so.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flakefleet.preview import cli, render  # noqa: E402
from flakefleet.preview.compare import PoolHosts, Side, compare  # noqa: E402
from flakefleet.preview.derivations import read_show  # noqa: E402
from flakefleet.preview.manifest import manifest_of  # noqa: E402
from tests.conftest import OFFLINE_NIX_CONFIG, STANDIN_FLAKE  # noqa: E402
from tests.test_diff import CP, GIT_ENV, WORKERS, stack_file  # noqa: E402

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"


def best(fn, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def synthetic_show(drvs: int, units: int, fetches: float, bump: int, seed: int) -> dict:
    """A `nix derivation show -r` document (Nix 2.8 shape) shaped like a NixOS system: packages
    with versions, their sources (fixed-output), unit derivations under system-units, one toplevel."""
    rng = random.Random(seed)

    def path(name: str) -> str:
        return "/nix/store/" + "".join(rng.choice(ALPHABET) for _ in range(32)) + f"-{name}.drv"

    body = lambda ins, fixed=False, text=None: {  # noqa: E731
        "outputs": {"out": {"path": "/nix/store/x", **({"hashAlgo": "sha256", "hash": "ab" * 32} if fixed else {})}},
        "inputDrvs": {i: ["out"] for i in ins}, "env": {"text": text} if text else {}}
    doc, packages = {}, []
    for i in range(int(drvs * (1 - fetches))):
        version = f"{i % 7}.{i % 13}.{'1' if i < bump else '0'}"
        name = f"pkg{i}-{version}"
        deps = rng.sample(packages, min(len(packages), 4))
        src = path(f"pkg{i}-{version}.tar.gz")
        doc[src] = body([], fixed=True)
        packages.append(p := path(name))
        doc[p] = body([*deps, src])
    unit_paths = []
    for u in range(units):
        unit_paths.append(up := path(f"unit-svc{u}.service"))
        doc[up] = body([rng.choice(packages)], text="[Service]\nExecStart=x\n")
    doc[units_drv := path("system-units")] = body(unit_paths)
    rng.seed(seed + bump)  # the system itself differs whenever anything in it does
    doc[top := path("nixos-system-bench-26.05")] = body([units_drv, *packages[-50:]])
    return {"doc": doc, "top": top}


def pure_part() -> list[str]:
    rows = ["| derivations in the graph | read + manifest | packed manifest | compare + render (changes) |",
            "|---|---|---|---|"]
    for drvs in (1000, 3000, 8000):
        before, after = synthetic_show(drvs, 120, 0.3, 0, 1), synthetic_show(drvs, 120, 0.3, drvs // 10, 1)
        text_doc = json.dumps(before["doc"])
        took, m_before = best(lambda: manifest_of(read_show(json.loads(text_doc)), before["top"]))
        m_after = manifest_of(read_show(after["doc"]), after["top"])
        hosts = PoolHosts(tuple((f"w-{i}", 1 + i // 10, "workers") for i in range(100)))
        sides = Side({"workers": hosts}, {"workers": m_before}), Side({"workers": hosts}, {"workers": m_after})
        took_cmp, changes = best(lambda: [render.markdown("b", "main", c := compare(*sides)), render.text("b", "main", c)])
        n = len(compare(*sides)[0].packages)
        rows.append(f"| {len(before['doc']):,} | {took * 1000:.0f} ms | {len(m_before.pack()):,} bytes "
                    f"| {took_cmp * 1000:.1f} ms ({n} packages) |")
    return rows


def repo_with(packages: int, tmp: Path) -> Path:
    root = tmp / f"repo-{packages}"
    shutil.copytree(STANDIN_FLAKE, root / "nixos")
    (root / "stacks").mkdir(parents=True)
    (root / "stacks" / "Pulumi.t.yaml").write_text(stack_file(CP, WORKERS))
    declared = json.loads((root / "nixos" / "packages.json").read_text())
    declared["packages"].update({f"pkg{i}": f"1.{i}" for i in range(packages)})
    (root / "nixos" / "packages.json").write_text(json.dumps(declared))
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env=env)
    declared["packages"].update({f"pkg{i}": f"2.{i}" for i in range(0, packages, 10)})  # a tenth bumped
    (root / "nixos" / "packages.json").write_text(json.dumps(declared))
    return root


def nix_part() -> list[str]:
    rows = ["| fake packages per system | derivations | diff, cold (evaluate + show, both sides) | diff, warm |",
            "|---|---|---|---|"]
    os.environ["NIX_CONFIG"] = "\n".join(filter(None, [os.environ.get("NIX_CONFIG"), OFFLINE_NIX_CONFIG]))
    with tempfile.TemporaryDirectory() as tmp:
        for packages in (10, 300, 1000):
            root = repo_with(packages, Path(tmp))
            os.environ["FLAKEFLEET_CACHE_DIR"] = str(Path(tmp) / f"cache-{packages}")
            start = time.perf_counter()
            _, changes = cli.diff("t", root, Path("stacks"), None, env={})
            cold = time.perf_counter() - start
            warm, _ = best(lambda: cli.diff("t", root, Path("stacks"), None, env={}))
            manifests = list(Path(os.environ["FLAKEFLEET_CACHE_DIR"]).glob("manifest-*.json"))
            drvs = max(json.loads(m.read_text())["derivations"] for m in manifests)
            rows.append(f"| {packages + 5} | {drvs:,} | {cold:.2f} s | {warm:.2f} s |")
    return rows


if __name__ == "__main__":
    print("\n".join(pure_part()))
    print()
    print("\n".join(nix_part()))
