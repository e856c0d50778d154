"""A pulled pool's pointer written to the cache bucket, after its system's upload (the publish
Command of the pool, flakefleet/delivery/cache.py): the immutable object the launch template
names, then `current.json`, the copy status and drift read. Writing either again with the same
bytes is a no-op: an unchanged `up` runs no publish at all, and a repeated one rewrites nothing."""

from __future__ import annotations

import json

from flakefleet.plan.contract import PublishPlan, current_pointer_key
from flakefleet.pull.pointer import Pointer, pointer_key, sign


def _holds(client, bucket: str, key: str, body: bytes) -> bool:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    except client.exceptions.NoSuchKey:
        return False


def publish_pointer(client, plan: PublishPlan, signing_key: str) -> str:
    """Sign and write the pool's pointer to plan.system; its key."""
    assert plan.pointer is not None and plan.bucket is not None
    p = plan.pointer
    body = json.dumps(sign(Pointer(p["cluster"], p["pool"], plan.system, p["facts"]), signing_key),
                      sort_keys=True).encode()
    key = pointer_key(p["cluster"], p["pool"], plan.system)
    for where in (key, current_pointer_key(p["cluster"], p["pool"])):
        if not _holds(client, plan.bucket, where, body):
            client.put_object(Bucket=plan.bucket, Key=where, Body=body, ContentType="application/json")
    return key
