"""A stack file read, validated and planned in one step: what the offline commands start from."""

from __future__ import annotations

import sys
from pathlib import Path

from flakefleet.config import ConfigError, StackConfig, parse_stack_config
from flakefleet.config.stackfile import STACKS, read_stack_file, stack_names
from flakefleet.plan.inventory import Inventory, plan_inventory


def load_stack(stack: str, stacks_dir: Path = STACKS) -> tuple[StackConfig, Inventory]:
    """A stack file read and validated: (config, inventory); ConfigError with every problem,
    an unknown stack included."""
    if stack not in stack_names(stacks_dir):
        raise ConfigError([f"no stack {stack!r} in {stacks_dir} (have: {', '.join(stack_names(stacks_dir))})"])
    raw = read_stack_file(stack, stacks_dir)
    cfg = parse_stack_config(raw, raw.get("aws:region"), stacks_dir=stacks_dir)
    return cfg, plan_inventory(cfg)


def load_stack_or_report(stack: str, stacks_dir: Path = STACKS) -> tuple[StackConfig, Inventory] | None:
    """load_stack for the command line: (config, inventory), or None after printing the stack's
    problems on stderr, one a line."""
    try:
        return load_stack(stack, stacks_dir)
    except ConfigError as err:
        print(f"invalid configuration for stack {stack}:", *err.problems, sep="\n  ", file=sys.stderr)
        return None
