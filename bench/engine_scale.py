"""Tier 5: bring-your-own fleets under the real Pulumi engine (issue 38), where the mocks cannot
look: the engine hands the program its config in one environment variable, and serializes its
state at every step.

    .venv/bin/python bench/engine_scale.py [--up] [--skip-checkpoints] [HOSTS ...]   # default: 100 1000

Needs the Pulumi CLI, its Python language host and the command, random and tls plugins on PATH
(docs/operations.md), and Nix. For each size it copies the project (tracked and new files) into
a temporary directory with a file backend, writes a stack of three control planes and HOSTS - 3
workers whose hosts are in `hosts_file` (stacks/inventory/, the pool naming its network), and
runs `pulumi preview` (a preview contacts no host; the systems are the offline stand-in
flake's).

With `--up` it then runs `pulumi up` twice with no host at all: in the copy, `scripts/flakefleet`
is replaced by bench/accepting_hosts.sh, hosts that accept every delivery at once, so what is
measured is the engine and the program. The first `up` creates every resource with checkpoints
off (PULUMI_SKIP_CHECKPOINTS: otherwise the engine rewrites the whole state after each of
thousands of steps); the second is the no-op `up` every later run is, checkpoints on. Then it
reads the state file's bytes.

With `--skip-checkpoints` the preview runs with PULUMI_SKIP_CHECKPOINTS=true: the engine then
serializes the deployment once at the end instead of after every step (pkg/backend/diy/backend.go
gives even a preview a snapshot manager; its persister discards what it is handed, so for a
preview the setting loses nothing).

Prints, per size and step: whether it ran, wall seconds, the CLI's and its children's CPU
seconds and peak RSS (from wait4), the config environment string's bytes, the resources, and
with `--up` the state's bytes in all and per host.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import OFFLINE_NIX_CONFIG, STANDIN_FLAKE  # noqa: E402
from tests.test_hostfiles import engine_config_variable, hosts, stack  # noqa: E402

TOOLS = ("pulumi", "pulumi-language-python", "pulumi-resource-command", "pulumi-resource-random", "pulumi-resource-tls")
SIGNING_KEY = "flakefleet-bench-1:" + "A" * 86 + "=="


def project_copy(into: Path) -> None:
    """The project's tracked and new (not ignored) files, and its .venv linked."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    (into / ".venv").symlink_to(ROOT / ".venv")


