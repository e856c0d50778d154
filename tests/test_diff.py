"""Tier 3: `python -m flakefleet diff` on a git repository holding the stand-in flake.

Each test builds a small repository (stacks/ and the stand-in flake as nixos/), commits the
base on `main`, edits the working tree, and compares. Both sides are evaluated by Nix and read
with `nix derivation show` (nothing is built).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flakefleet.preview import cli, render
from flakefleet.preview.derivations import parse_drv_name
from tests.conftest import STANDIN_FLAKE, require_tool

GOLDEN = Path(__file__).parent / "golden" / "diff-markdown.md"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def host(name: str, last: int) -> str:
    return f"""        - name: {name}
          address: 127.0.0.{last}
          ssh_host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ93oybYjVrN3T5OXCQoyRoUWTIJq371WYLdTbufwYb{last % 10}
"""


def pool(name: str, role: str, hosts: list[tuple[str, int]]) -> str:
    return f"""    - name: {name}
      role: {role}
      provider: metal
      hosts:
""" + "".join(host(h, n) for h, n in hosts)


CP = pool("cp", "control-plane", [("cp-0", 11)])
WORKERS = pool("workers", "worker", [("worker-0", 12), ("worker-1", 13)])
GPU = pool("gpu", "worker", [("gpu-0", 14)])


def stack_file(*pools: str) -> str:
    return ("config:\n  flakefleet:cluster:\n    name: ff-t\n  flakefleet:storage:\n    enabled: false\n"
            "  flakefleet:pools:\n" + "".join(pools) +
            "  flakefleet:delivery:\n    authorized_keys:\n      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr/rz51whyC4sjXBa3r/qVn4aXg9/UhhhPgsRXYfnUC t\n")


class Repo:
    """A throwaway repository: stacks/Pulumi.t.yaml and nixos/ (the stand-in flake)."""

    def __init__(self, root: Path):
        self.root = root

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.root), *args], check=True, capture_output=True, text=True,
                              env={**os.environ, **GIT_ENV}).stdout.strip()

    def write(self, path: str, text: str) -> None:
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        (self.root / path).write_text(text)

    def packages(self, edit) -> None:
        """Edit nixos/packages.json (what the stand-in systems are made of)."""
        path = self.root / "nixos" / "packages.json"
        declared = json.loads(path.read_text())
        edit(declared)
        path.write_text(json.dumps(declared, indent=2))

    def commit(self, message: str = "base") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def diff(self, ref: str | None = None):
        base, changes, new = cli.diff("t", self.root, Path("stacks"), ref, env={})
        assert new is False
        return base, changes


@pytest.fixture
def repo(tmp_path) -> Repo:
    require_tool("git")
    require_tool("nix")
    r = Repo(tmp_path / "repo")
    shutil.copytree(STANDIN_FLAKE, r.root / "nixos")
    r.write("stacks/Pulumi.t.yaml", stack_file(CP, WORKERS))
    r.git("init", "-q", "-b", "main")
    r.commit()
    return r


def by_pool(changes) -> dict:
    return {c.pool: c for c in changes}


def test_an_unchanged_tree_changes_no_pool(repo):
    base, changes = repo.diff()
    assert base.label == "merge base with main" and base.commit == repo.git("rev-parse", "HEAD")
    assert [(c.pool, c.status) for c in changes] == [("cp", "unchanged"), ("workers", "unchanged")]


def test_a_version_bump_restarts_the_unit_that_runs_it(repo):
    repo.packages(lambda d: d["packages"].update(k3s="1.31.3+k3s1"))
    changes = by_pool(repo.diff()[1])
    for name, hosts in (("cp", (("cp-0", 0),)), ("workers", (("worker-0", 1), ("worker-1", 1)))):
        c = changes[name]
        assert [(p.name, p.before, p.after) for p in c.packages] == [("k3s", ("1.31.2+k3s1",), ("1.31.3+k3s1",))]
        assert [(u.name, u.kind) for u in c.units] == [("k3s.service", "restart")]
        assert c.hosts == hosts and not c.boot and c.rebuilt == ()


def test_a_package_added_and_one_removed_with_their_units(repo):
    def edit(d):
        d["packages"].pop("coreutils")
        d["packages"]["prometheus-node-exporter"] = "1.8.2"
        d["units"]["node-exporter.service"] = {"runs": "prometheus-node-exporter"}
        d["packages"]["openssh"] = "9.9p2"

    repo.packages(edit)
    workers = by_pool(repo.diff()[1])["workers"]
    assert [(p.name, p.kind) for p in workers.packages] == [
        ("coreutils", "removed"), ("openssh", "changed"), ("prometheus-node-exporter", "added")]
    assert [(u.name, u.kind) for u in workers.units] == [("node-exporter.service", "added"), ("sshd.service", "reload")]


def test_a_kernel_change_reboots_only_the_pool_that_gets_it(repo):
    repo.packages(lambda d: d["pools"].update(workers={"kernel": "6.13.0"}))
    changes = by_pool(repo.diff()[1])
    assert changes["cp"].status == "unchanged"
    workers = changes["workers"]
    assert workers.kernel == ("6.12.0", "6.13.0") and workers.boot == ("kernel", "initrd", "modules") and workers.reboots
    assert [(p.name, p.before, p.after) for p in workers.packages] == [("linux", ("6.12.0",), ("6.13.0",))]
    assert workers.hosts == (("worker-0", 1), ("worker-1", 1))


def test_a_pool_added_and_a_pool_removed(repo):
    repo.write("stacks/Pulumi.t.yaml", stack_file(CP, GPU))
    changes = by_pool(repo.diff()[1])
    assert changes["gpu"].status == "added" and changes["gpu"].hosts == (("gpu-0", 1),)
    assert changes["gpu"].size == (6, 3)  # the stand-in system's packages (kernel included) and units
    assert changes["workers"].status == "removed" and [h for h, _ in changes["workers"].hosts] == ["worker-0", "worker-1"]
    assert changes["cp"].status == "unchanged"


def test_a_workload_removed_from_the_stack_is_named_as_pruned(repo):
    """The base runs workload hello on the workers; the working tree drops it: the control planes'
    system no longer links its manifest (pruned from the cluster), the workers' no longer its image."""
    hello = "  flakefleet:workloads:\n    - name: hello\n      pools: [workers]\n"
    repo.write("stacks/Pulumi.t.yaml", stack_file(CP, WORKERS) + hello)
    repo.commit("run hello")
    repo.write("stacks/Pulumi.t.yaml", stack_file(CP, WORKERS))
    changes = by_pool(repo.diff()[1])
    assert (changes["cp"].prunes, changes["cp"].deploys, changes["cp"].images_removed) == (("workload-hello.yaml",), (), ())
    assert (changes["workers"].prunes, changes["workers"].images_removed) == ((), ("hello.tar.gz",))
    assert "  cluster: prunes workload-hello.yaml (its objects deleted after the switch: k3s never deletes them)" \
        in render.pool_text(changes["cp"])


