"""flakefleet: a Kubernetes fleet with a cloud body and a NixOS soul.

Deploys, per stack: a VPC with least-privilege security groups, S3 buckets for the Nix binary
cache and etcd snapshots, EC2 machines (virtual and *.metal) booting NixOS, bring-your-own
hosts by address, an internal API load balancer when there are several control planes, and
each pool's NixOS system from the locked flake in nixos/, delivered to every host and switched
atomically with rollback. Every address and every system is planned before any resource, so a
preview shows them all.
"""

import pulumi

from components.api_endpoint import ApiLoadBalancer, ApiLoadBalancerArgs
from components.autoscaling import PulledPools, PulledPoolsArgs, group_name
from components.delivery import Delivery, DeliveryArgs
from components.install import Installs, InstallsArgs
from components.kubeconfig import Kubeconfig, KubeconfigArgs
from components.machine import Machines, MachinesArgs
from components.network import Network, NetworkArgs
from components.publish import Publish, PublishArgs
from components.stale_nodes import StaleNodes, StaleNodesArgs
from components.storage import Storage, StorageArgs
from components.tokens import ClusterTokens, ClusterTokensArgs
from flakefleet.plan.rollout import waves
from flakefleet.plan.specs import host_system
from program.config import cache_arn, load_stack
from program.last_update import (announce_changes, last_update, refuse_unsafe_changes,
                                 upgrade_snapshot)
from program.outputs import node_table, pool_split
from program.restore import plan_restore
from program.systems import boot_release, plan_systems

# Config: validated whole, then planned (hosts, zones, subnets, addresses, API endpoint).
cfg, inventory = load_stack()
tags = {"flakefleet:cluster": cfg.cluster.name, "flakefleet:stack": pulumi.get_stack()}

# NixOS: one system per pool from the locked flake, evaluated now so the preview shows which
# pools change (cached on disk: an unchanged preview evaluates nothing).
systems = plan_systems(cfg, inventory)

# What changes in each pool's system since the last update (this stack's own outputs), one
# preview line per pool: packages, services restarted, reboots (kernel, initrd, modules,
# parameters), hosts and their waves, and a k3s upgrade's order.
last = last_update()
# Workers keep their batches and leaving hosts stay admitted until drained: a host joining or
# leaving changes nothing on the others.
inventory = inventory.after(last.batches, last.nodes or {})
manifests = announce_changes(cfg, inventory, systems, last.outputs)

# Refused before any resource (every component waits for these checks): a CNI switch, and a k3s
# change against Kubernetes' version skew policy (downgrade, skipped minor, workers ahead, etcd).
checked = pulumi.ResourceOptions(depends_on=refuse_unsafe_changes(cfg, inventory, manifests, last.outputs))

# A k3s minor upgrade: the first server to move takes an etcd snapshot first (named in the outputs).
snapshots_before = upgrade_snapshot(cfg, inventory, manifests, last.outputs)

# Disaster recovery: a rebuild's snapshot, picked now so the preview names it.
restore = plan_restore(cfg)

# Network: VPC, subnets per zone, NAT, security groups from nixos/ports.json, flow logs.
network = (
    Network(
        cfg.cluster.name,
        NetworkArgs(inventory, cfg.network, cfg.storage.force_destroy, tags, cfg.cluster.features,
                    reserve_planned=any(p.autoscaling for p in cfg.pools)),
        checked,
    )
    if cfg.uses_ec2
    else None
)

# Storage: binary cache and etcd snapshots, private, TLS-only, versioned, encrypted.
storage = Storage(cfg.cluster.name, StorageArgs(cfg.storage, tags), checked) if cfg.storage.enabled else None

# Machines: instance profiles and boot AMIs for the EC2 hosts; the instances themselves, and
# their host keys checked against their consoles, are made by the rollout below.
machines = (
    Machines(
        cfg.cluster.name,
        MachinesArgs(
            inventory=inventory,
            pools=tuple(cfg.pools),
            nixos_release=boot_release(cfg),
            subnet_ids=network.private_subnet_ids,
            security_group_ids=network.security_group_ids,
            cache_arn=cache_arn(cfg, storage),
            snapshot_arn=storage.snapshot_arn if storage else None,
            authorized_keys=tuple(cfg.delivery.authorized_keys),
            signing_public_key=cfg.signing_public_key,
            region=cfg.region or "",
            autoscaled_groups=tuple(group_name(cfg.cluster.name, p.name) for p in cfg.pools if p.autoscaling),
            tags=tags,
        ),
        checked,
    )
    if network
    else None
)

# Bring-your-own machines the stack installs NixOS on (pools[].bootstrap): their installed host
# keys now; each install runs in its host's wave below, once.
installs = (
    Installs(f"{cfg.cluster.name}-install", InstallsArgs(cfg, inventory, systems), checked)
    if any(h.install for h in inventory.hosts)
    else None
)

# API endpoint: an internal NLB when several control planes run on EC2.
api_lb = (
    ApiLoadBalancer(
        f"{cfg.cluster.name}-api",
        ApiLoadBalancerArgs(
            inventory=inventory,
            vpc_id=network.vpc_id,
            subnet_ids=network.private_subnet_ids,
            security_group_id=network.security_group_ids["lb"],
            tags=tags,
        ),
        checked,
    )
    if network and inventory.api_lb_addresses
    else None
)

