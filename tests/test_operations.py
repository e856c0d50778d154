"""Tier 1: the GitHub workflows' shape, and which stacks a change touches."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.touched_stacks import touched

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
STACKS = ["dev", "local", "prod", "staging"]


def workflow(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (["stacks/Pulumi.prod.yaml"], ["prod"]),
        (["stacks/Pulumi.dev.yaml", "docs/cluster.md"], ["dev"]),
        (["components/network.py"], STACKS),
        (["nixos/flake.lock"], STACKS),
        (["README.md", "tests/test_dr.py", "bench/plan_scale.py"], []),
        (["stacks/Pulumi.gone.yaml"], []),
    ],
)
def test_touched_stacks(changed, expected):
    assert touched(changed, STACKS) == expected


def test_preview_runs_tests_then_comments_previews_of_touched_stacks():
    wf = workflow("preview.yml")
    assert "pull_request" in wf["on"]
    assert wf["permissions"]["pull-requests"] == "write" and wf["permissions"]["id-token"] == "write"
    jobs = wf["jobs"]
    assert any(".ci/run" in step.get("run", "") for step in jobs["test"]["steps"])
    preview = jobs["preview"]
    assert set(preview["needs"]) == {"test", "flake-check", "stacks"}
    check = jobs["flake-check"]["steps"]
    nix = next(s for s in check if s.get("uses", "").startswith("cachix/install-nix-action@"))
    assert "kvm" in nix["with"]["extra_nix_config"] and "nixos-test" in nix["with"]["extra_nix_config"]
    assert check[-1]["run"].startswith("nix flake check ./nixos")  # the real nixpkgs pin, before any preview
    assert preview["environment"] == "${{ matrix.stack }}-preview"  # read-only roles, no approval gate
    action = next(s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert action["with"]["command"] == "preview" and action["with"]["comment-on-pr"] is True


def test_deploy_goes_dev_then_staging_then_gated_prod():
    wf = workflow("deploy.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["concurrency"]["cancel-in-progress"] is False
    jobs = wf["jobs"]
    assert (jobs["dev"]["needs"], jobs["staging"]["needs"], jobs["prod"]["needs"]) == ("test", "dev", "staging")
    for stack in ("dev", "staging", "prod"):
        assert jobs[stack]["uses"] == "./.github/workflows/up.yml" and jobs[stack]["with"]["stack"] == stack
    up = workflow("up.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"  # prod's environment holds the required reviewers
    assert any(s.get("with", {}).get("command") == "up" for s in up["steps"])


def test_no_secret_is_written_into_a_workflow():
    for path in [*WORKFLOWS.glob("*.yml"), ROOT / ".github" / "actions" / "setup" / "action.yml"]:
        text = path.read_text()
        assert "AKIA" not in text and "PRIVATE KEY" not in text
        assert "aws-access-key-id" not in text  # OIDC roles only
