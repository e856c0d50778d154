"""The two sides of a comparison, from a stack (config, inventory, systems) or from the outputs
the stack's last update exported (what the program compares a preview with)."""

from __future__ import annotations

from collections.abc import Mapping

from flakefleet.common.outputs import StackOutputs
from flakefleet.config import StackConfig
from flakefleet.plan.inventory import Inventory
from flakefleet.plan.specs import host_system
from flakefleet.preview.compare import PoolHosts, Side
from flakefleet.preview.manifest import Manifest
from flakefleet.plan.rollout import pulled_rollout_text, waves


def stack_pools(cfg: StackConfig, inv: Inventory) -> dict[str, PoolHosts]:
    """Pool -> its hosts in rollout order, each with its wave and the name of its system."""
    pools: dict[str, list] = {}
    for n, wave in enumerate(waves(cfg, inv)):
        for host in wave:
            pools.setdefault(host.pool, []).append((host.name, n, host_system(cfg, host)))
    pushed = {name: PoolHosts(tuple(hosts), cfg.pool(name).reboot, ec2_type(cfg, name)) for name, hosts in pools.items()}
    pulled = {p.name: PoolHosts((), instance_type=ec2_type(cfg, p.name), pulled=pulled_rollout_text(cfg, p.name))
              for p in cfg.pools if p.autoscaling is not None}
    return dict(sorted({**pushed, **pulled}.items()))


def ec2_type(cfg: StackConfig, pool: str) -> str:
    """An EC2 pool's instance type; "" for bring-your-own."""
    config = cfg.pool(pool)
    return config.instance_type or "" if config.provider == "ec2" else ""


def stack_side(cfg: StackConfig, inv: Inventory, manifests: Mapping[str, Manifest]) -> Side:
    return Side(stack_pools(cfg, inv), dict(manifests))


def deployed_side(outputs: StackOutputs) -> Side | None:
    """The last update's side, from its stack outputs `system_manifests` (system name -> packed
    manifest) and `nodes` (host -> pool): None when they are not there (first update, or an
    update before flakefleet exported manifests)."""
    packed = outputs.system_manifests
    if packed is None or not outputs.updated:
        return None
    nodes = outputs.nodes
    manifests = {name: m for name, text in packed.items() if (m := Manifest.unpack(text)) is not None}
    pools: dict[str, list] = {}
    types: dict[str, str] = {}
    for host, node in sorted(nodes.items()):
        pool = node.pool if node.pool != "?" else None
        if pool:
            key = pool if pool in manifests else f"{pool}/{host}"
            pools.setdefault(pool, []).append((host, -1, key))
            types.setdefault(pool, node.instance_type or "")  # absent before types were exported
    sides = {name: PoolHosts(tuple(hosts), instance_type=types[name]) for name, hosts in pools.items()}
    # Autoscaled pools (their groups, exported as `pulled_pools`): their system is the pool's name.
    sides.update({pool: PoolHosts((), pulled="pulled") for pool in outputs.pulled_pools if pool in manifests})
    return Side(sides, manifests)
