"""Tier 1: the one command line (flakefleet/__main__.py, flakefleet/common/cli.py and outputs.py):
its shape (every command's flags, --json on tables, --stack/--outputs wherever state is read,
help on every flag), its exit codes, the outputs reader, secure values in stack files, and
the scripts beside it. Never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flakefleet.__main__ import COMMANDS, main, parser
from flakefleet.common.cli import INTERNAL, CommandError, guard
from flakefleet.common.outputs import parse_outputs, read_file, read_outputs, read_pulumi
from flakefleet.config import ConfigError, parse_stack_config
from flakefleet.config.stackfile import Secure, read_stack_file
from tests import stackgen

ROOT = Path(__file__).resolve().parent.parent
STATE_COMMANDS = {"status", "drift", "rollback", "remove"}  # and dr's list, verify and pick
TABLE_COMMANDS = {"plan", "status", "drift", "diff"}  # and dr list


def options(command: str, *sub: str) -> dict[str, str]:
    """A command's flags -> their help, as `flakefleet COMMAND [SUB] --help` shows them."""
    p = parser(command)._subparsers._group_actions[0].choices[command]
    for name in sub:
        p = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
    return {o: a.help for a in p._actions for o in a.option_strings if o not in ("-h", "--help")}


def test_every_command_reading_state_takes_the_same_stack_and_outputs_pair():
    for command in STATE_COMMANDS:
        assert {"--stack", "--outputs"} <= set(options(command)), command
    for sub in ("list", "verify", "pick"):
        assert {"--stack", "--outputs", "--stacks-dir"} <= set(options("dr", sub))
    helps = {options(c)["--outputs"] for c in STATE_COMMANDS}
    assert len(helps) == 1  # one flag, one meaning, said once


def test_every_table_prints_json_and_every_flag_says_what_it_does():
    for command in TABLE_COMMANDS:
        assert "--json" in options(command), command
    assert "--json" in options("dr", "list")
    for command in COMMANDS:
        undocumented = [flag for flag, text in options(command).items() if not text]
        assert not undocumented, (command, undocumented)


def test_help_lists_every_command_and_version_says_which(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"    {name}" in out for name in COMMANDS)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "flakefleet 0.9.0"


def test_a_usage_error_is_exit_1_naming_the_flag(capsys):
    assert main(["plan"]) == 1
    assert "flakefleet plan: the following arguments are required: --stack" in capsys.readouterr().err
    assert main(["nosuch"]) == 1
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_the_installed_command_is_the_same_program():
    """`make setup` installs `flakefleet` beside the virtualenv's python (pyproject.toml's script)."""
    installed = Path(sys.executable).parent / "flakefleet"
    assert installed.is_file(), "make setup installs the flakefleet command into .venv/bin"
    done = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "flakefleet 0.9.0")


