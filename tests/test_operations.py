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


def test_a_hosts_file_touches_the_stacks_that_name_it(tmp_path):
    from scripts.touched_stacks import host_files_in

    (tmp_path / "stacks").mkdir()
    for stack, pools in (("prod", [{"name": "w", "hosts_file": "inventory/prod-w.yaml"}]), ("dev", [{"name": "w"}]),
                         ("staging", [{"name": "w", "hosts_file": "inventory/prod-w.yaml"}])):
        (tmp_path / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": {"flakefleet:pools": pools}}))
    files = host_files_in(tmp_path, ["dev", "prod", "staging"])
    assert files == {"stacks/inventory/prod-w.yaml": {"prod", "staging"}}
    assert touched(["stacks/inventory/prod-w.yaml"], STACKS, files) == ["prod", "staging"]
    assert touched(["stacks/inventory/other.yaml"], STACKS, files) == STACKS  # named by no stack: every one, to be safe


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
    steps = preview["steps"]
    assert steps[0]["with"]["fetch-depth"] == 0  # the NixOS diff needs the merge base
    diff = next(i for i, s in enumerate(steps) if "-m flakefleet diff" in s.get("run", ""))
    assert '--base "origin/$BASE_REF" --markdown' in steps[diff]["run"] and steps[diff]["env"]["BASE_REF"] == "${{ github.base_ref }}"
    assert "|| cat" in steps[diff]["run"]  # a stack new in the pull request: its reason goes in the comment, the job goes on
    action = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("pulumi/actions@"))
    assert diff < action and steps[action]["with"]["command"] == "preview"
    assert steps[action]["with"]["comment-on-pr"] is False  # the comment below carries Pulumi's diff and the table
    compose = next(i for i, s in enumerate(steps) if "scripts/pr_comment.py" in s.get("run", ""))
    assert steps[compose]["env"]["PREVIEW"] == "${{ steps.preview.outputs.output }}"  # through env: never spliced into shell
    assert steps[action]["id"] == "preview"
    sticky = steps[-1]
    assert sticky["uses"].startswith("marocchino/sticky-pull-request-comment@") and compose < len(steps) - 1
    assert sticky["with"]["header"] == "preview-${{ matrix.stack }}"  # one comment per stack, updated in place
    assert all("${{" not in line for s in steps for line in s.get("run", "").splitlines())  # no expression in a script


def test_the_pr_comment_puts_the_nixos_table_next_to_pulumis_diff():
    from scripts.pr_comment import comment

    table = "<details><summary><b>dev</b>: NixOS systems: 1 of 2 pools change</summary>\n\n| pool |\n</details>\n"
    body = comment("dev", table, "", "Previewing update (dev)\n~ command:local:Command workers-0 update\n")
    assert body.startswith("### Preview of stack `dev`\n\n<details><summary><b>dev</b>: NixOS systems")
    assert "<details><summary>Pulumi preview</summary>\n\n```diff\nPreviewing update (dev)" in body


def test_the_pr_comment_says_why_there_is_no_table_and_fits_githubs_limit():
    from scripts.pr_comment import comment

    body = comment("new", "", "flakefleet diff: stack new does not exist at merge base with origin/main (abc)\n",
                   "x" * 100_000 + "\n```\n", limit=10_000)
    assert "**new**: no NixOS comparison:\n\n> flakefleet diff: stack new does not exist" in body
    assert len(body) <= 10_000 and "… cut: " in body
    assert comment("s", "", "", "has ```` inside").count("`````diff") == 1  # a fence longer than any inside


def test_deploy_rolls_out_the_stacks_of_deploy_order_one_at_a_time_in_order():
    wf = workflow("deploy.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["on"]["workflow_dispatch"]["inputs"]["stack"]["required"] is True  # any stack, by hand
    assert wf["concurrency"]["cancel-in-progress"] is False
    jobs = wf["jobs"]
    touched_step = jobs["stacks"]["steps"][-1]
    assert "scripts/touched_stacks.py --deploy" in touched_step["run"] and "${{" not in touched_step["run"]
    up_job = jobs["up"]
    assert set(up_job["needs"]) == {"test", "stacks"} and up_job["uses"] == "./.github/workflows/up.yml"
    assert up_job["strategy"]["max-parallel"] == 1 and up_job["strategy"]["fail-fast"] is True
    assert up_job["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    assert up_job["with"]["stack"] == "${{ matrix.stack }}"
    up = workflow("up.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"  # prod's environment holds the required reviewers
    assert any(s.get("with", {}).get("command") == "up" for s in up["steps"])


def test_deploy_order_names_existing_stacks_and_promotes_dev_then_staging_then_prod():
    from scripts.touched_stacks import deploy_order, rollouts, stacks_in

    order = deploy_order((ROOT / "stacks" / "deploy-order").read_text())
    assert order == ["dev", "staging", "prod"] and set(order) <= set(stacks_in(ROOT))
    assert rollouts(["prod", "local", "dev"], order) == ["dev", "prod"]  # touched, in promotion order; local never
    assert deploy_order("# comment\n team-a  # ours\n\nteam-b\n") == ["team-a", "team-b"]


def test_no_secret_is_written_into_a_workflow():
    for path in [*WORKFLOWS.glob("*.yml"), ROOT / ".github" / "actions" / "setup" / "action.yml"]:
        text = path.read_text()
        assert "AKIA" not in text and "PRIVATE KEY" not in text
        assert "aws-access-key-id" not in text  # OIDC roles only
