"""Tier 2: docs/operations.md "Adding an environment", walked on a scratch copy of the repository,
offline: the stack file copied and edited, the signing key stored as `pulumi config set --secret`
stores it (a `secure:` value), `flakefleet plan`, `flakefleet configurations`, `flakefleet diff`
(a stack new on the branch: every pool added, exit 2) and the rollout list of
`stacks/deploy-order`. The commands are the guide's own, read from it, so the guide cannot rot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests import stackgen
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "operations.md"


def guide() -> str:
    text = GUIDE.read_text()
    return text[text.index("## Adding an environment"):]


def guide_commands(prefix: str) -> list[str]:
    """The guide's shell lines starting with `prefix` (comments dropped)."""
    blocks = re.findall(r"```sh\n(.*?)```", guide(), re.S)
    lines = [re.sub(r"\s+#.*$", "", line.strip()) for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith(prefix)]


def scratch(tmp_path: Path) -> Path:
    """A clone of this repository's tracked files, committed on `main`."""
    require_tool("git")
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run([*git, *argv], cwd=repo, check=True, capture_output=True)
    return repo


def flakefleet(repo: Path, command: str) -> subprocess.CompletedProcess:
    """A `flakefleet ...` line of the guide, run in the scratch repository by its own code."""
    argv = command.split()[1:]
    return subprocess.run([sys.executable, "-m", "flakefleet", *argv], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo)}, timeout=600)


def test_the_guide_names_the_steps_a_new_environment_needs():
    text = guide()
    for needed in ("pulumi login", "pulumi stack init team-a", "--extra-experimental-features nix-command key generate-secret",
                   "pulumi config set --secret flakefleet:signing_key --stack team-a", "authorized_keys",
                   "flakefleet configurations", "stacks/deploy-order", "team-a-preview", "FLAKEFLEET_DEPLOY_KEY",
                   "PULUMI_CONFIG_PASSPHRASE", "flakefleet-team-a"):
        assert needed in text, needed


def test_the_guides_commands_work_on_a_new_stack(tmp_path):
    repo = scratch(tmp_path)
    # Step 1: the stack file, copied and edited; step 3: the signing key as the CLI stores it.
    doc = yaml.safe_load((repo / "stacks" / "Pulumi.dev.yaml").read_text())
    doc["config"]["flakefleet:cluster"]["name"] = "ff-team-a"
    doc["config"]["flakefleet:network"]["vpc_cidr"] = "10.30.0.0/16"
    doc["config"]["flakefleet:signing_key"] = stackgen.encrypt(stackgen.SIGNING_KEY)
    (repo / "stacks" / "Pulumi.team-a.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    plan = guide_commands("flakefleet plan")
    assert plan == ["flakefleet plan --stack team-a"]
    done = flakefleet(repo, plan[0])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stack team-a: 3 hosts") and "10.30." in done.stdout

    configurations, diff = guide_commands("flakefleet configurations"), guide_commands("flakefleet diff")
    done = flakefleet(repo, configurations[0])
    assert done.returncode == 0 and done.stdout.startswith("wrote nixos/configurations.json"), done.stderr
    assert '"stack": "team-a"' in (repo / "nixos" / "configurations.json").read_text()
    assert flakefleet(repo, "flakefleet configurations --check").returncode == 0

    done = flakefleet(repo, diff[0] + " --json")
    assert done.returncode == 2, done.stderr  # something changes: a new stack
    assert '"new_stack": true' in done.stdout and '"status": "added"' in done.stdout

    # Step 7: rollouts take stacks/deploy-order's stacks only; the new one once it is named there.
    order = repo / "stacks" / "deploy-order"
    touched = [sys.executable, "scripts/touched_stacks.py", "--deploy"]
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "team-a"],
                   cwd=repo, check=True)

    def rolled_out() -> list[str]:
        out = subprocess.run(touched[:3] + ["HEAD~1"], cwd=repo, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().removeprefix("stacks="))

    assert rolled_out() == ["dev", "staging", "prod"]  # configurations.json touches every stack; team-a not yet
    order.write_text(order.read_text() + "team-a\n")
    assert rolled_out() == ["dev", "staging", "prod", "team-a"]
