"""Tier 1: the EC2 steps of a delivery. A resize's calls, checked against botocore's EC2 service
model (Stubber refuses a call whose parameters the model does not accept), and when EC2 is asked
at all; the host key's console block, parsed as NixOS' print-host-key writes it, and its
fingerprint, computed as OpenSSH's ssh-keygen does (checked against the real ssh-keygen)."""

from __future__ import annotations

import json

import pytest
from botocore.stub import Stubber

import base64
import subprocess

from flakefleet.delivery import hostkey, resize
from flakefleet.host.session import HostSession
from flakefleet.plan.contract import INSTANCE_ENV, PREVIOUS_STDOUT_ENV, DeliveryPlan

PLAN = DeliveryPlan(host="cp-0", address="10.0.1.10", port=22, user="root", host_key="ssh-ed25519 AAAA",
                    system="/nix/store/x-nixos-system", drv="/nix/store/x.drv", instance_type="m7i.xlarge",
                    region="eu-west-1")


def described(instance_type: str, state: str) -> dict:
    return {"Reservations": [{"Instances": [{"InstanceId": "i-0abc", "InstanceType": instance_type,
                                             "State": {"Code": 16, "Name": state}}]}]}


def test_the_calls_are_the_ones_ec2_defines():
    ec2 = resize.Ec2("eu-west-1", "i-0abc")
    with Stubber(ec2.client) as stub:
        stub.add_response("describe_instances", described("m7i.large", "running"), {"InstanceIds": ["i-0abc"]})
        stub.add_response("stop_instances", {}, {"InstanceIds": ["i-0abc"]})
        stub.add_response("modify_instance_attribute", {}, {"InstanceId": "i-0abc", "InstanceType": {"Value": "m7i.xlarge"}})
        stub.add_response("start_instances", {}, {"InstanceIds": ["i-0abc"]})
        assert ec2.describe() == ("m7i.large", "running")
        ec2.stop()
        ec2.set_type("m7i.xlarge")
        ec2.start()
        stub.assert_no_pending_responses()
    # The host key's calls, on the same model.
    with Stubber(ec2.client) as stub:
        text = base64.b64encode(b"console").decode()
        stub.add_response("get_console_output", {"InstanceId": "i-0abc", "Output": text},
                          {"InstanceId": "i-0abc", "Latest": True})
        stub.add_response("describe_instance_attribute", {"InstanceId": "i-0abc", "UserData": {"Value": text}},
                          {"InstanceId": "i-0abc", "Attribute": "userData"})
        assert hostkey.read_console(ec2.client, "i-0abc") == "console"
        assert hostkey.installed_key(ec2.client, "i-0abc") is None
        stub.assert_no_pending_responses()


def test_an_ec2_error_is_told_by_its_code():
    ec2 = resize.Ec2("eu-west-1", "i-0abc")
    with Stubber(ec2.client) as stub:
        stub.add_client_error("start_instances", "InsufficientInstanceCapacity", "no m7i.xlarge capacity")
        with pytest.raises(Exception) as err:
            ec2.start()
    assert resize.aws_error(err.value) == "InsufficientInstanceCapacity: no m7i.xlarge capacity"


def session(plan: DeliveryPlan, previous: dict | None, instance: str = "i-0abc") -> HostSession:
    env = {INSTANCE_ENV: instance}
    if previous is not None:
        env[PREVIOUS_STDOUT_ENV] = json.dumps(previous)
    return HostSession(plan, env)


@pytest.mark.parametrize(
    ("plan", "previous", "instance", "asks"),
    [
        (PLAN, {"system": "s", "instance": "i-0abc", "instance_type": "m7i.xlarge"}, "i-0abc", False),  # recorded
        (PLAN, {"system": "s", "instance": "i-0abc", "instance_type": "m7i.large"}, "i-0abc", True),  # changed
        (PLAN, {"system": "s", "instance": "i-0abc"}, "i-0abc", True),  # a report from before types were recorded
        (PLAN, {"system": "s", "instance": "i-0old", "instance_type": "m7i.xlarge"}, "i-0abc", True),  # replaced
        (PLAN, None, "i-0abc", True),  # a create
        (PLAN.__class__(**{**PLAN.__dict__, "instance_type": ""}), None, "i-0abc", False),  # bring-your-own
        (PLAN, None, "", False),  # no instance id
    ],
    ids=["recorded", "changed", "unrecorded", "replaced", "create", "metal", "no-instance"],
)
def test_ec2_is_asked_only_when_the_type_may_differ(monkeypatch, plan, previous, instance, asks):
    asked = []

    class Ec2:
        def __init__(self, region, instance):
            asked.append((region, instance))

        def describe(self):
            return "m7i.large", "running"

    monkeypatch.setattr(resize, "Ec2", Ec2)
    found = resize.current_type(session(plan, previous, instance))
    assert bool(asked) == asks and (found is not None) == asks
    if asks:
        assert asked == [("eu-west-1", instance)] and found[1] == "m7i.large"


