"""`flakefleet:pools`: hosts that share a role, a shape and one NixOS closure.

Rules that depend on a field the user got wrong are skipped (the field's own problem is
reported): a pool whose `provider` is invalid is neither asked for EC2 fields nor metal hosts,
and a pool that lost hosts to their own problems does not count towards the control planes.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from flakefleet.facts.addresses import PoolBlocks, allocate_blocks, block_size
from flakefleet.facts.aws import gpu_families, instance_shape, instance_type_problem, nvidia_gpu
from flakefleet.config.base import NAMESPACE, Arch, DnsLabel, Model, Role, SshUser, did_you_mean
from flakefleet.config.metal import NETWORK_FIELD, HostNetwork, gpu_problems, network_problems, unique_macs
from flakefleet.config.network import zone_names
from flakefleet.config.rules import ANY_HOST_KEY_TYPES, host_address_problem, host_key_problem, label_problem
from flakefleet.facts.flake import disk_layouts, layout_firmware, resolve_flake

if TYPE_CHECKING:
    from flakefleet.config.parsed import Parsed

MAX_HOST_NAME = 63  # a DNS label: host and Kubernetes node name
DEFAULT_LAYOUT = "single-disk"  # nixos/disko/single-disk.nix
INSTALL_ONLY = ("install_host_key", "install_disk", "reinstall")  # host fields of bootstrap pools
# What `gpu: nvidia` adds to a pool's nodes (nixos/hardware/nvidia.nix: services.k3s.nodeTaint).
GPU_TAINT = ("nvidia.com/gpu", "present", "NoSchedule")


class Taint(Model):
    """A Kubernetes node taint."""

    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="Taint key. Required.")
    value: Annotated[str, Field(max_length=63)] = Field("", description="Taint value. Default empty.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(description="Taint effect. Required.")

    def render(self) -> str:
        """The `key=value:Effect` form k3s' `--node-taint` takes."""
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


class RootVolume(Model):
    """The EC2 root volume: always encrypted gp3."""

    size_gib: Annotated[int, Field(ge=16, le=16384)] = Field(50, description="Size in GiB, 16-16384. Default 50.")
    iops: Annotated[int, Field(ge=3000, le=16000)] | None = Field(None, description="gp3 IOPS. Default: AWS baseline (3000).")
    throughput_mibps: Annotated[int, Field(ge=125, le=1000)] | None = Field(
        None, description="gp3 throughput in MiB/s. Default: AWS baseline (125)."
    )


class Autoscaling(Model):
    """An EC2 worker pool that scales itself: an Auto Scaling group whose hosts pull their system."""

    min: Annotated[int, Field(ge=0, le=10000)] = Field(description="Fewest hosts the group keeps, 0-10000. Required.")
    max: Annotated[int, Field(ge=1, le=10000)] = Field(description="Most hosts the group may run, 1-10000. Required.")
    desired: Annotated[int, Field(ge=0, le=10000)] | None = Field(
        None, description="Hosts to start with, between min and max; later the cluster autoscaler sets it and an "
        "update leaves it alone. Default: min.")
    drain_timeout_s: Annotated[int, Field(ge=30, le=7000)] = Field(
        300, description="Seconds an instance the group terminates has to drain its node (evict its pods, "
        "disruption budgets respected) before it goes anyway, 30-7000 (the termination hook's heartbeat is this "
        "plus a margin, at most AWS' 7200). Default 300.")


