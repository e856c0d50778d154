"""Tier 1: nixos/configurations.json, the specs behind the flake's nixosConfigurations."""

from __future__ import annotations

import json

from flakefleet import configurations
from flakefleet.config import parse_stack_config
from flakefleet.inventory import plan_inventory
from flakefleet.nixos import system_specs
from flakefleet.stackfile import read_stack_file

KEY = "ff-dev-1:" + "A" * 43 + "="


def local_specs(per_host: bool = False) -> dict[str, dict]:
    raw = read_stack_file("local")
    if per_host:
        pools = json.loads(raw["flakefleet:pools"])
        raw["flakefleet:pools"] = json.dumps([{**p, "per_host_closures": True} for p in pools])
    cfg = parse_stack_config(raw)
    return system_specs(cfg, plan_inventory(cfg))


def test_names_follow_stack_and_pool():
    assert configurations.configuration_name("dev", "workers") == "dev-workers"
    assert configurations.configuration_name("dev", "workers/worker-0") == "dev-workers-worker-0"
    assert sorted(configurations.stack_configurations("local", local_specs(per_host=True))) == [
        "local-cp-cp-0", "local-workers-worker-0", "local-workers-worker-1"]


def test_generated_entries_cover_every_stack_and_keep_known_public_keys():
    first = configurations.generate()
    assert {name.split("-")[0] for name in first} == {"dev", "local", "prod", "staging"}
    assert all(spec["stack"] == name.split("-")[0] for name, spec in first.items())
    existing = {"dev-cp": {**first["dev-cp"], "trusted_public_keys": [KEY]}}
    again = configurations.generate(existing=existing)
    assert again["dev-cp"]["trusted_public_keys"] == [KEY]  # the program wrote it; the script keeps it
    assert again["dev-workers"]["trusted_public_keys"] == []


def test_the_program_rewrites_only_its_own_stack(tmp_path):
    path = tmp_path / "configurations.json"
    other = {"prod-cp": {"stack": "prod", "pool": "cp"}}
    path.write_text(configurations.render({**other, "local-gone": {"stack": "local", "pool": "gone"}}))
    assert configurations.update_stack(path, "local", local_specs()) is True
    entries = configurations.read(path)
    assert sorted(entries) == ["local-cp", "local-workers", "prod-cp"]  # a removed pool's entry goes
    assert entries["prod-cp"] == other["prod-cp"]
    assert configurations.update_stack(path, "local", local_specs()) is False  # unchanged: not rewritten


def test_a_flake_without_the_file_gets_none(tmp_path):
    assert configurations.update_stack(tmp_path / "configurations.json", "local", local_specs()) is False
    assert not (tmp_path / "configurations.json").exists()
