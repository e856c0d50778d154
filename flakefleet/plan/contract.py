"""What the program hands each command it registers, and what those commands hand back: the
plans (JSON, no secrets), the environment variables that carry secrets and identities, the
reports (JSON on stdout, kept in state), the exit codes, and the evaluated systems the plans name.
Everything here is data: the runner and the program meet here and nowhere else."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal, get_args, get_type_hints

# The environment of a delivery Command: its plan; secrets only through FLAKEFLEET_SECRET_<NAME>
# and FLAKEFLEET_SIGNING_KEY, never arguments.
PLAN_ENV = "FLAKEFLEET_DELIVERY"
SECRET_ENV_PREFIX = "FLAKEFLEET_SECRET_"
SIGNING_KEY_ENV = "FLAKEFLEET_SIGNING_KEY"
# The deployer's own SSH identity: deliberately not part of the plan (a Pulumi input), so that
# deployers with keys in different places do not see a change.
IDENTITY_ENV = "FLAKEFLEET_SSH_IDENTITY"
# The EC2 instance behind the host ("" for bring-your-own): a new instance needs its system again.
INSTANCE_ENV = "FLAKEFLEET_INSTANCE_ID"
# pulumi-command gives `update` and `delete` the stdout of the last create or update: our report.
PREVIOUS_STDOUT_ENV = "PULUMI_COMMAND_STDOUT"
# The plans of the other commands: a pool's publish, the kubeconfig read, the stale-node clean-up.
PUBLISH_ENV = "FLAKEFLEET_PUBLISH"
KUBECONFIG_PLAN_ENV = "FLAKEFLEET_KUBECONFIG"
PRUNE_PLAN_ENV = "FLAKEFLEET_PRUNE"

# Where delivery writes what a shared pool closure reads at runtime (nixos/lib/default.nix: paths).
# The cache bucket's keys of autoscaled pools, beside Nix's own layout: their signed pointers
# (flakefleet/pull/pointer.py) and their instances' outcomes (nixos/host/flakefleet_pull.py).
POINTERS = "flakefleet/pointers"  # <cluster>/<pool>/<system hash>.json, and current.json
REPORTS = "flakefleet/reports"  # <cluster>/<pool>/<instance id>.json


def current_pointer_key(cluster: str, pool: str) -> str:
    """The bucket key of a pool's newest pointer (a copy, read by status and drift)."""
    return f"{POINTERS}/{cluster}/{pool}/current.json"


FACTS_PATH = "/etc/flakefleet/host.json"
PEERS_PATH = "/etc/flakefleet/peers.json"  # nixos/lib/default.nix: paths.peers
K3S_DROP_IN_PATH = "/etc/rancher/k3s/config.yaml.d/50-flakefleet-host.yaml"

# Exit codes of the runner.
OK, FAILED, ROLLED_BACK, UNREACHABLE = 0, 1, 3, 4

