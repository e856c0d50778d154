"""Each host's delivery plan and each pool's publish plan: what the program hands the runners (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flakefleet.config import StackConfig
from flakefleet.facts.flake import layout_firmware
from flakefleet.plan.contract import Builder, DeliveryPlan, Endpoint, InstallPlan, PublishPlan, System, substituter_url
from flakefleet.plan.inventory import Host, Inventory
from flakefleet.plan.rollout import RestorePoint, waves
from flakefleet.plan.specs import NIX_SYSTEMS, host_files, host_system, pool_spec, pulled_facts, system_key


def our_cache(cfg: StackConfig, host: Host, cache_bucket: str | None) -> str | None:
    """The stack's cache as `host` reads it: EC2 hosts from the bucket with their instance
    profile, bring-your-own hosts through `delivery.cache.url`; None when it does not."""
    if not (cfg.delivery.cache.enabled and cache_bucket):
        return None
    return substituter_url(cache_bucket, cfg.cache_region) if host.provider == "ec2" else cfg.delivery.cache.url


def substituters(cfg: StackConfig, host: Host, cache_bucket: str | None) -> tuple[str, ...]:
    """Where `host` fetches its system from: the stack's cache, then the upstream caches; empty
    when the host gets an SSH copy from the deployer instead."""
    cache = cfg.delivery.cache
    if ours := our_cache(cfg, host, cache_bucket):
        return (ours, *cache.upstreams)
    return tuple(cache.upstreams) if build_mode(cfg, host.pool) == "target" else ()


def build_mode(cfg: StackConfig, pool_name: str) -> str:
    """`local`, `target`, or a builder's name, for one pool."""
    return cfg.delivery.build_of(cfg.pool(pool_name).build)


def target_build(cfg: StackConfig, inv: Inventory, host: Host, cache_bucket: str | None) -> dict:
    """A host's part in its pool's build: `build` (`target` or `local`), and on `target` with the
    stack's cache, the pool's first host pushes what it built (`push`) and the others wait for it
    (`await_build`). Per-host closures differ by host: each builds its own, nothing to share."""
    if build_mode(cfg, host.pool) != "target":
        return {"build": "local"}
    pool = cfg.pool(host.pool)
    if not our_cache(cfg, host, cache_bucket) or pool.per_host_closures:
        return {"build": "target"}
    if inv.pool_hosts(host.pool)[0].name == host.name:
        return {"build": "target", "push": {"bucket": cache_bucket, "region": cfg.cache_region}}
    return {"build": "target", "await_build": True}


def publish_plans(
    cfg: StackConfig, inv: Inventory, systems: Mapping[str, System], cache_bucket: str | None
) -> dict[str, PublishPlan]:
    """System name -> its one publish before the first wave: systems some host substitutes
    (uploaded once), or built on a named builder (built once); none for the rest."""
    plans: dict[str, PublishPlan] = {}
    for host in inv.hosts:
        name, mode = host_system(cfg, host), build_mode(cfg, host.pool)
        uploads = cache_bucket if our_cache(cfg, host, cache_bucket) else None
        builder = cfg.delivery.builder(mode)
        if mode == "target" or (uploads is None and builder is None) or name in plans:
            continue
        plans[name] = PublishPlan(
            pool=name,
            system=systems[name].out,
            drv=systems[name].drv,
            bucket=uploads,
            region=cfg.cache_region,
            upstreams=tuple(cfg.delivery.cache.upstreams),
            builder=Builder(builder.name, str(builder.address), builder.port, builder.user, builder.host_key)
            if builder else None,
        )
    return plans | pulled_publish_plans(cfg, inv, systems, cache_bucket)


def pulled_publish_plans(
    cfg: StackConfig, inv: Inventory, systems: Mapping[str, System], cache_bucket: str | None
) -> dict[str, PublishPlan]:
    """An autoscaled pool's publish: its system uploaded to the stack's cache (built here: its
    instances pull it), then its signed pointer written next to it."""
    plans = {}
    for pool in cfg.pools:
        if pool.autoscaling is None or cache_bucket is None:
            continue  # the config's rules require a cache for autoscaling
        name = system_key(pool.name)
        plans[name] = PublishPlan(pool=name, system=systems[name].out, drv=systems[name].drv, bucket=cache_bucket,
                                  region=cfg.cache_region, upstreams=tuple(cfg.delivery.cache.upstreams),
                                  pointer={"cluster": cfg.cluster.name, "pool": pool.name,
                                           "facts": pulled_facts(inv, pool.name)})
    return plans


