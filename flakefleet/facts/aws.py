"""Static AWS facts the planner needs at preview time: availability zones and instance-type shapes.

Addresses must be known before any AWS call, so the planner cannot ask EC2 which zones a
region has. This table lists the zone names every account sees in each region; a stack can
name its zones explicitly (`network.availability_zones`) for regions not listed or for
accounts whose zone set differs.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

# Zone letters per region (AWS "Regions and Zones" documentation; local and wavelength zones
# are excluded because EC2 nodes of a cluster belong in standard zones).
REGION_ZONES: dict[str, str] = {
    "us-east-1": "abcdef",
    "us-east-2": "abc",
    "us-west-1": "ac",
    "us-west-2": "abcd",
    "ca-central-1": "abd",
    "ca-west-1": "abc",
    "sa-east-1": "abc",
    "eu-west-1": "abc",
    "eu-west-2": "abc",
    "eu-west-3": "abc",
    "eu-central-1": "abc",
    "eu-central-2": "abc",
    "eu-north-1": "abc",
    "eu-south-1": "abc",
    "eu-south-2": "abc",
    "ap-south-1": "abc",
    "ap-south-2": "abc",
    "ap-southeast-1": "abc",
    "ap-southeast-2": "abc",
    "ap-southeast-3": "abc",
    "ap-southeast-4": "abc",
    "ap-northeast-1": "acd",
    "ap-northeast-2": "abcd",
    "ap-northeast-3": "abc",
    "ap-east-1": "abc",
    "me-south-1": "abc",
    "me-central-1": "abc",
    "il-central-1": "abc",
    "af-south-1": "abc",
}


def region_zones(region: str) -> list[str] | None:
    """Zone names of `region`, or None when the region is not in the table."""
    letters = REGION_ZONES.get(region)
    return None if letters is None else [region + letter for letter in letters]


# Attributes are letters, or dash-suffixes that may hold digits (u7i-8tb, p6-b200, p6e-gb200).
_TYPE_RE = re.compile(r"^(?P<family>(?P<series>[a-z]+)(?P<gen>\d+)(?P<attrs>(?:[a-z]|-[a-z0-9]+)*))\.(?P<size>[a-z0-9-]+)$")


@dataclass(frozen=True)
class InstanceShape:
    """What the planner must know of an instance type: its CPU architecture and whether it is bare metal."""

    arch: str  # "x86_64" | "aarch64"
    metal: bool


@dataclass(frozen=True)
class NvidiaGpu:
    """An EC2 family with NVIDIA GPUs: the GPU, its CPU architecture, whether NVIDIA's open kernel
    modules drive it (Turing and newer), whether its GPUs hang off NVSwitch (fabric manager)."""

    gpu: str
    arch: str = "x86_64"
    open_modules: bool = True
    nvswitch: bool = False


# EC2 families with NVIDIA GPUs that current NVIDIA drivers support (AWS "Accelerated computing"
# instance types). Not listed: p2 and g2 (Kepler: no current driver), g4ad (AMD), inf, trn, dl,
# f and vt families (other accelerators).
NVIDIA_FAMILIES: dict[str, NvidiaGpu] = {
    "g3": NvidiaGpu("Tesla M60", open_modules=False),
    "g3s": NvidiaGpu("Tesla M60", open_modules=False),
    "p3": NvidiaGpu("Tesla V100", open_modules=False),
    "p3dn": NvidiaGpu("Tesla V100", open_modules=False),
    "g4dn": NvidiaGpu("T4"),
    "g5": NvidiaGpu("A10G"),
    "g5g": NvidiaGpu("T4G", arch="aarch64"),
    "g6": NvidiaGpu("L4"),
    "g6e": NvidiaGpu("L40S"),
    "g6f": NvidiaGpu("L4 (fractional)"),
    "gr6": NvidiaGpu("L4"),
    "gr6f": NvidiaGpu("L4 (fractional)"),
    "g7e": NvidiaGpu("RTX PRO 6000 Blackwell"),
    "p4d": NvidiaGpu("A100", nvswitch=True),
    "p4de": NvidiaGpu("A100 80GB", nvswitch=True),
    "p5": NvidiaGpu("H100", nvswitch=True),
    "p5e": NvidiaGpu("H200", nvswitch=True),
    "p5en": NvidiaGpu("H200", nvswitch=True),
    "p6-b200": NvidiaGpu("B200", nvswitch=True),
    "p6-b300": NvidiaGpu("B300", nvswitch=True),
    "p6e-gb200": NvidiaGpu("GB200", arch="aarch64", nvswitch=True),
}


def nvidia_gpu(instance_type: str) -> NvidiaGpu | None:
    """The NVIDIA GPU of an instance type, or None when it has none."""
    return NVIDIA_FAMILIES.get(instance_type.split(".", 1)[0])


def gpu_families(arch: str) -> list[str]:
    """The NVIDIA families of one architecture, for messages."""
    return [f for f, g in NVIDIA_FAMILIES.items() if g.arch == arch]


def instance_shape(instance_type: str) -> InstanceShape | None:
    """Architecture and metal-ness of an EC2 instance type name, or None when the name is malformed.

    Graviton (aarch64) families carry a `g` in their attribute letters after the generation
    (m7g, c6gn, r8gd, t4g, x2gd, im4gn, is4gen, g5g, hpc7g) or are the a1 family. GPU families
    such as g4dn or g6e start with `g` in their series, not their attributes, and are x86_64.
    """
    m = _TYPE_RE.match(instance_type)
    if m is None or m["series"] == "mac":
        return None
    aarch64 = m["series"] == "a" or "g" in m["attrs"].split("-")[0]
    if (gpu := NVIDIA_FAMILIES.get(m["family"])) is not None:
        aarch64 = gpu.arch == "aarch64"  # p6e-gb200 runs on Grace (arm64)
    return InstanceShape(arch="aarch64" if aarch64 else "x86_64", metal=m["size"].startswith("metal"))


@functools.lru_cache(maxsize=1)
def ec2_instance_types() -> frozenset[str]:
    """Every instance type EC2's API accepts: the `InstanceType` enum of the EC2 service model
    botocore ships (so it follows the pinned boto3; about a second to load, once per process)."""
    import botocore.session

    return frozenset(botocore.session.get_session().get_service_model("ec2").shape_for("InstanceType").enum)


def instance_type_problem(instance_type: str) -> str | None:
    """Why `instance_type` is not an EC2 instance type, with a near miss when there is one, or None."""
    known = ec2_instance_types()
    if instance_type in known:
        return None
    close = difflib.get_close_matches(instance_type, known, n=3, cutoff=0.8)
    hint = f"; did you mean {' or '.join(close)}?" if close else " (botocore's EC2 model lists every type)"
    return f"{instance_type!r} is not an EC2 instance type{hint}"


@functools.cache
def partitions() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """Each AWS partition (aws, aws-cn, aws-us-gov, ...) with its region pattern and its regions,
    from botocore's endpoint data (loaded once per process)."""
    import botocore.session

    data = botocore.session.get_session().get_data("endpoints")
    return tuple((p["partition"], p["regionRegex"], tuple(p["regions"])) for p in data["partitions"])


def partition_of(region: str | None) -> str:
    """The partition a region belongs to (listed, else matching its pattern); `aws` when unknown."""
    import re

    for name, pattern, regions in partitions():
        if region and (region in regions or re.match(pattern, region)):
            return name
    return "aws"
