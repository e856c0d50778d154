"""The last update's stack outputs, as every command reads them: from a file (`--outputs F`,
written by `pulumi stack output --json`) or from Pulumi's state (`--stack S`, through the Pulumi
CLI). "No update yet" (`{}`) is an answer, not an error; a missing file, one that is not JSON or
not the object Pulumi prints, and a Pulumi CLI that is missing or fails are each one line.

No command needs a secret output (kubeconfig, the server token), so none is asked for: the CLI
prints them as "[secret]" and they stay that way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flakefleet.common.cli import CommandError, add_json

ROOT = Path(__file__).resolve().parents[2]  # the project: where Pulumi.yaml is, for the Pulumi CLI

WRITE_IT = "pulumi stack output --json --stack {stack} > {path}"
PULUMI_CLI = "pulumi"


@dataclass(frozen=True)
class StackOutputs:
    """What the last update exported (`raw`, as `pulumi stack output --json` prints it) and where
    it was read (`source`, for messages)."""

    raw: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def updated(self) -> bool:
        """Whether an update has run: the program always exports `nodes`."""
        return isinstance(self.raw.get("nodes"), dict)

    @property
    def nodes(self) -> dict[str, dict]:
        """Host name -> its row (address, host key, system, last outcome ...); {} before an update."""
        nodes = self.raw.get("nodes")
        return {k: v for k, v in nodes.items() if isinstance(v, dict)} if isinstance(nodes, dict) else {}

    def table(self, name: str) -> dict:
        """An output that is a mapping ({} when absent, null or of another shape)."""
        value = self.raw.get(name)
        return value if isinstance(value, dict) else {}

    def not_yet(self, stack: str | None) -> str:
        """The line a command prints when there is no update to read yet."""
        who = f"stack {stack}" if stack else self.source
        return f"{who}: no update yet (its outputs have no `nodes`): nothing is deployed; `pulumi up` first"


def parse_outputs(text: str, source: str) -> StackOutputs:
    """`pulumi stack output --json`'s text; CommandError in one line when it is not that."""
    try:
        value = json.loads(text) if text.strip() else None
    except json.JSONDecodeError as err:
        raise CommandError(f"{source}: not JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                           "expected what `pulumi stack output --json` prints") from None
    if not isinstance(value, dict):
        what = "empty" if value is None else f"a JSON {type(value).__name__.replace('dict', 'object')}"
        raise CommandError(f"{source}: {what}, not the JSON object `pulumi stack output --json` prints "
                           "(`{}` before the first update)")
    return StackOutputs(value, source)


def read_file(path: Path, stack: str | None = None) -> StackOutputs:
    """Outputs from a file; one line when it is missing or unreadable."""
    write = WRITE_IT.format(stack=stack or "S", path=path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CommandError(f"--outputs {path}: no such file; write it with `{write}`") from None
    except IsADirectoryError:
        raise CommandError(f"--outputs {path}: a directory, not a file; write it with `{write}`") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CommandError(f"--outputs {path}: cannot be read ({err.__class__.__name__}: {err})") from None
    return parse_outputs(text, f"--outputs {path}")


def read_pulumi(stack: str, cwd: Path = ROOT, pulumi: str = PULUMI_CLI) -> StackOutputs:
    """Outputs from Pulumi's state through its CLI; one line when the CLI is missing or fails."""
    if shutil.which(pulumi) is None:
        raise CommandError(f"--stack {stack}: reading the stack's outputs needs the Pulumi CLI, which is not on "
                           f"PATH: put it there (docs/operations.md), or pass --outputs FILE written by "
                           f"`{WRITE_IT.format(stack=stack, path='FILE')}` where it is")
    try:
        res = subprocess.run([pulumi, "stack", "output", "--json", "--stack", stack], cwd=cwd,
                             capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CommandError(f"--stack {stack}: `pulumi stack output` could not run: {err}") from None
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        raise CommandError(f"--stack {stack}: `pulumi stack output --json --stack {stack}` failed: {last}")
    return parse_outputs(res.stdout, f"pulumi stack output --stack {stack}")


def read_outputs(outputs: Path | None, stack: str | None) -> StackOutputs:
    """The `--outputs F` / `--stack S` pair every command takes: the file when given, else the
    stack's state through the Pulumi CLI."""
    if outputs is not None:
        return read_file(outputs, stack)
    if stack:
        return read_pulumi(stack)
    raise CommandError("say which stack: --stack S (its outputs read with the Pulumi CLI) or --outputs FILE")


def read_state(args) -> StackOutputs:
    """`read_outputs` of a command that reports on what is deployed (status, drift): before the
    first update it says so on stderr, and reports on nothing."""
    outputs = read_outputs(args.outputs, args.stack)
    if not outputs.updated:
        print(outputs.not_yet(args.stack), file=sys.stderr)
    return outputs


def add_report_arguments(parser) -> None:
    """The flags of a command that reports on what is deployed: the --stack / --outputs pair, --json."""
    add_state_arguments(parser)
    add_json(parser)


def add_state_arguments(parser, stack_required: bool = False, stacks_dir: Path | None = None) -> None:
    """The `--stack` / `--outputs` pair (and `--stacks-dir`, defaulting to `stacks_dir`, where the
    stack file is read too)."""
    parser.add_argument("--stack", required=stack_required, metavar="S",
                        help="the stack (stacks/Pulumi.<S>.yaml); without --outputs its last update's outputs are "
                        "read with the Pulumi CLI (`pulumi stack output --json --stack S`)")
    parser.add_argument("--outputs", type=Path, metavar="FILE",
                        help="the last update's outputs from a file written by `pulumi stack output --json` "
                        "(`{}` before the first update), instead of asking the Pulumi CLI")
    if stacks_dir is not None:
        parser.add_argument("--stacks-dir", type=Path, default=stacks_dir, metavar="DIR",
                            help="where the Pulumi.<stack>.yaml files are (default: stacks/)")
