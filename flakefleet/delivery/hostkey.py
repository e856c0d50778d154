"""An EC2 host's SSH host key, learnt before the first connection without trusting that connection.

The host makes its own key at first boot (NixOS' sshd; no private key ever leaves it, none is in
user data or instance metadata). NixOS' EC2 image prints the fingerprints of its host keys to the
serial console once sshd has started (nixos/modules/virtualisation/ec2-data.nix,
`print-host-key`: "-----BEGIN SSH HOST KEY FINGERPRINTS-----", one `ssh-keygen -l` line per key,
"-----END SSH HOST KEY FINGERPRINTS-----"). EC2 hands the console to the instance's owner only,
through its authenticated API (GetConsoleOutput). So this step:

1. reads the console (`Latest`, for the newest output; the buffered output where the instance
   type does not offer it) until the fingerprint block is there, bounded by the boot timeout;
2. asks the host for its ed25519 key (`ssh-keyscan`: an unauthenticated answer, checked next);
3. accepts that key only if its SHA256 fingerprint is the one the console printed, and prints
   it: the Command's stdout, which every plan then pins.

A key that does not match is refused (something else answers at the host's address): the step
fails and nothing connects. It runs once per instance (a replaced instance makes a new key).

An update of the step (an input changed, the instance did not) checks the host still presents
the key verified before (pulumi-command hands it the last stdout).

An instance made before flakefleet stopped generating host keys got its key from the stack in
its user data, and its first boot may have scrolled off the console: its key is the public key
that user data installed (read through the same authenticated API, DescribeInstanceAttribute).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import time

from flakefleet.common.retry import poll
from flakefleet.plan.contract import FAILED, INSTANCE_ENV, OK, PREVIOUS_STDOUT_ENV, HostKeyTarget
from flakefleet.common.cli import guard

TARGET_ENV = "FLAKEFLEET_HOST_KEY_TARGET"  # {"host", "address", "port", "region"}
TIMEOUT_S = 1800  # a *.metal instance's first boot, then sshd, then print-host-key
BEGIN, END = "-----BEGIN SSH HOST KEY FINGERPRINTS-----", "-----END SSH HOST KEY FINGERPRINTS-----"
FINGERPRINT = re.compile(r"^\d+ (SHA256:[A-Za-z0-9+/]+) .*\((ED25519)\)\s*$")


def console_fingerprint(console: str) -> str | None:
    """The ed25519 fingerprint (`SHA256:...`) of the last fingerprint block on the console."""
    start = console.rfind(BEGIN)
    end = console.find(END, start)
    if start < 0 or end < 0:
        return None
    for line in console[start + len(BEGIN):end].replace("\r", "").splitlines():
        if match := FINGERPRINT.match(line.strip()):
            return match.group(1)
    return None


def fingerprint(public_key: str) -> str:
    """`ssh-keygen -l`'s SHA256 fingerprint of an OpenSSH public key line."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def scanned_key(address: str, port: int) -> str | None:
    """The ed25519 key sshd at address:port presents (`ssh-ed25519 AAAA...`), None when it does not answer."""
    res = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(port), address],
                         capture_output=True, text=True, timeout=60)
    for line in res.stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "ssh-ed25519":
            return f"{words[1]} {words[2]}"
    return None


def read_console(client, instance: str) -> str:
    """The instance's console output (decoded), the newest where EC2 offers it."""
    try:
        out = client.get_console_output(InstanceId=instance, Latest=True)
    except Exception as err:  # older (Xen) types: only the buffered output
        if "Latest" not in str(err) and "Unsupported" not in str(err):
            raise
        out = client.get_console_output(InstanceId=instance)
    text = out.get("Output") or ""
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except ValueError:
        return text


# The line an older flakefleet's first-boot script installed the stack's public host key with.
INSTALLED = re.compile(r"'(ssh-ed25519 [A-Za-z0-9+/=]+)[^']*'\s*> /etc/ssh/ssh_host_ed25519_key\.pub")


def installed_key(client, instance: str) -> str | None:
    """The public host key an older flakefleet's user data installed at first boot, if it did."""
    try:
        data = client.describe_instance_attribute(InstanceId=instance, Attribute="userData")
    except Exception:
        return None
    text = (data.get("UserData") or {}).get("Value") or ""
    try:
        text = base64.b64decode(text).decode("utf-8", "replace")
    except ValueError:
        pass
    match = INSTALLED.search(text)
    return match.group(1) if match else None


def expected_fingerprint(client, instance: str, deadline: float, timeout_s: float) -> str:
    """The console's ed25519 fingerprint; for an instance whose user data installed its key, that key's."""
    if installed := installed_key(client, instance):
        return fingerprint(installed)
    printed, found = poll(lambda: (bool(f := console_fingerprint(read_console(client, instance))), f or ""),
                          deadline, first=2, cap=15)
    if not printed:
        raise TimeoutError(f"instance {instance} printed no SSH host key fingerprints on its console within "
                           f"{timeout_s:.0f}s (NixOS' print-host-key runs once sshd has started)")
    return found


def learn(client, instance: str, address: str, port: int, timeout_s: float, verified: str = "") -> str:
    """Steps 1-3 above: the verified key, or ValueError/TimeoutError saying what was not right.
    `verified`: the key this step verified before (an update of the step): the host must still
    present it; the console is not read again (it may have moved on)."""
    deadline = time.monotonic() + timeout_s
    expected = fingerprint(verified) if verified else expected_fingerprint(client, instance, deadline, timeout_s)
    answered, key = poll(lambda: (bool(k := scanned_key(address, port)), k or ""), deadline, first=1, cap=10)
    if not answered:
        raise TimeoutError(f"{address}:{port} presented no ed25519 host key within {timeout_s:.0f}s")
    if fingerprint(key) != expected:
        source = "verified for it before" if verified else "printed on its console"
        raise ValueError(f"the ed25519 key {address}:{port} presents ({fingerprint(key)}) is not the one instance "
                         f"{instance} {source} ({expected}): something else answers at its address; "
                         "refusing to connect")
    return key


def main() -> int:
    """`flakefleet host-key`: print the instance's verified ed25519 host key (stdout), or fail."""
    text, instance = os.environ.get(TARGET_ENV), os.environ.get(INSTANCE_ENV, "")
    if not text or not instance:
        print(f"{TARGET_ENV} and {INSTANCE_ENV} must be set", file=sys.stderr)
        return FAILED
    try:
        target = HostKeyTarget.from_json(text)
    except (ValueError, TypeError) as err:
        print(f"{TARGET_ENV} is not a host-key target ({err})", file=sys.stderr)
        return FAILED
    import boto3

    verified = os.environ.get(PREVIOUS_STDOUT_ENV, "").strip()  # set by pulumi-command for an update
    verified = verified if verified.startswith("ssh-ed25519 ") else ""
    try:
        client = boto3.client("ec2", region_name=target.region or None)
        key = learn(client, instance, target.address, target.port, TIMEOUT_S, verified)
    except Exception as err:
        print(f"[{target.host}] host key: {err}", file=sys.stderr)
        return FAILED
    print(f"[{target.host}] host key {fingerprint(key)} matches instance {instance}'s console",
          file=sys.stderr)
    print(key, flush=True)
    return OK


if __name__ == "__main__":
    sys.exit(guard("flakefleet host-key", main))
