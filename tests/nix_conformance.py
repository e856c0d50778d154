"""Module-system conformance cases: each a module list and its expected outcome under nixpkgs'
module system. tests/test_nix_modules.py runs them through our stand-in lib (tests/nixlib/lib.nix)
always, and through nixpkgs' real lib when FLAKEFLEET_NIXPKGS_LIB points at one (`make
test-upstream`), so the stand-in is held to the real thing on exactly what our modules rely on."""

from __future__ import annotations

from dataclasses import dataclass

# Declarations shared by the cases (an `options` module), written against the `lib` interface.
DECLS = r"""
{ lib, ... }: with lib; {
  options = {
    k3s.nodeName = mkOption { type = types.nullOr types.str; default = null; };
    k3s.flags = mkOption { type = types.listOf types.str; default = [ ]; };
    k3s.role = mkOption { type = types.enum [ "server" "agent" ]; default = "server"; };
    name = mkOption { type = types.str; };
    text = mkOption { type = types.lines; default = ""; };
    enable = mkOption { type = types.bool; default = false; };
    facts = mkOption { type = types.nullOr (types.attrsOf types.anything); default = null; };
    units = mkOption {
      type = types.attrsOf (types.submodule { options.after = mkOption { type = types.listOf types.str; default = [ ]; }; });
      default = { };
    };
    service = mkOption {
      type = types.addCheck (types.attrsOf types.str) (c: builtins.elem (c.Restart or "no") [ "no" "always" ]);
      default = { };
    };
    settings = mkOption {
      type = types.submodule {
        freeformType = types.attrsOf types.str;
        options.fixed = mkOption { type = types.bool; default = true; };
      };
      default = { };
    };
  };
}
"""


@dataclass(frozen=True)
class Case:
    name: str
    modules: list[str]  # Nix module expressions (functions of { config, lib, ... } or attribute sets)
    get: str  # a Nix function of `config` whose value is compared
    value: object = None  # the expected value, or
    error: str | None = None  # a substring of the expected error


FACTS_F = "facts: { nodeName = facts.name; } // (if facts.role == \"server\" then { role = \"server\"; } else { })"