def test_the_base_can_be_any_ref_and_the_working_tree_is_untouched(repo):
    first = repo.git("rev-parse", "HEAD")
    repo.packages(lambda d: d["packages"].update(bash="5.3"))
    repo.commit("bash 5.3")
    base, changes = repo.diff(first)
    assert base.commit == first and by_pool(changes)["cp"].packages[0].name == "bash"
    assert repo.git("status", "--porcelain") == ""  # nothing checked out, nothing written in the repository


def test_the_cli_prints_text_json_and_markdown(repo, monkeypatch, capsys):
    monkeypatch.delenv("FLAKEFLEET_FLAKE", raising=False)
    repo.packages(lambda d: d["packages"].update(k3s="1.31.3+k3s1"))
    args = ["--stack", "t", "--repo", str(repo.root)]
    assert cli.main(args) == 2  # something changes (terraform plan -detailed-exitcode)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("stack t: 2 of 2 pools change, 0 hosts reboot (working tree against merge base with main (")
    assert "    k3s: 1.31.2+k3s1 → 1.31.3+k3s1" in out
    assert cli.main([*args, "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["base"] == {"ref": "merge base with main", "commit": repo.git("rev-parse", "HEAD"), "new_stack": False}
    assert [p["pool"] for p in doc["pools"]] == ["cp", "workers"]
    assert doc["pools"][1]["packages"] == [{"name": "k3s", "change": "changed", "before": ["1.31.2+k3s1"],
                                            "after": ["1.31.3+k3s1"]}]
    assert cli.main([*args, "--markdown"]) == 2
    assert capsys.readouterr().out.startswith("<details><summary><b>t</b>: NixOS systems: 2 of 2 pools change")


def test_the_markdown_table_matches_the_golden_file(repo, monkeypatch, capsys):
    """A pool gets a kernel and a k3s bump and a new package, another pool joins: the table a
    pull request shows (tests/golden/diff-markdown.md; the base commit is written as BASE)."""
    monkeypatch.delenv("FLAKEFLEET_FLAKE", raising=False)

    def edit(d):
        d["pools"]["workers"] = {"kernel": "6.13.0", "packages": {"htop": "3.3.0", "nix": None},
                               "units": {"nix-daemon.service": None}}
        d["packages"]["k3s"] = "1.31.3+k3s1"

    repo.packages(edit)
    repo.write("stacks/Pulumi.t.yaml", stack_file(CP, WORKERS, GPU))
    assert cli.main(["--stack", "t", "--repo", str(repo.root), "--markdown"]) == 2
    table = capsys.readouterr().out.replace(repo.git("rev-parse", "HEAD")[:12], "BASE")
    if os.environ.get("FLAKEFLEET_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(table)
    assert table == GOLDEN.read_text()


def test_an_unchanged_tree_exits_0_and_a_stack_new_since_the_base_shows_every_pool_added(repo, monkeypatch, capsys):
    monkeypatch.delenv("FLAKEFLEET_FLAKE", raising=False)
    assert cli.main(["--stack", "t", "--repo", str(repo.root)]) == 0
    assert capsys.readouterr().out.startswith("stack t: 0 of 2 pools change")
    repo.write("stacks/Pulumi.fresh.yaml", stack_file(CP, WORKERS))
    assert cli.main(["--stack", "fresh", "--repo", str(repo.root), "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["base"]["new_stack"] is True
    assert [(p["pool"], p["status"]) for p in doc["pools"]] == [("cp", "added"), ("workers", "added")]
    assert all(p["added"]["packages"] > 0 for p in doc["pools"])
    assert cli.main(["--stack", "fresh", "--repo", str(repo.root)]) == 2
    out = capsys.readouterr().out
    assert "(working tree against merge base with main (" in out and "where the stack does not exist yet)" in out
    assert "pool cp: added (" in out


BAD_CASES = ["unknown ref", "no flake at base", "no stack in the working tree", "no main branch", "not a repository"]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.replace(" ", "-") for c in BAD_CASES])
def test_bad_input_is_one_line(case, tmp_path, monkeypatch, capsys):
    require_tool("git")
    monkeypatch.delenv("FLAKEFLEET_FLAKE", raising=False)
    r = Repo(tmp_path / "repo")
    r.root.mkdir()
    args, expected = ["--stack", "t", "--repo", str(r.root)], None
    if case != "not a repository":
        r.git("init", "-q", "-b", "trunk" if case == "no main branch" else "main")
        r.write("stacks/Pulumi.t.yaml", stack_file(CP))
        if case != "no flake at base":
            shutil.copytree(STANDIN_FLAKE, r.root / "nixos")
        base = r.commit()
        if case == "no flake at base":
            shutil.copytree(STANDIN_FLAKE, r.root / "nixos")
        if case == "no stack in the working tree":
            (r.root / "stacks/Pulumi.t.yaml").unlink()
    if case == "unknown ref":
        args += ["--base", "no-such-branch"]
        expected = f"flakefleet diff: --base no-such-branch: no such commit, branch or tag in {r.root}"
    elif case == "no flake at base":
        expected = f"flakefleet diff: the flake nixos/ does not exist at merge base with main ({base[:12]}) (no flake.nix)"
    elif case == "no stack in the working tree":
        expected = "flakefleet diff: stack t does not exist in the working tree (stacks/Pulumi.t.yaml)"
    elif case == "no main branch":
        expected = (f"flakefleet diff: no main branch (origin/main or main) shares history with HEAD in {r.root}: "
                    "pass --base REF")
    else:
        expected = f"flakefleet diff: {r.root} is not in a git repository: flakefleet diff compares against a git ref"
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [expected] and "Traceback" not in err


def test_names_split_exactly_as_nix_parseDrvName_does():
    """Our split against Nix's own builtins.parseDrvName, on awkward names."""
    require_tool("nix")
    names = ["hello-2.12.1", "k3s-1.31.2+k3s1", "python3.12-requests-2.32.3", "foo-bar-baz", "foo-", "-1.0", "a-b-1",
             "linux-6.12.8-modules-shrunk", "gcc-wrapper-14.2.1.20250322", "xz-5.6.3-bin", "x--1", "unit-k3s.service",
             "nixos-system-w-26.05pre-git", "font-bh-100dpi-1.0.4", "go-1.23.4", "r-a-1_2", "name-_1"]
    expr = "map builtins.parseDrvName (builtins.fromJSON ''" + json.dumps(names) + "'')"
    out = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "eval", "--json", "--expr", expr],
                         capture_output=True, text=True, check=True).stdout
    assert [(d["name"], d["version"]) for d in json.loads(out)] == [parse_drv_name(n) for n in names]
