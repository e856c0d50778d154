"""Plan-time evaluation: each system's derivation and out path, cached on disk.

The program evaluates every pool's system while it runs, so `pulumi preview` shows exactly
which pools change. One `nix eval` process evaluates all uncached systems; a result is cached
under a key made of the flake's files and the system's spec, so an unchanged preview does not
evaluate again. Evaluation failures name the system and carry Nix's message.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import fields
from pathlib import Path

from flakefleet.common.nix import NIX_FEATURES, installed_nix_version
from flakefleet.facts.flake import default_cache_dir
from flakefleet.plan.contract import System
from flakefleet.plan.schema import SPEC_SCHEMA_DIGEST

EVAL_TIMEOUT_S = 900
# nixpkgs' lib/minfeatures.nix refuses older Nix: a flake that locks nixpkgs needs at least this.
NIXPKGS_MIN_NIX = (2, 18)


class EvaluationError(Exception):
    """Systems that could not be evaluated: `problems` holds one entry per system (Nix's message included)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def required_nix(flake: Path) -> tuple[int, ...] | None:
    """The oldest Nix the flake evaluates with: nixpkgs' minimum when it locks nixpkgs, else none
    (the offline test stand-in locks nothing and evaluates with any Nix that has flakes)."""
    lock = flake / "flake.lock"
    if not lock.is_file():
        return None
    lock_data = json.loads(lock.read_text())
    nodes = lock_data.get("nodes", {})
    # Only the inputs the flake uses (the root node's); an unused node is never fetched.
    used = nodes.get(lock_data.get("root", "root"), {}).get("inputs", {}).values()
    locks_nixpkgs = any(nodes.get(n, {}).get("locked", {}).get("repo") == "nixpkgs" for n in used if isinstance(n, str))
    return NIXPKGS_MIN_NIX if locks_nixpkgs else None


def check_nix_version(flake: Path, installed: tuple[int, ...] | None) -> str | None:
    """One line when the installed Nix is older than the flake needs, else None."""
    needed = required_nix(flake)
    if needed is None or (installed is not None and installed[: len(needed)] >= needed):
        return None
    have = ".".join(map(str, installed)) if installed else "of unknown version"
    return (
        f"nix {have} is installed; the flake at {flake} locks nixpkgs, which needs Nix "
        f"{'.'.join(map(str, needed))} or newer: upgrade Nix on this deployer (see docs/nixos.md)"
    )


def flake_fingerprint(flake: Path) -> str:
    """Hash of every file of the flake directory (names and contents): the flake's inputs as seen here."""
    digest = hashlib.sha256()
    for path in sorted(p for p in flake.rglob("*") if p.is_file() and ".git" not in p.parts):
        digest.update(str(path.relative_to(flake)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# The expression every evaluation runs (each pool's system evaluated once, flake.lib.evaluate).
EVALUATE_NIX = Path(__file__).with_name("evaluate.nix")


@functools.cache
def _expression() -> str:
    """evaluate.nix's text, read once per process (a key is made per system)."""
    return EVALUATE_NIX.read_text()


def cache_key(fingerprint: str, spec: dict) -> str:
    """Cache key of one system: flake files plus spec, and what is asked of them: the evaluation
    expression, the spec's schema and the fields of a cached entry (a change to any of them is a
    new key, never a number bumped by hand)."""
    asked = [_expression(), SPEC_SCHEMA_DIGEST, sorted(f.name for f in fields(System))]
    return hashlib.sha256(json.dumps([asked, fingerprint, spec], sort_keys=True).encode()).hexdigest()


def eval_argv(flake: Path, specs_file: Path) -> list[str]:
    """`nix eval` of evaluate.nix for every spec in `specs_file` (a JSON object name -> spec):
    each system's toplevel, boot files, k3s links and pull agent, from one evaluation of it."""
    expr = (f"import {json.dumps(str(EVALUATE_NIX))} {{ flake = builtins.getFlake {json.dumps('path:' + str(flake))}; "
            f"specsFile = {json.dumps(str(specs_file))}; }}")
    # --impure: getFlake of a local path, and reading the spec file, are outside pure evaluation.
    return ["nix", *NIX_FEATURES, "eval", "--json", "--impure", "--expr", expr]


def _run_eval(flake: Path, specs: dict[str, dict]) -> tuple[dict[str, System] | None, str]:
    with tempfile.TemporaryDirectory(prefix="flakefleet-eval-") as tmp:
        specs_file = Path(tmp) / "specs.json"
        specs_file.write_text(json.dumps(specs))
        proc = subprocess.run(eval_argv(flake, specs_file), capture_output=True, text=True, timeout=EVAL_TIMEOUT_S)
    if proc.returncode != 0:
        return None, proc.stderr.strip()
    return {name: System(**value) for name, value in json.loads(proc.stdout).items()}, ""


def evaluate_systems(
    flake: Path, specs: dict[str, dict], cache_dir: Path | None = None
) -> tuple[dict[str, System], dict[str, str]]:
    """Evaluate every spec (name -> spec). Returns (systems, how each was obtained: 'cache' | 'eval').

    Raises EvaluationError naming each system that failed, with Nix's message.
    """
    if not specs:
        return {}, {}
    flake = flake.resolve()  # a `path:` flake reference must be absolute
    if shutil.which("nix") is None:
        raise EvaluationError(
            [f"pool {name}: nix is not installed; it is needed to evaluate the flake at {flake}" for name in sorted(specs)]
        )
    if not (flake / "flake.nix").is_file():
        raise EvaluationError([f"pool {name}: no flake.nix in {flake}" for name in sorted(specs)])
    if too_old := check_nix_version(flake, installed_nix_version()):
        raise EvaluationError([too_old])
    cache_dir = cache_dir or default_cache_dir()
    fingerprint = flake_fingerprint(flake)
    keys = {name: cache_key(fingerprint, spec) for name, spec in specs.items()}

    systems: dict[str, System] = {}
    origin: dict[str, str] = {}
    for name, key in keys.items():
        entry = cache_dir / f"{key}.json"
        if entry.is_file():
            cached = System(**json.loads(entry.read_text()))
            if Path(cached.drv).exists():  # a garbage-collected derivation must be evaluated again
                systems[name], origin[name] = cached, "cache"
    todo = {name: spec for name, spec in specs.items() if name not in systems}
    if todo:
        evaluated, error = _run_eval(flake, todo)
        if evaluated is None:
            # Attribute the failure: evaluate each system alone and report every one that fails.
            problems = [
                f"pool {name}: nix could not evaluate its system:\n{_indent(message)}"
                for name in sorted(todo)
                if (message := _run_eval(flake, {name: todo[name]})[1])
            ]
            raise EvaluationError(problems or [f"nix eval failed:\n{_indent(error)}"])
        cache_dir.mkdir(parents=True, exist_ok=True)
        for name, system in evaluated.items():
            (cache_dir / f"{keys[name]}.json").write_text(json.dumps(system.__dict__))
            systems[name], origin[name] = system, "eval"
    return systems, origin


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines() if line.strip())
