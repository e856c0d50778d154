"""Typed stack configuration: one pydantic model per stack key, and every cross-field rule.

`parse_stack_config` turns the raw `flakefleet:*` config of a stack into a `StackConfig`, or
raises `ConfigError` listing every problem at once, one line each, named by its key path
(`flakefleet:pools[1].count: ...`). Nothing here imports Pulumi.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flakefleet.aws_catalog import instance_shape, region_zones

NAMESPACE = "flakefleet"
Role = Literal["control-plane", "worker"]
Arch = Literal["x86_64", "aarch64"]

_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DnsLabel = Annotated[str, Field(pattern=_DNS_LABEL, max_length=63)]


class ConfigError(Exception):
    """Bad stack configuration: `problems` holds one line per problem, each naming its key path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- stack keys


class ClusterConfig(_Model):
    """`flakefleet:cluster` — the Kubernetes cluster as a whole."""

    name: Annotated[str, Field(pattern=_DNS_LABEL, max_length=24)] = Field(
        description="Cluster name: prefix of AWS resource names and the S3 snapshot folder. "
        "Lowercase DNS label, at most 24 characters. Required."
    )
    pod_cidr: IPv4Network = Field(
        IPv4Network("10.42.0.0/16"), description="Pod network (k3s `--cluster-cidr`). Default `10.42.0.0/16`."
    )
    service_cidr: IPv4Network = Field(
        IPv4Network("10.43.0.0/16"), description="Service network (k3s `--service-cidr`). Default `10.43.0.0/16`."
    )
    k3s_channel: Annotated[str, Field(pattern=r"^(stable|1\.\d{2})$")] = Field(
        "stable",
        description="k3s release line from the pinned nixpkgs: `stable` is nixpkgs' `k3s`, `1.NN` is `k3s_1_NN`. "
        "Default `stable`.",
    )
    nixos_release: Annotated[str, Field(pattern=r"^\d{2}\.\d{2}$")] = Field(
        "25.11",
        description="NixOS release of the boot AMI (`nixos/<release>*` by owner 427812963091); delivery then "
        "switches each host to the flake's closure. Default `25.11`.",
    )
    api_address: IPv4Address | None = Field(
        None,
        description="Bring-your-own fleets: a virtual address in front of the control planes. Default: none "
        "(the first control plane's address; on AWS the API load balancer).",
    )


class NetworkConfig(_Model):
    """`flakefleet:network` — the VPC and who may reach it. Used only when a pool runs on EC2."""

    vpc_cidr: IPv4Network = Field(IPv4Network("10.0.0.0/16"), description="VPC range, /16 to /22. Default `10.0.0.0/16`.")
    az_count: Annotated[int, Field(ge=1, le=6)] | None = Field(
        None, description="Availability zones to spread hosts over, 1-6. Default: 1, or the length of `availability_zones`."
    )
    availability_zones: list[str] | None = Field(
        None, description="Explicit zone names, for regions or accounts the built-in zone table does not know. Default: none."
    )
    admin_cidrs: list[IPv4Network] = Field(
        default_factory=list, description="CIDRs allowed to SSH to the nodes (delivery runs from here). Default: none."
    )
    api_cidrs: list[IPv4Network] = Field(
        default_factory=list, description="CIDRs allowed to reach the Kubernetes API (6443). Default: none (nodes only)."
    )
    allow_world_access: bool = Field(
        False, description="Explicit opt-in to let `admin_cidrs` or `api_cidrs` contain 0.0.0.0/0. Default `false`."
    )
    nat: Literal["none", "single", "per-az"] = Field(
        "single",
        description="NAT gateways for the private node subnets: `single` (cheapest), `per-az` (zone-independent "
        "egress) or `none` (air-gapped; S3 still reachable through the gateway endpoint). Default `single`.",
    )
    flow_logs: bool = Field(True, description="VPC flow logs to an S3 bucket (CIS AWS 3.7). Default `true`.")


