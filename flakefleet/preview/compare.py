"""Per pool, what changes between two sets of systems (pure): packages, units, reboot, hosts,
and what is deployed to or pruned from the cluster.

Both sides are manifests by system name plus, per host, which system it runs. Hosts are compared
one by one (the system it runs at the base against the one it will run), so pools that switch
to or from per-host closures, and hosts that move between pools, are diffed correctly; a pool's
changes are the union over its hosts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flakefleet.preview.derivations import parse_drv_name
from flakefleet.preview.manifest import Manifest
from flakefleet.plan.rollout import BOOT_PARTS


@dataclass(frozen=True)
class PoolHosts:
    """A pool's hosts on one side: (host, wave, system name) in rollout order, and its reboot mode."""

    hosts: tuple[tuple[str, int, str], ...]
    reboot: str = "auto"
    instance_type: str = ""
    """An EC2 pool's instance type ("": bring-your-own, or not known)."""
    pulled: str = ""
    """An autoscaled pool (no hosts of the stack's; its system is the one named as the pool):
    how a new system reaches its instances ("" for a pool the stack delivers to)."""


@dataclass(frozen=True)
class Side:
    """One side of a comparison: pools (name -> PoolHosts) and manifests (system name -> Manifest)."""

    pools: Mapping[str, PoolHosts]
    manifests: Mapping[str, Manifest]


@dataclass(frozen=True)
class PackageChange:
    """A package whose versions differ: none before (added), none after (removed), or others."""

    name: str
    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def kind(self) -> str:
        return "added" if not self.before else "removed" if not self.after else "changed"


@dataclass(frozen=True)
class UnitChange:
    """A systemd unit added, removed, or changed: `restart`, `reload`, `keep` (keeps running:
    X-RestartIfChanged=false) or `change` (not a service, socket, timer or path)."""

    name: str
    kind: str


@dataclass(frozen=True)
class PoolChange:
    """What happens to one pool. status: unchanged | changed | added | removed."""

    pool: str
    status: str
    hosts: tuple[tuple[str, int], ...] = ()
    """The hosts whose system changes, with their waves (all of an added pool's; a removed
    pool's with wave -1)."""
    packages: tuple[PackageChange, ...] = ()
    rebuilt: tuple[str, ...] = ()
    """Packages rebuilt at the same versions (a patch, or a dependency that changed)."""
    units: tuple[UnitChange, ...] = ()
    boot: tuple[str, ...] = ()
    """Which boot files change; not empty: the hosts reboot (or keep a pending reboot)."""
    kernel: tuple[str, str] | None = None
    reboot: str = "auto"
    hosts_added: tuple[tuple[str, int], ...] = ()
    hosts_removed: tuple[str, ...] = ()
    size: tuple[int, int] = (0, 0)
    """(packages, units) of the new system: what an added pool brings."""
    resize: tuple[str, str] | None = None
    """(old, new) instance type of an EC2 pool: its hosts restart, drained, in their waves."""
    resized: tuple[tuple[str, int], ...] = ()
    """The hosts that restart for the new type, with their waves."""
    deploys: tuple[str, ...] = ()
    """Manifests its systems link into k3s' manifests directory that they did not before."""
    prunes: tuple[str, ...] = ()
    """Manifests its systems no longer link: their objects are deleted from the cluster and the
    links removed after the switch (flakefleet/delivery/prune.py)."""
    images_removed: tuple[str, ...] = ()
    """Images its systems no longer preload: the links are removed after the switch."""
    pulled: str = ""
    """An autoscaled pool: how its instances take the new system (PoolHosts.pulled)."""

    @property
    def reboots(self) -> bool:
        return bool(self.boot) and self.reboot != "never"

    @property
    def configuration_only(self) -> bool:
        """Hosts' systems change, but no package, unit, boot file or k3s link does (a file in /etc, say)."""
        moved = bool(self.hosts) or (bool(self.pulled) and self.status == "changed")
        return moved and not (self.packages or self.rebuilt or self.units or self.boot
                                         or self.deploys or self.prunes or self.images_removed)


