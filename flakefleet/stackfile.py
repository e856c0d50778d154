"""Read a stack file from stacks/ as Pulumi hands its config to the program.

A broken file is reported the way a bad value is: one line per problem, naming the file, line
and column, never a traceback. YAML is read as Pulumi's CLI reads it where it matters: a key
written twice is refused (naming both lines), and a date or time written without quotes stays
the text the user wrote rather than becoming a timestamp.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from flakefleet.config import ConfigError, parse_stack_config
from flakefleet.inventory import plan_inventory

STACKS = Path(__file__).resolve().parent.parent / "stacks"


class _Loader(yaml.SafeLoader):
    """SafeLoader without timestamps, refusing duplicate keys (all of them, collected)."""

    duplicates: list[str]


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            loader.duplicates.append(f"{key_node.start_mark.name}:{line}:{key_node.start_mark.column + 1}: "
                                     f"key {key!r} is written twice (lines {seen[key]} and {line}); keep one")
        seen.setdefault(key, line)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

_HINTS = {
    "found character '\\t' that cannot start any token": "a tab character; YAML indents with spaces only",
    "while scanning an alias": "an unquoted value starting with '*' is read as a YAML alias; quote it "
    "(e.g. snapshot_schedule: \"*/30 * * * *\")",
    "found undefined alias": "an unquoted value starting with '*' is read as a YAML alias; quote it",
}


def _unclosed_bracket(text: str) -> tuple[int, int, str] | None:
    """(line, column, bracket) of the first '[' or '{' never closed, outside quotes and comments."""
    stack: list[tuple[int, int, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        quote = None
        for c, ch in enumerate(line, 1):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#" and (c == 1 or line[c - 2].isspace()):
                break
            elif ch in "[{":
                stack.append((n, c, ch))
            elif ch in "]}" and stack:
                stack.pop()
    return stack[0] if stack else None


def _yaml_problem(name: str, text: str, err: yaml.YAMLError) -> str:
    context, problem = getattr(err, "context", None) or "", getattr(err, "problem", None) or str(err)
    if "flow" in context and "<stream end>" in problem and (opened := _unclosed_bracket(text)):
        return f"{name}:{opened[0]}:{opened[1]}: this '{opened[2]}' is never closed"
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
    hint = next((h for k, h in _HINTS.items() if k in problem or k in context), None)
    return f"{where}: {hint or ' '.join(filter(None, [problem, f'({context})' if context else '']))}"


def parse_stack_yaml(text: str, name: str) -> dict[str, Any]:
    """The `config` mapping of a stack file's text; ConfigError with one line per problem."""
    loader = _Loader(text)
    loader.name = name
    loader.duplicates = []
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as err:
        raise ConfigError([_yaml_problem(name, text, err)]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(loader.duplicates)
    if document is None:
        raise ConfigError([f"{name}: the file is empty; a stack file holds `config:` with the stack's keys"])
    if not isinstance(document, dict):
        raise ConfigError([f"{name}: must be a mapping with a `config:` key, not a {type(document).__name__}"])
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError([f"{name}: `config` must map keys (flakefleet:cluster, ...) to values, "
                           f"not a {type(config).__name__}"])
    return config


def read_stack_file(stack: str, stacks_dir: Path = STACKS) -> dict[str, Any]:
    """A stack's config, key -> value, with structured values as JSON text (as Pulumi passes them)."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    try:
        name = str(path.relative_to(Path.cwd()))
    except ValueError:
        name = str(path)
    config = parse_stack_yaml(path.read_text(), name)
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def load_stack(stack: str, stacks_dir: Path = STACKS):
    """A stack file read and validated: (config, inventory); ConfigError with every problem,
    an unknown stack included."""
    if stack not in stack_names(stacks_dir):
        raise ConfigError([f"no stack {stack!r} in {stacks_dir} (have: {', '.join(stack_names(stacks_dir))})"])
    raw = read_stack_file(stack, stacks_dir)
    cfg = parse_stack_config(raw, raw.get("aws:region"))
    return cfg, plan_inventory(cfg)


def load_stack_or_report(stack: str, stacks_dir: Path = STACKS):
    """load_stack for the command line: (config, inventory), or None after printing the stack's
    problems on stderr, one a line."""
    try:
        return load_stack(stack, stacks_dir)
    except ConfigError as err:
        print(f"invalid configuration for stack {stack}:", *err.problems, sep="\n  ", file=sys.stderr)
        return None


def stack_names(stacks_dir: Path = STACKS) -> list[str]:
    """Every stack with a file in stacks/."""
    return sorted(p.name.split(".")[1] for p in stacks_dir.glob("Pulumi.*.yaml"))
