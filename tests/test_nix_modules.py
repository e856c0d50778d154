"""Our NixOS modules under a module system with nixpkgs' semantics.

Every pool of every stack, as a shared closure and as per-host closures, is evaluated through
`lib.modulesFor` with the nixpkgs options our modules set declared at their nixpkgs types
(tests/nixlib/nixpkgs-options.nix). In CI the module system is our stand-in
(tests/nixlib/lib.nix), held to nixpkgs' real one by the conformance cases; with
FLAKEFLEET_NIXPKGS_LIB pointing at nixpkgs' `lib` (`make test-upstream`, tier 5) the same
checks run through the real one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flakefleet.config import parse_stack_config
from flakefleet.inventory import plan_inventory
from flakefleet.nixos import system_specs
from flakefleet.stackfile import read_stack_file, stack_names
from tests.conftest import require_tool
from tests.nix_conformance import CASES, DECLS, Case

ROOT = Path(__file__).resolve().parent.parent
NIXLIB = ROOT / "tests" / "nixlib"
STANDIN_LIB = NIXLIB / "lib.nix"
REAL_LIB = os.environ.get("FLAKEFLEET_NIXPKGS_LIB")


# The stand-in always; nixpkgs' real lib as an `upstream` case (deselected unless asked for).
MODULE_SYSTEMS = [
    pytest.param(str(STANDIN_LIB), id="standin"),
    pytest.param(REAL_LIB or "FLAKEFLEET_NIXPKGS_LIB unset", id="nixpkgs", marks=pytest.mark.upstream),
]


def lib_path(lib: str) -> str:
    if not Path(lib).exists():
        pytest.fail(f"tier 5 needs FLAKEFLEET_NIXPKGS_LIB: a directory with nixpkgs' lib/default.nix ({lib})")
    return lib


def nix_instantiate(expr: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    require_tool("nix-instantiate")
    return subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr], capture_output=True, text=True, cwd=cwd
    )


def run_case(lib: str, case: Case) -> subprocess.CompletedProcess:
    modules = " ".join(f"({m})" for m in case.modules)
    expr = (
        f"let lib = import {lib_path(lib)}; "
        f"result = lib.evalModules {{ modules = [ ({DECLS}) {modules} ]; }}; "
        f"in ({case.get}) result.config"
    )
    return nix_instantiate(expr)


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_module_system_conformance(lib, case):
    out = run_case(lib, case)
    if case.error is None:
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == case.value
    else:
        assert out.returncode != 0, f"evaluated to {out.stdout} instead of failing"
        assert case.error in out.stderr, out.stderr


# ----------------------------------------------------------------------------- our pools


def all_specs(per_host: bool) -> dict[str, dict]:
    """Every pool of every stack: `<stack>-<pool>` -> spec (per host: `<stack>-<pool>-<host>`)."""
    specs = {}
    for stack_name in stack_names():
        raw = read_stack_file(stack_name)
        if per_host:
            pools = json.loads(raw["flakefleet:pools"])
            raw["flakefleet:pools"] = json.dumps([{**p, "per_host_closures": True} for p in pools])
        cfg = parse_stack_config(raw, raw.get("aws:region"))
        for name, spec in system_specs(cfg, plan_inventory(cfg)).items():
            specs[f"{stack_name}-{name.replace('/', '-')}"] = spec
    return specs


def evaluate_pools(lib: str, flake: Path, specs: dict[str, dict] | None, tmp_path: Path,
                   extra: str = "") -> subprocess.CompletedProcess:
    """eval-pools.nix over `specs`, or over the flake's own nixosConfigurations when None."""
    specs_arg = extra
    if specs is not None:
        specs_file = tmp_path / "specs.json"
        specs_file.write_text(json.dumps(specs))
        specs_arg = f"specsFile = {json.dumps(str(specs_file))};"
    return nix_instantiate(f"import {NIXLIB}/eval-pools.nix {{ lib = import {lib_path(lib)}; flake = {flake}; {specs_arg} }}")