class MetalHost(Model):
    """A bring-your-own host, reached over SSH at `address`."""

    name: DnsLabel = Field(description="Host and Kubernetes node name. Required.")
    address: IPv4Address = Field(
        description="Address delivery connects to and the node advertises: a unicast address (loopback only when "
        "every host of the stack is a loopback test host). Required."
    )
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = Field(22, description="SSH port. Default 22.")
    ssh_user: SshUser | None = Field(None, description="SSH user: `root` (see `delivery.ssh_user`). Default: "
                                     "`delivery.ssh_user`.")
    ssh_host_key: str | None = Field(
        None,
        description="The host's SSH public ed25519 host key (`ssh-ed25519 AAAA...`, the only host key our NixOS "
        "config serves), pinned before the first connection. Required, but for a host the pool bootstraps (its "
        "installed system's key is made by the stack).",
    )
    install_host_key: str | None = Field(
        None,
        description="`bootstrap` pools only: the SSH host key of the Linux the host runs before NixOS is installed "
        "(`ssh-ed25519 ...`, `ecdsa-sha2-nistp256 ...` or `ssh-rsa ...`; nixos-anywhere's installer keeps it "
        "after kexec), pinned before the first connection. Required there.",
    )
    install_disk: str | None = Field(
        None,
        description="`bootstrap` pools only: the disk the layout installs onto (`/dev/disk/by-id/...`). "
        "Default: the host's only disk, read from its facts before installing.",
    )
    reinstall: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None,
        description="`bootstrap` pools only: a new value wipes the host's disks and installs it again (drained "
        "and out of etcd first), once. Any text, e.g. a date. Default: installed once, never again.",
    )
    network: HostNetwork | None = NETWORK_FIELD


class PoolConfig(Model):
    """One entry of `flakefleet:pools` — hosts that share a role, a shape and one NixOS closure."""

    name: DnsLabel = Field(description="Pool name, unique in the stack. Required.")
    role: Role = Field(description="`control-plane` (k3s server) or `worker` (k3s agent). Required.")
    provider: Literal["ec2", "metal"] = Field(
        "ec2", description="`ec2` (instances this stack creates) or `metal` (bring-your-own hosts). Default `ec2`."
    )
    instance_type: str | None = Field(
        None, description="EC2 instance type, one EC2's API knows. Required for `ec2`, refused for `metal`."
    )
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
    hosts: list[MetalHost] = Field(default_factory=list, description="`metal` only: the hosts. Required for `metal` "
                                   "(here or in `hosts_file`).")
    hosts_file: str | None = Field(
        None, description="`metal` only: a YAML file under `stacks/` listing the pool's hosts (each as in `hosts`), "
        "instead of `hosts`. The engine passes the whole stack config in one environment variable, capped at 128 KiB "
        "by Linux (~760 hosts written inline); a file keeps the config small whatever the fleet. Default: none.")
    networks: list[IPv4Network] = Field(
        default_factory=list, description="`metal` only: the networks the pool's hosts live in (every host's address "
        "must be in one). On bring-your-own metal the fleet's firewalls admit these ranges, not each host, to the "
        "ports only nodes may reach (etcd, the kubelet, the overlay), so a host joining or leaving inside them changes "
        "nothing on the others. Default: none, each host's own address (exact, but a join or leave then rewrites "
        "every metal host's firewall sources).")
    per_host_closures: bool = Field(
        False,
        description="Build one closure per host with its facts baked in, instead of one per pool with facts "
        "read at runtime. Costs an evaluation and a build per host. Default `false`.",
    )
    build: str | None = Field(
        None, description="Where this pool's system is built: `local`, `target` or a builder's name (see "
        "`delivery.build`). Default: `delivery.build`."
    )
    gpu: Literal["nvidia"] | None = Field(
        None,
        description="`nvidia`: the pool's hosts have NVIDIA GPUs (EC2: the instance type must have them). Their system "
        "gets the datacenter driver, the container toolkit (containerd's `nvidia` runtime) and the label "
        "`nvidia.com/gpu.present=true` with the taint `nvidia.com/gpu=present:NoSchedule`, so only GPU workloads land "
        "there; the cluster runs NVIDIA's device plugin. Unfree packages are allowed for the NVIDIA ones of this pool "
        "only. Default: none.",
    )
    reboot: Literal["auto", "always", "never"] = Field(
        "auto",
        description="A new system whose kernel, initrd, kernel modules or kernel parameters differ from the booted "
        "ones: `auto` drains the host and reboots into it (booted once, made the default only when confirmed "
        "healthy), `always` reboots on every new system, `never` switches live and reports the reboot as pending. "
        "Default `auto`.",
    )
    bootstrap: Literal["nixos-anywhere"] | None = Field(
        None,
        description="`metal` only: `nixos-anywhere` installs NixOS on each host from whatever Linux it runs (kexec "
        "into an installer, partition with `disk_layout`, install the pool's system) before its first delivery. "
        "Default: none, the hosts run NixOS already.",
    )
    disk_layout: str | None = Field(
        None,
        description="`bootstrap` pools only: the disko layout `nixos/disko/<name>.nix` the hosts are partitioned "
        "with. Default `single-disk` (an EFI system partition and an ext4 root on one disk).",
    )
    autoscaling: Autoscaling | None = Field(
        None,
        description="EC2 worker pools only, instead of `count`: `{min, max, desired?}`. The pool is an EC2 Auto Scaling "
        "group whose instances pull the pool's signed system from the binary cache at boot (no per-host resource); "
        "a new system reaches them by an instance refresh, `delivery.max_unavailable` at a time. Default: none.",
    )
    network: HostNetwork | None = NETWORK_FIELD
    gpu_open_modules: bool | None = Field(
        None, description="`metal` pools with `gpu: nvidia`: whether NVIDIA's open kernel modules drive the GPUs "
        "(Turing and newer: `true`; older ones, e.g. V100, need `false`). EC2 pools follow their instance type. "
        "Default `true`.")
    gpu_nvswitch: bool | None = Field(
        None, description="`metal` pools with `gpu: nvidia`: whether the GPUs hang off NVSwitch (HGX boards): the "
        "data-center driver's fabric manager then runs. The install refuses a host whose PCI devices say otherwise. "
        "Default `false`.")
    ip_block: Annotated[int, Field(ge=1, le=15)] | None = Field(
        None,
        description="EC2 only: first of the pool's address blocks (1-15) in each private subnet. Default: derived "
        "from the pool name, so adding or reordering pools leaves addresses alone; pin it in long-lived stacks.",
    )

    @property
    def layout(self) -> str | None:
        """The disk layout of a bootstrapped pool (None: not bootstrapped)."""
        return (self.disk_layout or DEFAULT_LAYOUT) if self.bootstrap else None

    @property
    def size(self) -> int:
        """Number of hosts the stack plans (an autoscaled pool's are the group's: none)."""
        return len(self.hosts) if self.provider == "metal" else (self.count or 0)

    @property
    def capacity(self) -> int:
        """Most hosts the pool may have: its planned hosts, or its group's `max`."""
        return self.autoscaling.max if self.autoscaling is not None else self.size