NIX_SYSTEMS = {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux"}


# ----------------------------------------------------------------------------- evaluated systems


@dataclass(frozen=True)
class System:
    """One evaluated system: its derivation and the out path delivery will switch hosts to."""

    drv: str
    out: str
    boot: dict | None = None
    """The boot files (kernel, initrd, modules, params) a host reboots for when they change."""
    links: dict | None = None
    """The links it makes in k3s' directories: {"manifests": [file name], "images": [file name]}
    (None when the flake does not say)."""
    agent: str | None = None
    """An autoscaled pool's pull agent (in the system's closure), which its user data runs."""


# ----------------------------------------------------------------------------- pool specs


def option(description: str, default: Any = MISSING, *, example: Any = None, pattern: str | None = None,
           unsigned: bool = False, selects: bool = False) -> Any:
    """A spec field: the NixOS option `flakefleet.<camelCase name>` it sets, described (the flake
    declares it from flakefleet/plan/schema.py's emitted schema), or with `selects`, a key the
    flake reads to choose modules, not an option. `pattern`/`unsigned` narrow a str/int."""
    meta = {"description": description, "example": example, "pattern": pattern, "unsigned": unsigned,
            "selects": selects}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if isinstance(default, type):  # a group of options: its own defaults
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CiliumSpec:
    """Cilium's settings (nixos/mixins/cilium.nix, addons/cilium.nix)."""

    version: str = option("Cilium's Helm chart version (pinned; the cluster's helm controller fetches it).",
                          "1.18.4", pattern=r"1\.[0-9]{2}\.[0-9]{1,2}")
    tunnel: Literal["vxlan", "geneve"] = option("Cilium's overlay between nodes.", "vxlan")
    hubble: bool = option("Hubble flow visibility (server on every node, relay in the cluster).", False)


@dataclass(frozen=True)
class GpuSpec:
    """A GPU pool's GPUs (nixos/hardware/nvidia.nix)."""

    vendor: Literal["nvidia"] = option("GPU vendor.")
    open_modules: bool = option("Whether NVIDIA's open kernel modules drive these GPUs (Turing and newer).", True)
    nvswitch: bool = option("Whether the GPUs hang off NVSwitch (p4d, p5, p6): the fabric manager must run.", False)


@dataclass(frozen=True)
class AutoscalerSpec:
    """The cluster autoscaler's settings (nixos/addons/cluster-autoscaler.nix)."""

    region: str = option("The AWS region of the cluster's Auto Scaling groups.", example="eu-west-1")


@dataclass(frozen=True)
class WorkloadSpec:
    """A workload the control planes deploy (nixos/addons/workloads.nix)."""

    name: str = option("A workload of nixos/workloads/.")
    pools: list[str] = option("Pools that preload its image and run its pods.")
    gpu_pools: list[str] = option("Those of `pools` that have GPUs (its pods tolerate their taint).", [])
    replicas: int = option("Pods to run.", 1, unsigned=True)


@dataclass(frozen=True)
class InstallSpec:
    """A bootstrapped pool's install (nixos/mixins/install.nix, nixos/disko/)."""

    layout: str = option("Disk layout: a file of nixos/disko/.")
    disk: str | None = option("The disk to write (the install's own evaluation names the host's).", None)


@dataclass(frozen=True)
class PoolSpec:
    """Everything a pool's closure is built from: the input of the flake's `lib.evaluate`. Each
    field is the `flakefleet.*` option of its camelCase name (nixos/common/flakefleet.nix declares
    them from this class) unless it selects modules."""

    cluster: str = option("Cluster name.")
    pool: str = option("Pool this system is built for; every host of the pool runs it.")
    role: Literal["control-plane", "worker"] = option("Kubernetes role of the pool's hosts: k3s server or agent.")
    hardware: Literal["ec2", "metal"] = option(
        "Where the hosts run: EC2 instances (virtual or *.metal) or bring-your-own machines.")
    api_endpoint: str = option("The Kubernetes API endpoint agents register with and servers join through.",
                               example="https://10.30.0.4:6443")
    authorized_keys: list[str] = option(
        "SSH public keys allowed to log in as root: the deploy key, so delivery keeps access.")
    system: Literal["x86_64-linux", "aarch64-linux"] = option(
        "The Nix system the pool runs (nixpkgs.hostPlatform).", selects=True)
    tls_sans: list[str] = option(
        "Extra names and addresses in the API server certificate (the load balancer's).", [])
    pod_cidr: str = option("Pod network.", "10.42.0.0/16")
    service_cidr: str = option("Service network.", "10.43.0.0/16")
    k3s_channel: str = option("k3s release line: `stable` (nixpkgs' k3s) or `1.NN` (k3s_1_NN).", "stable")
    labels: dict[str, str] = option("Kubernetes node labels of the pool.", {})
    taints: list[str] = option("Kubernetes node taints of the pool, as `key=value:Effect`.", [],
                               example=["dedicated=metal:NoSchedule"])
    trusted_public_keys: list[str] = option(
        "Nix signing keys whose store paths the host accepts (delivery signs every closure).", [])
    cni: Literal["flannel", "cilium"] = option(
        "The pod network: k3s' own flannel, or Cilium installed by the cluster (mixins/cilium.nix, addons/cilium.nix).",
        "flannel")
    cilium: CiliumSpec = option("Cilium's settings, when it is the cluster's CNI.", CiliumSpec)
    gpu: GpuSpec | None = option("The pool's GPUs (hardware/nvidia.nix), or null.", None)
    cluster_autoscaler: AutoscalerSpec | None = option(
        "Set when some pool of the cluster is autoscaled: control planes then run the cluster autoscaler "
        "(addons/cluster-autoscaler.nix).", None)
    cluster_has_gpus: bool = option(
        "Whether some pool of the cluster has GPUs: control planes then deploy NVIDIA's device plugin.", False)
    images: list[str] = option(
        "Workloads (nixos/workloads/) whose images this pool's nodes preload (services.k3s.images).", [],
        example=["hello"])
    workloads: list[WorkloadSpec] = option("Workloads the control planes deploy (services.k3s.manifests).", [])
    host: dict[str, Any] | None = option(
        "Host facts baked into the closure, for pools that opt into per-host closures; null shares one closure "
        "per pool.", None)
    install: InstallSpec | None = option("A bootstrapped pool's disk layout (mixins/install.nix).", None,
                                         selects=True)
    pull: bool = option("An autoscaled pool: its instances pull it, with the agent in its closure (mixins/pull.nix).",
                        False, selects=True)

    def as_json(self) -> dict:
        """The spec as the flake reads it: camelCase keys, the names of the options they set."""
        return to_json_names(asdict(self), type(self))


def camel(name: str) -> str:
    """A spec field's name on the Nix side: `tls_sans` -> `tlsSans`."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def to_json_names(value: Any, cls: Any) -> Any:
    """`asdict(cls(...))` with every dataclass field renamed by `camel` (free-form dicts, labels
    and host facts, keep their keys: only dataclass fields are renamed)."""
    return _renamed(value, cls)


def _renamed(value: Any, cls: Any) -> Any:
    if cls is None or not is_dataclass(cls):
        return value
    hints = get_type_hints(cls)
    out = {}
    for f in fields(cls):
        inner = _dataclass_in(hints[f.name])
        v = value[f.name]
        out[camel(f.name)] = ([_renamed(x, inner) for x in v] if isinstance(v, list)
                              else _renamed(v, inner) if isinstance(v, dict) else v)
    return out


def _dataclass_in(hint: Any) -> Any:
    """The dataclass a field holds (alone, in a list or beside None), else None."""
    if is_dataclass(hint):
        return hint
    return next((a for a in get_args(hint) if is_dataclass(a)), None)


# ----------------------------------------------------------------------------- a host's delivery


@dataclass(frozen=True)
class FileSpec:
    """A file to place on the host: inline content, or a secret read from the environment."""

    path: str
    mode: str = "0600"
    content: str | None = None
    secret_env: str | None = None  # FLAKEFLEET_SECRET_<NAME>
    # The units that read it: NixOS' switch restarts only units whose unit files changed, so
    # delivery restarts these when the file changes and the switch did not restart them.
    restart: tuple[str, ...] = ()
    # Written only where the host has no such file yet (never replaced, never restored).
    create_only: bool = False
    # A k3s token file: the runner writes the secret as a secure token for this user ("server",
    # "node"): K10<the cluster's CA hash>::<user>:<secret>.
    k3s_token: str = ""


@dataclass(frozen=True)
class Endpoint:
    """A control plane the runner may ask about node readiness (`k3s kubectl` over pinned SSH)."""

    host: str
    address: str
    port: int
    user: str
    host_key: str

    @staticmethod
    def of(host, host_key: str) -> Endpoint:
        """The endpoint of a planned host (plan/inventory.py: Host), with its pinned key."""
        return Endpoint(host.name, str(host.address), host.ssh_port, host.ssh_user, host_key)


class JsonPlan:
    """A plan a small runner reads from its environment: JSON with sorted keys (what the
    Command's input holds); Endpoint fields are read back as Endpoints."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        hints = get_type_hints(cls)
        return cls(**{k: Endpoint(**v) if hints.get(k) is Endpoint else v for k, v in json.loads(text).items()})


@dataclass(frozen=True)
class KubeconfigPlan(JsonPlan):
    """The kubeconfig read (`scripts/flakefleet kubeconfig`): the cluster's name and API endpoint
    (the kubeconfig's server), read from the first control plane over pinned SSH."""

    cluster: str
    api_endpoint: str
    endpoint: Endpoint


@dataclass(frozen=True)
class PrunePlan(JsonPlan):
    """The stale-Node clean-up after a restore (`scripts/flakefleet dr prune`): the Nodes to keep
    (the stack's hosts), deleted through the first control plane."""

    keep: list[str]
    endpoint: Endpoint


@dataclass(frozen=True)
class HostKeyTarget(JsonPlan):
    """An EC2 host whose SSH host key is read from its console (`scripts/flakefleet host-key`):
    only what identifies it, as any other change to the Command's inputs would run it again."""

    host: str
    address: str
    port: int
    region: str


@dataclass(frozen=True)
class DeliveryPlan:
    """Everything the runner needs for one host, except secrets."""

    host: str
    address: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA..."
    system: str  # out path
    drv: str
    files: tuple[FileSpec, ...] = ()
    identity_file: str | None = None
    boot_timeout_s: float = 300
    health_timeout_s: float = 300
    deadman_margin_s: float = 30
    # The health gate: the watched units (k3s) stay up, without a restart, this long after the
    # switch or the boot, and the Node's Lease is renewed after the activation began.
    settle_s: float = 10
    copy_attempts: int = 3
    substitute_on_destination: bool = False
    # Readiness gate: this host is confirmed only when every node of its batch reports Ready,
    # asked on the first reachable control plane of `ready_via`. Empty: no Kubernetes gate.
    batch: tuple[str, ...] = ()
    ready_via: tuple[Endpoint, ...] = ()
    # Removal: every control plane, to drain this node and delete its Node object through.
    control_planes: tuple[Endpoint, ...] = ()
    # Rebuild from a snapshot (once per restore id): the first control plane runs these k3s
    # arguments (a --cluster-reset); the other control planes wipe their etcd data instead.
    restore_id: str | None = None
    restore_args: tuple[str, ...] = ()
    # A system whose boot files differ from the booted ones: `auto` reboots into it (drained,
    # boot-loader one-shot, confirmed), `always` reboots whatever changed, `never` switches live
    # and reports the reboot as pending (flakefleet/delivery/reboot.py).
    reboot: str = "auto"
    # Where the system is built (`local`: the deployer, or the pool's builder before the first
    # wave; `target`: the host itself) and where the host fetches it from (the stack's binary
    # cache, then upstream caches; empty: `nix copy` from the deployer over SSH).
    build: str = "local"
    substituters: tuple[str, ...] = ()
    # A pool on `target` with the stack's cache builds once: its first host builds and this
    # runner pushes the result into the cache (`push`: bucket, region); the pool's other hosts
    # wait up to `build_wait_s` for it to appear there (`await_build`), then substitute it.
    push: dict | None = None
    await_build: bool = False
    build_wait_s: float = 3600
    # An EC2 host: the instance type the stack wants and the stack's region. The Instance
    # ignores type changes (pulumi-aws would stop and start it behind the rollout); this host's
    # delivery resizes it in its wave: drained, stopped, modified, started, health-gated.
    instance_type: str = ""
    region: str = ""
    # The CA hash of the stack's server CA: what secure tokens carry until the cluster says
    # otherwise (a cluster older than the stack's CAs keeps its own; delivery reads it there).
    ca_hash: str = ""
    # The first server of a k3s minor upgrade: `k3s etcd-snapshot save --name <this>` before its
    # new system, once (docs.k3s.io/cli/etcd-snapshot), so the upgrade can be undone by a rebuild.
    snapshot_before: str = ""

    @staticmethod
    def from_json(text: str) -> DeliveryPlan:
        raw = json.loads(text)
        raw["files"] = tuple(FileSpec(**{**f, "restart": tuple(f.get("restart", ()))}) for f in raw.get("files", ()))
        raw["batch"] = tuple(raw.get("batch", ()))
        raw["ready_via"] = tuple(Endpoint(**e) for e in raw.get("ready_via", ()))
        raw["control_planes"] = tuple(Endpoint(**e) for e in raw.get("control_planes", ()))
        raw["restore_args"] = tuple(raw.get("restore_args", ()))
        raw["substituters"] = tuple(raw.get("substituters", ()))
        return DeliveryPlan(**raw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class DeliveryFailed(Exception):
    """Delivery stopped; `code` is the runner's exit code, the message says what happened to the host."""

    def __init__(self, message: str, code: int = FAILED):
        super().__init__(message)
        self.code = code


@dataclass
class Report:
    """What a delivery did: the runner's last stdout line, which Pulumi keeps as the Command's
    stdout and hands back to the next `update` and to `delete` (PULUMI_COMMAND_STDOUT)."""

    host: str
    outcome: str = ""
    paths_copied: int = 0
    bytes_copied: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    found: dict[str, object] = field(default_factory=dict)  # the host before this delivery (drift)
    # What the host was given: an `update` with the same of each has nothing to do on the host.
    system: str = ""
    digest: str = ""  # files_digest of the planned files
    host_key: str = ""
    instance: str = ""
    restored: str | None = None
    # This Command's claim on the host: a delete whose owner no longer holds the host was
    # replaced by a newer delivery (any replacement: forced, trigger, instance) and removes nothing.
    owner: str = ""
    # The system's boot files differ from the booted ones and `reboot: never` kept it live.
    reboot_pending: bool = False
    # An EC2 host's instance type, as EC2 reported it after this delivery.
    instance_type: str = ""
    # The CA hash this delivery's secure tokens carry.
    ca_hash: str = ""
    # The on-demand etcd snapshot this delivery took before switching (snapshot_before).
    snapshot: str = ""
    # Manifest and image links the stack no longer has, removed after the switch (delivery/prune.py).
    pruned: list[str] = field(default_factory=list)


def report_in(stdout: str | None) -> dict:
    """The runner's JSON report in a Command's stdout (its last line); {} when absent."""
    lines = (stdout or "").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return report if isinstance(report, dict) else {}


# ----------------------------------------------------------------------------- a pool's publish


@dataclass(frozen=True)
class Builder:
    """A build host reached over pinned SSH (from `delivery.builders`, or the target host)."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    host_key: str = ""
    identity_file: str | None = None

    @property
    def store(self) -> str:
        return f"ssh-ng://{self.user}@{self.address}"


def substituter_url(bucket: str, region: str) -> str:
    """The S3 store URL hosts substitute from (with their instance profile's credentials)."""
    return f"s3://{bucket}?region={region}"


@dataclass(frozen=True)
class PublishPlan:
    """One pool's upload: what to build where, and which bucket it goes to."""

    pool: str
    system: str
    drv: str
    bucket: str | None  # None: build once (on the pool's builder) without uploading
    region: str
    upstreams: tuple[str, ...] = ()
    builder: Builder | None = None
    # A pulled pool (pools[].autoscaling): its signed pointer is written after the upload, as
    # {"cluster", "pool", "facts"} (flakefleet/pull/pointer.py). None: hosts are pushed to.
    pointer: dict | None = None

    @staticmethod
    def from_json(text: str) -> PublishPlan:
        raw = json.loads(text)
        raw["upstreams"] = tuple(raw.get("upstreams", ()))
        raw["builder"] = Builder(**raw["builder"]) if raw.get("builder") else None
        return PublishPlan(**raw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class PublishReport:
    """What one publish did (the Command's stdout: nothing secret)."""

    pool: str
    system: str
    closure: int = 0
    in_cache: int = 0
    upstream: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    pointer: str | None = None  # the pointer object's key, for a pulled pool


# ----------------------------------------------------------------------------- a host's install

INSTALL_PLAN_ENV = "FLAKEFLEET_INSTALL_PLAN"
# The installed system's SSH host key (OpenSSH private key), made by the stack: a secret.
INSTALLED_KEY_ENV = "FLAKEFLEET_SECRET_INSTALLED_HOST_KEY"
INSTALLED_KEY_PATH = "etc/ssh/ssh_host_ed25519_key"  # under the new root (nixos/common/openssh.nix)


@dataclass(frozen=True)
class InstallPlan:
    """host, address, port, user: how the machine is reached, before and after; install_host_key:
    the pinned key of the Linux it runs before; host_key: the installed system's (the stack's);
    layout and disk: how its disk is written (disk None: the only one its facts show); system:
    the pool's system (built and published before); spec: the pool's spec, for the host's disko
    script; reinstall: the stack's request to wipe it again (None: install once)."""

    host: str
    address: str
    port: int
    user: str
    install_host_key: str
    host_key: str
    layout: str
    system: str
    spec: dict = field(default_factory=dict)
    arch: str = "x86_64-linux"
    disk: str | None = None
    reinstall: str | None = None
    flake: str = "nixos"
    identity_file: str | None = None
    boot_timeout_s: float = 1800
    delivery: str = ""
    """The host's delivery plan (JSON): drained and taken out of the cluster through it first
    when a reinstall wipes a host that is in the cluster."""
    network: dict = field(default_factory=dict)
    """flakefleet/plan/network.py:NetworkPlan's JSON: how the installed system is addressed."""
    firmware: str = "uefi"
    """How the layout's machines boot (its `flakefleet.install.firmware`): another is refused."""
    gpu: dict | None = None
    """The pool's GPUs (GpuSpec's JSON) when it has some: a machine that shows otherwise is refused."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InstallPlan:
        return cls(**json.loads(text))
