"""The rollout: in which order hosts are delivered, a rebuild's restore point, and which hosts
reboot for a new system (pure). Each host's plan is in hostplans.py."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from flakefleet.config import StackConfig
from flakefleet.plan.contract import System
from flakefleet.plan.inventory import Host, Inventory
from flakefleet.plan.specs import SERVER_TOKEN, host_system


@dataclass(frozen=True)
class RestorePoint:
    """The snapshot a rebuild restores: s3://bucket/cluster/snapshot."""

    bucket: str
    cluster: str
    region: str
    snapshot: str

    @property
    def id(self) -> str:
        """Stable id: a host does each restore once, however often delivery runs."""
        return hashlib.sha256(f"{self.bucket}/{self.cluster}/{self.snapshot}".encode()).hexdigest()[:16]

    def k3s_args(self) -> tuple[str, ...]:
        """`k3s server --cluster-reset` from the S3 snapshot, with the original server token
        (read from the staged token file: @STAGE@ is the runner's staging directory)."""
        return (
            "server", "--cluster-reset", f"--cluster-reset-restore-path={self.snapshot}",
            "--token-file", f"@STAGE@{SERVER_TOKEN[0]}",
            "--etcd-s3", "--etcd-s3-bucket", self.bucket, "--etcd-s3-region", self.region,
            "--etcd-s3-folder", self.cluster,
        )  # fmt: skip


def rollout_waves(inv: Inventory, max_parallel: int) -> list[tuple[Host, ...]]:
    """Control planes one at a time, the cluster-initializing one first (etcd keeps quorum), then
    workers in batches of `max_parallel`, each after the previous one is healthy."""
    return [(h,) for h in inv.control_planes] + worker_batches(inv.workers, max_parallel, inv.kept_batches)


def worker_batches(workers: tuple[Host, ...], size: int, kept: tuple[tuple[str, ...], ...] = ()) -> list[tuple[Host, ...]]:
    """Workers in batches of at most `size`. A batch is part of each of its hosts' plans (its
    readiness gate), so workers keep the batches of the last update (`kept`): one leaving shrinks
    its own batch, joining ones form new batches at the end, and no other host's plan changes.
    Batches wider than `size` (it shrank) are split; when churn has left more than twice the
    batches a fresh cut needs, all are cut afresh (the rollout stays at most twice as long)."""
    present = {h.name: h for h in workers}
    batches: list[tuple[Host, ...]] = []
    placed: set[str] = set()
    for names in kept:
        members = [present[n] for n in dict.fromkeys(names) if n in present and n not in placed]
        placed.update(h.name for h in members)
        batches += [tuple(members[i : i + size]) for i in range(0, len(members), size)]
    joining = [h for h in workers if h.name not in placed]
    batches += [tuple(joining[i : i + size]) for i in range(0, len(joining), size)]
    if len(batches) > 2 * -(-len(workers) // size):
        return [workers[i : i + size] for i in range(0, len(workers), size)]
    return batches


def waves(cfg: StackConfig, inv: Inventory) -> list[tuple[Host, ...]]:
    """The stack's rollout waves: workers batched by `delivery.max_unavailable` / `max_parallel`."""
    return rollout_waves(inv, cfg.delivery.batch_size(len(inv.workers)))


BOOT_PARTS = ("kernel", "initrd", "modules", "params")


def reboot_notes(cfg: StackConfig, inv: Inventory, systems: Mapping[str, System], previous: Mapping | None) -> list[str]:
    """One line per system whose boot files differ from the last update's (`previous`, the stack
    output `boot`): which hosts will reboot into it (or keep a pending reboot), in which waves."""
    if not previous:
        return []
    wave_of = {h.name: n for n, wave in enumerate(waves(cfg, inv)) for h in wave}
    lines = []
    for key, system in sorted(systems.items()):
        before = previous.get(key)
        if not before or not system.boot or dict(before) == system.boot:
            continue
        parts = [p for p in BOOT_PARTS if before.get(p) != system.boot.get(p)]
        hosts = [h for h in inv.hosts if host_system(cfg, h) == key]
        mode = next(p.reboot for p in cfg.pools if p.name == hosts[0].pool) if hosts else "auto"
        verb = "keep running the old kernel: reboot pending (reboot: never)" if mode == "never" else "reboot"
        who = ", ".join(f"{h.name} (wave {wave_of[h.name]})" for h in hosts)
        lines.append(f"pool {key}: {', '.join(parts)} change; {who} {verb}")
    return lines


def pulled_min_healthy(max_unavailable: int | str | None, pool_max: int) -> int:
    """An autoscaled pool's instance refresh MinHealthyPercentage from `delivery.max_unavailable`:
    a percentage as is, a count as its share of the pool's most hosts (rounded up); none: AWS'
    default, 90 (RefreshPreferences.MinHealthyPercentage)."""
    import math

    if max_unavailable is None:
        return 90
    if isinstance(max_unavailable, str):
        return 100 - int(max_unavailable.rstrip("%"))
    return max(0, 100 - math.ceil(100 * max_unavailable / max(pool_max, 1)))


def pulled_rollout_text(cfg: StackConfig, pool_name: str) -> str:
    """How an autoscaled pool takes a new system, as the preview and the PR comment say it."""
    scaling = cfg.pool(pool_name).autoscaling
    assert scaling is not None
    batch = 100 - pulled_min_healthy(cfg.delivery.max_unavailable, scaling.max)
    return f"{scaling.min}..{scaling.max} hosts, new system via instance refresh, {batch}% at a time"
