"""Tier 1: nixos/configurations.json, the specs behind the flake's nixosConfigurations."""

from __future__ import annotations

import json

from flakefleet.nixos import configurations, matrix
from flakefleet.config import parse_stack_config
from flakefleet.plan.inventory import plan_inventory
from flakefleet.plan.specs import system_specs
from flakefleet.config.stackfile import read_stack_file

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
    stacks = {name: spec for name, spec in first.items() if not name.startswith(matrix.PREFIX)}
    assert {name.split("-")[0] for name in stacks} == {"dev", "local", "prod", "staging"}
    assert all(spec["stack"] == name.split("-")[0] for name, spec in stacks.items())
    # and the feature matrix, one stack per row
    rows = {spec["stack"] for name, spec in first.items() if name.startswith(matrix.PREFIX)}
    assert rows == {matrix.PREFIX + row for row in matrix.ROWS}
    existing = {"dev-cp": {**first["dev-cp"], "trustedPublicKeys": [KEY]}}
    again = configurations.generate(existing=existing)
    assert again["dev-cp"]["trustedPublicKeys"] == [KEY]  # written by hand (the key is a secret); the script keeps it
    assert again["dev-workers"]["trustedPublicKeys"] == []


def test_a_stale_file_is_told_apart_public_keys_aside(tmp_path):
    path = tmp_path / "configurations.json"
    mine = configurations.stack_configurations("local", configurations.stack_specs("local", local_specs()))
    other = {"prod-cp": {"stack": "prod", "pool": "cp"}}
    path.write_text(configurations.render({**other, **mine}))
    assert not configurations.stale_for(path, "local", local_specs())
    keyed = {name: {**spec, "trustedPublicKeys": [KEY]} for name, spec in mine.items()}
    path.write_text(configurations.render({**other, **keyed}))
    assert not configurations.stale_for(path, "local", local_specs())  # only the program knows the key
    path.write_text(configurations.render({**other, **mine, "local-gone": {"stack": "local", "pool": "gone"}}))
    assert configurations.stale_for(path, "local", local_specs())  # a removed pool's entry is stale
    assert not configurations.stale_for(tmp_path / "absent.json", "local", local_specs())  # the stand-in keeps none


def test_the_program_never_writes_the_file_and_says_when_it_is_stale(tmp_path, monkeypatch):
    """A preview in CI must not edit a checked-in file: the program only warns."""
    import shutil

    import pulumi

    from tests.conftest import STANDIN_FLAKE
    from tests.harness import run_stack

    flake = tmp_path / "flake"
    shutil.copytree(STANDIN_FLAKE, flake)
    stale = configurations.render({"local-gone": {"stack": "local", "pool": "gone"}})
    (flake / configurations.FILE_NAME).write_text(stale)
    monkeypatch.setenv("FLAKEFLEET_FLAKE", str(flake))
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: warned.append(message))
    run_stack("local")
    assert (flake / configurations.FILE_NAME).read_text() == stale
    assert any("configurations.json does not list this stack's systems" in w for w in warned), warned
