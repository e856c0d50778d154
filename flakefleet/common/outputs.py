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
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from flakefleet.common.cli import CommandError, add_json

ROOT = Path(__file__).resolve().parents[2]  # the project: where Pulumi.yaml is, for the Pulumi CLI

WRITE_IT = "pulumi stack output --json --stack {stack} > {path}"
PULUMI_CLI = "pulumi"


@dataclass(frozen=True)
class NodeRow:
    """One host's row of the `nodes` output (program/outputs.py:node_table writes it). Rows of
    older updates lack some keys: they read as the defaults, and `wanted` as `system` (what
    outputs from before `wanted` carried it in)."""

    role: str = "?"
    pool: str = "?"
    address: str = ""
    instance_type: str | None = None
    instance_id: str | None = None
    wanted: str = ""
    """The system the stack wants on the host."""
    system: str = ""
    """The system its last delivery confirmed there ("" when unknown)."""
    reboot_pending: bool = False
    last_outcome: str | None = None
    ssh_port: int = 22
    ssh_user: str = "root"
    host_key: str = ""
    install: dict | None = None
    """A bootstrapped host's layout and last reinstall request."""

    @classmethod
    def of(cls, row: dict) -> NodeRow:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known and v is not None}
        if not values.get("wanted"):
            values["wanted"] = values.get("system", "")
        return cls(**values)


@dataclass(frozen=True)
class PulledPoolRow:
    """One autoscaled pool of the `pulled_pools` output (components/autoscaling.py): its Auto
    Scaling group, the cache bucket its pointers and reports are in, its cluster and region."""

    group: str
    bucket: str
    cluster: str
    region: str = ""


@dataclass(frozen=True)
class StackOutputs:
    """What the last update exported (`raw`, as `pulumi stack output --json` prints it, or as the
    engine answers the program) and where it was read (`source`, for messages). Every command and
    the program's last-update path read it through the typed properties below."""

    raw: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def updated(self) -> bool:
        """Whether an update has run: the program always exports `nodes`."""
        return isinstance(self.raw.get("nodes"), dict)

    @property
    def nodes(self) -> dict[str, NodeRow]:
        """Host name -> its row; {} before an update."""
        return {name: NodeRow.of(row) for name, row in self.table("nodes").items() if isinstance(row, dict)}

    @property
    def host_keys(self) -> dict[str, str]:
        """Host name -> the SSH host key the last update pinned (hosts without one left out)."""
        return {name: row.host_key for name, row in self.nodes.items() if row.host_key}

    @property
    def node_addresses(self) -> dict[str, tuple[str, str]]:
        """Host name -> its role and address, as the last update's firewalls admitted it (rows
        whose address does not read as one left out)."""
        found = {}
        for name, row in self.nodes.items():
            try:
                found[name] = (row.role, str(IPv4Address(row.address)))
            except ValueError:
                continue
        return found

    @property
    def batches(self) -> tuple[tuple[str, ...], ...]:
        """The worker batches of the last update, in rollout order (() when not exported)."""
        value = self.raw.get("batches")
        if not isinstance(value, list):
            return ()
        return tuple(tuple(n for n in b if isinstance(n, str)) for b in value if isinstance(b, list))

    @property
    def pulled_pools(self) -> dict[str, PulledPoolRow]:
        """Autoscaled pool -> its group and bucket; {} when none (or the update predates them)."""
        known = {f.name for f in fields(PulledPoolRow)}
        return {pool: PulledPoolRow(**{k: v for k, v in row.items() if k in known})
                for pool, row in self.table("pulled_pools").items()
                if isinstance(row, dict) and {"group", "bucket", "cluster"} <= set(row)}

    @property
    def boot(self) -> dict[str, dict] | None:
        """System name -> its boot files, as the last update evaluated them (None: not exported)."""
        value = self.raw.get("boot")
        return value if isinstance(value, dict) else None

    @property
    def system_manifests(self) -> dict[str, str] | None:
        """System name -> its packed manifest (None: the update predates them)."""
        value = self.raw.get("system_manifests")
        return value if isinstance(value, dict) else None

    @property
    def cluster_cni(self) -> str | None:
        """The CNI the cluster ran at the last update (None: unknown)."""
        value = self.raw.get("cluster_cni")
        return value if isinstance(value, str) else None

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
