"""The local stack on test machines (tests/machines: systemd, real reboots): its real config
pointed at the machines, and each host's delivery Command inputs exactly as the Delivery
component registers them (shared by the host-tier tests)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from components.delivery import CREATE, DELETE, UPDATE
from flakefleet.config import parse_stack_config
from flakefleet.plan.contract import INSTANCE_ENV, PLAN_ENV, DeliveryPlan
from flakefleet.plan.inventory import plan_inventory
from components.tokens import ca_hash
from flakefleet.plan.specs import AGENT_TOKEN, K3S_CAS, SERVER_TOKEN, system_specs
from flakefleet.plan.hostplans import delivery_plans
from flakefleet.plan.rollout import waves
from flakefleet.config.stackfile import read_stack_file
from flakefleet.nixos.evaluate import evaluate_systems
from tests.conftest import STANDIN_FLAKE, require
from tests.kube.pki import as_environment, fleet_cas
from tests.machines.image import prerequisites as machine_prerequisites
from tests.machines.machine import running_machines
from tests.testhosts import prerequisites, run_as_deployer

# The stack's CAs as the tests hold them: real ones, as the program makes them with pulumi-tls
# (tests/kube/pki.py), which the machines' real API serves from. Every environment carries them,
# the first control plane gets them.
TEST_CAS = as_environment(fleet_cas())
TEST_CA_HASH = ca_hash(TEST_CAS[K3S_CAS["server-ca"][0]])
TOKENS = {SERVER_TOKEN[1]: "server-token-for-tests-0123456789", AGENT_TOKEN[1]: "agent-token-for-tests-9876543210",
          **TEST_CAS}


def stack(hosts, fleet, labels=None, drop=(), max_parallel=None, raw_only=False, spec_extra=None, reboot=None,
          edit=None, health_timeout_s=60, settle_s=1):
    """The local stack, pointed at these test hosts (their addresses and generated host keys).
    `labels` go on the worker pool (a new system); `drop` removes hosts from it; `spec_extra`
    goes into every pool's spec (e.g. the stand-in's `standin_kernel`); `reboot` sets every
    pool's reboot mode; `edit` changes the raw config (key -> value) before the rest. The health
    gate waits `health_timeout_s` (long: only tests of a failing gate wait it out) for k3s to
    stay up `settle_s`.
    `raw_only`: the config as Pulumi passes it, instead of (config, inventory, systems, plans)."""
    raw = read_stack_file("local")
    if edit:
        edit(raw)
    pools = json.loads(raw["flakefleet:pools"])
    for pool in pools:
        pool["hosts"] = [h for h in pool["hosts"] if h["name"] not in drop]
        for h in pool["hosts"]:
            h.update(address=hosts[h["name"]].address, ssh_host_key=hosts[h["name"]].host_key)
        if labels and pool["role"] == "worker":
            pool["labels"] = labels
        if reboot:
            pool["reboot"] = reboot
    raw["flakefleet:pools"] = json.dumps(pools)
    delivery = {**json.loads(raw["flakefleet:delivery"]), "health_timeout_s": health_timeout_s, "settle_s": settle_s}
    if max_parallel:
        delivery["max_parallel"] = max_parallel
    raw["flakefleet:delivery"] = json.dumps(delivery)
    raw["flakefleet:signing_key"] = fleet.signing_secret
    if raw_only:
        return raw
    cfg = parse_stack_config(raw, None, {"flakefleet:signing_key"})
    inv = plan_inventory(cfg)
    specs = {key: {**spec, **(spec_extra or {})} for key, spec in system_specs(cfg, inv).items()}
    systems, _ = evaluate_systems(Path(STANDIN_FLAKE), specs)
    plans = delivery_plans(cfg, inv, systems, {h.name: hosts[h.name].host_key for h in inv.hosts},
                           ca_hash=TEST_CA_HASH)
    return cfg, inv, systems, plans


def command_inputs(plan: DeliveryPlan, instance: str = "", secrets: dict[str, str] | None = None) -> dict:
    """The inputs of a host's delivery Command (components/delivery.py); secrets (default: the
    tests' tokens) as plain values."""
    return {
        "create": CREATE,
        "update": UPDATE,
        "delete": DELETE,
        "environment": {PLAN_ENV: plan.to_json(), INSTANCE_ENV: instance, **(TOKENS if secrets is None else secrets)},
        "triggers": None,
    }


