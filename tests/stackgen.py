"""Stacks a user could write, generated (hypothesis): AWS stacks (one or three control planes,
workers, a GPU pool, an aarch64 pool, an autoscaled pool, `*.metal`, Cilium, a workload, pinned
or derived address blocks) and bring-your-own stacks (installed by nixos-anywhere or not, a GPU
box, a virtual API address), each with its signing key stored as `pulumi config set --secret`
stores it: a `secure:` value in the stack file.

`encrypt` stands in for Pulumi's secrets provider: it makes the opaque `v1:...` text the CLI
writes and remembers the plain value, which `decrypt` gives back as the CLI hands it to the
program. Nothing of flakefleet ever decodes a `secure:` value itself.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import yaml
from hypothesis import strategies as st

from flakefleet.config.stackfile import Secure

# Test-only values: a deploy key and host keys whose private halves nobody holds.
DEPLOY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM deploy"
HOST_KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ93oybYjVrN3T5OXCQoyRoUWTIJq371WYLdTbufwYbb",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ4+5qipHP415EoM/G+cCWB6lKT/FA/NdSrf60sp8JVH",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC8+UI46tIH+0ky9dGyKG2yo2NIaFOWts6bPhhhIIk/t",
]
SIGNING_KEY = "flakefleet-test-1:" + "A" * 86 + "=="
_PLAIN: dict[str, str] = {}


def encrypt(plain: str) -> dict:
    """What `pulumi config set --secret` writes into the stack file: `{secure: v1:...}`."""
    digest = hashlib.sha256(plain.encode()).digest()
    cipher = "v1:" + base64.b64encode(digest[:12]).decode() + ":" + base64.b64encode(digest).decode()
    _PLAIN[cipher] = plain
    return {"secure": cipher}


def decrypt(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The config as the Pulumi CLI hands it to the program (secure values decrypted) and the
    keys it holds as secrets."""
    plain = {k: _PLAIN[v.ciphertext] if isinstance(v, Secure) else v for k, v in config.items()}
    return plain, sorted(k for k, v in config.items() if isinstance(v, Secure))


names = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)


def _pool(name: str, role: str, **fields) -> dict:
    return {"name": name, "role": role, **{k: v for k, v in fields.items() if v is not None}}


@st.composite
def ec2_stacks(draw) -> dict:
    """An AWS stack."""
    azs = draw(st.integers(1, 3))
    pinned = draw(st.booleans())
    blocks = iter(range(1, 16))
    block = (lambda: next(blocks)) if pinned else (lambda: None)
    pools = [_pool("cp", "control-plane", instance_type="t3.large", count=draw(st.sampled_from([1, 3])), ip_block=block())]
    workers = draw(st.integers(0, 3))
    if workers:
        pools.append(_pool("workers", "worker", instance_type=draw(st.sampled_from(["t3.large", "m6i.xlarge"])),
                           count=workers, ip_block=block(), labels=draw(st.sampled_from([None, {"team": "a"}]))))
    if draw(st.booleans()):
        pools.append(_pool("gpu", "worker", instance_type="g5.xlarge", count=1, gpu="nvidia", ip_block=block(),
                           taints=draw(st.sampled_from([None, [{"key": "team", "value": "ml", "effect": "NoSchedule"}]]))))
    builders = []
    if draw(st.booleans()):  # an aarch64 pool: built by its hosts, or on an aarch64 builder
        on_builder = draw(st.booleans())
        builders = [{"name": "arm-builder", "address": "10.200.0.9", "host_key": HOST_KEYS[1],
                     "systems": ["aarch64"]}] if on_builder else []
        pools.append(_pool("arm", "worker", instance_type="m7g.large", arch="aarch64", count=1, ip_block=block(),
                           build="arm-builder" if on_builder else "target"))
    if draw(st.booleans()):
        pools.append(_pool("spot", "worker", instance_type="t3.large",
                           autoscaling={"min": 0, "max": draw(st.integers(1, 50))}))
    if draw(st.integers(0, 4)) == 0:
        pools.append(_pool("metal", "worker", instance_type="c5.metal", bare_metal=True, count=1, ip_block=block()))
    config = {
        "aws:region": draw(st.sampled_from(["eu-west-1", "us-east-1"])),
        "flakefleet:cluster": {"name": "ff-" + draw(names),
                               **({"cni": "cilium"} if draw(st.booleans()) else {})},
        "flakefleet:network": {"vpc_cidr": draw(st.sampled_from(["10.20.0.0/16", "10.64.0.0/16"])), "az_count": azs,
                               "admin_cidrs": ["10.200.0.0/16"], "api_cidrs": ["10.200.0.0/16"]},
        "flakefleet:pools": pools,
        "flakefleet:delivery": {"authorized_keys": [DEPLOY_KEY], **({"builders": builders} if builders else {})},
        "flakefleet:signing_key": encrypt(SIGNING_KEY),
    }
    with_hosts = [p["name"] for p in pools if p.get("count") and p["role"] == "worker" and "gpu" not in p]
    if with_hosts and draw(st.booleans()):
        config["flakefleet:workloads"] = [{"name": "hello", "pools": with_hosts[:1]}]
    return config