# What the kubelet requires under --protect-kernel-defaults (kubelet setupKernelTunables,
# pkg/kubelet/cm/container_manager_linux.go); any other value and k3s does not start.
KUBELET_PROTECTED_SYSCTLS = {
    "vm.overcommit_memory": 1,
    "vm.panic_on_oom": 0,
    "kernel.panic": 10,
    "kernel.panic_on_oops": 1,
    "kernel.keys.root_maxkeys": 1000000,
    "kernel.keys.root_maxbytes": 25000000,
}


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
@pytest.mark.parametrize("per_host", [False, True], ids=["shared", "per-host"])
def test_every_pool_of_every_stack_evaluates(lib, per_host, tmp_path):
    specs = all_specs(per_host)
    out = evaluate_pools(lib, ROOT / "nixos", specs, tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert sorted(result) == sorted(specs)
    for name, spec in specs.items():
        k3s, host = result[name], spec["host"]
        assert KUBELET_PROTECTED_SYSCTLS.items() <= k3s["sysctl"].items(), name
        assert k3s["role"] == ("server" if spec["role"] == "control-plane" else "agent"), name
        if host is None:  # a shared closure learns who it is at runtime: nothing per host inside
            assert (k3s["nodeName"], k3s["nodeIP"], k3s["clusterInit"]) == (None, None, False), name
            assert k3s["hostName"] == "", name
        else:
            assert (k3s["nodeName"], k3s["nodeIP"], k3s["hostName"]) == (host["name"], host["address"], host["name"])
            assert k3s["clusterInit"] == bool(host.get("init")), name


# nixos/mixins/per-host.nix before issue 10, with the k3sHostOptions of that time: under the
# real module system every shared pool failed with "value is null while a set was expected".
@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_flake_nixos_configurations_are_every_stack_pool_and_evaluate(lib, tmp_path):
    """`nixosConfigurations` comes from the checked-in nixos/configurations.json (a test in
    test_cli_and_docs.py keeps it current): every entry evaluates as a NixOS system."""
    out = evaluate_pools(lib, ROOT / "nixos", None, tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert sorted(result) == sorted(all_specs(per_host=False))
    assert result["staging-cp"]["role"] == "server" and result["staging-workers"]["role"] == "agent"


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_the_vm_tests_nodes_evaluate_with_what_the_test_framework_adds(lib, tmp_path):
    """`nix flake check`'s k3s-cluster nodes: our role modules plus the framework's mkDefault node
    name (which conflicted with host-facts.nix's mkDefault "" until the node module overrode it)."""
    out = evaluate_pools(lib, ROOT / "nixos", None, tmp_path, extra="vmNodes = true;")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {n: (r["role"], r["hostName"]) for n, r in result.items()} == {
        "cp0": ("server", "cp0"), "worker0": ("agent", "worker0")}
    assert all(r["nodeName"] is None for r in result.values())  # shared closures: names come from the facts


ORIGINAL_PER_HOST = """{ config, lib, ... }:
let
  host = config.flakefleet.host;
  k3sHostOptions = facts:
    { nodeName = facts.name; nodeIP = facts.address; }
    // (if facts.role != "control-plane" then { }
        else if facts.init then { clusterInit = true; }
        else { serverAddr = facts.server; });
in
lib.mkIf (host != null) {
  networking.hostName = host.name;
  environment.etc."flakefleet/host.json".text = builtins.toJSON host;
  services.k3s = k3sHostOptions host;
}
"""


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_the_original_per_host_defect_fails_evaluation(lib, tmp_path):
    """The stand-in fails where nixpkgs failed: shared pools with the pre-issue-10 mixin."""
    flake = tmp_path / "nixos"
    shutil.copytree(ROOT / "nixos", flake)
    (flake / "mixins" / "per-host.nix").write_text(ORIGINAL_PER_HOST)
    specs = {k: v for k, v in all_specs(per_host=False).items() if k.startswith("local-")}
    out = evaluate_pools(lib, flake, specs, tmp_path)
    assert out.returncode != 0
    assert "null while a set was expected" in out.stderr, out.stderr
    assert "mixins/per-host.nix" in out.stderr, out.stderr
