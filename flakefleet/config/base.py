"""What every stack key shares: the problem format, the model base, and partial validation.

A problem is one line, `flakefleet:<key path>: <problem>`. Validation keeps whatever is valid
around a bad field (a bad host leaves its pool's other hosts, a bad field leaves the rest of its
pool) and records what it dropped, so the cross-key rules can skip what they cannot know instead
of reporting problems that are not there.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

NAMESPACE = "flakefleet"
Role = Literal["control-plane", "worker"]
Arch = Literal["x86_64", "aarch64"]

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]


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


def _problem(path: str, error: dict, model: type[Model]) -> str:
    # Drop the union/constraint tags pydantic adds for Optional[Annotated[...]] fields.
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    message = _REWRITES.get(error["type"], error["msg"].removeprefix("Value error, "))
    if error["type"] == "extra_forbidden":
        message = "unknown key" + did_you_mean(str(loc[-1]), model.model_fields)
    elif error["type"] == "string_pattern_mismatch" and error["ctx"].get("pattern") == DNS_LABEL:
        message = "must be a lowercase DNS label (a-z, 0-9, '-', not starting or ending with '-')"
    return f"{NAMESPACE}:{key_path(path, *loc)}: {message}"


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
            return None, [_problem(path, e, model) for e in err.errors(include_url=False)], {path}
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
            problems += [_problem(path, e, model) for e in errors if e["loc"] and e["loc"][0] == field]
            kept.pop(field, None)
            if field in model.model_fields:
                dropped.add(at)
    try:
        return model.model_validate(kept), list(dict.fromkeys(problems)), dropped
    except ValidationError as err:
        # A required field was dropped (already reported) or missing (reported now).
        again = [_problem(path, e, model) for e in err.errors(include_url=False)
                 if key_path(path, *e["loc"][:1]) not in dropped]
        return None, list(dict.fromkeys(problems + again)), dropped | {path}