def _ec2_pool(at: str, pool: PoolConfig, arch_known: bool = True) -> list[str]:
    problems = []
    if pool.bootstrap is not None:
        problems.append(f"{at}.bootstrap: only for provider metal; an ec2 pool boots the NixOS image itself")
    if pool.disk_layout is not None:
        problems.append(f"{at}.disk_layout: only for a metal pool with bootstrap: nixos-anywhere")
    if pool.hosts:
        problems.append(f"{at}.hosts: only for provider metal; an ec2 pool's hosts are created from count")
    if pool.networks:
        problems.append(f"{at}.networks: only for provider metal; an ec2 pool's addresses are planned in its blocks")
    if pool.network is not None:
        problems.append(f"{at}.network: only for provider metal; an ec2 pool's hosts take their addresses from EC2")
    problems += _autoscaling(at, pool)
    if pool.count is None and pool.autoscaling is None:
        problems.append(f"{at}.count: required for provider ec2 (or autoscaling: {{min, max}} for a worker pool)")
    elif pool.count and len(f"{pool.name}-{pool.count - 1}") > MAX_HOST_NAME:
        problems.append(f"{at}.name: host names {pool.name}-N would be longer than {MAX_HOST_NAME} characters; "
                        "shorten the pool name")
    if pool.instance_type is None:
        problems.append(f"{at}.instance_type: required for provider ec2")
        return problems
    if (why := instance_type_problem(pool.instance_type)) is not None:
        return [*problems, f"{at}.instance_type: {why}"]
    shape = instance_shape(pool.instance_type)
    if shape is None:
        return problems
    if arch_known and shape.arch != pool.arch:  # an invalid arch has its own line
        problems.append(f"{at}.instance_type: {pool.instance_type} is {shape.arch} but the pool's arch is {pool.arch}")
    if shape.metal and not pool.bare_metal and pool.autoscaling is None:  # else _autoscaling refuses metal
        problems.append(f"{at}.instance_type: {pool.instance_type} is bare metal; set bare_metal: true on the pool "
                        "(delivery then waits for its long boot)")
    if pool.bare_metal and not shape.metal:
        problems.append(f"{at}.bare_metal: true but {pool.instance_type} is virtual; use a *.metal type")
    known = nvidia_gpu(pool.instance_type)
    if pool.gpu == "nvidia" and known is None:
        families = ", ".join(gpu_families(shape.arch))
        problems.append(f"{at}.gpu: {pool.instance_type} has no NVIDIA GPU; {shape.arch} GPU families: {families}")
    elif pool.gpu == "nvidia" and known.nvswitch and shape.arch != "x86_64":
        # nixpkgs' data-center drivers, the only ones with the fabric manager NVSwitch needs, are
        # built for x86_64 alone (pkgs/os-specific/linux/nvidia-x11/default.nix: no aarch64 hash).
        problems.append(f"{at}.gpu: {pool.instance_type}'s {known.gpu} GPUs hang off NVSwitch, which needs "
                        "NVIDIA's data-center driver with the fabric manager; nixpkgs builds it for x86_64 only")
    return problems


