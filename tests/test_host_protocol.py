"""Tier 1: the host protocol (flakefleet/host/protocol.py). Every verb of nixos/host/hostctl.sh
the deployer calls has one typed function; this is the exact command line each sends (as
deploy-rs tests the strings of its activate, wait and revoke commands), how the script reaches
the host, and how its answers are read. The verbs it names are the script's own."""

from __future__ import annotations

import inspect
import re
import shlex

import pytest

from flakefleet.host import protocol as hostctl
from flakefleet.host.protocol import HOSTCTL, Call, HostState

OUT = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-w"
TOKEN = "1733580000-0a1b2c3d"

# verb function call -> (the exact remote command line, staged copy or stdin, the deployer's bound in s)
EXPECTED = [
    (hostctl.state(), "sh -s -- state", False, 120),
    (hostctl.state(timeout=30), "sh -s -- state", False, 30),
    (hostctl.claim("5f0c2b9e1a7d3c44"), "sh -s -- claim 5f0c2b9e1a7d3c44", False, 30),
    (hostctl.previous(), "sh -s -- previous", False, 120),
    (hostctl.note_rollback(OUT, "/nix/store/b"), f"sh -s -- note-rollback {OUT} /nix/store/b", False, 120),
    (hostctl.activate(OUT, TOKEN, 420, 300), f"sh /run/flakefleet/hostctl.sh activate {OUT} {TOKEN} 420 300", True, 360),
    (hostctl.check(TOKEN, OUT, 10), f"sh /run/flakefleet/hostctl.sh check {TOKEN} {OUT} 10", True, 30),
    (hostctl.confirm(TOKEN, OUT, "d1g3st"), f"sh /run/flakefleet/hostctl.sh confirm {TOKEN} {OUT} d1g3st", True, 60),
    (hostctl.rollback(TOKEN, "not healthy: k3s exited", 360),
     f"sh /run/flakefleet/hostctl.sh rollback {TOKEN} 'not healthy: k3s exited'", True, 360),
    (hostctl.needs_reboot(OUT), f"sh -s -- needs-reboot {OUT}", False, 30),
    (hostctl.boot_stage(OUT, TOKEN), f"sh /run/flakefleet/hostctl.sh boot-stage {OUT} {TOKEN}", True, 600),
    (hostctl.reboot(TOKEN), f"sh /run/flakefleet/hostctl.sh reboot {TOKEN}", True, 60),
    (hostctl.check_boot(TOKEN, "-", 10), f"sh -s -- check-boot {TOKEN} - 10", False, 30),
    (hostctl.confirm_boot(TOKEN, OUT, "d1g3st"), f"sh -s -- confirm-boot {TOKEN} {OUT} d1g3st", False, 60),
    (hostctl.boot_rollback(TOKEN, "its boot was never confirmed"),
     f"sh -s -- boot-rollback {TOKEN} 'its boot was never confirmed'", False, 120),
    (hostctl.forget_boot(TOKEN), f"sh -s -- forget-boot {TOKEN}", False, 30),
    (hostctl.restart_pending(TOKEN, "m7i.large -> m7i.xlarge"),
     f"sh -s -- restart-pending {TOKEN} 'm7i.large -> m7i.xlarge'", False, 30),
    (hostctl.retire(), "sh -s -- retire", False, 60),
    (hostctl.forget_etcd(), "sh -s -- forget-etcd", False, 60),
    (hostctl.restore("r-1", OUT, ["--cluster-reset", "--cluster-reset-restore-path=s3://b/snap"]),
     f"sh /run/flakefleet/hostctl.sh restore r-1 {OUT} --cluster-reset --cluster-reset-restore-path=s3://b/snap",
     True, 3600),
    (hostctl.wipe_etcd("r-1"), "sh /run/flakefleet/hostctl.sh wipe-etcd r-1", True, 600),
]


@pytest.mark.parametrize(("call", "line", "staged", "timeout"), EXPECTED, ids=[f"{c[0].verb}-{i}" for i, c in enumerate(EXPECTED)])
def test_each_verb_sends_exactly_this(call: Call, line: str, staged: bool, timeout: float):
    assert shlex.join(call.argv()) == line
    assert call.staged is staged and call.timeout == timeout
    # Staged verbs run the copy delivery put in /run/flakefleet; the others bring the script along.
    assert call.stdin() is None if staged else call.stdin() == HOSTCTL.read_text()


def verbs_of_the_script() -> set[str]:
    """The verbs hostctl.sh's dispatch accepts (`verb)` and `verb | verb)` case patterns)."""
    text = HOSTCTL.read_text()
    dispatch = text[text.index('case "$cmd" in'):]
    return {v.strip() for pattern in re.findall(r"^([a-z][a-z| -]*)\)$", dispatch, re.M) for v in pattern.split("|")}


def test_every_verb_the_deployer_calls_is_one_the_script_has_and_each_has_one_function():
    functions = {name: fn for name, fn in inspect.getmembers(hostctl, inspect.isfunction)
                 if inspect.signature(fn).return_annotation in ("Call", Call)}
    called = {c.verb for c, *_ in EXPECTED}
    assert called == {name.replace("_", "-") for name in functions}  # every function is tested above
    # The script's verbs: those the deployer calls, and `expire`, which only its dead-man switch runs.
    assert verbs_of_the_script() == called | {"expire"}


def test_no_module_reaches_the_script_another_way():
    """One way to the host script: the protocol's calls (no `sh -s` of hostctl, no path to it elsewhere)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = []
    for path in [*(root / "flakefleet").rglob("*.py"), *(root / "components").rglob("*.py")]:
        if path.name == "protocol.py":
            continue
        text = path.read_text()
        if re.search(r"\[\"sh\", REMOTE_HOSTCTL|\"sh -s -- |\[\"sh\", \"-s\", \"--\"|HOSTCTL\.read_text\(\)\)", text):
            found.append(str(path.relative_to(root)))
    assert found == []


def test_the_state_answer_is_typed():
    text = ("current=/nix/store/a\nprofile=system-3-link\napplied=abc\napplied_system=/nix/store/a\n"
            "applied_profile=system-3-link\netcd_data=yes\nrestored=\nowner=5f0c\nrolled_back=\n"
            "booted=/nix/store/a\nreboot_pending=kernel initrd \nunconfirmed_boot=tok /nix/store/b\n")
    state = HostState.parse(text)
    assert state == HostState(current="/nix/store/a", profile="system-3-link", applied="abc",
                              applied_system="/nix/store/a", applied_profile="system-3-link", etcd_data=True,
                              owner="5f0c", booted="/nix/store/a", reboot_pending=("kernel", "initrd"),
                              unconfirmed_boot="tok /nix/store/b")
    assert HostState.parse("") == HostState() and HostState.parse("etcd_data=no\n").etcd_data is False
    assert hostctl.switched_at("ok=1\nswitched_at=1733580000.5\n") == 1733580000.5
    assert hostctl.switched_at("") == 0
