"""An EC2 host's instance type changes in its wave of the rollout, not behind it.

pulumi-aws applies an `instance_type` change in place by stopping the instance, modifying it
and starting it again (terraform-provider-aws, internal/service/ec2/ec2_instance.go:
`modifyInstanceAttributeWithStopStart`), as its own resource step: it would wait only for the
previous wave's delivery Commands, which are unchanged and finish at once, so control planes
would restart one after another with no drain and no health gate, and etcd would lose quorum.
The Instance therefore ignores type changes (components/machine.py) and the host's delivery,
which runs one control plane, then one batch, at a time, resizes it:

1. asks EC2 which type the instance has (nothing else happens when it is the wanted one);
2. cordons and drains the node (as for a reboot, delivery/reboot.py);
3. stops the instance, waits until it is stopped, modifies its type (EC2 changes the type of a
   stopped instance only), starts it and waits until it runs;
4. waits for SSH and for the health gate of a reboot (k3s up without a restart for `settle_s`,
   its batch Ready with Leases renewed since the boot), then uncordons.

A type EC2 refuses, or one without capacity, gets the old type back and the instance started
again; the delivery then fails saying so. A host that does not come back healthy stays
cordoned and the delivery fails: the next wave never starts.

The calls use the deployer's AWS credentials (the same as Pulumi's), in the plan's region.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from flakefleet.cluster.readiness import batch_ready
from flakefleet.common.retry import poll
from flakefleet.delivery.reboot import drain, uncordon, wait_booted
from flakefleet.host import protocol as hostctl
from flakefleet.plan.contract import DeliveryFailed

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession

STATE_TIMEOUT_S = 600  # EC2 stops and starts an instance in a minute or two; metal takes longer


class Ec2:
    """The four EC2 calls a resize makes, on one instance (boto3, the deployer's credentials)."""

    def __init__(self, region: str, instance: str):
        import boto3  # the runner imports it only for EC2 hosts whose type is checked

        self.client = boto3.client("ec2", region_name=region or None)
        self.instance = instance

    def describe(self) -> tuple[str, str]:
        """(instance type, state name: pending | running | stopping | stopped | ...)."""
        found = self.client.describe_instances(InstanceIds=[self.instance])["Reservations"][0]["Instances"][0]
        return found["InstanceType"], found["State"]["Name"]

    def stop(self) -> None:
        self.client.stop_instances(InstanceIds=[self.instance])

    def start(self) -> None:
        self.client.start_instances(InstanceIds=[self.instance])

    def set_type(self, instance_type: str) -> None:
        self.client.modify_instance_attribute(InstanceId=self.instance, InstanceType={"Value": instance_type})

    def wait_for(self, state: str, deadline: float) -> None:
        def attempt() -> tuple[bool, str]:
            now = self.describe()[1]
            return now == state, now

        done, seen = poll(attempt, deadline)
        if not done:
            raise TimeoutError(f"still {seen or 'unknown'} after {STATE_TIMEOUT_S}s, not {state}")


def aws_error(err: Exception) -> str:
    """botocore's message (its error code and text), else the exception's."""
    response = getattr(err, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return f"{response['Error'].get('Code', '')}: {response['Error'].get('Message', '')}"
    return str(err) or type(err).__name__


def current_type(run: HostSession) -> tuple[Ec2, str] | None:
    """The instance and its type now; None when there is nothing to ask (not an EC2 host, or the
    last delivery recorded the wanted type already)."""
    plan = run.plan
    if not plan.instance_type or not run.report.instance:
        return None
    if run.previous.get("instance_type") == plan.instance_type and run.previous.get("instance") == run.report.instance:
        run.report.instance_type = plan.instance_type
        return None
    try:
        ec2 = Ec2(plan.region, run.report.instance)
        have, _ = ec2.describe()
    except Exception as err:  # botocore: no credentials, no endpoint, no such instance
        raise DeliveryFailed(f"could not ask EC2 for {plan.host}'s instance {run.report.instance} "
                             f"({aws_error(err)}); nothing was changed") from err
    run.report.instance_type = have
    return ec2, have


def resize(run: HostSession) -> None:
    """Steps 1-4 above; raises DeliveryFailed when the host is not confirmed on the new type."""
    found = current_type(run)
    if found is None or found[1] == run.plan.instance_type:
        return
    ec2, have = found
    want = run.plan.instance_type
    run.say(f"instance type {have} -> {want}: draining, then stop, resize, start")
    start = time.monotonic()
    via = drain(run)
    res = run.hostctl(hostctl.restart_pending(run.token, f"{have} -> {want}"))
    if res.returncode != 0:
        uncordon(run, via)
        raise DeliveryFailed(f"could not prepare {run.plan.host} for its resize; it was not stopped: {res.stderr.strip()}")
    restarted_with = restart_as(run, ec2, have, want)
    state, detail = wait_booted(run, run.token, "-", time.monotonic() + run.plan.boot_timeout_s)
    if state != "booted":
        raise DeliveryFailed(f"{run.plan.host} did not come back healthy after its restart as {restarted_with} "
                             f"({detail}); it stays cordoned and the rollout stops here")
    booted_at = float(detail or 0)
    if run.plan.batch:
        ok, detail = poll(lambda: batch_ready(run, heartbeat_after=booted_at), time.monotonic() + run.plan.health_timeout_s)
        if not ok:
            raise DeliveryFailed(f"{run.plan.host}'s batch was not Ready within {run.plan.health_timeout_s:.0f}s of its "
                                 f"restart as {restarted_with}: {detail}; it stays cordoned")
    uncordon(run, via)
    run.timed("resize", start)
    if restarted_with != want:
        raise DeliveryFailed(f"EC2 refused {run.plan.host}'s new type {want}; it runs {have} again, uncordoned")
    run.report.instance_type = want
    run.say(f"resized to {want} and confirmed healthy")


def restart_as(run: HostSession, ec2: Ec2, have: str, want: str) -> str:
    """Stop, set `want`, start; when EC2 refuses the type or has no capacity for it, set `have`
    back and start that. Returns the type the instance was started as."""
    try:
        ec2.stop()
        ec2.wait_for("stopped", time.monotonic() + STATE_TIMEOUT_S)
    except Exception as err:
        raise DeliveryFailed(f"stopping {run.plan.host}'s instance failed ({aws_error(err)}); it stays cordoned") from err
    started = want
    try:
        ec2.set_type(want)
        ec2.start()
    except Exception as err:
        run.say(f"EC2 refused {want} ({aws_error(err)}): starting it as {have} again")
        started = have
        try:
            ec2.set_type(have)
            ec2.start()
        except Exception as again:
            raise DeliveryFailed(f"{run.plan.host}'s instance is stopped: EC2 refused {want} ({aws_error(err)}) and "
                                 f"starting it as {have} failed ({aws_error(again)}); start it by hand") from again
    try:
        ec2.wait_for("running", time.monotonic() + STATE_TIMEOUT_S)
    except Exception as err:
        raise DeliveryFailed(f"{run.plan.host}'s instance did not run again ({aws_error(err)}); it stays cordoned") from err
    return started