class Taint(_Model):
    """A Kubernetes node taint."""

    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="Taint key. Required.")
    value: Annotated[str, Field(max_length=63)] = Field("", description="Taint value. Default empty.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(description="Taint effect. Required.")

    def render(self) -> str:
        """The `key=value:Effect` form k3s' `--node-taint` takes."""
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


class RootVolume(_Model):
    """The EC2 root volume: always encrypted gp3."""

    size_gib: Annotated[int, Field(ge=16, le=16384)] = Field(50, description="Size in GiB, 16-16384. Default 50.")
    iops: Annotated[int, Field(ge=3000, le=16000)] | None = Field(None, description="gp3 IOPS. Default: AWS baseline (3000).")
    throughput_mibps: Annotated[int, Field(ge=125, le=1000)] | None = Field(
        None, description="gp3 throughput in MiB/s. Default: AWS baseline (125)."
    )


class MetalHost(_Model):
    """A bring-your-own host, reached over SSH at `address`."""

    name: DnsLabel = Field(description="Host and Kubernetes node name. Required.")
    address: IPv4Address = Field(description="Address delivery connects to and the node advertises. Required.")
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = Field(22, description="SSH port. Default 22.")
    ssh_user: str | None = Field(None, description="SSH user. Default: `delivery.ssh_user`.")
    ssh_host_key: str | None = Field(
        None,
        description="The host's SSH public host key (`ssh-ed25519 AAAA...`), pinned before the first connection. "
        "Required.",
    )


class PoolConfig(_Model):
    """One entry of `flakefleet:pools` — hosts that share a role, a shape and one NixOS closure."""

    name: DnsLabel = Field(description="Pool name, unique in the stack. Required.")
    role: Role = Field(description="`control-plane` (k3s server) or `worker` (k3s agent). Required.")
    provider: Literal["ec2", "metal"] = Field(
        "ec2", description="`ec2` (instances this stack creates) or `metal` (bring-your-own hosts). Default `ec2`."
    )
    instance_type: str | None = Field(None, description="EC2 instance type. Required for `ec2`, refused for `metal`.")
    bare_metal: bool = Field(
        False, description="EC2 only: the pool runs `*.metal` instance types (they boot in 10+ minutes). Default `false`."
    )
    count: Annotated[int, Field(ge=0, le=5000)] | None = Field(
        None, description="EC2 only: number of hosts, spread round-robin over the zones. Required for `ec2`."
    )
    arch: Arch = Field("x86_64", description="CPU architecture; must match the instance type. Default `x86_64`.")
    ami: Annotated[str, Field(pattern=r"^ami-[0-9a-f]{8,17}$")] | None = Field(
        None, description="EC2 only: explicit boot AMI. Default: the newest official NixOS AMI of `cluster.nixos_release`."
    )
    root_volume: RootVolume = Field(default_factory=RootVolume, description="EC2 root volume. Default: 50 GiB gp3.")
    labels: dict[str, str] = Field(default_factory=dict, description="Kubernetes node labels. Default: none.")
    taints: list[Taint] = Field(default_factory=list, description="Kubernetes node taints. Default: none.")
    hosts: list[MetalHost] = Field(default_factory=list, description="`metal` only: the hosts. Required for `metal`.")
    per_host_closures: bool = Field(
        False,
        description="Build one closure per host with its facts baked in, instead of one per pool with facts "
        "read at runtime. Costs an evaluation and a build per host. Default `false`.",
    )
    ip_block: Annotated[int, Field(ge=1, le=15)] | None = Field(
        None,
        description="EC2 only: first of the pool's address blocks (1-15) in each private subnet. Default: derived "
        "from the pool name, so adding or reordering pools leaves addresses alone; pin it in long-lived stacks.",
    )

    @property
    def size(self) -> int:
        """Number of hosts in the pool."""
        return len(self.hosts) if self.provider == "metal" else (self.count or 0)


class StorageConfig(_Model):
    """`flakefleet:storage` — the S3 buckets for the Nix binary cache and etcd snapshots."""

    enabled: bool = Field(True, description="Create the buckets. Default `true`; the local stack turns it off.")
    snapshot_noncurrent_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        30, description="Days an overwritten or deleted etcd snapshot version is kept. Default 30."
    )
    cache_noncurrent_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        7, description="Days an overwritten or deleted binary-cache object version is kept. Default 7."
    )
    force_destroy: bool = Field(
        False, description="Let `pulumi destroy` delete non-empty buckets. Default `false`; never in prod."
    )


