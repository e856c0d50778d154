"""`flakefleet:delivery`: how closures reach the hosts, and who may log in to do it."""

from __future__ import annotations

import platform
import re
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from flakefleet.config.base import NAMESPACE, Model, SshUser
from flakefleet.config.rules import ANY_HOST_KEY_TYPES, bucket_problem, host_key_problem, region_problem, ssh_key_problem

if TYPE_CHECKING:
    from flakefleet.config.parsed import Parsed

# The public half of scripts/demo.py's test-only deploy key, whose private half anyone can derive.
DEMO_DEPLOY_KEY_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIGr/rz51whyC4sjXBa3r/qVn4aXg9/UhhhPgsRXYfnUC"


BUILD_MODES = ("local", "target")
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def deployer_arch() -> str:
    """This deployer's CPU architecture, in the pools' terms (x86_64 / aarch64)."""
    return ARCHES.get(platform.machine().lower(), platform.machine().lower())


class BuilderConfig(Model):
    """A build host, reached over SSH with a pinned key."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] = Field(
        description="Name pools use in `build:`. Must not be `local` or `target`. Required."
    )
    address: IPv4Address = Field(description="Its address. Required.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(22, description="SSH port. Default 22.")
    user: str = Field("root", description="SSH user (trusted by its Nix daemon). Default `root`.")
    host_key: str = Field(description="Its SSH host key (`ssh-ed25519 AAAA…`), pinned: never trusted on first use. Required.")
    systems: list[Literal["x86_64", "aarch64"]] = Field(
        default_factory=lambda: ["x86_64"], description="Architectures it builds natively. Default `[x86_64]`."
    )


class CacheConfig(Model):
    """The signed binary cache each pool's system is uploaded to once, and hosts substitute from."""

    enabled: bool = Field(
        True, description="Upload each pool's system once and let hosts fetch it (EC2 hosts: from the stack's cache "
        "bucket with their instance profile). `false`: every host gets its copy from the deployer. Default `true`."
    )
    bucket: str | None = Field(
        None, description="Bucket to upload to. Default: the stack's own cache bucket (`storage`)."
    )
    region: str | None = Field(None, description="The bucket's region. Default: the stack's region.")
    url: str | None = Field(
        None, description="HTTP(S) URL serving the bucket's contents (a binary cache) that bring-your-own hosts "
        "substitute from; without it they keep the SSH copy from the deployer. Default: none."
    )
    upstreams: list[str] = Field(
        default_factory=lambda: ["https://cache.nixos.org"],
        description="Caches the hosts also substitute from: paths these hold are never uploaded. Default "
        "`[https://cache.nixos.org]`.",
    )