def _autoscaling(at: str, pool: PoolConfig) -> list[str]:
    """An autoscaled pool: EC2 workers whose group bounds make sense, on types that suit a group."""
    scaling = pool.autoscaling
    if scaling is None:
        return []
    problems = []
    if pool.role == "control-plane":
        problems.append(f"{at}.autoscaling: only for worker pools; a control plane is an etcd member, which a scale-in "
                        "would take away without a quorum-safe removal")
    if pool.count is not None:
        problems.append(f"{at}.count: not with autoscaling; the group's size is autoscaling.min..max")
    if scaling.min > scaling.max:
        problems.append(f"{at}.autoscaling.min: {scaling.min} is more than max {scaling.max}")
    elif scaling.desired is not None and not scaling.min <= scaling.desired <= scaling.max:
        problems.append(f"{at}.autoscaling.desired: {scaling.desired} is outside min..max ({scaling.min}..{scaling.max})")
    if pool.per_host_closures:
        problems.append(f"{at}.per_host_closures: not with autoscaling; the group's hosts are not known ahead, they "
                        "share the pool's system")
    if pool.ip_block is not None:
        problems.append(f"{at}.ip_block: not with autoscaling; the group's hosts take addresses outside the planned "
                        "blocks (which are reserved for the planned hosts)")
    shape = instance_shape(pool.instance_type) if pool.instance_type else None
    if shape is not None and shape.metal:
        problems.append(f"{at}.instance_type: {pool.instance_type} is bare metal, which boots in 10+ minutes: too slow "
                        "for a pool that scales with load; use a virtual type")
    return problems


