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

from flakefleet.config import ConfigError, parse_stack_config
from flakefleet.plan.inventory import plan_inventory
from flakefleet.plan.specs import system_specs
from flakefleet.config.stackfile import read_stack_file, stack_names
from flakefleet.nixos import matrix
from tests import test_nixos as nixos_tests
from tests.conftest import require, require_tool
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
    require(Path(lib).exists(), f"tier 5: FLAKEFLEET_NIXPKGS_LIB, a directory with nixpkgs' lib/default.nix ({lib})")
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
        specs_arg += f" specsFile = {json.dumps(str(specs_file))};"
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
    assert sorted(result) == sorted({**all_specs(per_host=False), **matrix_specs()})
    assert result["staging-cp"]["role"] == "server" and result["staging-workers"]["role"] == "agent"


def matrix_specs() -> dict[str, dict]:
    """The feature matrix's systems, named as nixos/configurations.json names them."""
    return {f"{matrix.PREFIX}{row}-{key.replace('/', '-')}": spec
            for row in matrix.ROWS for key, spec in matrix.row_specs(row).items()}


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_the_feature_matrix_switches_every_module_on(lib, tmp_path):
    """nixos/configurations.json's matrix rows: Cilium's overlays and Hubble, every GPU driver
    mode, a workload, aarch64, metal with per-host closures; each module of the flake imported
    by at least one of them, and each evaluates (so `nix flake check` on the real pin does)."""
    out = evaluate_pools(lib, ROOT / "nixos", None, tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert "--flannel-backend=none" in r["matrix-cilium-vxlan-cp"]["flags"]
    assert opened_ports(r["matrix-cilium-geneve-hubble-workers"]["firewall"], "udp") == {6081}
    assert r["matrix-gpu-gpu"]["nvidia"]["x11"] and r["matrix-gpu-gpu"]["nvidia"]["open"] is True
    assert r["matrix-gpu-gpu-closed"]["nvidia"]["open"] is False
    assert r["matrix-gpu-nvswitch-hgx"]["nvidia"]["datacenter"] and not r["matrix-gpu-nvswitch-hgx"]["nvidia"]["x11"]
    assert "workload-hello" in r["matrix-gpu-cp"]["manifests"] and r["matrix-gpu-gpu"]["images"] == ["hello.tar.gz"]
    assert r["matrix-metal-metal-metal-0"]["nodeName"] == "metal-0"
    # The cluster autoscaler on the control planes of a cluster with an autoscaled pool.
    autoscaler = r["matrix-autoscaled-cp"]["autoscaler"]
    assert autoscaler["chart"] == "cluster-autoscaler" and autoscaler["version"] == "9.43.1"
    values = autoscaler["values"]
    assert values["autoDiscovery"]["clusterName"] == "ff-mx-asg" and values["awsRegion"] == "eu-west-1"
    assert values["hostNetwork"] is True and values["image"]["tag"].endswith(".0")
    assert r["matrix-autoscaled-spot"]["autoscaler"] is None and r["matrix-gpu-cp"]["autoscaler"] is None
    # metal.nix adds to nixpkgs' initrd modules (a mkDefault list would be dropped by them)
    assert {"usb_storage", "nvme", "ahci", "i8042"} <= set(r["matrix-metal-metal-metal-0"]["initrdModules"])
    specs = matrix_specs()
    assert specs["matrix-aarch64-arm"]["system"] == "aarch64-linux"
    assert specs["matrix-metal-metal-metal-0"]["hardware"] == "metal"
    # The flake's own modulesFor (tests/test_nixos.py evaluates it): every nixosModules entry is
    # imported by some row.
    imported = {m for spec in specs.values() for m in nixos_tests.modules_for(spec)}
    outputs = nixos_tests.flake_outputs("./nixos", nixos_tests.STUB_INPUTS)
    every = nixos_tests.nix_eval(f"let outputs = ({outputs}); in map (m: baseNameOf (dirOf m) + \"/\" + baseNameOf m) "
                                 "(builtins.attrValues outputs.nixosModules)")
    assert len(every) == 15 and set(every) <= imported, set(every) - imported


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
    """The stand-in fails where nixpkgs failed: shared pools evaluating the pre-issue-10 per-host
    mixin (the flake now imports the mixin only for per-host pools; here every pool gets it)."""
    module = tmp_path / "original-per-host.nix"
    module.write_text(ORIGINAL_PER_HOST)
    specs = {k: v for k, v in all_specs(per_host=False).items() if k.startswith("local-")}
    out = evaluate_pools(lib, ROOT / "nixos", specs, tmp_path, extra=f"extraModules = [ {module} ];")
    assert out.returncode != 0
    assert "null while a set was expected" in out.stderr, out.stderr
    assert "original-per-host.nix" in out.stderr, out.stderr


# ----------------------------------------------------------------------------- CNI, GPUs, workloads

DEPLOY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM deploy"
CNI_SETTINGS = {
    "flannel": {"cni": "flannel"},
    "cilium-vxlan": {"cni": "cilium"},
    "cilium-geneve-hubble": {"cni": "cilium", "cilium": {"tunnel": "geneve", "hubble": True}},
}


def opened_ports(firewall: dict, protocol: str) -> set[int]:
    """The first ports a system's firewall opens for `protocol`: to anyone (its allowed ranges) or
    to the fleet's addresses (the rules its extraCommands add)."""
    import re

    key = "allowedTCPPortRanges" if protocol == "tcp" else "allowedUDPPortRanges"
    peers = re.findall(rf"-p {protocol} -s \"\$addr\" --dport (\d+):", firewall["extraCommands"])
    return {r["from"] for r in firewall[key]} | {int(p) for p in peers}


def combination_specs(cni: dict, per_host: bool = False) -> dict[str, dict]:
    """One stack with every kind of pool: plain workers, GPU pools (Ada, NVSwitch H100, Volta with
    closed kernel modules, aarch64 T4G), and the example workload on the workers and a GPU pool."""
    pools = [
        {"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 1},
        {"name": "workers", "role": "worker", "instance_type": "m7i.large", "count": 1},
        {"name": "gpu", "role": "worker", "instance_type": "g6.xlarge", "count": 1, "gpu": "nvidia"},
        {"name": "hgx", "role": "worker", "instance_type": "p5.48xlarge", "count": 1, "gpu": "nvidia"},
        {"name": "volta", "role": "worker", "instance_type": "p3.2xlarge", "count": 1, "gpu": "nvidia"},
        {"name": "arm-gpu", "role": "worker", "instance_type": "g5g.xlarge", "arch": "aarch64", "count": 1,
         "gpu": "nvidia", "build": "target"},
    ]
    pools = [{**p, "per_host_closures": per_host} for p in pools]
    raw = {"flakefleet:cluster": json.dumps({"name": "combo", **cni}), "flakefleet:pools": json.dumps(pools),
           "flakefleet:workloads": json.dumps([{"name": "hello", "pools": ["workers", "gpu"], "replicas": 2}]),
           "flakefleet:delivery": json.dumps({"authorized_keys": [DEPLOY_KEY]})}
    cfg = parse_stack_config(raw, "eu-west-1")
    return system_specs(cfg, plan_inventory(cfg))


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
@pytest.mark.parametrize("cni", list(CNI_SETTINGS))
def test_every_combination_of_cni_gpu_and_workloads_evaluates(lib, cni, tmp_path):
    out = evaluate_pools(lib, ROOT / "nixos", combination_specs(CNI_SETTINGS[cni]), tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    cilium = cni != "flannel"
    # k3s' own CNI off on servers only; agents never take server flags.
    assert ("--flannel-backend=none" in r["cp"]["flags"]) == cilium
    assert ("--disable-network-policy" in r["cp"]["flags"]) == cilium
    assert all("--flannel-backend=none" not in r[p]["flags"] for p in r if p != "cp")
    # Control planes deploy Cilium, the device plugin, the workload; agents deploy nothing.
    assert r["cp"]["manifests"] == sorted((["cilium"] if cilium else []) + ["nvidia-device-plugin", "workload-hello"])
    assert all(r[p]["manifests"] == [] for p in r if p != "cp")
    # lib.k3sLinks (what the preview names when one goes): the same, by their links' names.
    assert r["cp"]["links"] == {"manifests": [f"{m}.yaml" for m in r["cp"]["manifests"]], "images": []}
    assert {p: r[p]["links"]["images"] for p in r} == {p: r[p]["images"] for p in r}
    # The image preloaded exactly where the workload runs, and those nodes labelled for it.
    assert {p: r[p]["images"] for p in r} == {"cp": [], "workers": ["hello.tar.gz"], "gpu": ["hello.tar.gz"],
                                              "hgx": [], "volta": [], "arm-gpu": []}
    assert "flakefleet.io/pool=workers" in r["workers"]["nodeLabel"] and not any(
        label.startswith("flakefleet.io/pool=") for label in r["hgx"]["nodeLabel"])
    # GPUs: the driver mode per family, the toolkit, label and taint; unfree only NVIDIA, only there.
    # nvidia.nix's two modes: videoDrivers (with the open or the closed kernel modules) or Data
    # Center with the fabric manager; the data-center driver on x86_64, production on aarch64.
    dc, dc_bin = "nvidia-dc-580.159.04-6.12.0", "nvidia-dc-580.159.04-6.12.0-bin"
    assert r["gpu"]["nvidia"] == {"open": True, "datacenter": False, "x11": True, "toolkit": True,
                                  "modules": ["nvidia-open-580.159.04-6.12.0"]}
    assert r["hgx"]["nvidia"] == {"open": True, "datacenter": True, "x11": False, "toolkit": True, "modules": [dc_bin]}
    assert r["volta"]["nvidia"]["open"] is False and r["volta"]["nvidia"]["modules"] == [dc_bin]  # V100: closed
    assert r["arm-gpu"]["nvidia"]["modules"] == ["nvidia-open-595.84-6.12.0"]
    assert "fabricmanager-580.159.04" in r["hgx"]["packages"]
    assert not any(p.startswith("nvidia-settings") for p in r["gpu"]["packages"] + r["arm-gpu"]["packages"])
    for gpu_pool in ("gpu", "hgx", "volta", "arm-gpu"):
        assert "nvidia.com/gpu=present:NoSchedule" in r[gpu_pool]["nodeTaint"]
        assert "nvidia.com/gpu.present=true" in r[gpu_pool]["nodeLabel"] and r[gpu_pool]["containerdTemplate"]
        assert r[gpu_pool]["unfree"] == [dc, "nvidia-x11-595.84-6.12.0", "nvidia-persistenced-580.159.04",
                                         "fabricmanager-580.159.04", "nvidia-settings-595.84"]
        assert "nvidia-persistenced-580.159.04" in r[gpu_pool]["packages"] or gpu_pool == "arm-gpu"
    for plain in ("cp", "workers"):
        assert r[plain]["unfree"] == [] and r[plain]["nvidia"] is None and not r[plain]["nodeTaint"]
    # The firewall follows the CNI: its ports (from ports.json) and its interfaces.
    udp, tcp = opened_ports(r["workers"]["firewall"], "udp"), opened_ports(r["workers"]["firewall"], "tcp")
    assert udp == ({6081} if "geneve" in cni else {8472})
    assert (4240 in tcp) == cilium and (4244 in tcp) == ("hubble" in cni)
    assert ("lxc+" in r["workers"]["firewall"]["trustedInterfaces"]) == cilium
    assert ("flannel.1" in r["workers"]["firewall"]["trustedInterfaces"]) != cilium


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_the_combinations_evaluate_as_per_host_closures_too(lib, tmp_path):
    """The same pools with host facts baked in (mixins/per-host.nix beside the new modules)."""
    specs = combination_specs(CNI_SETTINGS["cilium-geneve-hubble"], per_host=True)
    out = evaluate_pools(lib, ROOT / "nixos", specs, tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert sorted(r) == sorted(specs) and all(key.count("/") == 1 for key in r)
    assert r["gpu/gpu-0"]["nodeName"] == "gpu-0" and r["gpu/gpu-0"]["nvidia"]["toolkit"] is True
    assert r["cp/cp-0"]["clusterInit"] is True and "cilium" in r["cp/cp-0"]["manifests"]


# A custom kernel (linuxManualConfig: no `features`, its configuration read at evaluation time)
# that is too old and lacks CGROUP_BPF.
OLD_KERNEL = """{ lib, ... }: {
  boot.kernelPackages = lib.mkForce {
    kernel = { version = "5.4.280"; config.isEnabled = option: option != "CGROUP_BPF"; };
    nvidiaPackages = { };
  };
}"""


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
@pytest.mark.parametrize("case", ["old kernel", "unknown workload"], ids=["old-kernel", "unknown-workload"])
def test_what_cilium_and_workloads_need_fails_evaluation_clearly(lib, case, tmp_path):
    specs = {k: v for k, v in combination_specs(CNI_SETTINGS["cilium-vxlan"]).items() if k in ("cp", "workers")}
    extra = ""
    if case == "old kernel":
        (tmp_path / "old-kernel.nix").write_text(OLD_KERNEL)
        extra = f"extraModules = [ {tmp_path / 'old-kernel.nix'} ];"
        expected = ["Cilium 1.18.4 needs Linux 5.10 or newer; pool cp boots 5.4.280",
                    "CONFIG_CGROUP_BPF is not enabled!"]
    else:
        specs["workers"] = {**specs["workers"], "images": ["nope"]}
        expected = ["flakefleet: no workload nope in nixos/workloads/ (it has: hello)"]
    specs_file = tmp_path / "specs.json"
    specs_file.write_text(json.dumps(specs))
    out = nix_instantiate(f"import {NIXLIB}/eval-pools.nix {{ lib = import {lib_path(lib)}; flake = {ROOT / 'nixos'}; "
                          f"specsFile = {json.dumps(str(specs_file))}; {extra} }}")
    assert out.returncode != 0
    for message in expected:
        assert message in out.stderr, out.stderr


# Issue 24: what the GPU and Cilium modules of round two did, each of which nixpkgs refuses
# (read in hardware/video/nvidia.nix, nvidia-x11/generic.nix and kernel/generic.nix); the
# stand-in declarations must refuse them too, on the pools they were in.
ROUND_TWO_DEFECTS = {
    # nvidia.nix has no `enable` (only the read-only `enabled`)
    "nvidia-enable": ("{ hardware.nvidia.enable = true; }", "hardware.nvidia.enable' does not exist"),
    # the data-center driver's `settings` is { } (useSettings = false), not a package
    "dc-driver-settings": ("{ lib, ... }: { hardware.nvidia.nvidiaSettings = lib.mkForce true; }",
                           "is not of type `package'"),
    # a nixpkgs kernel's config knows MODULES, FW_LOADER and RUST only while evaluating
    "kernel-config-at-eval": (
        '{ config, ... }: { assertions = [ { assertion = config.boot.kernelPackages.kernel.config.isEnabled '
        '"BPF_SYSCALL"; message = "Cilium needs kernel options BPF_SYSCALL"; } ]; }',
        "Cilium needs kernel options BPF_SYSCALL"),
}


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
@pytest.mark.parametrize("defect", list(ROUND_TWO_DEFECTS))
def test_the_round_two_gpu_and_cilium_defects_fail_evaluation(lib, defect, tmp_path):
    module, expected = ROUND_TWO_DEFECTS[defect]
    (tmp_path / "defect.nix").write_text(module)
    specs = {k: v for k, v in combination_specs(CNI_SETTINGS["cilium-vxlan"]).items() if k in ("gpu", "workers")}
    if defect != "kernel-config-at-eval":
        specs = {"gpu": specs["gpu"]}
    out = evaluate_pools(lib, ROOT / "nixos", specs, tmp_path, extra=f"extraModules = [ {tmp_path / 'defect.nix'} ];")
    assert out.returncode != 0, out.stdout
    assert expected in out.stderr, out.stderr


def test_nvswitch_on_aarch64_is_refused_before_nix_is_asked():
    """GB200 (p6e-gb200, aarch64 + NVSwitch) needs the data-center driver, which nixpkgs does not
    build for aarch64: one line at validation, not an evaluation error on the hosts' pool."""
    pools = [{"name": "cp", "role": "control-plane", "instance_type": "m7i.large", "count": 1},
             {"name": "gb", "role": "worker", "instance_type": "p6e-gb200.36xlarge", "arch": "aarch64",
              "gpu": "nvidia", "count": 1, "build": "target"}]
    raw = {"flakefleet:cluster": json.dumps({"name": "gb"}), "flakefleet:pools": json.dumps(pools),
           "flakefleet:delivery": json.dumps({"authorized_keys": [DEPLOY_KEY]})}
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw, "us-east-1")
    assert err.value.problems == [
        "flakefleet:pools[1].gpu: p6e-gb200.36xlarge's GB200 GPUs hang off NVSwitch, which needs NVIDIA's "
        "data-center driver with the fabric manager; nixpkgs builds it for x86_64 only"]


def test_every_restated_declaration_names_the_nixpkgs_file_it_was_read_from():
    """tests/nixlib/nixpkgs-options.nix: no declaration, and no restated part of a module's
    config, comes before a comment naming a nixpkgs file in its section (a new declaration
    added at the top of a section without its file fails; review keeps the rest honest)."""
    lines = (NIXLIB / "nixpkgs-options.nix").read_text().splitlines()
    start = lines.index("  options = {")
    cited, missing = None, []
    for number, line in enumerate(lines[start + 1:], start + 2):
        if line.startswith("    # "):
            cited = line if ".nix" in line else cited
        elif line.startswith("    ") and not line.startswith("     ") and line.strip() not in ("", "};", "];", "})", ")"):
            if line.startswith("    (") or "=" in line:
                if cited is None:
                    missing.append(f"{number}: {line.strip()}")
        elif line.startswith("  ") and not line.startswith("   "):
            cited = None  # a new top-level section (`config = ...`) needs its own citations
    assert missing == []


# ----------------------------------------------------------------------------- the firewall

def firewall_verdicts(rules: list[tuple], packets: list[tuple]) -> list[bool]:
    """nixos-fw as nixpkgs' firewall-iptables.nix builds it, reduced to what our rules use: the
    allowed port ranges accept from anyone, extraCommands' rules from their `-s` address, and
    everything else reaches the final refuse rule. rules: (protocol, source or None, low, high)."""
    def accepted(proto, source, port):
        return any(p == proto and (s is None or s == source) and lo <= port <= hi for p, s, lo, hi in rules)
    return [accepted(*packet) for packet in packets]


def iptables_rules(extra_commands: str, peers: dict, tmp_path: Path) -> list[tuple]:
    """Run a system's extraCommands as the firewall's start script would, with a recording
    iptables and the real jq, against a peers file; the accept rules it adds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "iptables").write_text('#!/bin/sh\necho "$*" >> "$RULES"\n')
    (bin_dir / "iptables").chmod(0o755)
    peers_file = tmp_path / "peers.json"
    peers_file.write_text(json.dumps(peers))
    script = extra_commands.replace("/etc/flakefleet/peers.json", str(peers_file))
    script = script.replace("/nix/store/00000000000000000000000000000000-jq/bin/jq", shutil.which("jq") or "jq")
    rules_file = tmp_path / "rules"
    subprocess.run(["sh", "-e", "-c", script], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin",
                                                                    "RULES": str(rules_file)})
    recorded = []
    for line in (rules_file.read_text().splitlines() if rules_file.exists() else []):
        words = line.split()
        lo, _, hi = words[words.index("--dport") + 1].partition(":")
        recorded.append((words[words.index("-p") + 1], words[words.index("-s") + 1], int(lo), int(hi or lo)))
    return recorded


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_metal_firewall_admits_etcd_kubelet_and_the_overlay_only_from_the_fleet(lib, tmp_path):
    """Bring-your-own metal has no security group: the NixOS firewall alone decides. etcd is
    closed to a machine that is not a control plane, the kubelet and VXLAN to one that is not a
    node, SSH and the API stay reachable; without a peers file nothing only nodes may reach opens."""
    require_tool("jq")
    out = evaluate_pools(lib, ROOT / "nixos", None, tmp_path)
    assert out.returncode == 0, out.stderr
    systems = json.loads(out.stdout)
    peers = {"control-plane": ["192.168.40.2"], "worker": ["192.168.40.10", "192.168.40.11"]}
    cp_member, worker_member, stranger = "192.168.40.2", "192.168.40.10", "192.168.40.99"
    for name in ("matrix-metal-cp", "matrix-metal-metal-metal-0"):
        fw = systems[name]["firewall"]
        open_rules = [(proto, None, r["from"], r["to"]) for proto, key in (("tcp", "allowedTCPPortRanges"),
                      ("udp", "allowedUDPPortRanges")) for r in fw[key]]
        work = tmp_path / name
        work.mkdir()
        rules = open_rules + iptables_rules(fw["extraCommands"], peers, work)
        packets = [("tcp", stranger, 22), ("tcp", stranger, 10250), ("udp", stranger, 8472),
                   ("tcp", worker_member, 10250), ("udp", cp_member, 8472)]
        expected = [True, False, False, True, True]
        if name == "matrix-metal-cp":
            packets += [("tcp", stranger, 2379), ("tcp", worker_member, 2380), ("tcp", cp_member, 2380),
                        ("tcp", stranger, 6443)]
            expected += [False, False, True, True]
        assert firewall_verdicts(rules, packets) == expected, name
        empty = tmp_path / f"{name}-none"
        empty.mkdir()
        script = fw["extraCommands"].replace("/etc/flakefleet/peers.json", str(empty / "absent.json"))
        assert subprocess.run(["sh", "-e", "-c", script], env={"PATH": "/usr/bin:/bin"}).returncode == 0
    # EC2 hosts keep every port of the table in their ranges: their security groups restrict it.
    ec2 = systems["matrix-gpu-workers"]["firewall"]
    assert ec2["extraCommands"] == "" and 10250 in {r["from"] for r in ec2["allowedTCPPortRanges"]}


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_a_k3s_channel_the_pinned_nixpkgs_lacks_is_named_with_the_ones_it_has(lib, tmp_path):
    specs = {"dev-cp": {**all_specs(False)["dev-cp"], "k3sChannel": "1.99"}}
    out = evaluate_pools(lib, ROOT / "nixos", specs, tmp_path)
    assert out.returncode != 0, out.stdout
    assert ("flakefleet:cluster.k3s_channel: 1.99: the pinned nixpkgs has no k3s_1_99 "
            "(it has: k3s_1_31, k3s_1_32, k3s_1_33, k3s_1_34, k3s_1_35)") in out.stderr, out.stderr


def unit_sections(text: str) -> dict[str, dict[str, str]]:
    """A unit file's sections and keys (one value per key: what these units have)."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            current[key] = value
    return sections


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_the_standin_drain_unit_restates_the_pull_mixin(lib, tmp_path):
    """tests/standin/flake.nix writes flakefleet-drain.service for the host tests; it must say what
    nixos/mixins/pull.nix makes NixOS write (ordering, condition, restart policy, program, PATH)."""
    out = evaluate_pools(lib, ROOT / "nixos", None, tmp_path)
    assert out.returncode == 0, out.stderr
    mixin = json.loads(out.stdout)["matrix-autoscaled-spot"]["units"]["flakefleet-drain"]
    spec = {**matrix_specs()["matrix-autoscaled-spot"], "standin_host_dir": str(ROOT / "nixos" / "host")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    standin = nix_instantiate(
        f"let f = import {ROOT}/tests/standin/flake.nix; o = f.outputs {{ self = o; }}; "
        f"top = o.lib.toplevel (builtins.fromJSON (builtins.readFile {tmp_path}/spec.json)); "
        'in (builtins.head (builtins.filter (u: u.name == "unit-flakefleet-drain.service") top.systemUnits.units)).text')
    assert standin.returncode == 0, standin.stderr
    unit = unit_sections(json.loads(standin.stdout))
    assert unit["Unit"]["Description"] == mixin["description"]
    assert unit["Unit"]["After"].split() == mixin["after"]
    assert unit["Unit"]["ConditionPathExists"] == mixin["unitConfig"]["ConditionPathExists"]
    assert {k: unit["Service"][k] for k in mixin["serviceConfig"]} == mixin["serviceConfig"]
    assert unit["Service"]["ExecStart"].split("/bin/", 1)[1] == mixin["exec"]
    assert mixin["wantedBy"] == ["multi-user.target"]  # the stand-in links every unit there
    assert mixin["path"] == ["k3s"] and "-k3s-" in unit["Service"]["Environment"].split(":")[0]