class DeliveryConfig(Model):
    """`flakefleet:delivery` — how closures reach the hosts."""

    flake: str | None = Field(
        None,
        description="Directory of the flake that defines the nodes, relative to the project. Default: `nixos/`. "
        "The environment variable FLAKEFLEET_FLAKE overrides it (tests use a stand-in flake).",
    )
    authorized_keys: list[str] = Field(
        default_factory=list,
        description="SSH public keys allowed to log in as root on every node (ed25519, ECDSA, RSA of 2048+ bits, or "
        "security keys such as sk-ssh-ed25519@openssh.com): at least the deploy key, which must stay authorized "
        "after a switch. Required.",
    )
    ssh_user: SshUser = Field("root", description="SSH user for delivery: `root`, the only user the nodes "
                              "authorize the deploy keys for. Default `root`.")
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
        10, description="Workers delivered at once, per batch: the deployer's concurrency cap. Default 10."
    )
    max_unavailable: int | str | None = Field(
        None,
        description="Workers a batch may take out at once, as a count or a percentage of the stack's workers "
        "(`10%`, rounded down, at least 1), as Kubernetes rollouts' maxUnavailable; batches are the smaller of this "
        "and `max_parallel`. Default: none (`max_parallel`).",
    )

    @field_validator("max_unavailable")
    @classmethod
    def _count_or_percentage(cls, value: int | str | None) -> int | str | None:
        if value is None or (isinstance(value, int) and value >= 1) or (
            isinstance(value, str) and re.fullmatch(r"(100|[1-9][0-9]?)%", value)
        ):
            return value
        raise ValueError(f"{value!r} is neither a count of workers (1 or more) nor a percentage from 1% to 100%")

    def batch_size(self, workers: int) -> int:
        """Workers per batch for a fleet of `workers`."""
        if self.max_unavailable is None:
            return self.max_parallel
        if isinstance(self.max_unavailable, int):
            return min(self.max_parallel, self.max_unavailable)
        return min(self.max_parallel, max(1, workers * int(self.max_unavailable[:-1]) // 100))
    health_timeout_s: Annotated[int, Field(ge=5, le=3600)] = Field(
        300, description="Seconds a host has to confirm health after switching (also the bound on its switch). Default 300."
    )
    settle_s: Annotated[int, Field(ge=0, le=600)] = Field(
        10, description="Seconds k3s must stay up without a restart after a switch or a boot before the host is "
        "confirmed (a crash-looping k3s never settles). Default 10."
    )
    build: str = Field(
        "local", description="Where pools' systems are built (a pool's own `build` overrides it): `local` (this "
        "deployer), `target` (each host builds its own, substituting what the caches hold), or the name of one of "
        "`builders`. Default `local`."
    )
    builders: list[BuilderConfig] = Field(default_factory=list, description="Build hosts pools may name in `build`. Default: none.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The binary cache (its keys below). Default: enabled, uploading to the stack's cache bucket.")

    def build_of(self, pool_build: str | None) -> str:
        """A pool's effective build: its own, else the stack's."""
        return pool_build or self.build

    def builder(self, name: str) -> BuilderConfig | None:
        """The builder a build names; none for the modes `local` and `target`, which a builder
        may not be named (the rules refuse such a builder)."""
        if name in BUILD_MODES:
            return None
        return next((b for b in self.builders if b.name == name), None)


def _builder_names(stack: Parsed, delivery: DeliveryConfig) -> tuple[dict[str, int], set[str] | None]:
    """The builders as written: valid name -> index, and the names of builders dropped for a bad
    field (None when `delivery.builders` itself was dropped: no name can be told unknown)."""
    if "delivery.builders" in stack.dropped:
        return {}, None
    written = stack.written("delivery.builders")
    valid = {b.name: i for i, b in stack.indexed("delivery.builders", delivery.builders)}
    dropped = {item.get("name") for item in written if isinstance(item, dict) and isinstance(item.get("name"), str)
               } - set(valid) if isinstance(written, list) else set()
    return valid, dropped


def _builders(stack: Parsed, delivery: DeliveryConfig) -> list[str]:
    """Each builder: a name that is not a mode and not another builder's, a host key of a type sshd serves."""
    p = f"{NAMESPACE}:delivery.builders"
    problems, seen = [], {}
    for b, builder in stack.indexed("delivery.builders", delivery.builders):
        if builder.name in BUILD_MODES:
            problems.append(f"{p}[{b}].name: `{builder.name}` is a build mode; name the builder otherwise")
        elif builder.name in seen:
            problems.append(f"{p}[{b}].name: duplicate builder name {builder.name!r} (also builders[{seen[builder.name]}])")
        seen.setdefault(builder.name, b)
        if (why := host_key_problem(builder.host_key, ANY_HOST_KEY_TYPES)) is not None:
            problems.append(f"{p}[{b}].host_key: {why}")
    return problems


def _pool_build(where: str, pool, build: str, arch: str, delivery: DeliveryConfig,
                names: dict[str, int], dropped: set[str] | None) -> str | None:
    """What is wrong with where one pool is built, or None."""
    if build not in BUILD_MODES and build not in names:
        if dropped is None or build in dropped:
            return None  # the builder exists but has a bad field (its own line), or the list is unknown
        known = ", ".join(names) or "none defined"
        return f"{where}: `{build}` is neither `local`, `target` nor a builder (delivery.builders: {known})"
    if build == "local" and pool.arch != arch:
        return (f"{where}: pool {pool.name} is {pool.arch} and this deployer is {arch}, so it cannot build its system "
                f"here: set `build: target` (the hosts build it), or `build: <builder>` with an {pool.arch} builder in "
                f"delivery.builders, or deploy from an {pool.arch} machine")
    if (builder := delivery.builder(build)) is not None and pool.arch not in builder.systems:
        return f"{where}: builder {build} builds {', '.join(builder.systems)}, not {pool.arch} (pool {pool.name})"
    return None


def _cache(stack: Parsed, delivery: DeliveryConfig) -> list[str]:
    """The cache's URLs are http(s), its bucket a bucket name, its region a region."""
    p = f"{NAMESPACE}:delivery.cache"
    problems = []
    for u, url in enumerate([delivery.cache.url, *delivery.cache.upstreams]):
        if url is not None and not url.startswith(("http://", "https://")):
            key = "url" if u == 0 else f"upstreams[{u - 1}]"
            problems.append(f"{p}.{key}: `{url}` is not an http(s) URL")
    if delivery.cache.bucket is not None and (why := bucket_problem(delivery.cache.bucket)) is not None:
        problems.append(f"{p}.bucket: {why}")
    if delivery.cache.region is not None and (why := region_problem(delivery.cache.region)) is not None:
        problems.append(f"{p}.region: {why}")
    return problems


def build_problems(stack: Parsed, arch: str | None = None) -> list[str]:
    """Builders that cannot work, and every pool's build naming a way to build its architecture:
    this deployer's own, a target build, or a builder that builds it natively."""
    p = f"{NAMESPACE}:"
    delivery = stack.delivery or DeliveryConfig()
    arch = arch or deployer_arch()
    problems = _builders(stack, delivery)
    names, dropped = _builder_names(stack, delivery)
    for i, pool in stack.valid_pools:
        if not (stack.known(f"pools[{i}].build") and stack.known(f"pools[{i}].arch")):
            continue  # its own line says what is wrong there
        if pool.build is None and not stack.known("delivery.build"):
            continue
        where = f"{p}pools[{i}].build" if pool.build else f"{p}delivery.build"
        if (why := _pool_build(where, pool, delivery.build_of(pool.build), arch, delivery, names, dropped)) is not None:
            problems.append(why)
    return problems + _cache(stack, delivery)


def check(stack: Parsed) -> list[str]:
    """A deploy key is required, every key must be whole, the demo's public one stays on loopback,
    and the health gate can pass."""
    p = f"{NAMESPACE}:"
    delivery = stack.delivery
    problems = []
    if delivery is not None and stack.known("delivery.settle_s") and stack.known("delivery.health_timeout_s") \
            and delivery.settle_s >= delivery.health_timeout_s:
        problems.append(f"{p}delivery.settle_s: {delivery.settle_s} is not shorter than delivery.health_timeout_s "
                        f"({delivery.health_timeout_s}): no host could be confirmed healthy in time")
    keys = delivery.authorized_keys if delivery is not None else []
    if not stack.known("delivery.authorized_keys"):
        return problems
    if not keys and (delivery is not None or stack.given("pools")):
        problems.append(f"{p}delivery.authorized_keys: required; the deploy key must stay authorized on the hosts after a switch")
    for k, key in enumerate(keys):
        if (why := ssh_key_problem(key)) is not None:
            problems.append(f"{p}delivery.authorized_keys[{k}]: {why}")
        elif key.split()[1] == DEMO_DEPLOY_KEY_BLOB and not stack.loopback_fleet:
            problems.append(f"{p}delivery.authorized_keys[{k}]: the demo's test-only deploy key (its private half is "
                            "public, see scripts/demo.py) may only be authorized on loopback test hosts")
    return problems