def _metal_pool(stack: Parsed, i: int, pool: PoolConfig) -> list[str]:
    at = f"{NAMESPACE}:pools[{i}]"
    problems = []
    if pool.autoscaling is not None:
        problems.append(f"{at}.autoscaling: only for provider ec2; a metal pool is its list of hosts")
    for field in ("instance_type", "ami", "count", "ip_block"):
        if getattr(pool, field) is not None:
            problems.append(f"{at}.{field}: only for provider ec2; a metal pool is its list of hosts")
    if pool.bare_metal:
        problems.append(f"{at}.bare_metal: only for provider ec2; metal hosts are bare metal already")
    if not pool.hosts and stack.known(f"pools[{i}].hosts"):
        problems.append(f"{at}.hosts: required for provider metal (name, address, ssh_host_key of each host)")
    problems += _bootstrap_pool(stack, i, pool)
    problems += _networks(at, pool)
    for j, host in stack.indexed(f"pools[{i}].hosts", pool.hosts):
        if (why := host_address_problem(host.address, stack.loopback_fleet)) is not None:
            problems.append(f"{at}.hosts[{j}].address: {why}")
        elif pool.networks and not any(host.address in net for net in pool.networks):
            problems.append(f"{at}.hosts[{j}].address: {host.address} is in none of the pool's networks "
                            f"({', '.join(map(str, pool.networks))})")
        problems += network_problems(f"{at}.hosts[{j}]", pool, host)
        if pool.bootstrap is not None:
            problems += _bootstrap_host(f"{at}.hosts[{j}]", host)
        elif host.ssh_host_key is None:
            problems.append(f"{at}.hosts[{j}].ssh_host_key: required; host keys are pinned before the first connection "
                            "(read it from the host's /etc/ssh/ssh_host_ed25519_key.pub)")
        else:
            problems += [f"{at}.hosts[{j}].{field}: only for a pool with bootstrap: nixos-anywhere"
                         for field in INSTALL_ONLY if getattr(host, field) is not None]
        if host.ssh_host_key is not None and (why := host_key_problem(host.ssh_host_key)) is not None:
            problems.append(f"{at}.hosts[{j}].ssh_host_key: {why}")
    return problems + unique_macs(at, stack.indexed(f"pools[{i}].hosts", pool.hosts), pool)


# The widest network a metal pool may name: its range is opened to etcd, the kubelet and the
# overlay (VXLAN has no authentication) on every metal host of the fleet.
WIDEST_NETWORK = 8


def _networks(at: str, pool: PoolConfig) -> list[str]:
    """A metal pool's networks: each a range its hosts live in, none wider than /8."""
    return [f"{at}.networks[{k}]: {net} is wider than /{WIDEST_NETWORK}; the fleet's firewalls would open etcd, the "
            "kubelet and the overlay to all of it (name the networks the hosts live in)"
            for k, net in enumerate(pool.networks) if net.prefixlen < WIDEST_NETWORK]


def _bootstrap_pool(stack: Parsed, i: int, pool: PoolConfig) -> list[str]:
    """The layout a bootstrapped pool names is one the flake has."""
    at = f"{NAMESPACE}:pools[{i}]"
    if pool.bootstrap is None:
        return [f"{at}.disk_layout: only with bootstrap: nixos-anywhere"] if pool.disk_layout is not None else []
    flake = resolve_flake(stack.delivery.flake if stack.delivery else None)
    if not stack.known("delivery.flake"):
        return []
    offered = disk_layouts(flake)
    if offered is None:
        return [f"{at}.bootstrap: the flake {flake.name}/ has no disko/ folder, so no disk layout to install with "
                f"(nixos/disko/<layout>.nix, as flakefleet's own flake has)"]
    if pool.layout not in offered:
        return [f"{at}.disk_layout: the flake has no layout {pool.layout!r}{did_you_mean(pool.layout, offered)} "
                f"({flake.name}/disko/ has: {', '.join(offered) or 'none'})"]
    if layout_firmware(flake, pool.layout) != "bios":
        return []
    # GRUB is written to the install disk, which the system then names: one system per host.
    why = f"layout {pool.layout} boots by BIOS: GRUB is written to the host's disk, which its system names"
    problems = [] if pool.per_host_closures else [f"{at}.per_host_closures: required with {why} (one system "
                                                  "per host)"]
    return problems + [f"{at}.hosts[{j}].install_disk: required with {why} (`flakefleet facts` lists its disks)"
                       for j, h in stack.indexed(f"pools[{i}].hosts", pool.hosts) if h.install_disk is None]


