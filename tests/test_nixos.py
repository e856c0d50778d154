"""The NixOS soul, offline: every .nix parses, our Nix functions agree with Python, the flake's
interface and lock are right, and plan-time evaluation caches and reports failures by pool."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from flakefleet.common.nix import parse_nix_version
from flakefleet.nixos import evaluate as systems_mod
from flakefleet.config import parse_stack_config
from flakefleet.plan.inventory import plan_inventory
from flakefleet.plan.specs import host_facts, k3s_host_config, pool_spec, system_specs
from flakefleet.facts.ports import ROLES, cluster_features, listening_ports, security_group_rules
from flakefleet.config.stackfile import read_stack_file
from flakefleet.nixos.evaluate import evaluate_systems, EvaluationError
from flakefleet.facts.flake import resolve_flake
from tests.conftest import STANDIN_FLAKE, require_tool

ROOT = Path(__file__).resolve().parent.parent
NIXOS = ROOT / "nixos"
NIX_FILES = sorted([*NIXOS.rglob("*.nix"), *Path(STANDIN_FLAKE).rglob("*.nix")])


def nix_eval(expr: str):
    require_tool("nix-instantiate")
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def stack(name: str):
    raw = read_stack_file(name)
    cfg = parse_stack_config(raw, raw.get("aws:region"))
    return cfg, plan_inventory(cfg)


@pytest.mark.parametrize("path", NIX_FILES, ids=[str(p.relative_to(ROOT)) for p in NIX_FILES])
def test_every_nix_file_parses(path):
    require_tool("nix-instantiate")
    result = subprocess.run(["nix-instantiate", "--parse", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


CNI_CASES = [("flannel", "vxlan", False), ("cilium", "vxlan", False), ("cilium", "geneve", True)]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("cni", "tunnel", "hubble"), CNI_CASES, ids=["flannel", "cilium-vxlan", "cilium-geneve-hubble"])
def test_nixos_firewall_and_security_groups_come_from_one_table(role, cni, tunnel, hubble):
    """For every CNI setting: the firewall Nix builds opens exactly what the security groups allow."""
    features = cluster_features(cni, tunnel, hubble)
    nix_features = nix_eval(f'(import ./nixos/lib).clusterFeatures {{ cni = "{cni}"; tunnel = "{tunnel}"; '
                            f'hubble = {str(hubble).lower()}; }}')
    assert frozenset(nix_features) == features
    nix_list = json.dumps(sorted(features)).replace(",", " ")
    fw = nix_eval(f'(import ./nixos/lib).firewallFor "{role}" {nix_list}')
    assert [(r["from"], r["to"]) for r in fw["allowedTCPPortRanges"]] == listening_ports(role, "tcp", features)
    assert [(r["from"], r["to"]) for r in fw["allowedUDPPortRanges"]] == listening_ports(role, "udp", features)
    # Metal: open to any source the rules with a non-node source; to the fleet's addresses the others.
    open_fw = nix_eval(f'(import ./nixos/lib).firewallOpenFor "{role}" {nix_list}')
    peers = nix_eval(f'(import ./nixos/lib).peerRulesFor "{role}" {nix_list}')
    peer_ports = {(p["protocol"], tuple(map(int, p["ports"].split(":")))) for p in peers}
    assert all(set(p["sources"]) <= {"control-plane", "worker"} for p in peers)
    for protocol, key in (("tcp", "allowedTCPPortRanges"), ("udp", "allowedUDPPortRanges")):
        opened = [(r["from"], r["to"]) for r in open_fw[key]]
        assert sorted(opened + [ports for proto, ports in peer_ports if proto == protocol]) == sorted(
            listening_ports(role, protocol, features))
        assert not set(opened) & {ports for proto, ports in peer_ports if proto == protocol}
    if role == "control-plane":
        assert ("tcp", (2379, 2380)) in peer_ports  # etcd: never open to any source on metal
    opened = {(r.from_port, r.protocol) for r in security_group_rules([], [], False, features) if r.group == role
              and r.direction == "ingress"}
    listening = {(a, "tcp") for a, _ in listening_ports(role, "tcp", features)} | {
        (a, "udp") for a, _ in listening_ports(role, "udp", features)}
    assert opened == listening - {(22, "tcp")}  # ssh: from the admin CIDRs, none given here


@pytest.mark.parametrize("stack_name", ["local", "staging", "prod"])
def test_k3s_host_config_agrees_between_nix_and_python(stack_name):
    _, inv = stack(stack_name)
    for host in inv.hosts:
        facts = host_facts(inv, host)
        nix = nix_eval(f"(import ./nixos/lib).k3sHostConfig (builtins.fromJSON {json.dumps(json.dumps(facts))})")
        assert nix == k3s_host_config(facts), host.name


# nixpkgs' services.k3s option -> the k3s flag (config key) it renders (rancher/default.nix, k3s.nix).
OPTION_FLAG = {"nodeName": "node-name", "nodeIP": "node-ip", "clusterInit": "cluster-init", "serverAddr": "server"}


@pytest.mark.parametrize("stack_name", ["local", "staging"])
def test_per_host_k3s_options_give_k3s_the_same_flags(stack_name):
    _, inv = stack(stack_name)
    for host in inv.hosts:
        facts = host_facts(inv, host)
        options = nix_eval(f"(import ./nixos/lib).k3sHostOptions (builtins.fromJSON {json.dumps(json.dumps(facts))})")
        assert {OPTION_FLAG[k]: v for k, v in options.items()} == k3s_host_config(facts), host.name


def test_host_facts_make_the_first_control_plane_initialize():
    _, inv = stack("staging")
    configs = [k3s_host_config(host_facts(inv, h)) for h in inv.hosts]
    assert configs[0] == {"node-name": "cp-0", "node-ip": "10.20.2.0", "cluster-init": True}
    assert configs[1]["server"] == configs[2]["server"] == "https://10.20.0.4:6443"
    assert all("server" not in c and "cluster-init" not in c for c in configs[3:])  # agents: serverAddr is in the closure


def test_nix_helpers():
    assert nix_eval('(import ./nixos/lib).k3sAttr "stable"') == "k3s"
    assert nix_eval('(import ./nixos/lib).k3sAttr "1.33"') == "k3s_1_33"
    assert nix_eval('(import ./nixos/lib).nodeLabels { "a/b" = "1"; c = "2"; }') == ["a/b=1", "c=2"]


STUB_NIXPKGS = """
  let stub = {
    lib = {
      genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
      nixosSystem = args: { config.system.build.toplevel = { modules = args.modules; }; };
      optionalAttrs = cond: set: if cond then set else { };
      optional = cond: x: if cond then [ x ] else [ ];
    };
    legacyPackages = { };
  }; in stub
