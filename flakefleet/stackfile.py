"""Read a stack file from stacks/ as Pulumi hands its config to the program."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

STACKS = Path(__file__).resolve().parent.parent / "stacks"


def read_stack_file(stack: str, stacks_dir: Path = STACKS) -> dict[str, Any]:
    """A stack's config, key -> value, with structured values as JSON text (as Pulumi passes them)."""
    config = yaml.safe_load((stacks_dir / f"Pulumi.{stack}.yaml").read_text()).get("config") or {}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def stack_names(stacks_dir: Path = STACKS) -> list[str]:
    """Every stack with a file in stacks/."""
    return sorted(p.name.split(".")[1] for p in stacks_dir.glob("Pulumi.*.yaml"))
