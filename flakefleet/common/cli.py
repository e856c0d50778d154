"""What every flakefleet command shares: its parser, its exit codes, and the guard that turns any
failure into one line (never a traceback) and a pipe closed early into a quiet exit.

Exit codes, the same for every command (docs/operations.md, "Everyday commands"):
    0  done; nothing differs (diff: nothing changes; status, drift: healthy and in sync)
    1  an error: bad input (a flag, a stack file, an outputs file), a tool missing, a step refused
    2  something differs (diff: something changes; status, drift: a host unhealthy or drifted)
    3  something could not be asked or done (status, drift: a host or the cluster unreachable;
       rollback, remove: a host could not be rolled back or removed)
  130  interrupted (Ctrl-C)
  141  the reader of the output went away (`flakefleet plan | head`), as for any Unix tool
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence

OK, ERROR, DIFFERS, UNREACHABLE = 0, 1, 2, 3
INTERRUPTED, PIPE_CLOSED = 130, 141
DEBUG_ENV = "FLAKEFLEET_DEBUG"  # set to 1: an unexpected error also prints its traceback
INTERNAL = "internal error"  # the word the guard's last-resort line carries (tests look for it)


class CommandError(Exception):
    """A command cannot go on; each argument is one line for the user, said as it is."""

    def __init__(self, *problems: str):
        super().__init__(*problems)
        self.problems = list(problems)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 1 (our "error"; 2 means "something differs") with one
    line naming the flag, after the usage line."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(ERROR, f"{self.prog}: {message}\n")


def required_env(name: str, env: dict[str, str] | None = None) -> str:
    """A variable a runner's Command sets (its plan); CommandError in one line when it is not set,
    as when someone runs the runner by hand."""
    value = (os.environ if env is None else env).get(name)
    if not value:
        raise CommandError(f"{name} is not set: this runs inside its Pulumi Command (`pulumi up` sets it)")
    return value


def add_json(parser: argparse.ArgumentParser, what: str = "the table") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON (for scripts), nothing capped")


def print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def guard(prog: str, run: Callable[[], int]) -> int:
    """Run a command: its exit code, or one line per problem on stderr and 1; never a traceback
    (with FLAKEFLEET_DEBUG=1 an unexpected error prints its traceback too)."""
    try:
        code = run()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except CommandError as err:
        for problem in err.problems:
            print(f"{prog}: {problem}", file=sys.stderr)
        return ERROR
    except BrokenPipeError:
        _quiet_stdout()
        return PIPE_CLOSED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:  # the last resort: a bug of ours, said in one line
        if os.environ.get(DEBUG_ENV) == "1":
            traceback.print_exc()
        where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        at = f" at {os.path.basename(where.filename)}:{where.lineno}" if where else ""
        print(f"{prog}: {INTERNAL}: {type(err).__name__}: {err}{at} (a bug: please report it; "
              f"{DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        return ERROR


def main_of(prog: str, configure: Callable[[argparse.ArgumentParser], None],
            run: Callable[[argparse.Namespace], int], description: str = "") -> Callable[[Sequence[str] | None], int]:
    """A module's own `main(argv)` (`python -m flakefleet.ops.status ...`), parsing and guarded as
    under `flakefleet`."""

    def main(argv: Sequence[str] | None = None) -> int:
        parser = Parser(prog=prog, description=description)
        configure(parser)
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
        return guard(prog, lambda: run(args))

    return main