def test_a_pipe_closed_early_is_a_quiet_exit_141(tmp_path):
    hosts = [{"name": f"w-{k}", "address": f"10.1.{k // 250}.{k % 250 + 1}", "ssh_host_key": stackgen.HOST_KEYS[0]}
             for k in range(800)]  # far more than a pipe holds
    write_stack(tmp_path, {**LOCAL, "flakefleet:cluster": {"name": "ff-s", "pod_cidr": "10.48.0.0/14"},
                           "flakefleet:pools": [*LOCAL["flakefleet:pools"], {
        "name": "w", "role": "worker", "provider": "metal", "hosts": hosts}]})
    proc = subprocess.Popen([sys.executable, "-m", "flakefleet", "plan", "--stack", "s", "--stacks-dir", str(tmp_path),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.read(10)
    proc.stdout.close()  # as `| head -c 10` does
    code = proc.wait(timeout=120)
    assert code == 141 and proc.stderr.read() == b""


def test_a_bug_is_one_line_and_its_traceback_only_when_asked(capsys, monkeypatch):
    def broken() -> int:
        return {}["nodes"]

    assert guard("flakefleet x", broken) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"flakefleet x: {INTERNAL}: KeyError: 'nodes' at test_cli.py:" in err
    monkeypatch.setenv("FLAKEFLEET_DEBUG", "1")
    assert guard("flakefleet x", broken) == 1
    assert "Traceback" in capsys.readouterr().err
    assert guard("flakefleet x", lambda: (_ for _ in ()).throw(CommandError("a", "b"))) == 1
    assert capsys.readouterr().err.splitlines() == ["flakefleet x: a", "flakefleet x: b"]


OUTPUTS = [
    ("empty-object", "{}", None, False),
    ("updated", '{"nodes": {"cp-0": {"address": "10.0.0.1"}}}', None, True),
    ("nodes-secret", '{"nodes": "[secret]"}', None, False),
    ("not-json", '{"nodes": ', "not JSON (Expecting value at line 1, column 11)", None),
    ("a-list", "[]", "a JSON list, not the JSON object `pulumi stack output --json` prints", None),
    ("empty-file", "", "empty, not the JSON object", None),
    ("a-string", '"x"', "a JSON str, not the JSON object", None),
]


@pytest.mark.parametrize(("text", "problem", "updated"), [c[1:] for c in OUTPUTS], ids=[c[0] for c in OUTPUTS])
def test_outputs_are_read_as_pulumi_prints_them_or_refused_in_one_line(text, problem, updated):
    if problem is None:
        assert parse_outputs(text, "f").updated is updated
        return
    with pytest.raises(CommandError) as err:
        parse_outputs(text, "--outputs f")
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("--outputs f: ")
    assert problem in err.value.problems[0]


def test_outputs_files_and_the_pulumi_cli(tmp_path, monkeypatch):
    with pytest.raises(CommandError, match="no such file; write it with `pulumi stack output --json --stack dev >"):
        read_file(tmp_path / "nope.json", "dev")
    with pytest.raises(CommandError, match="a directory, not a file"):
        read_file(tmp_path)
    with pytest.raises(CommandError, match="say which stack"):
        read_outputs(None, None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CommandError, match="needs the Pulumi CLI, which is not on PATH"):
        read_pulumi("dev")
    pulumi = tmp_path / "pulumi"
    pulumi.write_text('#!/bin/sh\n[ "$4" = "--stack" ] && [ "$5" = dev ] && echo \'{"nodes": {}}\' && exit 0\n'
                      'echo "error: no stack named $5 found" >&2; exit 255\n')
    pulumi.chmod(0o755)
    assert read_pulumi("dev").updated and read_pulumi("dev").source == "pulumi stack output --stack dev"
    with pytest.raises(CommandError) as err:
        read_pulumi("nope")
    assert err.value.problems == ["--stack nope: `pulumi stack output --json --stack nope` failed: "
                                  "error: no stack named nope found"]


def test_before_the_first_update_status_and_drift_say_so_and_exit_0(tmp_path, capsys):
    (tmp_path / "o.json").write_text("{}")
    for command in ("status", "drift"):
        assert main([command, "--outputs", str(tmp_path / "o.json")]) == 0
        assert "no update yet" in capsys.readouterr().err
    assert main(["status", "--outputs", str(tmp_path / "o.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["updated"] is False
    assert main(["rollback", "--stack", "dev", "--host", "cp-0", "--outputs", str(tmp_path / "o.json")]) == 1
    assert capsys.readouterr().err.strip() == ("flakefleet rollback: no pinned host key for cp-0: stack dev: no update "
                                               "yet (its outputs have no `nodes`): nothing is deployed; `pulumi up` first")


def write_stack(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "Pulumi.s.yaml").write_text(stackgen.stack_file(config))
    return tmp_path


LOCAL = {"flakefleet:cluster": {"name": "ff-s"}, "flakefleet:storage": {"enabled": False},
         "flakefleet:pools": [{"name": "cp", "role": "control-plane", "provider": "metal",
                               "hosts": [{"name": "cp-0", "address": "192.0.2.10", "ssh_host_key": stackgen.HOST_KEYS[0]}]}],
         "flakefleet:delivery": {"authorized_keys": [stackgen.DEPLOY_KEY]}}


def test_secure_values_are_known_to_be_set_and_never_decoded(tmp_path, capsys):
    """`pulumi config set --secret` writes `{secure: v1:...}`: the offline readers keep it opaque
    (it used to be base64-decoded as the key itself: binascii tracebacks in plan, diff and
    configurations), and a rebuild's server token stored so counts as given."""
    config = {**LOCAL, "flakefleet:signing_key": stackgen.encrypt(stackgen.SIGNING_KEY),
              "flakefleet:server_token": stackgen.encrypt("K10" + "0" * 64 + "::server:x")}
    raw = read_stack_file("s", write_stack(tmp_path, config))
    assert isinstance(raw["flakefleet:signing_key"], Secure) and str(raw["flakefleet:signing_key"]) == "[secret]"
    assert "v1:" not in repr(raw["flakefleet:signing_key"])
    cfg = parse_stack_config(raw)
    assert (cfg.signing_key, cfg.signing_public_key, cfg.server_token) == (None, None, None)
    assert main(["plan", "--stack", "s", "--stacks-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("stack s: 1 hosts")


def test_an_encrypted_structured_value_is_one_line_naming_it(tmp_path):
    pools = json.loads(json.dumps(LOCAL["flakefleet:pools"]))
    pools[0]["hosts"][0]["address"] = stackgen.encrypt("192.0.2.10")
    raw = read_stack_file("s", write_stack(tmp_path, {**LOCAL, "flakefleet:pools": pools,
                                                      "flakefleet:network": stackgen.encrypt("{}")}))
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw)
    assert err.value.problems == [
        "flakefleet:network: stored encrypted (`secure:`), which only the Pulumi CLI can read; flakefleet plans this "
        "key offline too (plan, diff, previews): keep it in plain config",
        "flakefleet:pools[0].hosts[0].address: stored encrypted (`secure:`), which only the Pulumi CLI can read; "
        "flakefleet plans this key offline too (plan, diff, previews): keep it in plain config"]


def test_a_disk_layout_the_flake_lacks_and_a_flake_without_layouts_are_refused(tmp_path, monkeypatch):
    installed = json.loads(json.dumps(LOCAL))
    pool = installed["flakefleet:pools"][0]
    pool.update(bootstrap="nixos-anywhere", disk_layout="raid10")
    pool["hosts"][0] = {"name": "cp-0", "address": "192.0.2.10", "install_host_key": stackgen.HOST_KEYS[0]}
    raw = read_stack_file("s", write_stack(tmp_path, installed))
    with pytest.raises(ConfigError) as err:  # under the tests' stand-in flake as under nixos/
        parse_stack_config(raw)
    assert err.value.problems == ["flakefleet:pools[0].disk_layout: the flake has no layout 'raid10' "
                                  "(standin/disko/ has: bios-single-disk, single-disk)"]
    flake = tmp_path / "flake"
    flake.mkdir()
    monkeypatch.setenv("FLAKEFLEET_FLAKE", str(flake))
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw)
    assert err.value.problems == ["flakefleet:pools[0].bootstrap: the flake flake/ has no disko/ folder, so no disk "
                                  "layout to install with (nixos/disko/<layout>.nix, as flakefleet's own flake has)"]


def test_the_scripts_beside_the_cli_say_one_line(tmp_path):
    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)

    done = run("scripts/touched_stacks.py", "--help")
    assert done.returncode == 0 and "--deploy" in done.stdout
    done = run("scripts/touched_stacks.py", "no-such-ref")
    assert done.returncode == 1 and done.stderr.startswith("touched_stacks: git diff no-such-ref...HEAD failed:")
    assert "Traceback" not in done.stderr and done.stdout == ""
    done = run("scripts/touched_stacks.py", "--deploy", "--stack", "nope")
    assert done.returncode == 1 and done.stderr.startswith("touched_stacks: no stack 'nope' (have: dev, local")
    assert run("scripts/touched_stacks.py", "--deploy", "--stack", "prod").stdout == 'stacks=["prod"]\n'
    done = run("scripts/pr_comment.py", "--stack", "dev", "--nixos", str(tmp_path / "n.md"), "--pulumi", str(tmp_path / "p"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"pr_comment: --nixos {tmp_path / 'n.md'}: no such file",
                                        f"pr_comment: --pulumi {tmp_path / 'p'}: no such file"]


@pytest.mark.parametrize("runner", ["deliver", "cache", "kubeconfig", "host-key", "install"])
def test_a_runner_started_by_hand_says_what_it_misses_in_one_line(runner):
    """The runners the registered Commands start (`./scripts/flakefleet deliver`, ...) read their
    plan from the environment Pulumi sets; run by hand without it, one line, exit 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAKEFLEET_")}
    done = subprocess.run(["sh", str(ROOT / "scripts" / "flakefleet"), runner], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "FLAKEFLEET_" in done.stderr and ("not set" in done.stderr or "must be set" in done.stderr)
