"""What validation kept of a stack: each key's model (partial where a field was bad), what it
dropped, and what the stack file wrote. The rules of every key read the stack through this, and
ask `known(path)` before they rely on a field that may have been dropped as invalid."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flakefleet.config.cluster import ClusterConfig
from flakefleet.config.delivery import DeliveryConfig
from flakefleet.config.dr import DrConfig
from flakefleet.config.network import NetworkConfig
from flakefleet.config.pools import PoolConfig
from flakefleet.config.rules import region_problem
from flakefleet.config.storage import StorageConfig
from flakefleet.config.workloads import WorkloadConfig


@dataclass
class Parsed:
    """What validation kept of each key (partial where a field was bad), and what it dropped."""

    models: dict[str, Any]
    pools: list[PoolConfig | None]
    dropped: set[str]
    region: str | None
    secrets_given: set[str]
    present: set[str] = field(default_factory=set)
    workloads: list[WorkloadConfig] = field(default_factory=list)
    secret_keys: set[str] | None = None
    """The config keys Pulumi holds as secrets (None: offline planning, no secret needed)."""
    raw: dict[str, Any] = field(default_factory=dict)
    """Each key's value as written (decoded from JSON), for rules that must see what was dropped
    (the names of builders that have a bad field, say)."""

    def written(self, path: str) -> Any:
        """The value at a dotted key path as the stack file has it (None when absent or not a mapping)."""
        node: Any = self.raw
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    @property
    def region_known(self) -> bool:
        """Whether `aws:region` is given and is a region (else its own line says so)."""
        return self.region is not None and region_problem(self.region) is None

    def given(self, key: str) -> bool:
        """Whether the stack file sets `key` at all."""
        return key in self.present

    def known(self, path: str) -> bool:
        """Whether nothing at or under `path` (or above it) was dropped as invalid."""
        return not any(d == path or d.startswith((path + ".", path + "[")) or path.startswith((d + ".", d + "["))
                       for d in self.dropped)

    def indexed(self, path: str, items: list) -> list[tuple[int, Any]]:
        """`items` with their indices in the stack file: items dropped as invalid leave gaps."""
        gone = {int(m.group(1)) for d in self.dropped if (m := re.fullmatch(re.escape(path) + r"\[(\d+)\]", d))}
        indices = (j for j in range(len(items) + len(gone)) if j not in gone)
        return list(zip(indices, items))

    @property
    def cluster(self) -> ClusterConfig | None:
        return self.models.get("cluster")

    @property
    def network(self) -> NetworkConfig:
        return self.models.get("network") or NetworkConfig()

    @property
    def storage(self) -> StorageConfig:
        return self.models.get("storage") or StorageConfig()

    @property
    def delivery(self) -> DeliveryConfig | None:
        return self.models.get("delivery")

    @property
    def dr(self) -> DrConfig:
        return self.models.get("dr") or DrConfig()

    @property
    def valid_pools(self) -> list[tuple[int, PoolConfig]]:
        return [(i, pool) for i, pool in enumerate(self.pools) if pool is not None]

    @property
    def pools_complete(self) -> bool:
        """Whether every pool's provider, role and hosts (or count) are known: what counting needs."""
        return all(pool is not None and all(self.known(f"pools[{i}].{f}") for f in ("provider", "role", "count", "hosts"))
                   for i, pool in enumerate(self.pools))

    @property
    def uses_ec2(self) -> bool | None:
        """True when a pool is known to run on EC2, None when a pool's provider is unknown, else False."""
        if any(pool.provider == "ec2" and self.known(f"pools[{i}].provider") for i, pool in self.valid_pools):
            return True
        unknown = any(pool is None or not self.known(f"pools[{i}].provider") for i, pool in enumerate(self.pools))
        return None if unknown else False

    @property
    def loopback_fleet(self) -> bool:
        """Whether every host is a bring-your-own host on a loopback address (a test fleet)."""
        return self.uses_ec2 is False and all(h.address.is_loopback for _, pool in self.valid_pools for h in pool.hosts)
