"""The pull-request comment of one stack's preview: the NixOS table, then Pulumi's diff.

    python3 scripts/pr_comment.py --stack dev --nixos nixos.md --nixos-errors nixos.err \\
        --pulumi preview.txt > comment.md

`nixos.md` is `flakefleet diff --markdown` (a collapsible table; a stack new in the pull request
shows every pool as added); when that command could not compare (a stack file that does not
validate, say) its one-line reasons stand in its place. A file named that does not exist is an
error (exit 1, one line): an empty comment is never posted. Pulumi's output goes in a collapsed block, cut to fit GitHub's comment limit.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

GITHUB_LIMIT = 65536
MARGIN = 1024  # for the headline and the fences


def fence(text: str) -> str:
    """A code fence longer than any backtick run inside `text`."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def comment(stack: str, nixos: str, nixos_errors: str, pulumi: str, limit: int = GITHUB_LIMIT) -> str:
    """The comment body: headline, NixOS part, Pulumi part (cut to fit `limit` characters)."""
    if nixos.strip():
        nixos_part = nixos.strip()
    else:
        reasons = "\n".join(f"> {line}" for line in nixos_errors.strip().splitlines()) or "> (no output)"
        nixos_part = f"**{stack}**: no NixOS comparison:\n\n{reasons}"
    head = f"### Preview of stack `{stack}`\n\n{nixos_part}\n\n"
    room = limit - len(head) - MARGIN
    body = pulumi.rstrip()
    if len(body) > room:
        body = body[: max(room, 0)] + f"\n… cut: {len(pulumi) - room} more characters (see the job's log)"
    ticks = fence(body)
    return f"{head}<details><summary>Pulumi preview</summary>\n\n{ticks}diff\n{body}\n{ticks}\n\n</details>\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--nixos", type=Path, required=True, help="flakefleet diff --markdown")
    parser.add_argument("--nixos-errors", type=Path, help="its standard error")
    parser.add_argument("--pulumi", type=Path, required=True, help="pulumi preview's output")
    args = parser.parse_args(argv)

    missing = [f"--{name.replace('_', '-')} {path}: no such file" for name in ("nixos", "nixos_errors", "pulumi")
               if (path := getattr(args, name)) is not None and not path.is_file()]
    if missing:  # a step before this one did not write its file: say so rather than post an empty comment
        print(*(f"pr_comment: {m}" for m in missing), sep="\n", file=sys.stderr)
        return 1
    try:
        texts = [path.read_text(errors="replace") if path else "" for path in (args.nixos, args.nixos_errors, args.pulumi)]
    except OSError as err:
        print(f"pr_comment: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(comment(args.stack, *texts))
    return 0

if __name__ == "__main__":
    sys.exit(main())
