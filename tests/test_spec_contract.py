"""Tiers 1 and 3: the pool spec's one typed definition (flakefleet/plan/contract.py:PoolSpec)
and what the Nix side makes of it. The schema the flake declares its options from is the one
Python emits; every key has one camelCase name on both sides; a key the schema does not know is
refused, not dropped; a new key needs its field and the module that reads it, nothing else; and
each pool's system is evaluated once, giving what four evaluations gave before."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, fields

import pytest

from flakefleet.nixos import evaluate
from flakefleet.nixos.evaluate import cache_key, evaluate_systems
from flakefleet.plan.contract import PoolSpec, camel, option
from flakefleet.plan.schema import SCHEMA_PATH, schema_text, spec_schema, write_schema
from tests.test_nix_modules import MODULE_SYSTEMS, NIXLIB, ROOT, all_specs, evaluate_pools, lib_path, matrix_specs
from tests.test_nix_modules import nix_instantiate
from tests.test_nixos import nix_eval_ready  # noqa: F401  (a fixture)

STANDIN = ROOT / "tests" / "standin"


def keys_of(value, path=""):
    """Every dataclass-made key of a spec's JSON (labels and host facts are free-form)."""
    for key, v in value.items():
        yield f"{path}{key}"
        if key in ("labels", "host"):
            continue
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, dict):
                yield from keys_of(item, f"{path}{key}.")


def test_the_committed_schema_is_the_one_python_emits(tmp_path):
    assert write_schema(tmp_path / "schema.json") is True
    assert SCHEMA_PATH.read_text() == (tmp_path / "schema.json").read_text() == schema_text()


@pytest.mark.parametrize("per_host", [False, True], ids=["shared", "per-host"])
def test_every_spec_key_is_camel_case_and_declared(per_host):
    schema = spec_schema()
    specs = {**all_specs(per_host), **matrix_specs()}
    for name, spec in specs.items():
        assert set(spec) - {"stack"} <= set(schema["options"]) | set(schema["selects"]), name
        bad = [k for k in keys_of(spec) if not re.fullmatch(r"[a-z][a-zA-Z0-9]*", k.rsplit(".", 1)[-1])]
        assert bad == [], (name, bad)


def test_options_and_selectors_are_the_fields_of_pool_spec():
    schema = spec_schema()
    assert set(schema["options"]) | set(schema["selects"]) == {camel(f.name) for f in fields(PoolSpec)}
    assert set(schema["selects"]) == {"system", "install", "pull"}
    assert camel("tls_sans") == "tlsSans" and camel("cluster") == "cluster"


def test_the_cache_key_follows_the_schema_and_the_expression(monkeypatch):
    spec = all_specs(False)["dev-cp"]
    before = cache_key("flake", spec)
    monkeypatch.setattr(evaluate, "SPEC_SCHEMA_DIGEST", "another schema")
    assert cache_key("flake", spec) != before


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_a_key_the_schema_does_not_declare_is_refused(lib, tmp_path):
    specs = {"dev-cp": {**all_specs(False)["dev-cp"], "tls_sans": ["10.0.0.1"]}}
    out = evaluate_pools(lib, ROOT / "nixos", specs, tmp_path)
    assert out.returncode != 0
    assert "pool spec keys nixos/common/spec-schema.json does not declare: tls_sans" in out.stderr


@dataclass(frozen=True)
class WithMaxPods(PoolSpec):
    """PoolSpec with one more key, as a contributor would add it to contract.py."""

    kubelet_max_pods: int = option("Pods the kubelet admits.", 110, unsigned=True)


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_a_new_key_needs_its_field_and_the_module_that_reads_it(lib, tmp_path):
    """The trial of issue 36: `kubelet_max_pods` added to the spec. The flake is given nothing
    but the emitted schema (what `make configurations` writes) and one module reading the option."""
    flake = tmp_path / "nixos"
    shutil.copytree(ROOT / "nixos", flake)
    write_schema(flake / "common" / "spec-schema.json", WithMaxPods)
    reader = tmp_path / "max-pods.nix"
    reader.write_text('{ config, ... }: { services.k3s.extraFlags = [ "--kubelet-arg=max-pods='
                      '${toString config.flakefleet.kubeletMaxPods}" ]; }\n')
    dev_cp = _dev_cp()
    base = {f.name: getattr(dev_cp, f.name) for f in fields(PoolSpec)}
    spec = WithMaxPods(**base, kubelet_max_pods=42).as_json()
    assert spec["kubeletMaxPods"] == 42
    out = evaluate_pools(lib, flake, {"dev-cp": spec}, tmp_path, extra=f"extraModules = [ {reader} ];")
    assert out.returncode == 0, out.stderr
    assert "--kubelet-arg=max-pods=42" in json.loads(out.stdout)["dev-cp"]["flags"]
    # Unset, the option takes the schema's default.
    del spec["kubeletMaxPods"]
    out = evaluate_pools(lib, flake, {"dev-cp": spec}, tmp_path, extra=f"extraModules = [ {reader} ];")
    assert "--kubelet-arg=max-pods=110" in json.loads(out.stdout)["dev-cp"]["flags"], out.stderr


