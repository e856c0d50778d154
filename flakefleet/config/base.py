"""What every stack key shares: the problem format, the model base, and partial validation.

A problem is one line, `flakefleet:<key path>: <problem>`. Validation keeps whatever is valid
around a bad field (a bad host leaves its pool's other hosts, a bad field leaves the rest of its
pool) and records what it dropped, so the cross-key rules can skip what they cannot know instead
of reporting problems that are not there.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

NAMESPACE = "flakefleet"
Role = Literal["control-plane", "worker"]
Arch = Literal["x86_64", "aarch64"]

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]


def _root_only(user: str) -> str:
    if user != "root":
        raise ValueError(f"{user!r}: delivery logs in as root (the nodes authorize the deploy keys for root only, "
                         "nixos/common/openssh.nix, and switching a system needs root); leave it out or set root")
    return user


# The SSH user of delivery: root, the only one that can work (no sudo path exists).
SshUser = Annotated[str, AfterValidator(_root_only)]


class ConfigError(Exception):
    """Bad stack configuration: `problems` holds one line per problem, each naming its key path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean X?)` for a near miss, else ``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def key_path(*parts: Any) -> str:
    """("pools", 1, "hosts", 0, "address") -> `pools[1].hosts[0].address`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


_REWRITES = {"missing": "required"}


def _branches(annotation: Any) -> tuple[list[Any], bool]:
    """The non-None alternatives of a type (Annotated unwrapped), and whether it was Optional."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args, len(args) < len(typing.get_args(annotation))
    return [annotation], False


def _clean_loc(model: type[Model], loc: tuple) -> tuple[tuple, bool]:
    """The key path of an error, without the tags pydantic adds for a union's alternatives (and
    for validators): walking the field types along `loc`, a union of several alternatives puts
    one tag first, whatever it is called. Also whether the path went through such a union."""
    out: list[Any] = []
    current: Any = model
    through_union = False
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        alternatives, _ = _branches(current)
        if len(alternatives) > 1:  # `part` names the alternative that failed
            through_union = True
            current = next((a for a in alternatives if getattr(a, "__name__", str(a)) == part), Any)
            continue
        current = alternatives[0]
        if isinstance(part, str) and (part.startswith("function-") or "[" in part) and not out:
            continue
        out.append(part)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part) if isinstance(part, str) else None
            current = info.annotation if info is not None else Any
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            current = Any
    return tuple(out), through_union


def _message(error: dict, model: type[Model], loc: tuple) -> str:
    message = _REWRITES.get(error["type"], error["msg"].removeprefix("Value error, "))
    if error["type"] == "extra_forbidden":
        message = "unknown key" + did_you_mean(str(loc[-1]), model.model_fields)
    elif error["type"] == "string_pattern_mismatch" and error["ctx"].get("pattern") == DNS_LABEL:
        message = "must be a lowercase DNS label (a-z, 0-9, '-', not starting or ending with '-')"
    return message


def _problems(path: str, errors: list[dict], model: type[Model]) -> list[str]:
    """One line per key path: the alternatives of a union that all failed become one line
    (`Input should be a valid integer or a valid string`), not one per alternative."""
    by_path: dict[str, list[str]] = {}
    unions: set[str] = set()
    for error in errors:
        loc, through_union = _clean_loc(model, tuple(error["loc"]))
        at = f"{NAMESPACE}:{key_path(path, *loc)}"
        by_path.setdefault(at, []).append(_message(error, model, loc))
        if through_union:
            unions.add(at)
    lines = []
    for at, messages in by_path.items():
        messages = list(dict.fromkeys(messages))
        if at in unions and len(messages) > 1 and all(m.startswith("Input should be ") for m in messages):
            wanted = [m.removeprefix("Input should be ").split(", ")[0] for m in messages]
            lines.append(f"{at}: Input should be {' or '.join(dict.fromkeys(wanted))}")
        else:
            lines += [f"{at}: {m}" for m in messages]
    return lines


def _nested(model: type[Model], field: str) -> tuple[type[Model] | None, bool]:
    """The model a field holds (or holds a list of), and whether it is a list."""
    info = model.model_fields.get(field)
    if info is None:
        return None, False
    annotation = info.annotation
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return (item, True) if isinstance(item, type) and issubclass(item, Model) else (None, True)
    return (annotation, False) if isinstance(annotation, type) and issubclass(annotation, Model) else (None, False)


def validate(model: type[Model], value: Any, path: str) -> tuple[Any, list[str], set[str]]:
    """(model, or a partial model without its bad fields, or None; problems; dropped key paths).

    Nested models are validated item by item, so one bad host drops that host, not its pool's
    whole host list; a bad field is dropped and recorded in the returned paths.
    """
    try:
        return model.model_validate(value), [], set()
    except ValidationError as err:
        if not isinstance(value, dict):
            return None, _problems(path, err.errors(include_url=False), model), {path}
        errors = err.errors(include_url=False)
    problems: list[str] = []
    dropped: set[str] = set()
    kept = dict(value)
    for field in dict.fromkeys(e["loc"][0] for e in errors if e["loc"]):
        at = key_path(path, field)
        sub, is_list = _nested(model, field)
        raw = value.get(field)
        if sub is not None and is_list and isinstance(raw, list):
            items = []
            for k, item in enumerate(raw):
                partial, more, gone = validate(sub, item, key_path(at, k))
                problems += more
                dropped |= gone
                if partial is not None:
                    items.append(partial.model_dump())
            kept[field] = items
        elif sub is not None and not is_list and isinstance(raw, dict):
            partial, more, gone = validate(sub, raw, at)
            problems += more
            dropped |= gone
            if partial is None:
                kept.pop(field)
            else:
                kept[field] = partial.model_dump()
        else:
            problems += _problems(path, [e for e in errors if e["loc"] and e["loc"][0] == field], model)
            kept.pop(field, None)
            if field in model.model_fields:
                dropped.add(at)
    try:
        return model.model_validate(kept), list(dict.fromkeys(problems)), dropped
    except ValidationError as err:
        # A required field was dropped (already reported) or missing (reported now).
        again = _problems(path, [e for e in err.errors(include_url=False)
                                 if key_path(path, *e["loc"][:1]) not in dropped], model)
        return None, list(dict.fromkeys(problems + again)), dropped | {path}