"""


# The flake's inputs for these evaluations: the stub nixpkgs, and disko's module as its stand-in.
STUB_INPUTS = f"{{ self = outputs; nixpkgs = {STUB_NIXPKGS}; disko.nixosModules.disko = ./tests/nixlib/disko.nix; }}"


def flake_outputs(flake_dir: str, inputs: str) -> str:
    return f"let flake = import {flake_dir}/flake.nix; outputs = flake.outputs ({inputs}); in outputs"


def modules_for(spec: dict) -> list[str]:
    """The flake's module list for `spec`, each named `folder/file` (a path) or by what it is."""
    outputs = flake_outputs("./nixos", STUB_INPUTS)
    return nix_eval(
        f"let outputs = ({outputs}); spec = builtins.fromJSON {json.dumps(json.dumps(spec))}; "
        "in map (m: if builtins.isPath m then baseNameOf (dirOf m) + \"/\" + baseNameOf m "
        "else if m ? flakefleet then \"spec\" else m.nixpkgs.hostPlatform) (outputs.lib.modulesFor spec)"
    )


BASE_MODULES = ["nixos/common", "roles/k3s-server.nix"]
TAIL = ["spec", "hardware/ec2.nix", "x86_64-linux"]
# What a pool's spec asks for -> the modules it adds (srvos' shape: a mixin is imported only by the
# pools that opt in, an add-on only on control planes of clusters that have it; none switches itself off).
OPT_INS = [
    ("nothing", {}, BASE_MODULES + TAIL),
    ("per-host", {"host": {"name": "cp-0"}}, BASE_MODULES + ["mixins/per-host.nix"] + TAIL),
    ("cilium-server", {"cni": "cilium"}, BASE_MODULES + ["mixins/cilium.nix", "addons/cilium.nix"] + TAIL),
    ("cilium-agent", {"cni": "cilium", "role": "worker"}, ["nixos/common", "roles/k3s-agent.nix", "mixins/cilium.nix"] + TAIL),
    ("images", {"images": ["hello"]}, BASE_MODULES + ["mixins/workload-images.nix"] + TAIL),
    ("workloads-server", {"workloads": [{"name": "hello"}]}, BASE_MODULES + ["addons/workloads.nix"] + TAIL),
    ("workloads-agent", {"workloads": [{"name": "hello"}], "role": "worker"}, ["nixos/common", "roles/k3s-agent.nix"] + TAIL),
    ("cluster-gpus", {"clusterHasGpus": True}, BASE_MODULES + ["addons/nvidia-device-plugin.nix"] + TAIL),
    ("gpu-pool", {"gpu": {"vendor": "nvidia"}}, BASE_MODULES + ["spec", "hardware/ec2.nix", "hardware/nvidia.nix",
                                                              "x86_64-linux"]),
]


