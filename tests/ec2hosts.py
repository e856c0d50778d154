"""A stand-in EC2 for the host tests: moto's EC2 API served over HTTP on 127.0.0.1 (moto parses
the requests and writes the responses, which the runner's botocore reads with EC2's own service
model), each instance bound to a test machine so that its power follows the instance's state.

moto changes an instance's state at once and changes any attribute in any state. EC2 does not;
what is restated here, from the EC2 API reference:
- StopInstances: the instance is `stopping` until its operating system has shut down, then
  `stopped` (here: `systemctl poweroff` in the machine, `stopped` once it is down);
- StartInstances: `pending` until it runs, then `running` (here: the machine boots); with no
  capacity for the type, the call fails with InsufficientInstanceCapacity (`no_capacity`);
- ModifyInstanceAttribute InstanceType: "The instance must be in the stopped state"
  (aws-cli's examples/ec2/modify-instance-attribute.rst), else IncorrectInstanceState;
- GetConsoleOutput: the machine's console, which on NixOS' EC2 image carries the block its
  `print-host-key` unit writes once sshd has started (nixos/modules/virtualisation/ec2-data.nix:
  the BEGIN/END SSH HOST KEY FINGERPRINTS lines around `ssh-keygen -l -f` of each
  /etc/ssh/ssh_host_*_key.pub); `console_keys` makes it print another key's instead.
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import boto3
from moto.backends import get_backend
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.general import General
from moto.ec2.utils import Base64EncodedString
from moto.server import ThreadedMotoServer

from flakefleet.delivery.hostkey import BEGIN, END

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
STATES = {"pending": 0, "running": 16, "stopping": 64, "stopped": 80}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StandinEc2:
    """The served API (`env`: what a runner needs to reach it) and instance id -> machine."""

    url: str
    backend: object = None
    machines: dict[str, object] = field(default_factory=dict)
    no_capacity: set[str] = field(default_factory=set)
    console_keys: dict[str, str] = field(default_factory=dict)  # instance -> a .pub file outside its machine
    calls: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_EC2": self.url, "AWS_DEFAULT_REGION": REGION, **CREDENTIALS}

    def client(self):
        return boto3.client("ec2", region_name=REGION, endpoint_url=self.url, aws_access_key_id="testing",
                            aws_secret_access_key="testing", aws_session_token="testing")

    def add(self, machine, instance_type: str) -> str:
        """A running instance of `instance_type` bound to `machine`; its id."""
        image = self.client().describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        found = self.client().run_instances(ImageId=image, InstanceType=instance_type, MinCount=1, MaxCount=1)
        instance = found["Instances"][0]["InstanceId"]
        self.machines[instance] = machine
        return instance

    def console(self, instance: str) -> str:
        """What the instance's console shows: its machine's console log, then print-host-key's block."""
        machine = self.machines.get(instance)
        if machine is None:
            return ""
        log = (machine.root / "console.log").read_text(errors="replace") if (machine.root / "console.log").exists() else ""
        if instance in self.console_keys:
            import subprocess
            lines = subprocess.run(["ssh-keygen", "-l", "-f", self.console_keys[instance]], capture_output=True,
                                   text=True, check=True).stdout
        else:
            lines = machine.sh('for i in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -l -f "$i"; done').stdout
        return f"{log}{BEGIN}\n{lines}{END}\n"

    def instance_type(self, instance: str) -> str:
        return self.client().describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["InstanceType"]


def set_state(instance, name: str) -> None:
    instance._state.name, instance._state.code = name, STATES[name]


def bind(backend, ec2: StandinEc2) -> None:
    """The backend's stop, start and modify, with the machines and EC2's rules above."""
    plain_modify = backend.modify_instance_attribute

    def in_background(instance, work, then: str) -> None:
        def run() -> None:
            work()
            set_state(instance, then)
        threading.Thread(target=run, daemon=True).start()

    def transition(instance, between: str, after: str, power) -> tuple:
        """`between` now, `after` once the machine's `power` step is done (at once without one)."""
        previous = type(instance._state)(instance._state.name, instance._state.code)
        set_state(instance, between)
        machine = ec2.machines.get(instance.id)
        if machine is None:
            set_state(instance, after)
        else:
            in_background(instance, power(machine), after)
        return instance, previous

    def stop_instances(ids):
        done = []
        for instance in backend.get_multi_instances_by_id(ids):
            ec2.calls.append(f"stop {instance.id}")
            done.append(transition(instance, "stopping", "stopped", lambda m: m.shutdown))
        return done

    def start_instances(ids):
        done = []
        for instance in backend.get_multi_instances_by_id(ids):
            ec2.calls.append(f"start {instance.id} {instance.instance_type}")
            if instance.instance_type in ec2.no_capacity:
                raise EC2ClientError("InsufficientInstanceCapacity",
                                     f"We currently do not have sufficient {instance.instance_type} capacity.")
            done.append(transition(instance, "pending", "running", lambda m: m.start))
        return done

    def modify_instance_attribute(instance_id, key, value):
        instance = backend.get_instance(instance_id)
        if key == "instance_type":
            ec2.calls.append(f"modify {instance_id} {value}")
            if instance._state.name != "stopped":
                raise EC2ClientError("IncorrectInstanceState", f"The instance '{instance_id}' is not in the 'stopped' state.")
        return plain_modify(instance_id, key, value)

    backend.stop_instances = stop_instances
    backend.start_instances = start_instances
    backend.modify_instance_attribute = modify_instance_attribute


@contextmanager
def standin_ec2():
    """moto's EC2 on a free port of 127.0.0.1, with the machines' power bound to their instances."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    plain_console = General.get_console_output
    try:
        ec2 = StandinEc2(f"http://127.0.0.1:{port}", get_backend("ec2")[ACCOUNT][REGION])
        bind(ec2.backend, ec2)

        def get_console_output(response) -> ActionResult:
            instance = response.ec2_backend.get_instance(response._get_param("InstanceId"))
            return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow(),
                                 "Output": Base64EncodedString.from_raw_string(ec2.console(instance.id))})

        General.get_console_output = get_console_output
        yield ec2
    finally:
        General.get_console_output = plain_console
        server.stop()
