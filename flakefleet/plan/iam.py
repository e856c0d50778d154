"""Least-privilege IAM documents for node instance profiles (pure: plain dicts)."""

from __future__ import annotations

ASSUME_EC2 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def node_policy(role: str, cluster: str, cache_arn: str | None, snapshot_arn: str | None) -> dict | None:
    """S3 access of one node role: every node reads the binary cache; control planes read and
    write their cluster's snapshot folder and nothing else. None when there is nothing to grant."""
    statements: list[dict] = []
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
            {
                "Sid": "ListSnapshots",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": snapshot_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{cluster}/*", f"{cluster}/"]}},
            },
            # k3s checks the bucket's region before it writes a snapshot.
            {"Sid": "LocateSnapshots", "Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": snapshot_arn},
        ]
    return {"Version": "2012-10-17", "Statement": statements} if statements else None
