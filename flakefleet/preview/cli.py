"""`python -m flakefleet diff`: what a change does to each pool's NixOS system.

    python -m flakefleet diff --stack dev                  # working tree against the merge base with main
    python -m flakefleet diff --stack dev --base v1.4      # ... against a tag, branch or commit
    python -m flakefleet diff --stack dev --json           # for machines (nothing capped)
    python -m flakefleet diff --stack dev --markdown       # the pull-request comment's table

Both sides are evaluated (never built): the stack file and the flake as they are in the working
tree, and as they were at the base. Per pool: unchanged, or which packages change (name, old ->
new version, added, removed), which services restart or reload, whether the kernel changes (the
hosts reboot), and which hosts are touched in which wave; pools added or removed are said so.
"""

from __future__ import annotations

import argparse
import json
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
    if not (tree / stacks / f"Pulumi.{stack}.yaml").is_file():
        raise DiffError(f"stack {stack} does not exist {where} ({stacks / f'Pulumi.{stack}.yaml'})")
    try:
        raw = read_stack_file(stack, tree / stacks)
        cfg = parse_stack_config(raw, raw.get("aws:region"))
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


def diff(stack: str, repo: Path, stacks: Path, ref: str | None, env: dict[str, str]) -> tuple[Base, list]:
    """(the base, every pool's change) of the working tree of `repo` against `ref`."""
    repo = git_base.repo_root(repo)
    base = git_base.resolve(repo, ref)
    head = side(repo, repo, stacks, stack, "in the working tree", env)
    with tempfile.TemporaryDirectory(prefix="flakefleet-base-") as tmp:
        tree = git_base.export(repo, base, Path(tmp))
        before = side(tree, repo, stacks, stack, f"at {base}", env)
    return base, compare(before, head)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flakefleet diff", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--stack", required=True, help="the stack, as in stacks/Pulumi.<stack>.yaml")
    parser.add_argument("--base", help="a git ref to compare with (default: the merge base with the main branch)")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository (default: this one)")
    parser.add_argument("--stacks-dir", type=Path, default=Path("stacks"), help="stack files' folder in the repository")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON, nothing capped")
    out.add_argument("--markdown", action="store_true", help="a collapsible Markdown table (pull-request comments)")
    args = parser.parse_args(argv)
    try:
        base, changes = diff(args.stack, args.repo, args.stacks_dir, args.base, dict(os.environ))
    except DiffError as err:
        print(*(f"flakefleet diff: {p}" for p in err.problems), sep="\n", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(render.as_json(args.stack, {"ref": base.label, "commit": base.commit}, changes), indent=2))
    elif args.markdown:
        print(render.markdown(args.stack, str(base), changes), end="")
    else:
        print(render.text(args.stack, str(base), changes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
