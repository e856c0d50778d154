"""flakefleet-pull: an autoscaled pool's instance takes its system from the stack's binary cache.

Run once at first boot by the instance's user data (flakefleet/pull/userdata.py), as root:

    flakefleet-pull HOSTCTL CONFIG        # CONFIG: /etc/flakefleet/pull.json (public, from user data)

1. Who it is: the instance metadata service, IMDSv2 only (a session token first).
2. The pool's pointer (S3, the launch template's key), verified before anything else: signed
   with the fleet's key (Ed25519 over `flakefleet-pointer-v1\\n` + its text), for this cluster
   and pool, naming the system the launch template names. Refused: nothing is realised.
3. The system, realised from the stack's cache (`nix-store --realise`; Nix checks every path's
   signature against the trusted keys, the fleet's among them).
4. The join token (SSM Parameter Store, SecureString, readable by the instance profile alone),
   its facts and k3s drop-in, staged for hostctl.sh as a delivery stages them; the token never
   reaches stdout, stderr or the Nix store.
5. hostctl.sh: activate (dead-man switch armed), `check` until healthy and settled within the
   health timeout, then confirm; else roll back.
6. The verdict to the pool's launch lifecycle hook: CONTINUE (in service) or ABANDON (the group
   terminates it and an instance refresh counts it failed).

The instance role's credentials come from the metadata service too (botocore's chain). Only
tests give `endpoints` and `imds` in CONFIG. Exit 0 joined, 2 refused, 3 failed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# flakefleet/plan/contract.py and specs.py: where delivery puts the same files (a test compares).
FACTS_PATH = "/etc/flakefleet/host.json"
K3S_DROP_IN_PATH = "/etc/rancher/k3s/config.yaml.d/50-flakefleet-host.yaml"
AGENT_TOKEN_PATH = "/var/lib/flakefleet/secrets/k3s-agent-token"
CACHE_CONF_PATH = "/etc/flakefleet/nix-cache.conf"  # nixos/common/nix.nix includes it
RESTARTS = {K3S_DROP_IN_PATH: "k3s.service", AGENT_TOKEN_PATH: "k3s.service", FACTS_PATH: "flakefleet-hostname.service",
            CACHE_CONF_PATH: "nix-daemon.service"}
REPORTS = "flakefleet/reports"  # flakefleet/plan/contract.py: REPORTS (status and drift read them)
RUN = Path("/run/flakefleet")
STATE = Path("/var/lib/flakefleet")
# flakefleet/pull/pointer.py: what is signed, and the schema this agent reads.
DOMAIN = b"flakefleet-pointer-v1\n"
POINTER_SCHEMA = 1
REFUSED, FAILED = 2, 3


class Refused(Exception):
    """The pointer must not be followed."""


class Failed(Exception):
    """The system could not be made this host's."""


def say(message: str) -> None:
    print(f"flakefleet-pull: {message}", file=sys.stderr, flush=True)