@dataclass(frozen=True)
class Resolved:
    """What a host's plan takes from other resources, once the engine resolves them (named:
    components/delivery.py resolves them by these names, never by position)."""

    snapshot_bucket: str | None = None
    """The bucket control planes write etcd snapshots to (None: local snapshots only)."""
    cache_bucket: str | None = None
    """The stack's binary cache bucket (None: SSH copies from the deployer)."""
    ca_hash: str = ""
    """The hash of the stack's server CA when the stack made the cluster's CAs: the first control
    plane gets them, every secure token pins it ("": k3s makes its own)."""
    snapshot_before: str = ""
    """The etcd snapshot this host takes before a k3s minor upgrade ("": none)."""


def host_plan(
    cfg: StackConfig,
    inv: Inventory,
    host: Host,
    wave: tuple[Host, ...],
    systems: Mapping[str, System],
    host_keys: Mapping[str, str],
    resolved: Resolved = Resolved(),
    restore: RestorePoint | None = None,
) -> DeliveryPlan:
    """One host's plan; `host_keys` needs this host's key and the control planes' keys only (those
    of later waves when known).

    The host's batch is its wave: it is confirmed only when all of the wave's nodes are Ready,
    asked on the control planes delivered so far (the initializing one first). With a restore
    point, the first control plane restores it and the other control planes wipe their etcd.
    """
    snapshot_bucket, cache_bucket = resolved.snapshot_bucket, resolved.cache_bucket
    control = inv.control_planes
    # A control plane whose key is not known yet (made later in this first update) is left out.
    endpoints = tuple(Endpoint.of(h, host_keys[h.name]) for h in control if h.name in host_keys)
    delivered_cps = endpoints[: [h.name for h in control].index(host.name) + 1] if host.role == "control-plane" else endpoints
    pool = cfg.pool(host.pool)
    system = systems[host_system(cfg, host)]
    return DeliveryPlan(
        host=host.name,
        address=str(host.address),
        port=host.ssh_port,
        user=host.ssh_user,
        host_key=host_keys[host.name],
        system=system.out,
        drv=system.drv,
        files=host_files(cfg, inv, host, snapshot_bucket, our_cache(cfg, host, cache_bucket), resolved.ca_hash),
        ca_hash=resolved.ca_hash,
        snapshot_before=resolved.snapshot_before,
        boot_timeout_s=cfg.delivery.metal_boot_timeout_s if pool.bare_metal else cfg.delivery.boot_timeout_s,
        health_timeout_s=cfg.delivery.health_timeout_s,
        settle_s=cfg.delivery.settle_s,
        reboot=pool.reboot,
        substitute_on_destination=cfg.delivery.substitute_on_destination,
        batch=tuple(h.name for h in wave),
        ready_via=delivered_cps,
        control_planes=endpoints,
        restore_id=restore.id if restore and host.role == "control-plane" else None,
        restore_args=restore.k3s_args() if restore and host.name == control[0].name else (),
        substituters=substituters(cfg, host, cache_bucket),
        instance_type=host.instance_type or "" if host.provider == "ec2" else "",
        region=cfg.region or "" if host.provider == "ec2" else "",
        **target_build(cfg, inv, host, cache_bucket),
    )


def delivery_plans(
    cfg: StackConfig,
    inv: Inventory,
    systems: Mapping[str, System],
    host_keys: Mapping[str, str],
    snapshot_bucket: str | None = None,
    restore: RestorePoint | None = None,
    ca_hash: str = "",
) -> dict[str, DeliveryPlan]:
    """Every host's plan, in rollout order (see host_plan)."""
    return {
        host.name: host_plan(cfg, inv, host, wave, systems, host_keys,
                             Resolved(snapshot_bucket=snapshot_bucket, ca_hash=ca_hash), restore)
        for wave in waves(cfg, inv)
        for host in wave
    }


def install_plan(cfg: StackConfig, inv: Inventory, host: Host, systems: Mapping[str, System], host_key: str,
                 delivery: str, flake: str) -> InstallPlan:
    """A bootstrapped host's install: reached as its delivery reaches it, its pre-install key
    pinned, the pool's system and spec (for its disko script), the stack's key for the installed
    system, and its delivery plan (JSON, to drain it first when a reinstall wipes a node)."""
    pool = cfg.pool(host.pool)
    spec = pool_spec(cfg, inv, host.pool, host if pool.per_host_closures else None).as_json()
    return InstallPlan(
        host=host.name, address=str(host.address), port=host.ssh_port, user=host.ssh_user,
        install_host_key=host.install.host_key, host_key=host_key, layout=host.install.layout,
        system=systems[host_system(cfg, host)].out, spec=spec, arch=NIX_SYSTEMS[pool.arch],
        disk=host.install.disk, reinstall=host.install.reinstall, flake=flake,
        boot_timeout_s=cfg.delivery.metal_boot_timeout_s, delivery=delivery,
        network=host.install.network.to_json(), firmware=layout_firmware(Path(flake), host.install.layout),
        gpu=spec.get("gpu"),
    )