class DeliveryConfig(_Model):
    """`flakefleet:delivery` — how closures reach the hosts."""

    flake: str | None = Field(
        None,
        description="Directory of the flake that defines the nodes, relative to the project. Default: `nixos/`. "
        "The environment variable FLAKEFLEET_FLAKE overrides it (tests use a stand-in flake).",
    )
    authorized_keys: list[str] = Field(
        default_factory=list,
        description="SSH public keys allowed to log in as root on every node: at least the deploy key, which "
        "must stay authorized after a switch. Required.",
    )
    ssh_user: str = Field("root", description="SSH user for delivery. Default `root`.")
    boot_timeout_s: Annotated[int, Field(ge=1, le=7200)] = Field(
        600, description="Seconds delivery waits for a host's SSH to come up. Default 600."
    )
    metal_boot_timeout_s: Annotated[int, Field(ge=1, le=7200)] = Field(
        1800, description="The same for EC2 `*.metal` pools, which can take over 10 minutes to boot. Default 1800."
    )
    substitute_on_destination: bool = Field(
        False, description="Let hosts fetch paths from their own substituters instead of the deployer. Default `false`."
    )
    max_parallel: Annotated[int, Field(ge=1, le=256)] = Field(
        10, description="Workers delivered at once, per batch. Default 10."
    )
    health_timeout_s: Annotated[int, Field(ge=5, le=3600)] = Field(
        300, description="Seconds a host has to confirm health after switching. Default 300."
    )


class DrConfig(_Model):
    """`flakefleet:dr` — etcd snapshots and rebuilding a cluster from one."""

    snapshot_schedule: Annotated[str, Field(pattern=r"^\S+( \S+){4}$")] = Field(
        "0 */6 * * *", description="Cron schedule of etcd snapshots (k3s --etcd-snapshot-schedule-cron). Default every 6 hours."
    )
    snapshot_retention: Annotated[int, Field(ge=1, le=1000)] = Field(
        28, description="Snapshots kept per control plane (k3s --etcd-snapshot-retention). Default 28 (7 days at 6 h)."
    )
    restore_from: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")] | None = Field(
        None,
        description="Rebuild: `latest` or a snapshot name to restore when the cluster is created. Needs the original "
        "`flakefleet:server_token`. Default: none (a new, empty cluster).",
    )
    restore_bucket: str | None = Field(
        None,
        description="Bucket holding the snapshot to restore (the old stack's `buckets.snapshots` output). "
        "Required with `restore_from`.",
    )
    restore_cluster: DnsLabel | None = Field(
        None, description="Cluster name (snapshot folder) the snapshot was taken of. Default: `cluster.name`."
    )
    restore_region: str | None = Field(None, description="Region of `restore_bucket`. Default: `aws:region`.")


SIGNING_KEY = re.compile(r"^[A-Za-z0-9._-]+:[A-Za-z0-9+/]{86}==$")


class StackConfig(_Model):
    """A whole validated stack."""

    cluster: ClusterConfig
    network: NetworkConfig = NetworkConfig()
    pools: list[PoolConfig]
    storage: StorageConfig = StorageConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    dr: DrConfig = DrConfig()
    region: str | None = None
    signing_key: str | None = Field(None, repr=False)  # `flakefleet:signing_key`, a Pulumi secret
    server_token: str | None = Field(None, repr=False)  # `flakefleet:server_token`, a Pulumi secret (rebuilds)

    @property
    def signing_public_key(self) -> str | None:
        """The public half of the Nix signing key (`name:base64`), which every host trusts."""
        if self.signing_key is None:
            return None
        name, _, secret = self.signing_key.partition(":")
        return f"{name}:{base64.b64encode(base64.b64decode(secret)[32:]).decode()}"

    @property
    def uses_ec2(self) -> bool:
        """Whether any pool runs on EC2 (and so a VPC is needed)."""
        return any(p.provider == "ec2" for p in self.pools)

    @property
    def uses_aws(self) -> bool:
        """Whether the stack creates any AWS resource."""
        return self.uses_ec2 or self.storage.enabled

    @property
    def zones(self) -> list[str]:
        """Zones hosts are spread over, in order."""
        names = self.network.availability_zones or region_zones(self.region or "") or []
        count = self.network.az_count or (len(self.network.availability_zones or []) or 1)
        return names[:count]


