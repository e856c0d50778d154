"""`flakefleet diff`: what a change does to each pool's NixOS system.

    flakefleet diff --stack dev                  # working tree against the merge base with main
    flakefleet diff --stack dev --base v1.4      # ... against a tag, branch or commit
    flakefleet diff --stack dev --json           # for machines (nothing capped)
    flakefleet diff --stack dev --markdown       # the pull-request comment's table

Both sides are evaluated (never built): the stack file and the flake as they are in the working
tree, and as they were at the base. Per pool: unchanged, or which packages change (name, old ->
new version, added, removed), which services restart or reload, whether the kernel changes (the
hosts reboot), and which hosts are touched in which wave; pools added or removed are said so. A
stack that is new since the base shows every pool as added.

Exit codes as `terraform plan -detailed-exitcode`: 0 nothing changes, 2 something changes, 1 an
error (one line each).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from flakefleet.config import ConfigError, parse_stack_config
from flakefleet.plan.inventory import plan_inventory
from flakefleet.plan.specs import system_specs
from flakefleet.preview import base as git_base
from flakefleet.preview import render
from flakefleet.preview.base import Base, DiffError
from flakefleet.preview.compare import Side, compare
from flakefleet.preview.derivations import ShowError
from flakefleet.preview.manifest import manifests
from flakefleet.preview.sides import stack_side
from flakefleet.config.stackfile import read_stack_file
from flakefleet.facts.flake import ROOT, default_cache_dir
from flakefleet.nixos.evaluate import evaluate_systems, EvaluationError
from flakefleet.common.cli import DIFFERS, OK, CommandError, add_json, main_of, print_json


def flake_dir(tree: Path, repo: Path, configured: str | None, env: dict[str, str]) -> Path:
    """The flake of a checkout at `tree` of the repository `repo`: FLAKEFLEET_FLAKE, else
    `delivery.flake`, else nixos/; relative paths (and absolute ones inside the repository)
    are taken in `tree`, so the base side reads the base's flake."""
    chosen = Path(env.get("FLAKEFLEET_FLAKE") or configured or "nixos")
    if chosen.is_absolute():
        try:
            chosen = chosen.resolve().relative_to(repo.resolve())
        except ValueError:
            return chosen  # outside the repository: the same flake on both sides
    return tree / chosen


def side(tree: Path, repo: Path, stacks: Path, stack: str, where: str, env: dict[str, str]) -> Side:
    """One side: the stack file and flake under `tree`, evaluated; problems name `where`."""
    try:
        raw = read_stack_file(stack, tree / stacks)
        cfg = parse_stack_config(raw, raw.get("aws:region"), stacks_dir=tree / stacks)
        inv = plan_inventory(cfg)
    except ConfigError as err:
        raise DiffError(*(f"stack {stack} {where}: {p}" for p in err.problems)) from None
    flake = flake_dir(tree, repo, cfg.delivery.flake, env)
    if not (flake / "flake.nix").is_file():
        raise DiffError(f"the flake {flake.relative_to(tree) if flake.is_relative_to(tree) else flake}/ "
                        f"does not exist {where} (no flake.nix)")
    try:
        systems, _ = evaluate_systems(flake, system_specs(cfg, inv))
        return stack_side(cfg, inv, manifests(systems, default_cache_dir()))
    except EvaluationError as err:
        raise DiffError(*(f"{where}: {p}" for p in err.problems)) from None
    except ShowError as err:
        raise DiffError(f"{where}: nix could not show the derivations: {err}") from None


NOTHING = Side({}, {})  # the base side of a stack that is new in this change: every pool is added


def diff(stack: str, repo: Path, stacks: Path, ref: str | None, env: dict[str, str]) -> tuple[Base, list, bool]:
    """(the base, every pool's change, whether the stack is new since the base) of the working
    tree of `repo` against `ref`."""
    repo = git_base.repo_root(repo)
    base = git_base.resolve(repo, ref)
    if not (repo / stacks / f"Pulumi.{stack}.yaml").is_file():
        raise DiffError(f"stack {stack} does not exist in the working tree ({stacks / f'Pulumi.{stack}.yaml'})")
    head = side(repo, repo, stacks, stack, "in the working tree", env)
    with tempfile.TemporaryDirectory(prefix="flakefleet-base-") as tmp:
        tree = git_base.export(repo, base, Path(tmp))
        new = not (tree / stacks / f"Pulumi.{stack}.yaml").is_file()
        before = NOTHING if new else side(tree, repo, stacks, stack, f"at {base}", env)
    return base, compare(before, head), new


def configure(parser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__
    parser.add_argument("--stack", required=True, metavar="S", help="the stack, as in stacks/Pulumi.<S>.yaml")
    parser.add_argument("--base", metavar="REF", help="a git ref to compare with (default: the merge base with the main branch)")
    parser.add_argument("--repo", type=Path, default=ROOT, metavar="DIR", help="the repository (default: this one)")
    parser.add_argument("--stacks-dir", type=Path, default=Path("stacks"), metavar="DIR",
                        help="stack files' folder in the repository (default: stacks)")
    out = parser.add_mutually_exclusive_group()
    add_json(out, "every pool's change")
    out.add_argument("--markdown", action="store_true", help="a collapsible Markdown table (pull-request comments)")


def run(args) -> int:
    try:
        base, changes, new = diff(args.stack, args.repo, args.stacks_dir, args.base, dict(os.environ))
    except DiffError as err:
        raise CommandError(*err.problems) from None
    against = f"{base} (where the stack does not exist yet)" if new else str(base)
    if args.json:
        print_json(render.as_json(args.stack, {"ref": base.label, "commit": base.commit, "new_stack": new}, changes))
    elif args.markdown:
        print(render.markdown(args.stack, against, changes), end="")
    else:
        print(render.text(args.stack, against, changes))
    return DIFFERS if any(c.status != "unchanged" for c in changes) else OK


main = main_of("flakefleet diff", configure, run, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