def up(commands, inv, cfg, plans, instance=None, replace=()):
    """One `pulumi up` of the hosts' delivery Commands (tests/lifecycle.py, host -> LocalCommand):
    each wave's Commands in parallel, the next wave only if this one succeeded."""
    steps = {}
    for wave in waves(cfg, inv):
        def one(host):
            inputs = command_inputs(plans[host.name], (instance or {}).get(host.name, ""))
            return host.name, commands[host.name].up(inputs, replace=host.name in replace)
        with ThreadPoolExecutor(len(wave)) as pool:
            steps.update(pool.map(one, wave))
        if any(s.proc.returncode != 0 for h in wave for s in steps[h.name]):
            break
    return steps


def run_waves(fleet, cfg, inv, plans, timeout: float = 300) -> dict:
    """Each host's runner as its Command's create would run it, wave after wave (a wave's hosts in
    parallel), stopping after the first wave with a failure: host -> completed process."""
    results = {}
    for wave in waves(cfg, inv):
        def one(host):
            env = {PLAN_ENV: plans[host.name].to_json(), **TOKENS}
            return host.name, run_as_deployer(fleet, ["flakefleet.delivery.runner"], env, timeout=timeout)
        with ThreadPoolExecutor(len(wave)) as pool:
            results.update(pool.map(one, wave))
        if any(results[h.name].returncode != 0 for h in wave):
            break
    return results


def k3s_log(host) -> list[str]:
    """What the stand-in k3s on a host was asked to do, one line each."""
    path = host.path("/var/lib/flakefleet/standin-k3s.log")
    return path.read_text().splitlines() if path.exists() else []


def require_machines() -> None:
    """Skip locally, fail in CI, without what the test machines need (root, nspawn, sshd, nix, ...)."""
    missing = prerequisites() + machine_prerequisites()
    require(not missing, f"test machines need: {', '.join(missing)}")


@contextmanager
def local_fleet(root: Path, addresses: dict[str, str], bootloader: str = "grub"):
    """Test machines for a module's tests, one per name -> address (booted by GRUB, on BIOS; or
    by systemd-boot, on UEFI)."""
    require_machines()
    with running_machines(root, addresses, bootloader=bootloader) as (fleet, hosts):
        yield fleet, hosts


def not_ready(fleet, *names: str) -> None:
    """The stand-in API server reports these Nodes' Ready as False (their kubelets say so); none: all clear."""
    (fleet.apiserver / "notready").write_text("".join(f"{n}\n" for n in names))


def waves_with_not_ready(fleet, names: tuple[str, ...], cfg, inv, plans) -> dict:
    """A rollout (run_waves) while the stand-in API server reports `names` not Ready; all clear after."""
    not_ready(fleet, *names)
    try:
        return run_waves(fleet, cfg, inv, plans)
    finally:
        not_ready(fleet)


def register_nodes(fleet, *names: str) -> None:
    """Nodes the API server knows without a kubelet behind them (e.g. left in a restored snapshot)."""
    for name in names:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
        res = fleet.kubectl("apply", "-f", "-", stdin=json.dumps(body))
        assert res.returncode == 0, res.stderr


def write_stack_file(directory: Path, cfg_raw: dict) -> None:
    """The stack's config as a stack file (structured values as YAML), for the CLI commands."""
    import yaml

    config = {k: (json.loads(v) if k != "flakefleet:signing_key" else v) for k, v in cfg_raw.items()}
    (directory / "Pulumi.local.yaml").write_text(yaml.safe_dump({"config": config}))