CASES = [
    # The defect of issue 10: the content of an mkIf is evaluated whatever the condition.
    Case(
        "mkif-content-is-evaluated-when-false",
        [f"{{ config, lib, ... }}: let f = {FACTS_F}; in lib.mkIf (config.facts != null) {{ k3s = f config.facts; }}"],
        "c: c.k3s.nodeName",
        error="null while a set was expected",
    ),
    Case(
        "optionalattrs-inside-mkif-is-not-evaluated-when-false",
        [
            f"{{ config, lib, ... }}: let f = {FACTS_F}; in "
            "lib.mkIf (config.facts != null) { k3s = lib.optionalAttrs (config.facts != null) (f config.facts); }"
        ],
        "c: c.k3s.nodeName",
        value=None,
    ),
    Case(
        "mkif-true-applies-its-content",
        [
            f"{{ config, lib, ... }}: let f = {FACTS_F}; in lib.mkIf (config.facts != null) {{ k3s = f config.facts; }}",
            '{ facts = { name = "cp-0"; role = "server"; }; }',
        ],
        "c: [ c.k3s.nodeName c.k3s.role ]",
        value=["cp-0", "server"],
    ),
    Case(
        "an-option-value-under-a-false-mkif-is-never-evaluated",
        ['{ lib, ... }: { k3s.nodeName = lib.mkIf false (throw "never"); }'],
        "c: c.k3s.nodeName",
        value=None,
    ),
    Case(
        "a-module-that-is-an-mkif-at-the-top",
        ['{ lib, ... }: lib.mkIf false { name = throw "never"; }', '{ name = "x"; }'],
        "c: c.name",
        value="x",
    ),
    Case("undeclared-option", ["{ k3s.nodeNmae = \"x\"; }"], "c: c.k3s", error="The option `k3s.nodeNmae' does not exist"),
    Case(
        "undeclared-option-under-a-false-mkif-is-still-an-error",
        ['{ lib, ... }: lib.mkIf false { k3s.bogus = 1; }'],
        "c: c.k3s.role",
        error="The option `k3s.bogus' does not exist",
    ),
    Case("wrong-type", ["{ k3s.nodeName = 3; }"], "c: c.k3s.nodeName", error="is not of type `null or string'"),
    Case(
        "enum-refuses-other-values",
        ['{ k3s.role = "worker"; }'],
        "c: c.k3s.role",
        error="is not of type",
    ),
    Case(
        "conflicting-strings",
        ['{ name = "a"; }', '{ name = "b"; }'],
        "c: c.name",
        error="has conflicting definition values",
    ),
    Case("equal-strings-merge", ['{ name = "a"; }', '{ name = "a"; }'], "c: c.name", value="a"),
    Case("mkdefault-loses-to-a-plain-value", ['{ lib, ... }: { name = lib.mkDefault "a"; }', '{ name = "b"; }'], "c: c.name", value="b"),
    Case("mkforce-wins", ['{ lib, ... }: { name = lib.mkForce "a"; }', '{ name = "b"; }'], "c: c.name", value="a"),
    Case("option-default-loses-to-mkdefault", ['{ lib, ... }: { k3s.role = lib.mkDefault "agent"; }'], "c: c.k3s.role", value="agent"),
    Case(
        "lists-concatenate-in-order",
        ['{ lib, ... }: { k3s.flags = lib.mkAfter [ "c" ]; }', '{ k3s.flags = [ "a" ]; }', '{ lib, ... }: { k3s.flags = lib.mkBefore [ "z" ]; }'],
        "c: c.k3s.flags",
        value=["z", "a", "c"],
    ),
    Case(
        "mkmerge-and-mkif-in-lists",
        ['{ lib, ... }: { k3s.flags = lib.mkMerge [ [ "a" ] (lib.mkIf false [ "b" ]) (lib.mkIf true [ "c" ]) ]; }'],
        "c: c.k3s.flags",
        value=["a", "c"],
    ),
    Case("mkif-needs-a-boolean", ['{ lib, ... }: { name = lib.mkIf null "a"; }'], "c: c.name", error="called with a non-Boolean condition"),
    Case("lines-join-later-modules-first", ['{ text = "a"; }', '{ text = "b"; }'], "c: c.text", value="b\na"),
    Case(
        "imports-order",
        ['{ k3s.flags = [ "a" ]; imports = [ { k3s.flags = [ "a1" ]; } { k3s.flags = [ "a2" ]; } ]; }', '{ k3s.flags = [ "b" ]; }'],
        "c: c.k3s.flags",
        value=["a2", "a1", "b", "a"],
    ),
    Case(
        "a-module-imported-twice-counts-once",
        ['{ imports = [ ./tests/nixlib/modules/conformance-flag.nix ]; }', '{ imports = [ ./tests/nixlib/modules/conformance-flag.nix ]; }'],
        "c: c.k3s.flags",
        value=["once"],
    ),
    Case("no-value-is-an-error-when-read", ["{ }"], "c: c.name", error="was accessed but has no value defined"),
    Case(
        "null-and-non-null-conflict",
        ['{ k3s.nodeName = null; }', '{ k3s.nodeName = "x"; }'],
        "c: c.k3s.nodeName",
        error="defined both null and not null",
    ),
    Case(
        "submodule-values-merge",
        ['{ units.k3s.after = [ "a" ]; }', '{ lib, ... }: { units.k3s.after = [ "b" ]; units.gone = lib.mkIf false { }; }'],
        "c: c.units",
        value={"k3s": {"after": ["a", "b"]}},
    ),
    Case(
        "submodule-refuses-undeclared",
        ['{ units.k3s.afer = [ "a" ]; }'],
        "c: c.units.k3s.after",
        error="The option `units.k3s.afer' does not exist",
    ),
    Case(
        "freeform-submodule-takes-undeclared",
        ['{ settings.extra = "x"; }'],
        "c: c.settings",
        value={"extra": "x", "fixed": True},
    ),
    Case(
        "addcheck-passes-every-definition-that-holds",
        ['{ service.Restart = "always"; }', '{ service.Type = "exec"; }'],
        "c: c.service",
        value={"Restart": "always", "Type": "exec"},
    ),
    Case(
        "addcheck-refuses-a-definition-that-fails-it",
        ['{ service.Restart = "sometimes"; }'],
        "c: c.service",
        error="is not of type",
    ),
    Case(
        "top-level-config-with-other-attributes",
        ['{ config.name = "a"; enable = true; }'],
        "c: c.name",
        error="has an unsupported attribute `enable'",
    ),
]