def _dev_cp() -> PoolSpec:
    from flakefleet.config import parse_stack_config
    from flakefleet.config.stackfile import read_stack_file
    from flakefleet.plan.inventory import plan_inventory
    from flakefleet.plan.specs import pool_spec

    raw = read_stack_file("dev")
    cfg = parse_stack_config(raw, raw.get("aws:region"))
    return pool_spec(cfg, plan_inventory(cfg), "cp")


@pytest.mark.parametrize("lib", MODULE_SYSTEMS)
def test_one_evaluation_gives_what_four_gave(lib, tmp_path):
    """flakefleet/nixos/evaluate.nix (the flake's lib.evaluate: each system once) against the
    flake's per-value functions, over every stack's systems and the feature matrix."""
    specs_file = tmp_path / "specs.json"
    specs_file.write_text(json.dumps({**all_specs(False), **matrix_specs()}))
    results = {}
    for mode in ("per-value", "once"):
        out = nix_instantiate(f"import {NIXLIB}/eval-once.nix {{ lib = import {lib_path(lib)}; flake = {ROOT}/nixos; "
                              f"specsFile = {json.dumps(str(specs_file))}; mode = {json.dumps(mode)}; }}")
        assert out.returncode == 0, out.stderr
        results[mode] = json.loads(out.stdout)
    assert results["once"] == results["per-value"]
    assert any(r["agent"] for r in results["once"].values())  # an autoscaled pool's agent is among them


def test_a_flake_with_lib_evaluate_is_asked_only_that(nix_eval_ready, tmp_path):
    """evaluate.nix asks `lib.evaluate` where the flake has it (nixos/), else value by value (the
    stand-in, which has no module system to evaluate once, and flakes from before issue 36)."""
    flake = tmp_path / "flake"
    shutil.copytree(STANDIN, flake)
    text = (flake / "flake.nix").read_text()
    anchor = "      lib.toplevel =\n"
    assert anchor in text and "lib.evaluate" not in text.replace("`lib.evaluate`", "")
    marker = ('      lib.evaluate = spec: { drv = "/nix/store/asked-once.drv"; out = "/nix/store/asked-once"; '
              'boot = null; links = null; agent = null; };\n')
    (flake / "flake.nix").write_text(text.replace(anchor, marker + anchor))
    spec = {"cp": _dev_cp().as_json()}
    asked, _ = evaluate_systems(flake, spec, tmp_path / "cache-once")
    assert asked["cp"].out == "/nix/store/asked-once"
    standin, _ = evaluate_systems(STANDIN, spec, tmp_path / "cache-standin")
    assert standin["cp"].out.startswith("/nix/store/") and standin["cp"].boot and standin["cp"].links is not None


def test_a_flake_from_before_the_schema_is_given_the_keys_it_reads(nix_eval_ready, tmp_path):
    """`flakefleet diff` evaluates the base side of a change with the base's flake: one from before
    the spec's schema reads snake_case keys (its specModule renamed them) and the spec's `schema`.
    The stand-in as it was then evaluates, with the same k3s flags as the stand-in now."""
    old = tmp_path / "old"
    shutil.copytree(STANDIN, old)
    text = (old / "flake.nix").read_text()
    for new, before in (("spec.apiEndpoint", "spec.api_endpoint"), ("spec.podCidr", "spec.pod_cidr"),
                        ("spec.serviceCidr", "spec.service_cidr"), ("spec.tlsSans", "spec.tls_sans"),
                        ("assert spec ? apiEndpoint;", "assert spec.schema == 1;")):
        assert new in text
        text = text.replace(new, before)
    (old / "flake.nix").write_text(text)
    spec = {"cp": _dev_cp().as_json()}
    before, _ = evaluate_systems(old, spec, tmp_path / "cache-old")
    now, _ = evaluate_systems(STANDIN, spec, tmp_path / "cache-now")
    assert before["cp"].boot == now["cp"].boot and before["cp"].links == now["cp"].links
