"""The feature matrix: one configuration for every module a stack can switch on.

The stacks in stacks/ are what runs; they do not use every feature (no stack has Cilium or
GPUs today), so `nix flake check` on them alone would never evaluate those modules on the real
nixpkgs pin. Each row here is a stack file of its own, derived from dev's by a few keys, parsed
and planned exactly as a stack is (so its specs are the ones a stack with that feature would
get), and listed in nixos/configurations.json as `matrix-<row>-<pool>` with `stack:
matrix-<row>`. The flake's `checks` and the stand-in evaluation then cover them like any stack.
"""

from __future__ import annotations

import json

from flakefleet.config import parse_stack_config
from flakefleet.config.stackfile import STACKS, read_stack_file
from flakefleet.plan.inventory import plan_inventory
from flakefleet.plan.specs import system_specs

BASE = "dev"
PREFIX = "matrix-"

# The metal hosts' pinned key (the example deploy key's: these stacks are evaluated, never deployed).
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM"

CP = {"name": "cp", "role": "control-plane", "instance_type": "t3.large", "count": 1}
WORKERS = {"name": "workers", "role": "worker", "instance_type": "t3.large", "count": 1}

# row -> the stack keys it changes (JSON values, as a stack file holds them after parsing).
ROWS: dict[str, dict[str, object]] = {
    # Cilium's overlays and Hubble (nixos/mixins/cilium.nix, addons/cilium.nix).
    "cilium-vxlan": {"flakefleet:cluster": {"name": "ff-mx-vxlan", "cni": "cilium"}},
    "cilium-geneve-hubble": {
        "flakefleet:cluster": {"name": "ff-mx-geneve", "cni": "cilium", "cilium": {"tunnel": "geneve", "hubble": True}}
    },
    # GPU pools (nixos/hardware/nvidia.nix): open modules (g5, A10G), closed modules (p3, V100),
    # and NVSwitch with the fabric manager (p5, H100); a workload scheduled onto them.
    "gpu": {
        "flakefleet:cluster": {"name": "ff-mx-gpu"},
        "flakefleet:pools": [
            CP,
            WORKERS,
            {"name": "gpu", "role": "worker", "instance_type": "g5.xlarge", "gpu": "nvidia", "count": 1},
            {"name": "gpu-closed", "role": "worker", "instance_type": "p3.2xlarge", "gpu": "nvidia", "count": 1},
        ],
        "flakefleet:workloads": [{"name": "hello", "pools": ["workers", "gpu"]}],
    },
    "gpu-nvswitch": {
        "flakefleet:cluster": {"name": "ff-mx-nvswitch"},
        "flakefleet:pools": [
            CP,
            {"name": "hgx", "role": "worker", "instance_type": "p5.48xlarge", "gpu": "nvidia", "count": 1},
        ],
    },
    # aarch64 pools (Graviton), built on the hosts themselves.
    "aarch64": {
        "flakefleet:cluster": {"name": "ff-mx-arm"},
        "flakefleet:pools": [
            CP,
            {"name": "arm", "role": "worker", "instance_type": "m7g.large", "arch": "aarch64", "build": "target",
             "count": 1},
        ],
    },
    # Bring-your-own metal, no EC2 at all, with per-host closures (nixos/hardware/metal.nix,
    # mixins/per-host.nix, the firewall's peer rules), and a pool the deployer installs.
    "metal": {
        "flakefleet:cluster": {"name": "ff-mx-metal"},
        "flakefleet:pools": [
            {"name": "cp", "role": "control-plane", "provider": "metal", "hosts": [
                {"name": "cp-0", "address": "192.168.40.2",
                 "ssh_host_key": HOST_KEY}]},
            {"name": "metal", "role": "worker", "provider": "metal", "per_host_closures": True, "hosts": [
                {"name": "metal-0", "address": "192.168.40.10",
                 "ssh_host_key": HOST_KEY},
                {"name": "metal-1", "address": "192.168.40.11",
                 "ssh_host_key": HOST_KEY},
            ]},
            # Installed by the deployer (mixins/install.nix, disko's module, disko/single-disk.nix).
            {"name": "byo", "role": "worker", "provider": "metal", "bootstrap": "nixos-anywhere", "hosts": [
                {"name": "byo-0", "address": "192.168.40.20", "install_host_key": HOST_KEY}]},
        ],
    },
    # An autoscaled pool, whose instances pull their system (nixos/mixins/pull.nix, the pull
    # agent of nixos/host/ in its closure).
    "autoscaled": {
        "flakefleet:cluster": {"name": "ff-mx-asg"},
        "flakefleet:pools": [
            CP,
            {"name": "spot", "role": "worker", "instance_type": "t3.large", "autoscaling": {"min": 0, "max": 10}},
        ],
    },
}


def row_stack(row: str, stacks_dir=STACKS) -> dict[str, str]:
    """The row's stack file: dev's, with the row's keys replaced."""
    raw = dict(read_stack_file(BASE, stacks_dir))
    for key, value in ROWS[row].items():
        raw[key] = json.dumps(value)
    return raw


def row_specs(row: str, stacks_dir=STACKS) -> dict[str, dict]:
    """The row's systems, planned as a stack's are (system key -> spec)."""
    raw = row_stack(row, stacks_dir)
    cfg = parse_stack_config(raw, raw.get("aws:region"), stacks_dir=stacks_dir)
    return system_specs(cfg, plan_inventory(cfg))
