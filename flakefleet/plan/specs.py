"""What the flake is given and what each host is told: pool specs, host facts, the k3s drop-in.

A pool's spec is everything its closure depends on, so all hosts of a pool share one closure
and evaluation cost grows with pools, not hosts. What differs per host (name, address, whether
it initializes the cluster) is a host fact, written by delivery outside the store:
`/etc/flakefleet/host.json` and the k3s drop-in `config.yaml.d/50-flakefleet-host.yaml`.
Pools with `per_host_closures` get their facts baked into one closure per host instead.
"""

from __future__ import annotations

import hashlib
import json

from flakefleet.config import StackConfig
from flakefleet.facts.aws import nvidia_gpu
from flakefleet.plan.contract import (
    FACTS_PATH, K3S_DROP_IN_PATH, NIX_SYSTEMS, PEERS_PATH, AutoscalerSpec, CiliumSpec, FileSpec, GpuSpec, InstallSpec,
    PoolSpec, WorkloadSpec,
)
from flakefleet.plan.inventory import Host, Inventory

# The version of host.json's layout (host_facts; nixos/host reads it).
FACTS_SCHEMA = 1
SECRETS_DIR = "/var/lib/flakefleet/secrets"
# Token files (nixos/roles: tokenFile, agentTokenFile) -> the runner's environment variable.
SERVER_TOKEN = (f"{SECRETS_DIR}/k3s-server-token", "FLAKEFLEET_SECRET_K3S_SERVER_TOKEN")
AGENT_TOKEN = (f"{SECRETS_DIR}/k3s-agent-token", "FLAKEFLEET_SECRET_K3S_AGENT_TOKEN")
# The cluster's CAs, made by the stack: k3s uses a CA whose certificate and key both exist in its
# tls directory and makes the others (pkg/daemons/control/deps/deps.go, createSigningCertKey). CA
# name -> (certificate env, key env); the files are <tls>/<name>.crt and .key.
K3S_TLS_DIR = "/var/lib/rancher/k3s/server/tls"
K3S_CAS = {
    ca: (f"FLAKEFLEET_SECRET_K3S_{ca.upper().replace('/', '_').replace('-', '_')}_CRT",
         f"FLAKEFLEET_SECRET_K3S_{ca.upper().replace('/', '_').replace('-', '_')}_KEY")
    for ca in ("server-ca", "client-ca", "request-header-ca", "etcd/server-ca", "etcd/peer-ca")
}


def host_facts(inv: Inventory, host: Host) -> dict:
    """The facts a host's shared closure reads at runtime (the schema of /etc/flakefleet/host.json)."""
    first = inv.control_planes[0]
    server = host.role == "control-plane" and host.name != first.name
    return {
        "schema": FACTS_SCHEMA,
        "cluster": inv.cluster,
        "name": host.name,
        "pool": host.pool,
        "role": host.role,
        "address": str(host.address),
        "api_endpoint": inv.api_endpoint,
        # The first control plane initializes etcd; the others join through the API endpoint.
        "init": host.name == first.name,
        "server": inv.api_endpoint if server else None,
    }


def pulled_facts(inv: Inventory, pool: str) -> dict:
    """What the instances of an autoscaled pool share of host.json (in their pointer): the rest,
    `name` and `address`, each reads from its instance metadata at boot."""
    return {"schema": FACTS_SCHEMA, "cluster": inv.cluster, "pool": pool, "role": "worker",
            "api_endpoint": inv.api_endpoint, "init": False, "server": None}


def k3s_host_config(facts: dict) -> dict:
    """The host's k3s config drop-in. Mirrors nixos/lib/default.nix:k3sHostConfig (a test compares them)."""
    config = {"node-name": facts["name"], "node-ip": facts["address"]}
    if facts["role"] == "control-plane":
        config.update({"cluster-init": True} if facts["init"] else {"server": facts["server"]})
    return config


def system_key(pool: str, host: str | None = None) -> str:
    """Name of one system to evaluate: the pool, or `pool/host` for per-host closures."""
    return f"{pool}/{host}" if host else pool