STACK_KEYS: dict[str, type[_Model] | None] = {
    "cluster": ClusterConfig,
    "network": NetworkConfig,
    "pools": None,  # a list of PoolConfig
    "storage": StorageConfig,
    "delivery": DeliveryConfig,
    "dr": DrConfig,
    "signing_key": None,  # a Nix secret key, `name:base64` (a Pulumi secret)
    "server_token": None,  # the original cluster's k3s server token, for a rebuild (a Pulumi secret)
}
SECRET_STRING_KEYS = ("signing_key", "server_token")
REQUIRED_KEYS = ("cluster", "pools")


# --------------------------------------------------------------------------- parsing


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


_PYDANTIC_REWRITES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
}


def _pydantic_problems(key: str, err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors(include_url=False):
        # Drop the union/constraint tags pydantic adds for Optional[Annotated[...]] fields.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        msg = _PYDANTIC_REWRITES.get(e["type"], e["msg"])
        if e["type"] == "string_pattern_mismatch" and e["ctx"].get("pattern") == _DNS_LABEL:
            msg = "must be a lowercase DNS label (a-z, 0-9, '-', not starting or ending with '-')"
        problems.append(f"{NAMESPACE}:{_path((key, *loc))}: {msg}")
    return list(dict.fromkeys(problems))


def _decode(value: Any) -> Any:
    # Pulumi hands structured config to programs as JSON text.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


SIGNING_KEY_HOWTO = (
    "nix key generate-secret --key-name <cluster>-1 | pulumi config set --secret flakefleet:signing_key"
)


def parse_stack_config(
    raw: Mapping[str, Any], region: str | None = None, secret_keys: set[str] | None = None
) -> StackConfig:
    """Validate the `flakefleet:*` entries of a stack's config (key -> JSON text or value).

    `secret_keys` are the config keys Pulumi holds as secrets; when given (the program), the
    signing key is required and must be one of them. Without it (offline planning) secrets
    are not needed. Raises ConfigError with every problem found, one line each.
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    for full_key in sorted(raw):
        ns, _, key = full_key.partition(":")
        if ns != NAMESPACE:
            continue
        if key not in STACK_KEYS:
            problems.append(f"{full_key}: unknown stack key (known: {', '.join(STACK_KEYS)})")
            continue
        values[key] = raw[full_key] if key in SECRET_STRING_KEYS else _decode(raw[full_key])
    signing_key = values.pop("signing_key", None)
    server_token = values.pop("server_token", None)
    if server_token is not None and secret_keys is not None and f"{NAMESPACE}:server_token" not in secret_keys:
        problems.append(f"{NAMESPACE}:server_token: must be a Pulumi secret, not plain config: "
                        f"pulumi config set --secret {NAMESPACE}:server_token ...")
    if secret_keys is not None:
        at = f"{NAMESPACE}:signing_key"
        if signing_key is None:
            problems.append(f"{at}: required; hosts accept only signed systems. Create it: {SIGNING_KEY_HOWTO}")
        elif not isinstance(signing_key, str) or not SIGNING_KEY.match(signing_key.strip()):
            problems.append(f"{at}: not a Nix secret key (name:base64 of 64 bytes, from nix key generate-secret)")
        elif at not in secret_keys:
            problems.append(f"{at}: must be a Pulumi secret, not plain config: pulumi config set --secret {at} ...")
    for key in REQUIRED_KEYS:
        if key not in values:
            problems.append(f"{NAMESPACE}:{key}: required")

    # Each key is validated alone; a key with errors is kept without its bad fields, so the
    # cross-field rules still see (and report on) everything else.
    parsed: dict[str, Any] = {}
    for key, value in values.items():
        if key == "pools":
            if not isinstance(value, list):
                problems.append(f"{NAMESPACE}:pools: must be a list of pools")
                continue
            pools = []
            for i, item in enumerate(value):
                pool, errors = _validate(PoolConfig, item, f"pools[{i}]")
                problems.extend(errors)
                pools.append(pool)
            parsed[key] = pools
        else:
            model, errors = _validate(STACK_KEYS[key], value, key)
            problems.extend(errors)
            if model is not None:
                parsed[key] = model

    # A field already reported as invalid was dropped; do not report it again as missing.
    reported = {line.split(": ", 1)[0] for line in problems}
    secrets_given = {k for k, v in (("server_token", server_token), ("signing_key", signing_key)) if v is not None}
    problems.extend(
        line for line in _cross_checks(parsed, region, secrets_given) if line.split(": ", 1)[0] not in reported
    )
    if problems:
        raise ConfigError(problems)
    return StackConfig(
        **parsed,
        region=region,
        signing_key=signing_key.strip() if isinstance(signing_key, str) else None,
        server_token=server_token.strip() if isinstance(server_token, str) else None,
    )


def _validate(model: type[_Model], value: Any, key: str) -> tuple[Any, list[str]]:
    """(model or partial model or None, problems). A partial model drops the failing fields."""
    try:
        return model.model_validate(value), []
    except ValidationError as err:
        problems = _pydantic_problems(key, err)
        if not isinstance(value, dict):
            return None, problems
        bad = {e["loc"][0] for e in err.errors() if e["loc"]}
        try:
            return model.model_validate({k: v for k, v in value.items() if k not in bad}), problems
        except ValidationError:
            return None, problems


# --------------------------------------------------------------------------- cross-field rules

_SSH_KEY_TYPES = {
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
}
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# The NodeRestriction admission plugin refuses these prefixes from a kubelet, except the allowed ones.
_RESTRICTED = ("kubernetes.io", "k8s.io")
_ALLOWED_RESTRICTED = ("node.kubernetes.io", "kubelet.kubernetes.io")


def host_key_problem(key: str) -> str | None:
    """Why `key` is not a usable OpenSSH public host key line, or None."""
    parts = key.split()
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        return f"must be an OpenSSH public key line '<type> <base64>' with type one of {', '.join(sorted(_SSH_KEY_TYPES))}"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "key data is not valid base64"
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + n].decode("ascii", "replace") != parts[0]:
        return f"key data does not encode a {parts[0]} key"
    return None


def label_problem(key: str, value: str, kubelet_label: bool = True) -> str | None:
    """Why `key=value` is not a Kubernetes node label (or, with kubelet_label=False, taint) k3s may set, or None.

    NodeRestriction limits the label prefixes a kubelet may register; taints have no such limit.
    """
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME.match(name) or (prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix))):
        return "is not a valid Kubernetes label key"
    if not _LABEL_VALUE.match(value):
        return f"value {value!r} is not a valid Kubernetes label value"
    if kubelet_label and any(prefix == r or prefix.endswith("." + r) for r in _RESTRICTED) and not any(
        prefix == a or prefix.endswith("." + a) for a in _ALLOWED_RESTRICTED
    ):
        return "kubelets may not set labels under kubernetes.io/ or k8s.io/ (NodeRestriction); use node.kubernetes.io/ or your own prefix"
    return None


def _is_world(net: IPv4Network) -> bool:
    return net.prefixlen == 0


# The public half of scripts/demo.py's test-only deploy key, whose private half anyone can derive.
DEMO_DEPLOY_KEY_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIGr/rz51whyC4sjXBa3r/qVn4aXg9/UhhhPgsRXYfnUC"


def _cross_checks(parsed: dict[str, Any], region: str | None, secrets_given: set[str] = frozenset()) -> list[str]:
    p = f"{NAMESPACE}:"
    problems: list[str] = []
    cluster: ClusterConfig | None = parsed.get("cluster")
    network: NetworkConfig = parsed.get("network") or NetworkConfig()
    pools: list[PoolConfig | None] = parsed.get("pools") or []
    storage: StorageConfig = parsed.get("storage") or StorageConfig()
    valid_pools = [(i, pool) for i, pool in enumerate(pools) if pool is not None]
    all_pools_valid = len(valid_pools) == len(pools)
    uses_ec2 = any(pool.provider == "ec2" for _, pool in valid_pools)

    # Pools one by one.
    for i, pool in valid_pools:
        at = f"{p}pools[{i}]"
        if pool.provider == "ec2":
            for field in ("hosts",):
                if getattr(pool, field):
                    problems.append(f"{at}.{field}: only for provider metal; an ec2 pool's hosts are created from count")
            if pool.count is None:
                problems.append(f"{at}.count: required for provider ec2")
            if pool.instance_type is None:
                problems.append(f"{at}.instance_type: required for provider ec2")
            else:
                shape = instance_shape(pool.instance_type)
                if shape is None:
                    problems.append(f"{at}.instance_type: {pool.instance_type!r} is not an EC2 instance type name like m7i.large")
                else:
                    if shape.arch != pool.arch:
                        problems.append(
                            f"{at}.instance_type: {pool.instance_type} is {shape.arch} but the pool's arch is {pool.arch}"
                        )
                    if shape.metal and not pool.bare_metal:
                        problems.append(
                            f"{at}.instance_type: {pool.instance_type} is bare metal; set bare_metal: true on the pool "
                            "(delivery then waits for its long boot)"
                        )
                    if pool.bare_metal and not shape.metal:
                        problems.append(f"{at}.bare_metal: true but {pool.instance_type} is virtual; use a *.metal type")
        else:
            for field in ("instance_type", "ami", "count", "ip_block"):
                if getattr(pool, field) is not None:
                    problems.append(f"{at}.{field}: only for provider ec2; a metal pool is its list of hosts")
            if pool.bare_metal:
                problems.append(f"{at}.bare_metal: only for provider ec2; metal hosts are bare metal already")
            if not pool.hosts:
                problems.append(f"{at}.hosts: required for provider metal (name, address, ssh_host_key of each host)")
            for j, host in enumerate(pool.hosts):
                if host.ssh_host_key is None:
                    problems.append(
                        f"{at}.hosts[{j}].ssh_host_key: required; host keys are pinned before the first connection "
                        "(read it from the host's /etc/ssh/ssh_host_ed25519_key.pub)"
                    )
                elif (why := host_key_problem(host.ssh_host_key)) is not None:
                    problems.append(f"{at}.hosts[{j}].ssh_host_key: {why}")
        for key, value in pool.labels.items():
            if (why := label_problem(key, value)) is not None:
                problems.append(f"{at}.labels.{key}: {why}")
        for j, taint in enumerate(pool.taints):
            if (why := label_problem(taint.key, taint.value, kubelet_label=False)) is not None:
                problems.append(f"{at}.taints[{j}]: {why.replace('label', 'taint')}")

    # Names and addresses must be unique across the stack.
    seen_pools: dict[str, int] = {}
    for i, pool in valid_pools:
        if pool.name in seen_pools:
            problems.append(f"{p}pools[{i}].name: duplicate pool name {pool.name!r} (also pools[{seen_pools[pool.name]}])")
        else:
            seen_pools[pool.name] = i
    seen_hosts: dict[str, str] = {}
    seen_addresses: dict[IPv4Address, str] = {}
    for i, pool in valid_pools:
        if pool.provider == "metal":
            named = [(f"pools[{i}].hosts[{j}].name", h.name) for j, h in enumerate(pool.hosts)]
        else:
            named = [(f"pools[{i}].count", f"{pool.name}-{k}") for k in range(pool.count or 0)]
        for where, name in named:
            if name in seen_hosts and seen_hosts[name] != where:
                problems.append(f"{p}{where}: duplicate host name {name!r} (also {seen_hosts[name]})")
            seen_hosts.setdefault(name, where)
        for j, host in enumerate(pool.hosts if pool.provider == "metal" else []):
            where = f"pools[{i}].hosts[{j}].address"
            if host.address in seen_addresses:
                problems.append(f"{p}{where}: duplicate address {host.address} (also {seen_addresses[host.address]})")
            seen_addresses.setdefault(host.address, where)

    # Control planes: etcd quorum needs an odd number, all on one provider.
    control = [(i, pool) for i, pool in valid_pools if pool.role == "control-plane"]
    if all_pools_valid and "pools" in parsed:
        total = sum(pool.size for _, pool in control)
        where = f"pools[{control[0][0]}].count" if len(control) == 1 and control[0][1].provider == "ec2" else "pools"
        if total == 0:
            problems.append(f"{p}{where}: no control-plane host; a cluster needs 1, 3 or 5 control planes")
        elif total % 2 == 0:
            problems.append(
                f"{p}{where}: {total} control planes; embedded etcd needs an odd number (1, 3, 5) to keep quorum"
            )
        if len({pool.provider for _, pool in control}) > 1:
            problems.append(f"{p}pools: control-plane pools mix ec2 and metal; keep all control planes on one provider")

    # CIDRs must not overlap where traffic would be ambiguous.
    if cluster is not None:
        nets = [("cluster.pod_cidr", cluster.pod_cidr), ("cluster.service_cidr", cluster.service_cidr)]
        if uses_ec2:
            nets.insert(0, ("network.vpc_cidr", network.vpc_cidr))
        for a in range(len(nets)):
            for b in range(a + 1, len(nets)):
                if nets[a][1].overlaps(nets[b][1]):
                    problems.append(f"{p}{nets[b][0]}: {nets[b][1]} overlaps {nets[a][0]} {nets[a][1]}")
        for i, pool in valid_pools:
            for j, host in enumerate(pool.hosts if pool.provider == "metal" else []):
                for key, net in nets:
                    if host.address in net:
                        problems.append(f"{p}pools[{i}].hosts[{j}].address: {host.address} lies inside {key} {net}")
        if cluster.api_address is not None and uses_ec2:
            problems.append(f"{p}cluster.api_address: only for bring-your-own fleets; on AWS the API load balancer is the address")

    # The network, when EC2 is used.
    if uses_ec2:
        if not 16 <= network.vpc_cidr.prefixlen <= 22:
            problems.append(f"{p}network.vpc_cidr: prefix /{network.vpc_cidr.prefixlen} out of range; use /16 to /22")
        if region is None:
            problems.append("aws:region: required when a pool runs on EC2")
        elif network.availability_zones is not None:
            zones = network.availability_zones
            for k, zone in enumerate(zones):
                if not re.fullmatch(re.escape(region) + r"[a-z]", zone):
                    problems.append(f"{p}network.availability_zones[{k}]: {zone!r} is not a zone of {region}")
            if len(set(zones)) != len(zones):
                problems.append(f"{p}network.availability_zones: zones repeat")
            if network.az_count is not None and network.az_count != len(zones):
                problems.append(
                    f"{p}network.az_count: {network.az_count} but availability_zones names {len(zones)}; give one or the other"
                )
        else:
            known = region_zones(region)
            if known is None:
                problems.append(
                    f"aws:region: {region} is not in flakefleet's zone table; name its zones in network.availability_zones"
                )
            elif (network.az_count or 1) > len(known):
                problems.append(
                    f"{p}network.az_count: {network.az_count} zones requested but {region} has {len(known)} "
                    f"({', '.join(known)})"
                )
    if storage.enabled and region is None and not uses_ec2:
        problems.append("aws:region: required when storage.enabled is true")

    dr: DrConfig = parsed.get("dr") or DrConfig()
    if dr.restore_from is not None:
        if dr.restore_bucket is None:
            problems.append(f"{p}dr.restore_from: needs dr.restore_bucket, the bucket holding the snapshot")
        if control_providers := {pool.provider for _, pool in control}:
            if control_providers != {"ec2"}:
                problems.append(
                    f"{p}dr.restore_from: restoring from S3 needs the control planes on EC2 (their instance profile "
                    "reads the snapshot; flakefleet stores no keys)"
                )
        if "server_token" not in secrets_given:
            problems.append(
                f"{p}dr.restore_from: needs {NAMESPACE}:server_token, the original cluster's server token "
                "(pulumi stack output --show-secrets k3s_server_token on the old stack)"
            )

    delivery: DeliveryConfig | None = parsed.get("delivery")
    keys = delivery.authorized_keys if delivery is not None else []
    if not keys and (delivery is not None or "pools" in parsed):
        problems.append(
            f"{p}delivery.authorized_keys: required; the deploy key must stay authorized on the hosts after a switch"
        )
    for k, key in enumerate(keys):
        if (why := host_key_problem(key)) is not None:
            problems.append(f"{p}delivery.authorized_keys[{k}]: {why}")
        elif key.split()[1:2] == [DEMO_DEPLOY_KEY_BLOB] and not all(
            pool.provider == "metal" and all(h.address.is_loopback for h in pool.hosts) for _, pool in valid_pools
        ):
            problems.append(f"{p}delivery.authorized_keys[{k}]: the demo's test-only deploy key (its private half is "
                            "public, see scripts/demo.py) may only be authorized on loopback test hosts")

    for key in ("admin_cidrs", "api_cidrs"):
        for k, net in enumerate(getattr(network, key)):
            if _is_world(net) and not network.allow_world_access:
                problems.append(
                    f"{p}network.{key}[{k}]: {net} opens {'SSH' if key == 'admin_cidrs' else 'the Kubernetes API'} to "
                    "the whole internet; set network.allow_world_access: true to accept that"
                )
    return problems
