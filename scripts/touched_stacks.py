"""Which stacks a change touches, as a JSON list for a GitHub Actions matrix.

    python3 scripts/touched_stacks.py BASE                  # previews: every stack the change touches
    python3 scripts/touched_stacks.py --deploy BASE         # rollouts: those of stacks/deploy-order, in its order
    python3 scripts/touched_stacks.py --deploy --stack S    # one stack, by hand (workflow_dispatch)

Prints `stacks=[...]` (a line for $GITHUB_OUTPUT). A change to stacks/Pulumi.<s>.yaml touches
stack <s>, and to a pool's `hosts_file` the stacks naming it; a change to the program, the
components, the core or the flake touches every stack;
docs, tests, benchmarks and CI files touch none. A BASE of all zeros (a new branch) touches every
stack. Rollouts take only the stacks named in stacks/deploy-order (one a line, in promotion
order: dev before staging before prod); a stack not named there is never rolled out on a push
(`local`, or one still being set up). Bad input is one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = re.compile(r"^stacks/Pulumi\.([A-Za-z0-9_.-]+)\.yaml$")
NO_EFFECT = ("docs/", "tests/", "bench/", ".github/", ".ci/", "README.md", "DEVELOPERS.md", ".gitignore")
DEPLOY_ORDER = "stacks/deploy-order"


def touched(changed: list[str], stacks: list[str], host_files: dict[str, set[str]] | None = None) -> list[str]:
    """The stacks whose preview can differ after a change to these paths (pure). `host_files`:
    a pool's `hosts_file` (stacks/...) -> the stacks that name it."""
    hit: set[str] = set()
    for path in changed:
        if m := STACK_FILE.match(path):
            hit.add(m.group(1))
        elif path in (host_files or {}):
            hit |= (host_files or {})[path]
        elif not path.startswith(NO_EFFECT):
            return sorted(stacks)
    return sorted(s for s in hit if s in stacks)


def host_files_in(root: Path, stacks: list[str]) -> dict[str, set[str]]:
    """Each pool's `hosts_file` named in a stack file (as stacks/<path>) -> the stacks naming it."""
    import yaml

    found: dict[str, set[str]] = {}
    for stack in stacks:
        try:
            config = (yaml.safe_load((root / "stacks" / f"Pulumi.{stack}.yaml").read_text()) or {}).get("config") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            continue  # a broken stack file: every preview says so; it names no hosts file here
        pools = config.get("flakefleet:pools") if isinstance(config, dict) else None
        for pool in pools if isinstance(pools, list) else []:
            if isinstance(pool, dict) and isinstance(pool.get("hosts_file"), str):
                found.setdefault(f"stacks/{pool['hosts_file']}", set()).add(stack)
    return found


def deploy_order(text: str) -> list[str]:
    """The stacks stacks/deploy-order names, in order (`#` starts a comment)."""
    return [name for line in text.splitlines() if (name := line.split("#", 1)[0].strip())]


def rollouts(hit: list[str], order: list[str]) -> list[str]:
    """The touched stacks that roll out on a push, in promotion order (pure)."""
    return [s for s in order if s in hit]


def stacks_in(root: Path) -> list[str]:
    return sorted(p.name.split(".")[1] for p in (root / "stacks").glob("Pulumi.*.yaml"))


def changed_since(base: str, root: Path) -> list[str] | None:
    """Paths changed from BASE to HEAD; None for a new branch (no base): everything."""
    if re.fullmatch(r"0+", base):
        return None
    res = subprocess.run(["git", "diff", "--name-only", f"{base}...HEAD"], capture_output=True, text=True, cwd=root)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        raise SystemExit(f"touched_stacks: git diff {base}...HEAD failed: {last} (is BASE a commit, and was the "
                         "checkout made with fetch-depth: 0?)")
    return res.stdout.split()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="touched_stacks.py", description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?", help="the commit to compare HEAD with (e.g. origin/main)")
    parser.add_argument("--deploy", action="store_true", help=f"only stacks named in {DEPLOY_ORDER}, in its order")
    parser.add_argument("--stack", help="one stack chosen by hand (with --deploy): checked to exist")
    args = parser.parse_args(argv)
    stacks = stacks_in(ROOT)
    try:
        if args.stack is not None:
            if args.stack not in stacks:
                raise SystemExit(f"touched_stacks: no stack {args.stack!r} (have: {', '.join(stacks)})")
            print(f"stacks={json.dumps([args.stack])}")
            return 0
        if not args.base:
            raise SystemExit("touched_stacks: say BASE, the commit to compare with (or --stack S)")
        changed = changed_since(args.base, ROOT)
        hit = sorted(stacks) if changed is None else touched(changed, stacks, host_files_in(ROOT, stacks))
        if args.deploy:
            order_file = ROOT / DEPLOY_ORDER
            hit = rollouts(hit, deploy_order(order_file.read_text()) if order_file.is_file() else [])
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 1
    print(f"stacks={json.dumps(hit)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