def pool_spec(cfg: StackConfig, inv: Inventory, pool_name: str, host: Host | None = None) -> PoolSpec:
    """Everything a pool's closure is built from (the input of the flake's `lib.evaluate`)."""
    pool = cfg.pool(pool_name)
    server = pool.role == "control-plane"
    sans = [str(inv.api_address), *(str(a) for a in inv.api_lb_addresses)]
    return PoolSpec(
        cluster=cfg.cluster.name, pool=pool.name, role=pool.role, hardware=pool.provider,
        system=NIX_SYSTEMS[pool.arch], api_endpoint=inv.api_endpoint,
        tls_sans=list(dict.fromkeys(sans)) if server else [],
        pod_cidr=str(cfg.cluster.pod_cidr), service_cidr=str(cfg.cluster.service_cidr),
        k3s_channel=cfg.cluster.k3s_channel, labels=dict(sorted(pool.labels.items())),
        taints=[t.render() for t in pool.taints], authorized_keys=list(cfg.delivery.authorized_keys),
        trusted_public_keys=[cfg.signing_public_key] if cfg.signing_public_key else [],
        host=host_facts(inv, host) if host is not None else None,
        cni=cfg.cluster.cni, cilium=cilium_spec(cfg), gpu=gpu_spec(cfg, pool_name),
        cluster_has_gpus=server and any(p.gpu for p in cfg.pools if p.capacity),
        # Control planes of a cluster with autoscaled pools run the cluster autoscaler for them.
        cluster_autoscaler=(AutoscalerSpec(region=cfg.region or "")
                            if server and any(p.autoscaling for p in cfg.pools) else None),
        images=sorted(w.name for w in cfg.workloads if pool.name in w.pools),
        workloads=workload_specs(cfg) if server else [],
        # A bootstrapped pool's disk layout (nixos/disko/); the disk is the install's, per host.
        # A per-host system names its host's disk: GRUB on a BIOS machine is written to it.
        install=InstallSpec(layout=pool.layout, disk=host.install.disk if host is not None and host.install else None)
        if pool.bootstrap else None,
        # An autoscaled pool: its instances pull it, with the agent in its closure (mixins/pull.nix).
        pull=pool.autoscaling is not None,
    )


def cilium_spec(cfg: StackConfig) -> CiliumSpec:
    """Cilium's settings (nixos/mixins/cilium.nix and addons/cilium.nix; read when it is the CNI)."""
    if cfg.cluster.cni != "cilium":
        return CiliumSpec()
    c = cfg.cluster.cilium
    return CiliumSpec(version=c.version, tunnel=c.tunnel, hubble=c.hubble)


def gpu_spec(cfg: StackConfig, pool_name: str) -> GpuSpec | None:
    """A GPU pool's GPUs (nixos/hardware/nvidia.nix): open kernel modules and NVSwitch from the
    instance catalog on EC2; on bring-your-own hosts as the pool says (`gpu_open_modules`,
    `gpu_nvswitch`), else Turing or newer without NVSwitch."""
    pool = cfg.pool(pool_name)
    if pool.gpu is None:
        return None
    known = nvidia_gpu(pool.instance_type) if pool.instance_type else None
    if known is not None:
        return GpuSpec(vendor=pool.gpu, open_modules=known.open_modules, nvswitch=known.nvswitch)
    return GpuSpec(vendor=pool.gpu, open_modules=pool.gpu_open_modules is not False,
                   nvswitch=bool(pool.gpu_nvswitch))


def workload_specs(cfg: StackConfig) -> list[WorkloadSpec]:
    """The stack's workloads as control planes deploy them: where they run, and which of those
    pools have GPUs (whose taint their pods then tolerate)."""
    gpu = {p.name for p in cfg.pools if p.gpu}
    return [WorkloadSpec(name=w.name, pools=list(w.pools), gpu_pools=[p for p in w.pools if p in gpu],
                         replicas=w.replicas) for w in cfg.workloads]


def system_specs(cfg: StackConfig, inv: Inventory) -> dict[str, dict]:
    """Every system the stack needs, as the flake reads it (PoolSpec.as_json): one per pool with
    hosts (or an autoscaled pool, whose hosts are its group's), or one per host where a pool opts in."""
    specs: dict[str, dict] = {}
    for pool in cfg.pools:
        hosts = inv.pool_hosts(pool.name)
        if not hosts and pool.autoscaling is None:
            continue
        if pool.per_host_closures:
            specs.update({system_key(pool.name, h.name): pool_spec(cfg, inv, pool.name, h).as_json() for h in hosts})
        else:
            specs[system_key(pool.name)] = pool_spec(cfg, inv, pool.name).as_json()
    return specs


def host_system(cfg: StackConfig, host: Host) -> str:
    """The key of the system a host runs."""
    pool = cfg.pool(host.pool)
    return system_key(host.pool, host.name if pool.per_host_closures else None)


SNAPSHOTS_DROP_IN = "/etc/rancher/k3s/config.yaml.d/60-flakefleet-snapshots.yaml"


def snapshot_config(cfg: StackConfig, bucket: str | None) -> dict:
    """k3s etcd snapshot settings of a server: schedule and retention, and S3 when there is a bucket
    (the instance profile grants access to the cluster's folder; no keys anywhere)."""
    config: dict = {
        "etcd-snapshot-schedule-cron": cfg.dr.snapshot_schedule,
        "etcd-snapshot-retention": cfg.dr.snapshot_retention,
    }
    if bucket:
        config.update({"etcd-s3": True, "etcd-s3-bucket": bucket, "etcd-s3-region": cfg.region,
                       "etcd-s3-folder": cfg.cluster.name})
    return config