def store_hash(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if not path.startswith("/nix/store/") or len(name) < 34 or name[32] != "-":
        raise Refused(f"{path!r} is not a store path")
    return name[:32]


def verify(obj: dict, trusted_key: str, cluster: str, pool: str, system_hash: str) -> dict:
    """The pointer's body, when `obj` is signed by `trusted_key` (`name:base64`) and is this
    cluster's, this pool's and names `system_hash`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name, _, encoded = trusted_key.strip().partition(":")
    try:
        text, signature = obj["pointer"], base64.b64decode(obj["signature"], validate=True)
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded))
    except (KeyError, TypeError, ValueError):
        raise Refused("not a pointer object signed with a Nix Ed25519 key") from None
    if obj.get("key") != name:
        raise Refused(f"signed by key {obj.get('key')!r}, not the trusted {name!r}")
    try:
        key.verify(signature, DOMAIN + text.encode())
    except InvalidSignature:
        raise Refused(f"its signature does not verify with the trusted key {name!r}") from None
    body = json.loads(text)
    if body.get("schema") != POINTER_SCHEMA:
        raise Refused(f"pointer schema {body.get('schema')!r}; this agent reads {POINTER_SCHEMA}")
    if (body.get("cluster"), body.get("pool")) != (cluster, pool):
        raise Refused(f"a pointer for {body.get('cluster')}/{body.get('pool')}; this host is {cluster}/{pool}")
    if store_hash(body.get("system", "")) != system_hash:
        raise Refused(f"it names {body.get('system')}; the launch template names {system_hash}")
    return body


def metadata(base: str) -> dict[str, str]:
    """instance-id, local-ipv4 and the zone, through an IMDSv2 session token."""
    put = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    token = urllib.request.urlopen(put, timeout=10).read().decode()

    def get(path: str) -> str:
        req = urllib.request.Request(f"{base}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": token})
        return urllib.request.urlopen(req, timeout=10).read().decode().strip()

    return {"instance": get("instance-id"), "address": get("local-ipv4"),
            "zone": get("placement/availability-zone")}


def clients(conf: dict):
    import boto3

    if conf.get("imds"):  # tests: botocore's instance-profile credentials from the same stand-in
        os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = conf["imds"].rstrip("/") + "/"
    endpoints = conf.get("endpoints") or {}
    session = boto3.session.Session(region_name=conf["region"])
    return {name: session.client(name, endpoint_url=endpoints.get(name)) for name in ("s3", "ssm", "autoscaling")}


def realise(system: str, substituter: str) -> None:
    res = subprocess.run(["nix-store", "--realise", system, "--option", "extra-substituters", substituter],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise Failed(f"realising {system} from {substituter} failed: {res.stderr.strip()[-800:]}")


def drop_in(me: dict) -> dict:
    """The instance's k3s drop-in: what a delivery writes (flakefleet/plan/specs.py:k3s_host_config),
    and the providerID the cluster autoscaler matches its group's instances by
    (cluster-autoscaler/cloudprovider/aws: `aws:///<zone>/<instance id>`), given to the kubelet:
    the cloud node controller keeps a providerID the kubelet set (k8s.io/cloud-provider
    controllers/node), where k3s' embedded one would set `k3s://<name>`."""
    return {"node-ip": me["address"], "node-name": me["instance"],
            "kubelet-arg": [f"provider-id=aws:///{me['zone']}/{me['instance']}"]}


def stage(token: str, pointer: dict, me: dict, join_token: str, substituter: str) -> Path:
    """The files a delivery would write, in hostctl's staging layout (0700, mirrored paths)."""
    root = RUN / token / "files"
    facts = {**pointer["facts"], "name": me["instance"], "address": me["address"]}
    files = {
        FACTS_PATH: (json.dumps(facts, sort_keys=True) + "\n", 0o644),
        K3S_DROP_IN_PATH: (json.dumps(drop_in(me), sort_keys=True) + "\n", 0o600),
        CACHE_CONF_PATH: (f"extra-substituters = {substituter}\n", 0o644),
        AGENT_TOKEN_PATH: (join_token, 0o600),
    }
    for path, (content, mode) in files.items():
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as out:
            out.write(content)
        os.chmod(dest, mode)
    # The units that read them (flakefleet/plan/specs.py: K3S, HOSTNAME, NIX_DAEMON), restarted by
    # hostctl.sh unless the switch did.
    (RUN / token / "restarts").write_text(
        "".join(f"{path} {unit}\n" for path, unit in RESTARTS.items()))
    return root


def hostctl(script: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, timeout=timeout)


def switch(script: Path, system: str, token: str, conf: dict) -> None:
    """hostctl's activate, check until healthy (bounded), confirm; a failure rolls back."""
    health_s, settle_s = int(conf.get("health_timeout_s", 300)), int(conf.get("settle_s", 10))
    act = hostctl(script, "activate", system, token, str(health_s + 120), str(health_s), timeout=health_s + 60)
    why = f"activation exited {act.returncode}: {act.stderr.strip()[-400:]}" if act.returncode != 0 else ""
    deadline = time.monotonic() + health_s
    while not why:
        res = hostctl(script, "check", token, system, str(settle_s), timeout=60)
        if res.returncode == 0:
            done = hostctl(script, "confirm", token, system, f"pull:{store_hash(system)}", timeout=120)
            if done.returncode == 0:
                return
            why = f"confirm exited {done.returncode}: {done.stderr.strip()[-300:]}"
        elif res.returncode != 3:
            why = f"unhealthy: {res.stderr.strip()[-400:]}"
        elif time.monotonic() > deadline:
            why = f"not healthy within {health_s}s: {res.stderr.strip()[-400:]}"
        else:
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    back = hostctl(script, "rollback", token, why, timeout=health_s + 60)
    # hostctl's outcome line ends with the reason it was given.
    raise Failed(back.stdout.strip() or f"{why}; the rollback exited {back.returncode}: {back.stderr.strip()[-300:]}")


def complete(aws: dict, conf: dict, instance: str, result: str) -> None:
    if not conf.get("hook"):
        return
    aws["autoscaling"].complete_lifecycle_action(LifecycleHookName=conf["hook"], AutoScalingGroupName=conf["group"],
                                                 LifecycleActionResult=result, InstanceId=instance)


def record(aws: dict, conf: dict, outcome: dict) -> None:
    """The outcome on the host and, for status and drift, in the cache bucket (best effort:
    nothing in it is secret, and a host that cannot say so is still what it is)."""
    STATE.mkdir(parents=True, exist_ok=True)
    body = json.dumps(outcome, sort_keys=True) + "\n"
    (STATE / "pull.json").write_text(body)
    key = f"{REPORTS}/{conf['cluster']}/{conf['pool']}/{outcome['instance']}.json"
    try:
        aws["s3"].put_object(Bucket=conf["bucket"], Key=key, Body=body.encode(), ContentType="application/json")
    except Exception as err:  # noqa: BLE001 - any failure to report leaves the host as it is
        say(f"could not report to s3://{conf['bucket']}/{key}: {err}")


def run(hostctl_script: Path, conf: dict) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    me = metadata(conf.get("imds") or "http://169.254.169.254")
    aws = clients(conf)
    substituter = conf.get("substituter") or f"s3://{conf['bucket']}?region={conf['region']}"
    outcome = {"instance": me["instance"], "pointer": conf["pointer"], "at": int(time.time())}
    try:
        obj = json.loads(aws["s3"].get_object(Bucket=conf["bucket"], Key=conf["pointer"])["Body"].read())
        pointer = verify(obj, conf["trusted_key"], conf["cluster"], conf["pool"], conf["system_hash"])
        say(f"pointer {conf['pointer']} verified: {pointer['system']}")
        realise(pointer["system"], substituter)
        join = aws["ssm"].get_parameter(Name=conf["token_parameter"], WithDecryption=True)["Parameter"]["Value"]
        token = "pull-" + secrets.token_hex(8)
        stage(token, pointer, me, join, substituter)
        RUN.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(hostctl_script, RUN / "hostctl.sh")  # the dead-man switch runs it from there
        switch(RUN / "hostctl.sh", pointer["system"], token, conf)
    except Refused as err:
        say(f"refused the pointer, nothing was realised or activated: {err}")
        record(aws, conf, {**outcome, "result": "refused", "reason": str(err)})
        complete(aws, conf, me["instance"], "ABANDON")
        return REFUSED
    except (Failed, OSError, ValueError, KeyError, BotoCoreError, ClientError) as err:
        say(f"failed: {err}")
        record(aws, conf, {**outcome, "result": "failed", "reason": str(err)})
        complete(aws, conf, me["instance"], "ABANDON")
        return FAILED
    say(f"joined on {pointer['system']}")
    record(aws, conf, {**outcome, "result": "joined", "system": pointer["system"],
            "digest": hashlib.sha256(pointer["system"].encode()).hexdigest()})
    complete(aws, conf, me["instance"], "CONTINUE")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        say("usage: flakefleet-pull HOSTCTL CONFIG")
        return FAILED
    return run(Path(argv[0]), json.loads(Path(argv[1]).read_text()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
