"""The rollout: in which order hosts are delivered, and each host's delivery plan (pure)."""

from __future__ import annotations

from flakefleet.config import StackConfig
from flakefleet.deliver import DeliveryPlan, Endpoint
from flakefleet.inventory import Host, Inventory
from flakefleet.nixos import host_files, host_system
from flakefleet.systems import System


def rollout_waves(inv: Inventory, max_parallel: int) -> list[tuple[Host, ...]]:
    """Control planes one at a time, the cluster-initializing one first (etcd keeps quorum), then
    workers in batches of `max_parallel`, each after the previous one is healthy."""
    waves: list[tuple[Host, ...]] = [(h,) for h in inv.control_planes]
    workers = inv.workers
    waves += [workers[i : i + max_parallel] for i in range(0, len(workers), max_parallel)]
    return waves


def delivery_plans(
    cfg: StackConfig, inv: Inventory, systems: dict[str, System], host_keys: dict[str, str]
) -> dict[str, DeliveryPlan]:
    """Every host's plan. A host's batch is its wave: it is confirmed only when all of the wave's
    nodes are Ready, asked on the control planes delivered so far (the initializing one first)."""
    endpoints = {
        h.name: Endpoint(h.name, str(h.address), h.ssh_port, h.ssh_user, host_keys[h.name]) for h in inv.control_planes
    }
    pools = {p.name: p for p in cfg.pools}
    plans: dict[str, DeliveryPlan] = {}
    delivered_cps: list[Endpoint] = []
    for wave in rollout_waves(inv, cfg.delivery.max_parallel):
        if wave[0].role == "control-plane":
            delivered_cps.append(endpoints[wave[0].name])
        for host in wave:
            system = systems[host_system(cfg, host)]
            plans[host.name] = DeliveryPlan(
                host=host.name,
                address=str(host.address),
                port=host.ssh_port,
                user=host.ssh_user,
                host_key=host_keys[host.name],
                system=system.out,
                drv=system.drv,
                files=host_files(cfg, inv, host),
                boot_timeout_s=cfg.delivery.metal_boot_timeout_s if pools[host.pool].bare_metal else cfg.delivery.boot_timeout_s,
                health_timeout_s=cfg.delivery.health_timeout_s,
                substitute_on_destination=cfg.delivery.substitute_on_destination,
                batch=tuple(h.name for h in wave),
                ready_via=tuple(delivered_cps),
                control_planes=tuple(endpoints.values()),
            )
    return plans