@pytest.mark.parametrize(("ask", "expected"), [c[1:] for c in OPT_INS], ids=[c[0] for c in OPT_INS])
def test_real_flake_imports_a_module_only_where_it_applies(ask, expected):
    cfg, inv = stack("prod")
    assert modules_for({**pool_spec(cfg, inv, "cp").as_json(), **ask}) == expected


def test_the_spec_module_sets_the_options():
    cfg, inv = stack("prod")
    spec = json.dumps(json.dumps(pool_spec(cfg, inv, "cp").as_json()))
    outputs = flake_outputs("./nixos", STUB_INPUTS)
    spec_module = nix_eval(
        f"let outputs = ({outputs}); in (outputs.lib.specModule (builtins.fromJSON {spec})).flakefleet"
    )
    assert spec_module["apiEndpoint"] == "https://10.30.0.4:6443"
    assert spec_module["taints"] == ["node-role.kubernetes.io/control-plane:NoSchedule"]
    assert spec_module["host"] is None


def test_flake_exposes_what_nixos_users_expect():
    outputs = flake_outputs("./nixos", STUB_INPUTS)
    names = nix_eval(
        f"let o = ({outputs}); in {{ top = builtins.attrNames o; "
        "checks = builtins.mapAttrs (_: builtins.attrNames) o.checks; shells = builtins.attrNames o.devShells; }"
    )
    assert {"nixosConfigurations", "nixosModules", "checks", "devShells", "lib"} <= set(names["top"])
    assert names["checks"] == {"x86_64-linux": ["configurations", "k3s-cluster"], "aarch64-linux": ["configurations"]}
    assert names["shells"] == ["aarch64-linux", "x86_64-linux"]


def test_standin_flake_has_the_interface_of_the_real_one():
    real = nix_eval(f"builtins.attrNames ({flake_outputs('./nixos', STUB_INPUTS)}).lib")
    standin = nix_eval(f"builtins.attrNames ({flake_outputs('./tests/standin', '{ self = outputs; }')}).lib")
    assert "toplevel" in real and "toplevel" in standin


def test_flake_lock_pins_a_real_stable_nixpkgs():
    lock = json.loads((NIXOS / "flake.lock").read_text())
    node = lock["nodes"][lock["nodes"]["root"]["inputs"]["nixpkgs"]]
    assert node["original"] == {"owner": "NixOS", "ref": "nixos-26.05", "repo": "nixpkgs", "type": "github"}
    locked = node["locked"]
    assert len(locked["rev"]) == 40 and int(locked["rev"], 16) >= 0
    assert locked["narHash"].startswith("sha256-") and len(locked["narHash"]) == 51
    assert locked["lastModified"] > 1780000000  # a 2026 revision of the 26.05 branch
    assert '    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";' in (NIXOS / "flake.nix").read_text()


def test_no_secret_option_is_used():
    text = "\n".join(p.read_text() for p in NIXOS.rglob("*.nix"))
    for forbidden in ("services.k3s.token ", "token = ", "agentToken = "):
        assert forbidden not in text
    assert "tokenFile" in text and "agentTokenFile" in text


# ----------------------------------------------------------------------------- evaluation


@pytest.fixture
def nix_eval_ready():
    require_tool("nix")