def version_key(version: str) -> list:
    """Sort versions as people read them: 1.9 before 1.10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p]


def _versions(found: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(sorted(found, key=version_key))


def package_changes(before: Manifest, after: Manifest) -> tuple[list[PackageChange], list[str]]:
    """(version changes, names rebuilt at the same versions), sorted by name."""
    changes, rebuilt = [], []
    for name in sorted(set(before.packages) | set(after.packages)):
        b, a = before.packages.get(name, {}), after.packages.get(name, {})
        if set(b) != set(a):
            changes.append(PackageChange(name, _versions(b), _versions(a)))
        elif b != a:
            rebuilt.append(name)
    return changes, rebuilt


def unit_changes(before: Manifest, after: Manifest) -> list[UnitChange]:
    changes = []
    for name in sorted(set(before.units) | set(after.units)):
        b, a = before.units.get(name), after.units.get(name)
        if b is None or a is None:
            changes.append(UnitChange(name, "added" if b is None else "removed"))
        elif b[0] != a[0]:
            changes.append(UnitChange(name, a[1]))
    return changes


def boot_changes(before: Manifest, after: Manifest) -> tuple[tuple[str, ...], tuple[str, str] | None]:
    """(boot parts that differ, (old, new) kernel version when the kernel changes)."""
    if not before.boot or not after.boot:
        return (), None
    parts = tuple(p for p in BOOT_PARTS if before.boot.get(p) != after.boot.get(p))
    kernel = (kernel_version(before.boot.get("kernel")), kernel_version(after.boot.get("kernel")))
    return parts, kernel if "kernel" in parts and all(kernel) and kernel[0] != kernel[1] else None


def link_changes(before: Manifest, after: Manifest) -> tuple[set[str], set[str], set[str]]:
    """(manifests linked now and not before, manifests and images linked before and not now);
    nothing when either side does not say (a last update older than the links)."""
    if before.links is None or after.links is None:
        return set(), set(), set()
    b, a = before.links, after.links
    manifests = set(b.get("manifests", ())), set(a.get("manifests", ()))
    return manifests[1] - manifests[0], manifests[0] - manifests[1], set(b.get("images", ())) - set(a.get("images", ()))


def kernel_version(path: str | None) -> str:
    """`/nix/store/<hash>-linux-6.12.8/bzImage` -> `6.12.8` (empty when it does not say)."""
    match = re.match(r"/nix/store/[0-9a-z]{32}-([^/]+)", path or "")
    return parse_drv_name(match.group(1))[1] if match else ""


def _merge(items):
    return tuple(dict.fromkeys(items))


def pool_change(pool: str, base: PoolHosts | None, head: PoolHosts | None,
                before: Mapping[str, Manifest], after: Mapping[str, Manifest]) -> PoolChange:
    """One pool's change between two sides (either side None: the pool is added or removed)."""
    if head is None:
        return PoolChange(pool, "removed", hosts=tuple((h, -1) for h, _, _ in base.hosts))
    if base is None:
        keys = [k for _, _, k in head.hosts] + ([pool] if head.pulled else [])
        sizes = [(len(after[k].packages), len(after[k].units)) for k in keys if k in after]
        return PoolChange(pool, "added", hosts=tuple((h, w) for h, w, _ in head.hosts), reboot=head.reboot,
                          size=max(sizes, default=(0, 0)), pulled=head.pulled)
    if head.pulled:
        return pulled_change(pool, head.pulled, before.get(pool), after.get(pool))
    was = {h: k for h, _, k in base.hosts}
    changed, packages, rebuilt, units, boot, kernels, pairs = [], [], [], [], [], [], set()
    deploys, prunes, images = set(), set(), set()
    for host, wave, key in head.hosts:
        if host not in was or was[host] not in before or key not in after:
            continue
        old, new = before[was[host]], after[key]
        if old.system == new.system:
            continue
        changed.append((host, wave))
        if (was[host], key) not in pairs:  # hosts sharing a system pair are compared once
            pairs.add((was[host], key))
            p, r = package_changes(old, new)
            packages += p
            rebuilt += r
            units += unit_changes(old, new)
            parts, kernel = boot_changes(old, new)
            boot += parts
            kernels += [kernel] if kernel else []
            d, p, i = link_changes(old, new)
            deploys, prunes, images = deploys | d, prunes | p, images | i
    added = tuple((h, w) for h, w, _ in head.hosts if h not in was)
    staying = {h for h, _, _ in head.hosts}
    removed = tuple(h for h, _, _ in base.hosts if h not in staying)
    resize = (base.instance_type, head.instance_type) if base.instance_type and head.instance_type \
        and base.instance_type != head.instance_type else None
    resized = tuple((h, w) for h, w, _ in head.hosts if h in was) if resize else ()
    status = "changed" if changed or added or removed or resized else "unchanged"
    return PoolChange(
        pool, status, hosts=tuple(changed),
        packages=tuple(sorted(_merge(packages), key=lambda c: (c.name, c.before, c.after))),
        rebuilt=tuple(sorted(set(rebuilt) - {c.name for c in packages})),
        units=tuple(sorted(_merge(units), key=lambda u: u.name)),
        boot=tuple(p for p in BOOT_PARTS if p in boot), kernel=kernels[0] if kernels else None,
        reboot=head.reboot, hosts_added=added, hosts_removed=removed, resize=resize, resized=resized,
        deploys=tuple(sorted(deploys)), prunes=tuple(sorted(prunes)), images_removed=tuple(sorted(images)),
    )


def pulled_change(pool: str, pulled: str, old: Manifest | None, new: Manifest | None) -> PoolChange:
    """An autoscaled pool's change: its one system (named as the pool), which its group's
    instances take by an instance refresh: new instances, so nothing reboots and nothing is
    pruned; its hosts are the group's, not the stack's."""
    if old is None or new is None or old.system == new.system:
        return PoolChange(pool, "unchanged", pulled=pulled)
    packages, rebuilt = package_changes(old, new)
    return PoolChange(pool, "changed", packages=tuple(sorted(_merge(packages), key=lambda c: (c.name, c.before, c.after))),
                      rebuilt=tuple(sorted(set(rebuilt) - {c.name for c in packages})),
                      units=tuple(sorted(_merge(unit_changes(old, new)), key=lambda u: u.name)), pulled=pulled)


def compare(base: Side, head: Side) -> list[PoolChange]:
    """Every pool of either side, by name."""
    return [
        pool_change(pool, base.pools.get(pool), head.pools.get(pool), base.manifests, head.manifests)
        for pool in sorted(set(base.pools) | set(head.pools))
    ]
