"""Least-privilege IAM documents for node instance profiles (pure: plain dicts)."""

from __future__ import annotations

from flakefleet.facts.aws import partition_of
from flakefleet.plan.contract import POINTERS, REPORTS

ASSUME_EC2 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


# What the cluster autoscaler reads (kubernetes/autoscaler cluster-autoscaler/cloudprovider/aws/
# README.md, "IAM Policy", with DescribeTags for auto-discovery and DescribeLaunchTemplateVersions
# for groups with launch templates; the README's GetInstanceTypesFromInstanceRequirementsPages is
# the SDK's paginator of the IAM action named here). Describe calls take no resource-level scope.
AUTOSCALER_READS = [
    "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeTags", "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
]


def node_policy(role: str, cluster: str, cache_arn: str | None, snapshot_arn: str | None,
                autoscaled_groups: list[str] | None = None) -> dict | None:
    """S3 access of one node role: every node reads the binary cache; control planes read and
    write their cluster's snapshot folder and nothing else, and with autoscaled pools (their
    groups' ARNs) run the cluster autoscaler, which may resize and shrink those groups only.
    None when there is nothing to grant."""
    statements: list[dict] = []
    if autoscaled_groups and role == "control-plane":
        statements += [
            {"Sid": "AutoscalerReads", "Effect": "Allow", "Action": AUTOSCALER_READS, "Resource": "*"},
            {"Sid": "AutoscalerScales", "Effect": "Allow",
             "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
             "Resource": sorted(autoscaled_groups)},
            # flakefleet-node-gc: whether a NotReady Node's instance still exists (no resource scope).
            {"Sid": "NodeLifecycleReads", "Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
        ]
    if cache_arn:
        statements += [
            {"Sid": "ReadCache", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{cache_arn}/*"},
            {"Sid": "ListCache", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": cache_arn},
        ]
    if snapshot_arn and role == "control-plane":
        statements += [
            {
                "Sid": "ReadWriteSnapshots",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": f"{snapshot_arn}/{cluster}/*",
            },
            # Listing is confined to the cluster's folder, but k3s first checks that the bucket
            # exists (pkg/etcd/s3/s3.go: minio's BucketExists, a HeadBucket), which S3 authorizes
            # as s3:ListBucket with no s3:prefix in the request: under StringLike that check is
            # refused and no snapshot is ever written, so the condition applies where a prefix is
            # given (IfExists). A request without one lists the stack's own snapshot bucket's keys.
            {
                "Sid": "ListSnapshots",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": snapshot_arn,
                "Condition": {"StringLikeIfExists": {"s3:prefix": [f"{cluster}/*", f"{cluster}/"]}},
            },
            # k3s checks the bucket's region before it writes a snapshot.
            {"Sid": "LocateSnapshots", "Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": snapshot_arn},
        ]
    return {"Version": "2012-10-17", "Statement": statements} if statements else None


def bucket_arn(bucket: str, region: str | None) -> str:
    """The ARN of an S3 bucket named by the stack (`delivery.cache.bucket`), in the partition of the
    stack's region (aws, aws-cn, aws-us-gov, ...: botocore's endpoint data)."""
    return f"arn:{partition_of(region)}:s3:::{bucket}"




def group_arn(partition: str, region: str, account: str, name: str) -> str:
    """An Auto Scaling group's ARN by its name (its id part is not known before it exists)."""
    return f"arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{name}"


def pulled_pool_policy(cluster: str, pool: str, cache_arn: str, token_arn: str, group_arn: str) -> dict:
    """What an autoscaled pool's instances may do, and nothing else: read the binary cache's
    paths (narinfos, NARs, nix-cache-info: the layout Nix's S3 store reads), read their own
    pool's pointers (not another pool's), read the agent join token's parameter, and complete
    their own group's launch lifecycle action (the health gate's verdict), and write their
    outcome under their pool's reports prefix (status and drift read it)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadCachePaths", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": [f"{cache_arn}/nix-cache-info", f"{cache_arn}/*.narinfo", f"{cache_arn}/nar/*"]},
            # As pushed EC2 nodes (node_policy): without it S3 answers a missing path's narinfo
            # with 403 instead of 404. Keys only: another pool's pointer stays unreadable.
            {"Sid": "ListCache", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": cache_arn},
            {"Sid": "ReadOwnPointers", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"{cache_arn}/{POINTERS}/{cluster}/{pool}/*"},
            {"Sid": "ReportOutcome", "Effect": "Allow", "Action": "s3:PutObject",
             "Resource": f"{cache_arn}/{REPORTS}/{cluster}/{pool}/*"},
            {"Sid": "ReadJoinToken", "Effect": "Allow", "Action": "ssm:GetParameter", "Resource": token_arn},
            {"Sid": "CompleteOwnLaunch", "Effect": "Allow", "Action": "autoscaling:CompleteLifecycleAction",
             "Resource": group_arn},
        ],
    }
