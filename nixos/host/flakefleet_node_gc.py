"""flakefleet-node-gc: on a control plane, delete the Nodes of autoscaled instances that are gone.

k3s runs no cloud controller that knows AWS instances, so nothing else deletes the Node of an
instance its group terminated. This does what k8s.io/cloud-provider's node lifecycle controller
does (controllers/nodelifecycle, MonitorNodes): for each Node whose Ready condition is not True,
ask the cloud whether its instance exists and delete the Node if not, with cloud-provider-aws'
answer to "exists" (InstanceExistsByProviderID: DescribeInstances by the instance id; not found,
or state `terminated`, is gone). Only Nodes with an `aws:///<zone>/<id>` providerID are asked
about: the pulled instances set it (flakefleet_pull.py, drop_in); pushed hosts carry k3s://.

    flakefleet-node-gc REGION [EC2_ENDPOINT]   # run by its unit; `k3s kubectl` as the server's admin

Only tests give EC2_ENDPOINT (the instance profile's credentials come from the metadata service).
"""

from __future__ import annotations

import json
import subprocess
import sys


def candidates(nodes: list[dict]) -> dict[str, str]:
    """{node name: instance id} of Nodes that are not Ready and carry an AWS providerID (pure)."""
    found = {}
    for node in nodes:
        provider = node.get("spec", {}).get("providerID", "")
        if not provider.startswith("aws:///"):
            continue
        ready = next((c.get("status") for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"),
                     "Unknown")
        instance = provider.rsplit("/", 1)[-1]
        if ready != "True" and instance.startswith("i-"):
            found[node["metadata"]["name"]] = instance
    return found


def gone(ec2, instance: str) -> bool:
    """cloud-provider-aws: the instance does not exist, or is terminated."""
    from botocore.exceptions import ClientError

    try:
        reservations = ec2.describe_instances(InstanceIds=[instance])["Reservations"]
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
            return True
        raise
    states = [i["State"]["Name"] for r in reservations for i in r["Instances"]]
    return not states or states == ["terminated"]


def main(argv: list[str]) -> int:
    import boto3

    if len(argv) not in (1, 2):
        print("usage: flakefleet-node-gc REGION [EC2_ENDPOINT]", file=sys.stderr)
        return 3
    listed = subprocess.run(["k3s", "kubectl", "get", "nodes", "-o", "json"], capture_output=True, text=True, timeout=120)
    if listed.returncode != 0:
        print(f"flakefleet-node-gc: listing nodes: {listed.stderr.strip()[-300:]}", file=sys.stderr)
        return 3
    ec2 = boto3.client("ec2", region_name=argv[0], endpoint_url=argv[1] if len(argv) == 2 else None)
    for name, instance in sorted(candidates(json.loads(listed.stdout).get("items", [])).items()):
        if gone(ec2, instance):
            print(f"flakefleet-node-gc: deleting node {name}: instance {instance} no longer exists", file=sys.stderr)
            subprocess.run(["k3s", "kubectl", "delete", "node", name, "--ignore-not-found"], timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
