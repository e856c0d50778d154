"""Tier 1: the plans the program hands the small runners are contract types (flakefleet/plan/
contract.py), written exactly as the hand-built JSON they replace (so no Command's input changes),
and every Command starts a runner of the one registry (flakefleet/__main__.py: RUNNERS), which
scripts/flakefleet hands every name to."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from flakefleet.__main__ import COMMANDS, RUNNERS
from flakefleet.plan.contract import Endpoint, HostKeyTarget, KubeconfigPlan, PrunePlan

ROOT = Path(__file__).resolve().parent.parent
CP = Endpoint("cp-0", "10.20.0.4", 22, "root", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM")


def test_the_kubeconfig_plan_is_the_json_it_replaces():
    plan = KubeconfigPlan(cluster="ff-dev", api_endpoint="https://10.20.0.4:6443", endpoint=CP)
    before = json.dumps({"cluster": "ff-dev", "api_endpoint": "https://10.20.0.4:6443", "endpoint": asdict(CP)},
                        sort_keys=True)
    assert plan.to_json() == before and KubeconfigPlan.from_json(before) == plan


def test_the_prune_plan_is_the_json_it_replaces():
    plan = PrunePlan(keep=["cp-0", "w-0"], endpoint=CP)
    before = json.dumps({"keep": ["cp-0", "w-0"], "endpoint": asdict(CP)}, sort_keys=True)
    assert plan.to_json() == before and PrunePlan.from_json(before) == plan


def test_the_host_key_target_is_the_json_it_replaces():
    target = HostKeyTarget(host="cp-1", address="10.20.1.4", port=22, region="eu-west-1")
    before = json.dumps({"host": "cp-1", "address": "10.20.1.4", "port": 22, "region": "eu-west-1"}, sort_keys=True)
    assert target.to_json() == before and HostKeyTarget.from_json(before) == target


def command_lines() -> set[str]:
    """Every `./scripts/flakefleet ...` the components register as a Command."""
    found = set()
    for path in (ROOT / "components").glob("*.py"):
        found |= set(re.findall(r'"\./scripts/flakefleet ([a-z-]+)', path.read_text()))
    return found


def test_every_command_a_component_registers_is_in_the_registry():
    assert command_lines() == set(RUNNERS) | {"dr"}  # `dr prune`: the command line's dr
    assert not set(RUNNERS) & set(COMMANDS)


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_the_wrapper_hands_each_runner_to_the_registry(runner):
    """Run by hand, outside its Command, a runner says in one line what it misses (exit 1)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    proc = subprocess.run([str(ROOT / "scripts" / "flakefleet"), runner], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "FLAKEFLEET_" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
