"""The base of a comparison: a git ref of this repository, checked out into a directory.

Only `git archive` of the ref is read: the working tree, the index and HEAD are never touched.
Every problem is one line (DiffError): not a repository, an unknown ref, no main branch to take
the merge base with, a stack or a flake that did not exist at the ref.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

MAIN_BRANCHES = ("origin/main", "main", "origin/master", "master")


class DiffError(Exception):
    """Input `flakefleet diff` cannot work with: `problems`, one line each."""

    def __init__(self, *problems: str):
        self.problems = list(problems)
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Base:
    """A resolved base: how to name it (`main`, `merge base with origin/main`) and its commit."""

    label: str
    commit: str

    def __str__(self) -> str:
        return f"{self.label} ({self.commit[:12]})"


def _git(repo: Path, *args: str, binary: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=not binary, timeout=300)


def repo_root(path: Path) -> Path:
    """The top of the git repository `path` is in."""
    proc = _git(path, "rev-parse", "--show-toplevel")
    if proc.returncode != 0:
        raise DiffError(f"{path} is not in a git repository: flakefleet diff compares against a git ref")
    return Path(proc.stdout.strip())


def _commit(repo: Path, ref: str) -> str | None:
    proc = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return proc.stdout.strip() if proc.returncode == 0 else None


def resolve(repo: Path, ref: str | None) -> Base:
    """`ref`, or the merge base of HEAD with the main branch when there is none."""
    if ref is not None:
        if ref.startswith("-") or (commit := _commit(repo, ref)) is None:
            raise DiffError(f"--base {ref}: no such commit, branch or tag in {repo}")
        return Base(ref, commit)
    for branch in MAIN_BRANCHES:
        if _commit(repo, branch) is None:
            continue
        proc = _git(repo, "merge-base", "HEAD", branch)
        if proc.returncode == 0:
            return Base(f"merge base with {branch}", proc.stdout.strip())
    raise DiffError(f"no main branch ({' or '.join(MAIN_BRANCHES[:2])}) shares history with HEAD in {repo}: "
                    "pass --base REF")


def export(repo: Path, base: Base, dest: Path) -> Path:
    """The files of `base` under `dest` (git archive: tracked files only)."""
    proc = _git(repo, "archive", "--format=tar", base.commit, binary=True)
    if proc.returncode != 0:
        raise DiffError(f"cannot read {base} from {repo}: {proc.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as archive:
        try:
            archive.extractall(dest, filter="data")
        except TypeError:  # Python without extraction filters (before 3.11.4)
            archive.extractall(dest)
    return dest
