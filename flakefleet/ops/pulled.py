"""Autoscaled pools as status and drift show them: per pool, its group's instances on the pointer's
system, stragglers (joined on an older system: an instance refresh not done yet), failed switches
(refused pointers, failed health gates), instances that have not reported (booting) and those
being terminated (leaving: draining before the group lets them go).

The pull agent of each instance writes its outcome to the cache bucket,
`flakefleet/reports/<cluster>/<pool>/<instance>.json` (nixos/host/flakefleet_pull.py: result,
system, reason; nothing secret); the pool's current pointer is `current.json` next to its
pointers; the live instances are the group's (DescribeAutoScalingGroups). The stack exports what
to read as `pulled_pools` (pool -> group, bucket, cluster).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from flakefleet.common.outputs import PulledPoolRow
from flakefleet.plan.contract import REPORTS, current_pointer_key



@dataclass(frozen=True)
class PulledPool:
    pool: str
    group: str
    system: str  # the current pointer's ("" when there is none)
    instances: int
    on_pointer: tuple[str, ...] = ()
    stragglers: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    unreported: tuple[str, ...] = field(default_factory=tuple)
    leaving: tuple[str, ...] = ()  # being terminated (draining, held by the termination hook)

    @property
    def healthy(self) -> bool:
        return not (self.stragglers or self.failed)


def classify(pool: str, group: str, system: str, live: list[str], reports: dict[str, dict]) -> PulledPool:
    """One pool: each live instance by its last report against the current pointer's system."""
    on, behind, failed, silent = [], [], [], []
    for instance in sorted(live):
        report = reports.get(instance)
        if report is None:
            silent.append(instance)
        elif report.get("result") != "joined":
            failed.append(instance)
        elif report.get("system") == system:
            on.append(instance)
        else:
            behind.append(instance)
    return PulledPool(pool, group, system, len(live), tuple(on), tuple(behind), tuple(failed), tuple(silent))


def by_lifecycle(instances: list[dict]) -> tuple[list[str], list[str]]:
    """(live, leaving) instance ids of a group's Instances by their LifecycleState (Auto Scaling's
    values: Pending[:Wait|:Proceed], InService, Terminating[:Wait|:Proceed], Terminated, Standby,
    ...): an instance being terminated, a drain holding it in Terminating:Wait included, is
    leaving, not a straggler of a rollout (pure)."""
    live, leaving = [], []
    for i in instances:
        state = i.get("LifecycleState", "")
        if state.startswith(("Terminating", "Terminated")):
            leaving.append(i["InstanceId"])
        else:
            live.append(i["InstanceId"])
    return live, leaving


def read_pool(s3, autoscaling, pool: str, spec: PulledPoolRow) -> PulledPool:
    """A pool's view from AWS: its group's instances, the current pointer, the instances' reports."""
    bucket, cluster, group = spec.bucket, spec.cluster, spec.group
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    live, leaving = by_lifecycle([i for g in groups for i in g.get("Instances", [])])
    try:
        current = json.loads(s3.get_object(Bucket=bucket, Key=current_pointer_key(cluster, pool))["Body"].read())
        system = json.loads(current["pointer"])["system"]
    except s3.exceptions.NoSuchKey:
        system = ""
    reports = {}
    prefix = f"{REPORTS}/{cluster}/{pool}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            instance = obj["Key"][len(prefix):].removesuffix(".json")
            if instance in live:
                reports[instance] = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return replace(classify(pool, group, system, live, reports), leaving=tuple(sorted(leaving)))


def render(pools: list[PulledPool]) -> list[str]:
    """One line per pool (and the instances that need a look)."""
    lines = []
    for p in pools:
        lines.append(f"pool {p.pool} (group {p.group}): {p.instances} instances, {len(p.on_pointer)} on "
                     f"{p.system.rsplit('/', 1)[-1] or 'no pointer'}, {len(p.stragglers)} behind, "
                     f"{len(p.failed)} failed, {len(p.unreported)} not reported yet"
                     + (f", {len(p.leaving)} leaving" if p.leaving else ""))
        lines += [f"  behind: {i}" for i in p.stragglers] + [f"  failed: {i}" for i in p.failed]
    return lines


def read_all(exported: dict[str, PulledPoolRow]) -> list[PulledPool]:
    """Every autoscaled pool the stack exported, read with the deployer's AWS credentials."""
    import boto3

    pools = []
    for pool, spec in sorted(exported.items()):
        region = spec.region or None
        pools.append(read_pool(boto3.client("s3", region_name=region), boto3.client("autoscaling", region_name=region),
                               pool, spec))
    return pools


def view(exported: dict[str, PulledPoolRow]) -> tuple[list[PulledPool], str | None]:
    """The autoscaled pools (StackOutputs.pulled_pools: their groups and reports in AWS), or why
    they could not be read."""
    if not exported:
        return [], None
    import botocore.exceptions

    try:
        return read_all(exported), None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        return [], f"autoscaled pools could not be read from AWS: {err}"