def _bootstrap_host(at: str, host: MetalHost) -> list[str]:
    """A host NixOS is installed on: its pre-install key pinned, its installed key the stack's."""
    problems = []
    if host.install_host_key is None:
        problems.append(f"{at}.install_host_key: required with bootstrap; the Linux it runs before the install is "
                        "pinned before the first connection (read it from its /etc/ssh/ssh_host_ed25519_key.pub)")
    elif (why := host_key_problem(host.install_host_key, ANY_HOST_KEY_TYPES)) is not None:
        problems.append(f"{at}.install_host_key: {why}")
    if host.ssh_host_key is not None:
        problems.append(f"{at}.ssh_host_key: not with bootstrap; the stack makes the installed system's host key "
                        "(placed by the install, pinned before it first answers): remove this line")
    if host.install_disk is not None and not host.install_disk.startswith("/dev/"):
        problems.append(f"{at}.install_disk: {host.install_disk!r} is not a device path; use /dev/disk/by-id/...")
    return problems


def _pull_source(stack: Parsed, at: str) -> list[str]:
    """An autoscaled pool's instances pull from the stack's cache: there must be one."""
    delivery = stack.delivery
    if not (stack.known("storage.enabled") and stack.known("delivery.cache")) or delivery is None:
        return []
    if not delivery.cache.enabled or not (stack.storage.enabled or delivery.cache.bucket):
        return [f"{at}.autoscaling: its instances pull their system from the stack's binary cache; set "
                "delivery.cache.enabled: true with storage.enabled: true (or a delivery.cache.bucket)"]
    return []


def _one_pool(stack: Parsed, i: int, pool: PoolConfig) -> list[str]:
    at = f"{NAMESPACE}:pools[{i}]"
    problems = []
    if stack.known(f"pools[{i}].provider"):
        if pool.provider == "ec2":
            problems += _ec2_pool(at, pool, stack.known(f"pools[{i}].arch"))
            problems += _pull_source(stack, at) if pool.autoscaling is not None else []
        else:
            problems += _metal_pool(stack, i, pool)
    problems += gpu_problems(at, pool)
    for key, value in pool.labels.items():
        if (why := label_problem(key, value)) is not None:
            problems.append(f"{at}.labels.{key}: {why}")
    for j, taint in stack.indexed(f"pools[{i}].taints", pool.taints):
        if (why := label_problem(taint.key, taint.value, kubelet_label=False)) is not None:
            problems.append(f"{at}.taints[{j}]: {why.replace('label', 'taint')}")
    return problems + _taints_unique(stack, i, pool)


def _taints_unique(stack: Parsed, i: int, pool: PoolConfig) -> list[str]:
    """Kubernetes refuses a Node with two taints of one key and effect (pkg/apis/core/validation:
    "taints must be unique by key and effect pair"), and k3s' node then never registers; the
    GPU taint that `gpu: nvidia` adds counts as one of the pool's taints."""
    at = f"{NAMESPACE}:pools[{i}].taints"
    problems, seen = [], {}
    gpu = pool.gpu is not None and stack.known(f"pools[{i}].gpu")
    for j, taint in stack.indexed(f"pools[{i}].taints", pool.taints):
        pair = (taint.key, taint.effect)
        if gpu and pair == (GPU_TAINT[0], GPU_TAINT[2]):
            problems.append(f"{at}[{j}]: `gpu: nvidia` adds the taint {GPU_TAINT[0]}={GPU_TAINT[1]}:{GPU_TAINT[2]} "
                            "itself; remove this one (Kubernetes refuses two taints of one key and effect)")
        elif pair in seen:
            problems.append(f"{at}[{j}]: a second {taint.key}:{taint.effect} taint (also taints[{seen[pair]}]); "
                            "Kubernetes refuses two taints of one key and effect: keep one")
        seen.setdefault(pair, j)
    return problems


