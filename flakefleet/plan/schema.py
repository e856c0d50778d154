"""The pool spec's schema, emitted for the Nix side: nixos/common/spec-schema.json, from which
nixos/common/flakefleet.nix declares the `flakefleet.*` options (contract.py:PoolSpec is the one
definition; `flakefleet configurations` writes the file, a test holds it current).

Types map onto NixOS option types: str (a `pattern`: strMatching), bool, int (`unsigned`:
ints.unsigned), Literal (enum), list (listOf), dict (attrsOf; of Any: anything), `X | None`
(nullOr), a dataclass (submodule; a field that is a dataclass itself: a group of options)."""

from __future__ import annotations

import hashlib
import json
import types
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from flakefleet.plan.contract import PoolSpec, camel

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "nixos" / "common" / "spec-schema.json"


def nix_type(hint: Any, meta: dict) -> Any:
    """The option type of a field, as the JSON nixos/common/flakefleet.nix reads."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return {"nullOr": nix_type(inner[0], meta)}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is list:
        return {"listOf": nix_type(args[0], {})}
    if origin is dict:
        return {"attrsOf": "anything" if args[1] is Any else nix_type(args[1], {})}
    if is_dataclass(hint):
        return {"submodule": options_of(hint)}
    if hint is bool:
        return "bool"
    if hint is int:
        return "ints.unsigned" if meta.get("unsigned") else "int"
    if hint is str:
        return {"strMatching": meta["pattern"]} if meta.get("pattern") else "str"
    raise TypeError(f"no NixOS option type for {hint!r}")


def declaration(hint: Any, f: Any) -> dict:
    """One field as an option (or a group of options, for a dataclass field)."""
    meta = dict(f.metadata)
    if is_dataclass(hint):
        return {"group": options_of(hint), "description": meta["description"]}
    decl: dict = {"type": nix_type(hint, meta), "description": meta["description"]}
    if f.default is not MISSING:
        decl["default"] = f.default
    elif f.default_factory is not MISSING:
        decl["default"] = f.default_factory()
    if meta.get("example") is not None:
        decl["example"] = meta["example"]
    return decl


def options_of(cls: Any) -> dict:
    hints = get_type_hints(cls)
    return {camel(f.name): declaration(hints[f.name], f) for f in fields(cls)
            if not f.metadata.get("selects")}


def spec_schema(spec: type = PoolSpec) -> dict:
    """{"options": the `flakefleet.*` declarations, "selects": the keys that choose modules}."""
    hints = get_type_hints(spec)
    return {
        "options": options_of(spec),
        "selects": {camel(f.name): {"type": nix_type(hints[f.name], dict(f.metadata)),
                                    "description": f.metadata["description"]}
                    for f in fields(spec) if f.metadata.get("selects")},
    }


def schema_text(spec: type = PoolSpec) -> str:
    return json.dumps(spec_schema(spec), indent=2, sort_keys=True) + "\n"


SPEC_SCHEMA_DIGEST = hashlib.sha256(schema_text().encode()).hexdigest()


def write_schema(path: Path = SCHEMA_PATH, spec: type = PoolSpec) -> bool:
    """Write the schema where the flake reads it; True when it changed."""
    text = schema_text(spec)
    if path.is_file() and path.read_text() == text:
        return False
    path.write_text(text)
    return True