def test_one_system_per_pool_shared_by_its_hosts(nix_eval_ready, tmp_path):
    cfg, inv = stack("local")
    specs = system_specs(cfg, inv)
    assert sorted(specs) == ["cp", "workers"]  # 3 hosts, 2 evaluations
    systems, origin = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path)
    assert origin == {"cp": "eval", "workers": "eval"}
    assert systems["cp"].out != systems["workers"].out
    assert systems["cp"].drv.endswith("-nixos-system-cp.drv")


def test_per_host_closures_opt_in(nix_eval_ready, tmp_path):
    raw = read_stack_file("local")
    pools = json.loads(raw["flakefleet:pools"])
    pools[1]["per_host_closures"] = True
    raw["flakefleet:pools"] = json.dumps(pools)
    cfg = parse_stack_config(raw)
    specs = system_specs(cfg, plan_inventory(cfg))
    assert sorted(specs) == ["cp", "workers/worker-0", "workers/worker-1"]
    assert specs["workers/worker-0"]["host"]["name"] == "worker-0"
    systems, _ = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path)
    assert systems["workers/worker-0"].out != systems["workers/worker-1"].out


def test_unchanged_specs_are_not_evaluated_again(nix_eval_ready, tmp_path, monkeypatch):
    cfg, inv = stack("local")
    specs = system_specs(cfg, inv)
    first, _ = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path)

    def no_nix(*args, **kwargs):
        raise AssertionError(f"nix ran although everything was cached: {args}")

    monkeypatch.setattr(systems_mod.subprocess, "run", no_nix)
    again, origin = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path)
    assert again == first and set(origin.values()) == {"cache"}


def test_a_changed_pool_is_the_only_one_evaluated_and_changed(nix_eval_ready, tmp_path):
    cfg, inv = stack("local")
    specs = system_specs(cfg, inv)
    before, _ = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path)
    specs["workers"] = {**specs["workers"], "labels": {"tier": "batch"}}
    after, origin = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path)
    assert origin == {"cp": "cache", "workers": "eval"}
    assert after["cp"] == before["cp"] and after["workers"].out != before["workers"].out


def test_a_changed_flake_evaluates_every_pool(nix_eval_ready, tmp_path):
    flake = tmp_path / "flake"
    shutil.copytree(STANDIN_FLAKE, flake)
    cfg, inv = stack("local")
    specs = system_specs(cfg, inv)
    evaluate_systems(flake, specs, tmp_path / "cache")
    (flake / "nixos.py").write_text((flake / "nixos.py").read_text() + "\n# v2\n")
    _, origin = evaluate_systems(flake, specs, tmp_path / "cache")
    assert set(origin.values()) == {"eval"}


def test_evaluation_failure_names_the_pool_and_shows_nix(nix_eval_ready, tmp_path):
    flake = tmp_path / "flake"
    shutil.copytree(STANDIN_FLAKE, flake)
    text = (flake / "flake.nix").read_text().replace(
        "assert spec ? apiEndpoint;", 'assert spec ? apiEndpoint; assert spec.pool != "workers" || throw "workers are broken";'
    )
    (flake / "flake.nix").write_text(text)
    cfg, inv = stack("local")
    with pytest.raises(EvaluationError) as err:
        evaluate_systems(flake, system_specs(cfg, inv), tmp_path / "cache")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("pool workers: nix could not evaluate its system:")
    assert "workers are broken" in err.value.problems[0]


def test_missing_nix_is_reported_per_pool(tmp_path, monkeypatch):
    monkeypatch.setattr(systems_mod.shutil, "which", lambda _: None)
    cfg, inv = stack("local")
    with pytest.raises(EvaluationError) as err:
        evaluate_systems(Path(STANDIN_FLAKE), system_specs(cfg, inv), tmp_path)
    assert [p.split(":")[0] for p in err.value.problems] == ["pool cp", "pool workers"]
    assert "nix is not installed" in err.value.problems[0]


def test_flake_reference_resolution():
    assert resolve_flake(None, {}) == NIXOS  # the AWS stacks: nixos/
    assert resolve_flake("tests/standin", {}) == ROOT / "tests" / "standin"
    assert resolve_flake("tests/standin", {"FLAKEFLEET_FLAKE": "/elsewhere"}) == Path("/elsewhere")
    for name in ("dev", "staging", "prod"):
        cfg, _ = stack(name)
        assert cfg.delivery.flake is None


