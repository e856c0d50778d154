"""Address blocks: where each EC2 pool's hosts sit in every zone's private subnet (pure).

Each private subnet is cut into 16 equal blocks. Block 0 holds AWS's reserved addresses and the
API load balancer. A pool owns a run of blocks at the same place in every zone: `ip_block` when
pinned, otherwise the first free run at or after `1 + crc32(pool name) % 15`. Pinned pools are
placed first, then the others by name, so reordering pools never moves an address. This module
knows pools only as (index, name, count, ip_block): the config's rules use it to report a fleet
that does not fit, and the inventory planner to place it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import NamedTuple

BLOCKS_PER_SUBNET = 16
# The VPC is cut into eight subnets a zone's private one is one of (inventory.carve_zones).
PRIVATE_SUBNET_SPLIT_BITS = 3


class PoolBlocks(NamedTuple):
    """What placing a pool needs to know of it: its index in the stack file, name, size, pin."""

    index: int
    name: str
    count: int
    ip_block: int | None


def block_size(vpc_prefix: int) -> int:
    """Addresses per block of a zone's private subnet, for a VPC of prefix length `vpc_prefix`."""
    return 2 ** (32 - vpc_prefix - PRIVATE_SUBNET_SPLIT_BITS) // BLOCKS_PER_SUBNET


def _auto_start(name: str) -> int:
    return 1 + zlib.crc32(name.encode()) % (BLOCKS_PER_SUBNET - 1)


def _capacity(start: int, count: int, size: int) -> int:
    # The subnet's last address is reserved by AWS; it sits in the last block.
    last = start + count - 1 == BLOCKS_PER_SUBNET - 1
    return count * size - (1 if last else 0)


def allocate_blocks(
    pools: Sequence[PoolBlocks], zone_count: int, size: int, prefix: str = ""
) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Place each pool's block run; returns (pool -> (start, count), problems). A problem names
    `<prefix>pools[<index>].ip_block` (a pin that overlaps) or `.count` (a pool that does not fit)."""
    taken: dict[int, str] = {}
    placed: dict[str, tuple[int, int]] = {}
    problems: list[str] = []
    pinned = [p for p in pools if p.ip_block is not None]
    auto = sorted((p for p in pools if p.ip_block is None), key=lambda p: p.name)
    for pool in pinned + auto:
        per_zone = math.ceil(pool.count / zone_count)
        if per_zone == 0:
            continue
        need = math.ceil(per_zone / size)
        starts = (
            [pool.ip_block]
            if pool.ip_block is not None
            else [1 + (_auto_start(pool.name) - 1 + k) % (BLOCKS_PER_SUBNET - 1) for k in range(BLOCKS_PER_SUBNET - 1)]
        )
        for start in starts:
            run = range(start, start + need)
            if run.stop <= BLOCKS_PER_SUBNET and not any(b in taken for b in run):
                if _capacity(start, need, size) < per_zone:
                    continue
                placed[pool.name] = (start, need)
                taken.update({b: pool.name for b in run})
                break
        else:
            where = f"{prefix}pools[{pool.index}]." + ("ip_block" if pool.ip_block is not None else "count")
            owners = sorted({taken[b] for b in range(starts[0], min(starts[0] + need, BLOCKS_PER_SUBNET)) if b in taken})
            if pool.ip_block is not None and owners:
                problems.append(f"{where}: blocks {starts[0]}-{starts[0] + need - 1} overlap pool {', '.join(owners)}")
            else:
                problems.append(
                    f"{where}: {per_zone} hosts per zone need {need} free address blocks of {size}; "
                    "widen network.vpc_cidr, add zones or shrink the pool"
                )
    return placed, problems


def planned_blocks(blocks: dict[str, tuple[int, int]]) -> list[int]:
    """The block indexes planned hosts use in every zone's private subnet: block 0 (AWS' reserved
    addresses, the API load balancer) and each EC2 pool's run. Auto Scaling groups' instances
    take addresses AWS picks, so with an autoscaled pool these are reserved (explicit subnet CIDR
    reservations: AWS assigns none of them by itself) and a planned host's address stays free."""
    return sorted({0, *(b for start, count in blocks.values() for b in range(start, start + count))})


def block_cidr(private_subnet, block: int):
    """One block of a private subnet as a network (blocks are a power of two in size)."""
    from ipaddress import IPv4Network

    size = private_subnet.num_addresses // BLOCKS_PER_SUBNET
    return IPv4Network((int(private_subnet.network_address) + block * size, 32 - (size.bit_length() - 1)))