@pytest.fixture
def host_key(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@ip-10-0-1-10", "-f",
                    str(tmp_path / "ssh_host_ed25519_key")], check=True)
    pub = tmp_path / "ssh_host_ed25519_key.pub"
    printed = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True).stdout
    return pub.read_text().strip(), printed


def console(*lines: str) -> str:
    """A console as the NixOS EC2 image leaves it: kernel lines, then print-host-key's block."""
    return "\r\n".join(["[    0.000000] Linux version 6.12.8", "<<< Welcome to NixOS 25.05 (x86_64) - ttyS0 >>>",
                          hostkey.BEGIN, *lines, hostkey.END, "ip-10-0-1-10 login: "])


def test_the_fingerprint_is_ssh_keygens(host_key):
    public, printed = host_key
    assert hostkey.fingerprint(public) == printed.split()[1]


def test_the_console_block_gives_the_ed25519_fingerprint(host_key):
    public, printed = host_key
    rsa = "3072 SHA256:q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c root@ip-10-0-1-10 (RSA)"
    assert hostkey.console_fingerprint(console(rsa, printed.strip())) == hostkey.fingerprint(public)
    assert hostkey.console_fingerprint(console(rsa)) is None  # no ed25519 key printed
    assert hostkey.console_fingerprint("[    0.000000] Linux version 6.12.8\r\n") is None  # not printed yet
    # A later boot prints the block again: the last one counts.
    assert hostkey.console_fingerprint(console("256 SHA256:old root@x (ED25519)") + console(printed.strip())) == \
        hostkey.fingerprint(public)


class ConsoleClient:
    """get_console_output as boto3 returns it (Output base64-encoded), and no user data."""

    def __init__(self, text: str):
        self.text = text

    def get_console_output(self, InstanceId, Latest=False):
        return {"InstanceId": InstanceId, "Output": base64.b64encode(self.text.encode()).decode()}

    def describe_instance_attribute(self, InstanceId, Attribute):
        return {"InstanceId": InstanceId, "UserData": {}}


def test_a_key_is_accepted_only_when_it_is_the_consoles(host_key, monkeypatch):
    public, printed = host_key
    monkeypatch.setattr(hostkey, "scanned_key", lambda address, port: " ".join(public.split()[:2]))
    assert hostkey.learn(ConsoleClient(console(printed.strip())), "i-0abc", "10.0.1.10", 22, 5) == \
        " ".join(public.split()[:2])
    other = "256 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA root@x (ED25519)"
    with pytest.raises(ValueError, match="something else answers at its address"):
        hostkey.learn(ConsoleClient(console(other)), "i-0abc", "10.0.1.10", 22, 5)
    with pytest.raises(TimeoutError, match="printed no SSH host key fingerprints"):
        hostkey.learn(ConsoleClient("[    0.000000] Linux version 6.12.8"), "i-0abc", "10.0.1.10", 22, 0.1)


def test_the_key_an_older_first_boot_installed_is_found_in_its_user_data(host_key):
    public, _ = host_key
    # The line flakefleet's first-boot script wrote before hosts made their own keys.
    old = f"#!/bin/sh\nprintf '%s\\n' '{public}' > /etc/ssh/ssh_host_ed25519_key.pub\n"

    class Client(ConsoleClient):
        def describe_instance_attribute(self, InstanceId, Attribute):
            assert Attribute == "userData"
            return {"InstanceId": InstanceId, "UserData": {"Value": base64.b64encode(old.encode()).decode()}}

    assert hostkey.installed_key(Client(""), "i-0abc") == " ".join(public.split()[:2])
    assert hostkey.installed_key(ConsoleClient(""), "i-0abc") is None


def test_an_update_of_the_step_wants_the_key_it_verified_before(host_key, monkeypatch):
    public, _ = host_key
    key = " ".join(public.split()[:2])

    class NoConsole(ConsoleClient):
        def get_console_output(self, InstanceId, Latest=False):
            raise AssertionError("the console is not read again")

    monkeypatch.setattr(hostkey, "scanned_key", lambda address, port: key)
    assert hostkey.learn(NoConsole(""), "i-0abc", "10.0.1.10", 22, 5, verified=key) == key
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
    with pytest.raises(ValueError, match="something else answers"):
        hostkey.learn(NoConsole(""), "i-0abc", "10.0.1.10", 22, 5, verified=other)