def test_built_standin_system_carries_its_spec(nix_eval_ready, tmp_path):
    require_tool("nix-store")
    cfg, inv = stack("local")
    specs = system_specs(cfg, inv)
    systems, _ = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path)
    out = subprocess.run(["nix-store", "--realise", systems["cp"].drv], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert str(path) == systems["cp"].out
    # As evaluate.nix hands it to a flake without a schema: every key, and the earlier names too.
    carried = json.loads((path / "spec.json").read_text())
    assert {k: carried.get(k) for k in specs["cp"]} == specs["cp"]
    assert (path / "bin" / "switch-to-configuration").stat().st_mode & 0o111


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("nix (Nix) 2.8.0", (2, 8, 0)),
        ("nix (Nix) 2.24.10\n", (2, 24, 10)),
        ("nix (Determinate Nix 3.6.2) 2.29.0", (2, 29, 0)),
        ("nix (Lix, like Nix) 2.91.1", (2, 91, 1)),
        ("command not found", None),
    ],
)
def test_nix_version_is_read_from_nix_version_output(text, version):
    assert parse_nix_version(text) == version


@pytest.mark.parametrize(
    ("installed", "refused"), [((2, 8, 0), True), ((2, 17, 9), True), ((2, 18), False), ((2, 18, 0), False), ((2, 31, 1), False), (None, True)]
)
def test_the_real_flake_needs_the_nix_nixpkgs_asks_for(installed, refused):
    line = systems_mod.check_nix_version(NIXOS, installed)
    assert (line is not None) == refused
    if refused:
        assert "\n" not in line and "needs Nix 2.18 or newer" in line
        assert (".".join(map(str, installed)) if installed else "unknown version") in line


def test_the_standin_flake_locks_no_nixpkgs_so_any_nix_with_flakes_will_do():
    assert systems_mod.check_nix_version(Path(STANDIN_FLAKE), (2, 8, 0)) is None


def test_the_boot_release_is_the_one_the_flake_locks():
    """The AMI's release follows nixos/flake.lock's nixpkgs branch; the stand-in's lock names the
    same release in a node no input uses."""
    from flakefleet.facts.flake import nixpkgs_release

    assert nixpkgs_release(NIXOS) == "26.05"
    standin = json.loads((Path(STANDIN_FLAKE) / "flake.lock").read_text())
    assert standin["nodes"]["nixpkgs"] == json.loads((NIXOS / "flake.lock").read_text())["nodes"]["nixpkgs"]
    assert standin["nodes"]["root"] == {} and nixpkgs_release(Path(STANDIN_FLAKE)) == "26.05"


@pytest.mark.parametrize(("ref", "release"), [("nixos-26.05", "26.05"), ("nixos-25.11-small", "25.11"),
                                              ("nixos-unstable", None), ("nixpkgs-unstable", None), ("", None)])
def test_the_boot_release_is_read_from_the_lock_s_branch(tmp_path, ref, release):
    from flakefleet.facts.flake import nixpkgs_release

    lock = {"nodes": {"root": {"inputs": {"nixpkgs": "nixpkgs_2"}},
                      "nixpkgs_2": {"original": {"type": "github", "owner": "NixOS", "repo": "nixpkgs", "ref": ref}}},
            "root": "root", "version": 7}
    (tmp_path / "flake.lock").write_text(json.dumps(lock))
    assert nixpkgs_release(tmp_path) == release
    assert nixpkgs_release(tmp_path / "absent") is None


def test_an_old_nix_stops_planning_with_one_line(nix_eval_ready, tmp_path, monkeypatch):
    monkeypatch.setattr(systems_mod, "installed_nix_version", lambda: (2, 8, 0))
    cfg, inv = stack("local")
    with pytest.raises(EvaluationError) as err:
        evaluate_systems(NIXOS, system_specs(cfg, inv), tmp_path)
    assert err.value.problems == [
        f"nix 2.8.0 is installed; the flake at {NIXOS} locks nixpkgs, which needs Nix 2.18 or newer: "
        "upgrade Nix on this deployer (see docs/nixos.md)"
    ]
