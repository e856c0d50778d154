"""Read a stack file from stacks/ as Pulumi hands its config to the program.

A broken file is reported the way a bad value is: one line per problem, naming the file, line
and column, never a traceback. YAML is read as Pulumi's CLI reads it (gopkg.in/yaml.v3, through
sdk/go/common/encoding/marshal.go) where it matters: UTF-8 text (UTF-16 with a byte-order mark
too), anything else refused at its first bad byte; control characters refused; merge keys
(`<<: *defaults`) merged, explicit keys winning and the first of several merged maps winning; a
key written twice in one mapping refused (naming both lines); and a date or time written
without quotes stays the text the user wrote rather than becoming a timestamp.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flakefleet.config.base import ConfigError
from flakefleet.facts.flake import ROOT

STACKS = ROOT / "stacks"


class _Loader(yaml.SafeLoader):
    """SafeLoader without timestamps, refusing duplicate keys (all of them, collected)."""

    duplicates: list[str]


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


MERGE_TAG = "tag:yaml.org,2002:merge"


def _flatten(node: yaml.MappingNode) -> list:
    """The mapping's pairs with its merge keys (`<<: *a`, `<<: [*a, *b]`) replaced by what they merge,
    as yaml.v3 merges (decode.go: mapping, merge): keys written in the mapping win over merged
    ones, and of several merged maps the first wins. Pairs later in the list win when the mapping
    is constructed, so the merged ones come first, the first merged map last among them.
    (PyYAML's own flatten_mapping lets the last merged map win.)"""
    explicit, sources = [], []
    for key_node, value_node in node.value:
        if key_node.tag != MERGE_TAG:
            explicit.append((key_node, value_node))
            continue
        maps = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in maps:
            if not isinstance(source, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a merge key (<<) takes a mapping or a list of mappings", source.start_mark)
        sources += maps
    node.value = [pair for source in reversed(sources) for pair in _flatten(source)] + explicit
    return node.value


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    # Keys written twice in this mapping (yaml.v3 compares the keys as written, merge keys aside),
    # then the merge keys flattened as yaml.v3 merges them.
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            loader.duplicates.append(f"{key_node.start_mark.name}:{line}:{key_node.start_mark.column + 1}: "
                                     f"key {key!r} is written twice (lines {seen[key]} and {line}); keep one")
        seen.setdefault(key, line)
    _flatten(node)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

_HINTS = {
    "found character '\\t' that cannot start any token": "a tab character; YAML indents with spaces only",
    "while scanning an alias": "an unquoted value starting with '*' is read as a YAML alias; quote it "
    "(e.g. snapshot_schedule: \"*/30 * * * *\")",
}
CRON_HINT = "an unquoted value starting with '*' is read as a YAML alias; quote it"
# What a cron schedule's fields look like (an alias to an anchor does not continue so).
_CRON_REST = re.compile(r"^\*\S*(\s+[-*/,0-9A-Za-z?]+){4}\s*(#.*)?$")


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


def _line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of character `offset` of `text`."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _anchors(text: str) -> list[str]:
    """The anchor names (`&name`) a stack file defines, outside quotes and comments (roughly)."""
    return sorted(set(re.findall(r"(?:^|[\s\[{,:-])&([^\s,\[\]{}]+)", re.sub(r"#.*", "", text))))


def _undefined_alias(text: str, mark) -> str:
    """What to say of an alias that names no anchor: a cron schedule written unquoted, or an
    alias to an anchor that is not there (a typo, or one defined further down)."""
    line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
    rest = line[mark.column:]
    if _CRON_REST.match(rest):
        return CRON_HINT
    alias = re.match(r"\*([^\s,\[\]{}]+)", rest)
    name = alias.group(1) if alias else rest.strip()
    anchors = _anchors(text)
    if name in anchors:
        return f"*{name} comes before its anchor &{name}; an anchor must be defined before its alias"
    close = difflib.get_close_matches(name, anchors, n=1, cutoff=0.6)
    known = f" (anchors: {', '.join('&' + a for a in anchors)})" if anchors else " (the file defines no anchor)"
    hint = f"; did you mean *{close[0]}?" if close else "; an anchor must be defined before its alias"
    return f"*{name} names no anchor{known}{hint}"


def _yaml_problem(name: str, text: str, err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.reader.ReaderError):  # a character YAML refuses (yaml.v3 too: control characters)
        line, col = _line_col(text, err.position)
        return (f"{name}:{line}:{col}: character U+{err.character:04X} is not allowed in a YAML file "
                "(control characters are refused); remove it")
    context, problem = getattr(err, "context", None) or "", getattr(err, "problem", None) or str(err)
    if "flow" in context and "<stream end>" in problem and (opened := _unclosed_bracket(text)):
        return f"{name}:{opened[0]}:{opened[1]}: this '{opened[2]}' is never closed"
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
    if "found undefined alias" in problem and mark is not None:
        return f"{where}: {_undefined_alias(text, mark)}"
    hint = next((h for k, h in _HINTS.items() if k in problem or k in context), None)
    return f"{where}: {hint or ' '.join(filter(None, [problem, f'({context})' if context else '']))}"


def decode_stack_file(data: bytes, name: str) -> str:
    """A stack file's text as Pulumi's CLI reads it: UTF-8 (a byte-order mark dropped), or UTF-16
    with its byte-order mark; anything else is one line naming the first byte that is not UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ConfigError([f"{name}: starts with a UTF-16 byte-order mark but is not UTF-16 text; "
                               "save it as UTF-8"]) from None
    body = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        prefix = body[: err.start].decode("utf-8")
        line, col = _line_col(prefix, len(prefix))
        raise ConfigError([f"{name}:{line}:{col}: byte 0x{body[err.start]:02x} is not UTF-8 text (Pulumi reads stack "
                           "files as UTF-8; an editor saved it in another encoding, e.g. Latin-1): save the file "
                           "as UTF-8"]) from None


def load_yaml_document(text: str | bytes, name: str) -> tuple[Any, yaml.Node | None]:
    """A YAML file's document and its node (for lines), read as Pulumi's CLI reads a stack file;
    ConfigError with one line per problem."""
    if isinstance(text, bytes):
        text = decode_stack_file(text, name)
    try:
        loader = _Loader(text)  # the reader checks every character when it is made
    except yaml.YAMLError as err:
        raise ConfigError([_yaml_problem(name, text, err)]) from None
    loader.name = name
    loader.duplicates = []
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        raise ConfigError([_yaml_problem(name, text, err)]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(loader.duplicates)
    return document, node


def parse_stack_yaml(text: str | bytes, name: str) -> dict[str, Any]:
    """The `config` mapping of a stack file's text (or bytes, decoded as Pulumi does); ConfigError
    with one line per problem."""
    document, _ = load_yaml_document(text, name)
    if document is None:
        raise ConfigError([f"{name}: the file is empty; a stack file holds `config:` with the stack's keys"])
    if not isinstance(document, dict):
        raise ConfigError([f"{name}: must be a mapping with a `config:` key, not a {type(document).__name__}"])
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError([f"{name}: `config` must map keys (flakefleet:cluster, ...) to values, "
                           f"not a {type(config).__name__}"])
    return config


@dataclass(frozen=True)
class Secure:
    """A value the stack file holds encrypted (`key: {secure: v1:...}`, what `pulumi config set
    --secret` writes). Only the Pulumi CLI can decrypt it; flakefleet's offline commands never
    try: they know the key is set, not what it holds."""

    ciphertext: str = field(repr=False)

    def __str__(self) -> str:
        return "[secret]"


def _secure(value: Any) -> Secure | None:
    """A `{secure: ...}` mapping as Pulumi writes it (workspace/config.go: a map of one key
    "secure" with a string), else None."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("secure"), str):
        return Secure(value["secure"])
    return None


def secure_paths(value: Any, path: str) -> list[str]:
    """Where a structured value holds an encrypted part (`pulumi config set --path --secret`)."""
    if _secure(value) is not None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in secure_paths(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in secure_paths(v, f"{path}[{i}]")]
    return []


def config_value(value: Any) -> Any:
    """One stack file value as the program's readers take it: text as it is, a secure value as
    `Secure`, anything structured as JSON text (as Pulumi passes structured config)."""
    if isinstance(value, str):
        return value
    return _secure(value) or json.dumps(value)


def read_stack_file(stack: str, stacks_dir: Path = STACKS) -> dict[str, Any]:
    """A stack's config, key -> value, with structured values as JSON text (as Pulumi passes them)
    and encrypted ones as `Secure` (never decoded here)."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    try:
        name = str(path.relative_to(Path.cwd()))
    except ValueError:
        name = str(path)
    config = parse_stack_yaml(path.read_bytes(), name)
    return {str(k): config_value(v) for k, v in config.items()}


def stack_names(stacks_dir: Path = STACKS) -> list[str]:
    """Every stack with a file in stacks/."""
    return sorted(p.name.split(".")[1] for p in stacks_dir.glob("Pulumi.*.yaml"))