def _unique(stack: Parsed) -> list[str]:
    p = f"{NAMESPACE}:"
    problems = []
    seen_pools: dict[str, int] = {}
    for i, pool in stack.valid_pools:
        if pool.name in seen_pools:
            problems.append(f"{p}pools[{i}].name: duplicate pool name {pool.name!r} (also pools[{seen_pools[pool.name]}])")
        seen_pools.setdefault(pool.name, i)
    seen_hosts: dict[str, str] = {}
    seen_addresses: dict[IPv4Address, str] = {}
    for i, pool in stack.valid_pools:
        hosts = stack.indexed(f"pools[{i}].hosts", pool.hosts) if pool.provider == "metal" else []
        if pool.provider == "metal":
            named = [(f"pools[{i}].hosts[{j}].name", h.name) for j, h in hosts]
        else:
            named = [(f"pools[{i}].count", f"{pool.name}-{k}") for k in range(pool.count or 0)]
        for where, name in named:
            if name in seen_hosts and seen_hosts[name] != where:
                problems.append(f"{p}{where}: duplicate host name {name!r} (also {seen_hosts[name]})")
            seen_hosts.setdefault(name, where)
        for j, host in hosts:
            where = f"pools[{i}].hosts[{j}].address"
            if host.address in seen_addresses:
                problems.append(f"{p}{where}: duplicate address {host.address} (also {seen_addresses[host.address]})")
            seen_addresses.setdefault(host.address, where)
    return problems


def _control_planes(stack: Parsed) -> list[str]:
    """etcd quorum needs an odd number of control planes, all on one provider (when the pools are known)."""
    p = f"{NAMESPACE}:"
    control = [(i, pool) for i, pool in stack.valid_pools if pool.role == "control-plane"]
    if not stack.pools_complete or not stack.given("pools"):
        return []
    problems = []
    total = sum(pool.size for _, pool in control)
    where = f"pools[{control[0][0]}].count" if len(control) == 1 and control[0][1].provider == "ec2" else "pools"
    if total == 0:
        problems.append(f"{p}{where}: no control-plane host; a cluster needs 1, 3 or 5 control planes")
    elif total % 2 == 0:
        problems.append(f"{p}{where}: {total} control planes; embedded etcd needs an odd number (1, 3, 5) to keep quorum")
    if len({pool.provider for _, pool in control}) > 1:
        problems.append(f"{p}pools: control-plane pools mix ec2 and metal; keep all control planes on one provider")
    return problems


def check(stack: Parsed) -> list[str]:
    """Each pool alone, then names and addresses across pools, then the control planes."""
    problems = [line for i, pool in stack.valid_pools for line in _one_pool(stack, i, pool)]
    return problems + _unique(stack) + _control_planes(stack)


def placement(stack: Parsed) -> list[str]:
    """The EC2 pools fit the VPC's address blocks (flakefleet/facts/addresses.py), reported with the
    stack's other problems, when everything placement reads is known: each EC2 pool's count and
    pin, the VPC range, and the zones (their own rules report what is wrong with them)."""
    network = stack.network
    if not (stack.uses_ec2 and stack.pools_complete and stack.region_known):
        return []
    if not all(stack.known(f"network.{f}") for f in ("vpc_cidr", "az_count", "availability_zones")):
        return []
    if not 16 <= network.vpc_cidr.prefixlen <= 22:
        return []  # network.check says so
    names, count = zone_names(network, stack.region)
    if not names or count > len(names):
        return []  # network.check says so
    pools = [PoolBlocks(i, pool.name, pool.count or 0, pool.ip_block) for i, pool in stack.valid_pools
             if pool.provider == "ec2" and stack.known(f"pools[{i}].ip_block")]
    _, problems = allocate_blocks(pools, count, block_size(network.vpc_cidr.prefixlen), f"{NAMESPACE}:")
    return problems