@st.composite
def metal_stacks(draw) -> dict:
    """A bring-your-own stack on documentation addresses (never reached: tests stub ssh)."""
    installed = draw(st.booleans())
    servers = draw(st.sampled_from([1, 3]))
    address = iter(f"192.0.2.{n}" for n in range(10, 60))

    static = installed and draw(st.booleans())  # rented servers: addressed statically after the install
    macs = iter(f"0c:c4:7a:00:00:{n:02x}" for n in range(1, 60))

    def host(name: str, k: int) -> dict:
        if installed:
            entry = {"name": name, "address": next(address), "install_host_key": HOST_KEYS[k % 3]}
            if static:
                entry["network"] = {"mac": next(macs), "addresses": [f"{entry['address']}/32"]}
            return entry
        return {"name": name, "address": next(address), "ssh_host_key": HOST_KEYS[k % 3]}

    bootstrap = {"bootstrap": "nixos-anywhere"} if installed else {}
    pools = [{"name": "cp", "role": "control-plane", "provider": "metal", **bootstrap,
              "hosts": [host(f"cp-{k}", k) for k in range(servers)]}]
    workers = draw(st.integers(0, 3))
    if workers:
        pools.append({"name": "workers", "role": "worker", "provider": "metal", **bootstrap,
                      "hosts": [host(f"w-{k}", k) for k in range(workers)]})
    if static:  # the pools' shared part: an on-link gateway, DNS
        for pool in pools:
            pool["network"] = {"gateways": ["192.0.2.1"], "dns": ["192.0.2.53"]}
    if draw(st.booleans()):
        driver = draw(st.sampled_from([{}, {"gpu_open_modules": False}, {"gpu_nvswitch": True}]))
        pools.append({"name": "gpu", "role": "worker", "provider": "metal", "gpu": "nvidia", **driver,
                      "hosts": [{"name": "gpu-0", "address": next(address), "ssh_host_key": HOST_KEYS[0]}]})
    if draw(st.booleans()):  # the networks the hosts live in: a join or leave then changes no other host
        for pool in pools:
            pool["networks"] = ["192.0.2.0/24"]
    cluster = {"name": "ff-" + draw(names)}
    if servers == 3 and draw(st.booleans()):
        cluster["api_address"] = "192.0.2.200"
    return {
        "flakefleet:cluster": cluster,
        "flakefleet:storage": {"enabled": False},
        "flakefleet:pools": pools,
        "flakefleet:delivery": {"authorized_keys": [DEPLOY_KEY]},
        "flakefleet:signing_key": encrypt(SIGNING_KEY),
    }


user_stacks = st.one_of(ec2_stacks(), metal_stacks())


def stack_file(config: dict) -> str:
    """The stack file a user would commit (YAML, `secure:` values as the CLI writes them)."""
    return yaml.safe_dump({"config": config}, sort_keys=False)