# Cluster secrets: k3s' CAs and its server and agent tokens (Pulumi secrets, delivered as 0600
# files); every join presents a secure token, which pins the server CA.
tokens = ClusterTokens(f"{cfg.cluster.name}-k3s-token",
                       ClusterTokensArgs(cluster=cfg.cluster.name, server_token=cfg.server_token), checked)

# Binary cache: each pool's system built once (here, or on its builder) and uploaded once to the
# signed cache the hosts substitute from, before the first wave.
cache_bucket = cfg.delivery.cache.bucket or (storage.cache_bucket if storage else None)
publish = Publish(
    f"{cfg.cluster.name}-publish",
    PublishArgs(cfg, inventory, systems, cache_bucket, pulumi.Output.secret(cfg.signing_key)),
    checked,
)

# Rollout: each host's machine (EC2) and NixOS delivery over pinned SSH, control planes one at
# a time, then workers in batches; each switch is confirmed healthy (its batch Ready) or rolled back.
delivery = Delivery(
    f"{cfg.cluster.name}-deliver",
    DeliveryArgs(
        config=cfg,
        inventory=inventory,
        systems=systems,
        generated_host_keys={**(machines.host_keys if machines else {}), **(installs.host_keys if installs else {})},
        signing_key=pulumi.Output.secret(cfg.signing_key),
        secret_environment=tokens.environment(),
        machines=machines,
        installs=installs,
        api_ready=[api_lb] if api_lb else [],
        snapshot_bucket=storage.snapshot_bucket if storage and machines else None,
        restore=restore,
        uploads=publish.steps,
        cache_bucket=cache_bucket,
        ca_hash=tokens.ca_hash,
        known_host_keys=last.host_keys,
        upgrade_snapshot=snapshots_before,
    ),
    checked,
)

# Autoscaled worker pools: per pool an Auto Scaling group whose instances pull the pool's signed
# system from the cache at boot and join with a token from SSM (no per-host resource); a new
# system is a new launch template version, rolled out by an instance refresh.
pulled = (
    PulledPools(
        f"{cfg.cluster.name}-pulled",
        PulledPoolsArgs(
            config=cfg,
            systems=systems,
            nixos_release=boot_release(cfg),
            subnet_ids=network.private_subnet_ids,
            security_group_id=network.security_group_ids["worker"],
            cache_bucket=cache_bucket,
            agent_token=tokens.worker_join_token(),
            after=[*publish.steps, delivery.first],
            tags=tags,
        ),
        checked,
    )
    if network and cache_bucket is not None and any(p.autoscaling for p in cfg.pools)
    else None
)

# Cluster: the admin kubeconfig from the first control plane, pointed at the API endpoint.
first = inventory.control_planes[0]
kubeconfig = Kubeconfig(
    f"{cfg.cluster.name}-kubeconfig",
    KubeconfigArgs(
        cluster=cfg.cluster.name,
        api_endpoint=inventory.api_endpoint,
        first_control_plane=first,
        host_key=delivery.host_keys[first.name],
        system=delivery.first_system,
        after=delivery.first,
    ),
    checked,
)

# After a rebuild: Nodes the snapshot brought back for hosts this stack does not have.
if restore:
    StaleNodes(
        f"{cfg.cluster.name}-stale-nodes",
        StaleNodesArgs(
            first_control_plane=first,
            host_key=delivery.host_keys[first.name],
            keep=tuple(h.name for h in inventory.hosts),
            restore_id=restore.id,
            after=delivery.last_wave,  # which waited for every wave before it
        ),
        checked,
    )

# Exports.
pulumi.export("api_endpoint", inventory.api_endpoint)
pulumi.export("cluster_cni", cfg.cluster.cni)  # what the next update holds a CNI switch against
pulumi.export("api_lb_dns_name", api_lb.dns_name if api_lb else None)
wanted = {h.name: systems[host_system(cfg, h)].out for h in inventory.hosts}
nodes = node_table(inventory, delivery.hosts, delivery.host_keys, wanted)
pulumi.export("nodes", nodes)
pulumi.export("batches", [[h.name for h in wave] for wave in waves(cfg, inventory) if wave[0].role == "worker"])  # kept next time
pulumi.export("pools", pool_split(nodes))  # who is off its pool's system
pulumi.export("systems", {name: system.out for name, system in systems.items()})
pulumi.export("boot", {name: system.boot for name, system in systems.items()})  # what the next preview compares
pulumi.export("system_manifests", {name: m.pack() for name, m in manifests.items()})  # ... packages and units too
pulumi.export("kubeconfig", kubeconfig.kubeconfig)
pulumi.export("cluster_ca_certificate", kubeconfig.ca_certificate)
pulumi.export("drift", delivery.hosts.apply(lambda hosts: {h: out["found"] for h, out in hosts.items()}))  # what each host's last delivery found; live: python -m flakefleet drift
pulumi.export("upgrade_snapshot", snapshots_before)  # the etcd snapshot taken before a k3s minor upgrade, if any
pulumi.export("pulled_pools", pulled.pools if pulled else {})  # pool -> its group and bucket (status, drift)
pulumi.export("k3s_server_token", tokens.server_token)  # a secret: what a rebuild of this cluster needs
pulumi.export(
    "buckets",
    {"cache": storage.cache_bucket, "snapshots": storage.snapshot_bucket} if storage else {},
)
