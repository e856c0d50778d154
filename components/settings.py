"""Read the stack's config once, validate it whole, and plan the inventory, before any resource."""

from __future__ import annotations

import pulumi
from pulumi.runtime import config as runtime_config

import boto3

from flakefleet import configurations, dr
from flakefleet.config import ConfigError, StackConfig, parse_stack_config
from flakefleet.inventory import Inventory, plan_inventory
from flakefleet.nixos import system_specs
from flakefleet.preview.compare import compare
from flakefleet.preview.derivations import ShowError
from flakefleet.preview.manifest import Manifest, manifests
from flakefleet.preview.render import pool_text
from flakefleet.preview.sides import deployed_side, stack_side
from flakefleet.rollout import RestorePoint, reboot_notes
from flakefleet.systems import EvaluationError, System, default_cache_dir, evaluate_systems, resolve_flake

DIAGNOSTIC_CAP = 10  # lines of packages or services per pool in a preview


def load_stack() -> tuple[StackConfig, Inventory]:
    """The validated config and its inventory; every problem is reported at once, without a traceback."""
    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = {*runtime_config.get_config_secret_keys_env(), *runtime_config._SECRET_KEYS.get()}
    region = pulumi.Config("aws").get("region")
    try:
        cfg = parse_stack_config(raw, region, secret_keys)
        return cfg, plan_inventory(cfg)
    except ConfigError as err:
        # RunError ends the program with just this message: one line per problem, no stack trace.
        raise pulumi.RunError(
            f"invalid configuration for stack {pulumi.get_stack()}:\n  " + "\n  ".join(err.problems)
        ) from None


def plan_systems(cfg: StackConfig, inventory: Inventory) -> dict[str, System]:
    """Every pool's NixOS system (drv, out path), evaluated now so a preview shows which pools change."""
    flake = resolve_flake(cfg.delivery.flake)
    specs = system_specs(cfg, inventory)
    try:
        systems, origin = evaluate_systems(flake, specs)
    except EvaluationError as err:
        raise pulumi.RunError(
            f"cannot evaluate the NixOS systems of stack {pulumi.get_stack()} (flake {flake}):\n  "
            + "\n  ".join(err.problems)
        ) from None
    evaluated = sorted(name for name, how in origin.items() if how == "eval")
    if evaluated:
        pulumi.log.info(f"evaluated NixOS systems: {', '.join(evaluated)}")
    # The flake's nixosConfigurations follow what this stack deploys (commit the change).
    if configurations.update_stack(flake / configurations.FILE_NAME, pulumi.get_stack(), specs):
        pulumi.log.info(f"updated {configurations.FILE_NAME} for stack {pulumi.get_stack()}: commit it")
    return systems


READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"


def last_update() -> pulumi.Output[dict]:
    """This stack's own outputs as its last update exported them ({} before the first), read with
    the engine's builtin invoke `pulumi:pulumi:readStackOutputs` (pkg/resource/deploy/builtins.go,
    what a StackReference reads through too). An invoke is not a resource: a StackReference to
    the stack itself was, and every preview after an update showed its outputs as `~ outputs`."""
    name = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    return pulumi.runtime.invoke_output(READ_STACK_OUTPUTS, {"name": name}).apply(lambda r: (r or {}).get("outputs") or {})


def refuse_cni_switch(cfg: StackConfig, last: pulumi.Output[dict]) -> pulumi.Output[list]:
    """An Output every top-level component depends on: it fails, in one line, when the cluster's
    last update ran another CNI, so nothing is created, changed or delivered. Pods keep their
    addresses and policies from the old CNI: switching needs a rebuild, not a rollout."""

    def check(previous) -> list:
        if previous and previous != cfg.cluster.cni:
            raise pulumi.RunError(
                f"flakefleet:cluster.cni: the cluster runs {previous}; switching a running cluster to "
                f"{cfg.cluster.cni} is refused (pods keep {previous}'s addresses and policies): rebuild the "
                f"cluster with {cfg.cluster.cni} (docs/nixos.md) or keep cni: {previous}"
            )
        return []

    return last.apply(lambda outputs: check(outputs.get("cluster_cni")))


def announce_changes(cfg: StackConfig, inventory: Inventory, systems: dict[str, System],
                     last: pulumi.Output[dict]) -> dict[str, Manifest]:
    """Preview diagnostics, one per pool that changes against the last update (this stack's own
    outputs `system_manifests` and `nodes`, see `last_update`): packages, services,
    reboots, hosts and waves. Returns the systems' manifests (exported for the next preview).
    Stacks last updated before manifests were exported get the reboot lines (`boot`) only."""
    try:
        mine = manifests(systems, default_cache_dir())
    except ShowError as err:
        pulumi.log.warn(f"cannot read the systems' derivations ({err}): the preview lists no package changes")
        mine = {}
    def log(previous: dict) -> None:
        before = deployed_side(previous) if mine else None
        if before is None:
            lines = reboot_notes(cfg, inventory, systems, previous.get("boot"))
        else:
            changes = compare(before, stack_side(cfg, inventory, mine))
            lines = [pool_text(c, DIAGNOSTIC_CAP) for c in changes if c.status != "unchanged"]
        for line in lines:
            pulumi.log.info(line)

    last.apply(log)
    return mine


def plan_restore(cfg: StackConfig) -> RestorePoint | None:
    """A rebuild's snapshot, picked now (boto3) so the preview names it; problems stop the program."""
    dr_cfg = cfg.dr
    if dr_cfg.restore_from is None:
        return None
    folder = dr_cfg.restore_cluster or cfg.cluster.name
    region = dr_cfg.restore_region or cfg.region
    try:
        client = boto3.client("s3", region_name=region)
        snapshot = dr.pick(dr_cfg.restore_bucket, folder, dr_cfg.restore_from, client)
    except dr.DrError as err:
        raise pulumi.RunError(f"flakefleet:dr.restore_from: {err}") from None
    pulumi.log.info(f"restoring snapshot {snapshot.name} of {folder} from s3://{dr_cfg.restore_bucket}")
    return RestorePoint(dr_cfg.restore_bucket, folder, region, snapshot.name)


def node_table(
    inventory: Inventory,
    delivered: pulumi.Output[dict[str, dict]],
    host_keys: dict[str, pulumi.Output[str]],
    wanted: dict[str, str],
) -> pulumi.Output[dict[str, dict]]:
    """Stack output `nodes`: host name -> role, pool, address, instance id (None for bring-your-own),
    the system the stack wants on it, the system its last delivery confirmed there, whether it
    still boots an older kernel (`reboot: never`), and how to reach it over pinned SSH (port,
    user, host key: what `flakefleet drift` needs). `delivered` is the rollout's `hosts`."""
    names = [h.name for h in inventory.hosts]

    def table(values: list) -> dict[str, dict]:
        outs, keys = values[0], dict(zip(names, values[1:]))
        return {
            h.name: {
                "role": h.role,
                "pool": h.pool,
                "address": str(h.address),
                "instance_id": outs[h.name]["instance_id"],
                "wanted": wanted[h.name],
                "system": outs[h.name]["system"],
                "reboot_pending": outs[h.name]["reboot_pending"],
                "ssh_port": h.ssh_port,
                "ssh_user": h.ssh_user,
                "host_key": keys[h.name],
            }
            for h in inventory.hosts
        }

    return pulumi.Output.all(delivered, *(host_keys[n] for n in names)).apply(table)
