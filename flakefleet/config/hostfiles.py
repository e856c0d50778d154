"""`hosts_file`: a metal pool's hosts in a file of their own, beside the stack file.

The Pulumi engine hands a program the whole stack config in one environment variable, and Linux
refuses one string over 128 KiB (MAX_ARG_STRLEN): written inline in `flakefleet:pools`, about 760
bring-your-own hosts stop `pulumi preview` before the program starts. A pool may instead name a
YAML file under `stacks/` holding its hosts (a list, each host as `hosts[]` takes it); the program
reads it, so the config stays a few hundred bytes a pool whatever the fleet. The hosts are then
validated by the same rules as hosts written inline, and each problem names the file, the line
of the host and its key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from flakefleet.config.base import NAMESPACE, ConfigError
from flakefleet.config.stackfile import load_yaml_document

HOSTS_FILE = "hosts_file"


@dataclass(frozen=True)
class HostFile:
    """Where a pool's hosts came from: the file as shown in messages, and each host's line."""

    name: str
    lines: tuple[int, ...]


def _path_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a path under stacks/, e.g. inventory/<stack>-<pool>.yaml"
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        return f"{value!r} must be a relative path under stacks/ (no `..`, not absolute): the file goes with the stack"
    if path.suffix not in (".yaml", ".yml"):
        return f"{value!r} must be a YAML file (.yaml or .yml)"
    return None


def read_hosts(path: Path, name: str) -> tuple[list[Any], tuple[int, ...]]:
    """The hosts a file lists and each one's line; ConfigError with one line per problem (the
    stack file's reader: UTF-8, no duplicate keys, merge keys as the Pulumi CLI merges them)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError([f"{name}: cannot read it ({err.strerror or err})"]) from None
    document, node = load_yaml_document(data, name)
    if not isinstance(document, list) or not isinstance(node, yaml.SequenceNode):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        raise ConfigError([f"{name}: must be a list of hosts (- name: ..., address: ..., ssh_host_key: ...), "
                           f"not {kind}"])
    return document, tuple(item.start_mark.line + 1 for item in node.value)


def expand(pools: Any, stacks_dir: Path) -> tuple[Any, list[str], dict[int, HostFile], set[str]]:
    """`flakefleet:pools` with each `hosts_file` read into the pool's `hosts`; the problems (one
    line each), where each pool's hosts came from, and the paths whose hosts are unknown (a file
    that could not be read: its hosts are not reported missing as well)."""
    if not isinstance(pools, list):
        return pools, [], {}, set()
    out: list[Any] = []
    problems: list[str] = []
    files: dict[int, HostFile] = {}
    unknown: set[str] = set()
    for i, pool in enumerate(pools):
        if not isinstance(pool, dict) or HOSTS_FILE not in pool:
            out.append(pool)
            continue
        at = f"{NAMESPACE}:pools[{i}].{HOSTS_FILE}"
        pool = dict(pool)
        value = pool[HOSTS_FILE]
        problem = _path_problem(value)
        if problem is None and "hosts" in pool:
            problem = "not with `hosts`: the pool's hosts are listed in the stack or in the file, not both"
        if problem is None and pool.get("provider", "ec2") != "metal":
            problem = "only for provider metal (bring-your-own hosts); an ec2 pool's hosts are created from count"
        if problem is not None:  # reported here, once: the field goes no further
            problems.append(f"{at}: {problem}")
            unknown.add(f"pools[{i}].hosts")
            pool.pop(HOSTS_FILE)
            out.append(pool)
            continue
        shown = f"stacks/{PurePosixPath(value)}"
        try:
            hosts, lines = read_hosts(stacks_dir / value, shown)
        except ConfigError as err:
            problems += [f"{at}: {line}" for line in err.problems]
            unknown.add(f"pools[{i}].hosts")
            out.append(pool)
            continue
        pool["hosts"] = hosts
        files[i] = HostFile(shown, lines)
        out.append(pool)
    return out, problems, files, unknown


def located(problems: list[str], files: dict[int, HostFile]) -> list[str]:
    """Problems about a host read from a file, led by the file and the host's line
    (`stacks/inventory/prod.yaml:12: flakefleet:pools[1].hosts[3].address: ...`)."""
    if not files:
        return problems
    pattern = re.compile(rf"^{re.escape(NAMESPACE)}:pools\[(\d+)\]\.hosts\[(\d+)\]")
    out = []
    for line in problems:
        match = pattern.match(line)
        source = files.get(int(match.group(1))) if match else None
        j = int(match.group(2)) if match else -1
        out.append(f"{source.name}:{source.lines[j]}: {line}" if source and j < len(source.lines) else line)
    return out