CACHE_CONF_PATH = "/etc/flakefleet/nix-cache.conf"  # nixos/common/nix.nix includes it

# Who reads each file delivery writes (restarted when it changes: NixOS' switch does not see files
# outside the system). k3s reads its config drop-ins and token files when it starts; nix-daemon
# its nix.conf (and the files it includes); nixos/common/host-facts.nix's unit sets the hostname.
K3S = ("k3s.service",)
NIX_DAEMON = ("nix-daemon.service",)
HOSTNAME = ("flakefleet-hostname.service",)
# nixos/common/firewall.nix's rules for ports only nodes may reach read the peers file at start.
FIREWALL = ("firewall.service",)


def host_files(
    cfg: StackConfig, inv: Inventory, host: Host, snapshot_bucket: str | None = None, cache: str | None = None,
    ca_hash: str = "",
) -> tuple[FileSpec, ...]:
    """Files delivery writes on a host: its k3s tokens (secrets: named here, read from the runner's
    environment), a server's snapshot settings, the binary cache it substitutes from (`cache`, a
    store URL, included by nixos/common/nix.nix), on metal the fleet's addresses its firewall
    admits to the ports only nodes may reach, and, for shared closures, its facts and k3s drop-in.
    With `ca_hash` (the stack made the cluster's CAs), the first control plane also gets them."""
    first = host.name == inv.control_planes[0].name
    secrets = token_files(host) + (ca_files() if ca_hash and first else ())
    if cache:
        secrets = (FileSpec(CACHE_CONF_PATH, "0644", content=f"extra-substituters = {cache}\n", restart=NIX_DAEMON),
                   *secrets)
    if host.role == "control-plane":
        content = json.dumps(snapshot_config(cfg, snapshot_bucket), sort_keys=True) + "\n"
        secrets = (FileSpec(SNAPSHOTS_DROP_IN, "0600", content=content, restart=K3S), *secrets)
    if host.provider == "metal":  # its firewall admits the fleet to the ports only nodes may reach
        peers = FileSpec(PEERS_PATH, "0644", content=json.dumps(inv.peers, sort_keys=True) + "\n", restart=FIREWALL)
        secrets = (peers, *secrets)
    pool = cfg.pool(host.pool)
    if pool.per_host_closures:
        return secrets
    facts = host_facts(inv, host)
    return (
        FileSpec(FACTS_PATH, "0644", content=json.dumps(facts, sort_keys=True) + "\n", restart=HOSTNAME),
        # JSON is YAML: k3s reads this drop-in from config.yaml.d/.
        FileSpec(K3S_DROP_IN_PATH, "0600", content=json.dumps(k3s_host_config(facts), sort_keys=True) + "\n",
                 restart=K3S),
        *secrets,
    )


def token_files(host: Host) -> tuple[FileSpec, ...]:
    """The k3s token files. Every join presents a secure token (`K10<CA hash>::<user>:<secret>`,
    docs.k3s.io/cli/token), so the joining node checks the server's CA before it sends the
    secret: the server token on control planes (which the first one starts with too: its CA is
    the stack's, known before it starts), the agent token on workers. A control plane's agent
    token is the bare secret: it only defines what agents present (its `--agent-token`)."""
    if host.role == "control-plane":
        return (FileSpec(SERVER_TOKEN[0], "0600", secret_env=SERVER_TOKEN[1], restart=K3S, k3s_token="server"),
                FileSpec(AGENT_TOKEN[0], "0600", secret_env=AGENT_TOKEN[1], restart=K3S))
    return (FileSpec(AGENT_TOKEN[0], "0600", secret_env=AGENT_TOKEN[1], restart=K3S, k3s_token="node"),)


def ca_files() -> tuple[FileSpec, ...]:
    """The stack's CAs on the first control plane, placed only where none is yet (before k3s'
    first start: a cluster that made its own CAs keeps them; joining servers take theirs from
    the cluster's bootstrap data)."""
    return tuple(
        FileSpec(f"{K3S_TLS_DIR}/{ca}.{kind}", mode, secret_env=env, create_only=True)
        for ca, (crt, key) in K3S_CAS.items()
        for kind, mode, env in (("crt", "0644", crt), ("key", "0600", key))
    )


def files_hash(files: tuple[FileSpec, ...]) -> str:
    """A stable hash of the non-secret files and the names of the secret ones (a delivery trigger)."""
    return hashlib.sha256(json.dumps([f.__dict__ for f in files], sort_keys=True).encode()).hexdigest()