def run(argv: list[str], cwd: Path, env: dict[str, str], stdin: str | None = None) -> tuple[int, str, float, float, int]:
    """(exit code, output tail, wall s, CPU s of it and its children, peak RSS KiB of the largest)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.returncode, (proc.stdout + proc.stderr)[-1500:], wall, cpu, after.ru_maxrss


def one(size: int, tmp: Path, with_up: bool, skip_checkpoints: bool = False) -> dict:
    project = tmp / f"p{size}"
    project_copy(project)
    stacks = project / "stacks"
    (stacks / "inventory").mkdir(exist_ok=True)
    (stacks / "inventory" / f"scale{size}-workers.yaml").write_text(yaml.safe_dump(hosts("w", size - 3)))
    raw = stack({"hosts_file": f"inventory/scale{size}-workers.yaml", "networks": ["10.0.0.0/16"]})
    config = {k: json.loads(v) for k, v in raw.items()}
    state = tmp / f"state{size}"
    state.mkdir()
    env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{state}", "PULUMI_CONFIG_PASSPHRASE": "bench",
           "PULUMI_SKIP_UPDATE_CHECK": "1", "PULUMI_HOME": str(tmp / "pulumi-home"), "FLAKEFLEET_FLAKE": STANDIN_FLAKE,
           "NIX_CONFIG": OFFLINE_NIX_CONFIG, "FLAKEFLEET_CACHE_DIR": str(tmp / "systems-cache")}
    name = f"scale{size}"
    code, out, *_ = run(["pulumi", "stack", "init", name], project, env)
    if code:
        raise SystemExit(f"pulumi stack init: {out}")
    stack_file = stacks / f"Pulumi.{name}.yaml"
    document = yaml.safe_load(stack_file.read_text()) if stack_file.exists() else {}
    stack_file.write_text(yaml.safe_dump({**(document or {}), "config": config}, sort_keys=False))
    code, out, *_ = run(["pulumi", "config", "set", "--secret", "flakefleet:signing_key", "--stack", name], project, env,
                        stdin=SIGNING_KEY)
    if code:
        raise SystemExit(f"pulumi config set: {out}")
    code, out, wall, cpu, rss = run(["pulumi", "preview", "--stack", name, "--non-interactive"], project,
                                    {**env, "PULUMI_SKIP_CHECKPOINTS": "true"} if skip_checkpoints else env)
    planned = next((line.strip() for line in out.splitlines() if line.strip().endswith("to create")), "?")
    row = {"hosts": size, "exit": code, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_mib": rss // 1024,
           "config_bytes": engine_config_variable(raw), "planned": planned, "tail": "" if code == 0 else out[-600:]}
    if with_up and code == 0:
        row.update(ups(project, name, env, state, size))
    return row


def ups(project: Path, name: str, env: dict[str, str], state: Path, size: int) -> dict:
    """A first `up` (checkpoints off) and a no-op one, against hosts that accept everything."""
    shutil.copy2(ROOT / "bench" / "accepting_hosts.sh", project / "scripts" / "flakefleet")
    argv = ["pulumi", "up", "--yes", "--stack", name, "--non-interactive", "--skip-preview"]
    code, out, wall, cpu, rss = run(argv, project, {**env, "PULUMI_SKIP_CHECKPOINTS": "true"})
    row = {"up_exit": code, "up_wall_s": round(wall, 1), "up_cpu_s": round(cpu, 1), "up_rss_mib": rss // 1024,
           "up_tail": "" if code == 0 else out[-600:]}
    if code:
        return row
    code, out, wall, cpu, rss = run(argv, project, env)
    unchanged = next((line.strip() for line in out.splitlines() if line.strip().endswith("unchanged")), "?")
    states = sorted(state.rglob(f"{name}.json"), key=lambda p: len(str(p)))
    total = states[0].stat().st_size if states else 0
    return {**row, "noop_exit": code, "noop_wall_s": round(wall, 1), "noop_cpu_s": round(cpu, 1),
            "noop_rss_mib": rss // 1024, "noop": unchanged, "state_bytes": total, "state_bytes_per_host": total // size,
            "noop_tail": "" if code == 0 else out[-600:]}


def main(argv: list[str]) -> int:
    with_up, skip = "--up" in argv, "--skip-checkpoints" in argv
    sizes = [int(a) for a in argv if not a.startswith("--")] or [100, 1000]
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"engine_scale: needs {', '.join(missing)} on PATH (docs/operations.md)", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="flakefleet-engine-") as tmp:
        for size in sizes:
            rows.append(one(size, Path(tmp), with_up, skip))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| hosts | preview | wall s | CPU s (CLI + program + plugins) | peak RSS MiB | config string bytes | planned |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['hosts']:,} | {'ran' if r['exit'] == 0 else 'failed'} | {r['wall_s']} | {r['cpu_s']} | "
              f"{r['peak_rss_mib']} | {r['config_bytes']:,} | {r['planned']} |")
    if with_up:
        print("\n| hosts | first up wall s | CPU s | peak RSS MiB | no-op up wall s | CPU s | peak RSS MiB | no-op | "
              "state bytes | per host |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in (r for r in rows if "up_exit" in r):
            print(f"| {r['hosts']:,} | {r['up_wall_s']} | {r['up_cpu_s']} | {r['up_rss_mib']} | {r.get('noop_wall_s')} | "
                  f"{r.get('noop_cpu_s')} | {r.get('noop_rss_mib')} | {r.get('noop')} | {r.get('state_bytes', 0):,} | "
                  f"{r.get('state_bytes_per_host', 0):,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
