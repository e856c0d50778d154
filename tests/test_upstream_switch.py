"""Tier 5 (local): the stand-in switch's unit decisions against switch-to-configuration-ng's own.

FLAKEFLEET_STC_RULES names a program built locally (never committed) from nixpkgs'
pkgs/by-name/sw/switch-to-configuration-ng/src/main.rs: its parse_unit, compare_units and
handle_modified_unit, copied as they are, behind a driver that prints, for a current and a new
unit file and the unit's name, the comparison (Equal, UnequalNeedsReload, UnequalNeedsRestart)
and, for a restart, which of stop, start, reload, restart, skip the unit lands in. Hypothesis
writes pairs of unit files; tests/standin/nixos.py must decide each as that code does.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import require
from tests.test_standin_likeness import standin

pytestmark = pytest.mark.upstream
RULES = os.environ.get("FLAKEFLEET_STC_RULES", "")

SECTIONS = ["Unit", "Service", "Mount", "Install", "Socket"]
KEYS = ["Description", "Documentation", "X-Reload-Triggers", "After", "RefuseManualStop", "X-OnlyManualStart",
        "ExecStart", "ExecReload", "Options", "Type", "X-ReloadIfChanged", "X-RestartIfChanged", "X-StopIfChanged",
        "X-StopOnRemoval", "Environment"]
VALUES = ["", "a", "b", "true", "false", "yes", '"A=1"', "A=1", "x y"]
NAMES = ["foo.service", "bar.mount", "-.mount", "nix.mount", "baz.socket", "q.target", "w.path", "s.slice",
         "multi-user.target", "t.timer"]

sections = st.dictionaries(st.sampled_from(SECTIONS),
                           st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)), max_size=4), max_size=3)


def render(unit: dict) -> str:
    return "".join(f"[{s}]\n" + "".join(f"{k}={v}\n" for k, v in keys) for s, keys in unit.items())


def standin_decision(cur: Path, new: Path, name: str) -> str:
    verdict = standin.compare_units(standin.parse_unit(str(cur)), standin.parse_unit(str(new)))
    words = [{"equal": "Equal", "reload": "UnequalNeedsReload", "restart": "UnequalNeedsRestart"}[verdict]]
    if verdict == "restart":
        plan = {k: set() for k in ("stop", "start", "reload", "restart", "skip")}
        standin.handle_modified(name, standin.parse_unit(str(new)), plan)
        words += [k for k in ("stop", "start", "reload", "restart", "skip") if name in plan[k]]
    return " ".join(words)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sections, sections, st.sampled_from(NAMES))
def test_the_standin_decides_every_unit_change_as_switch_to_configuration_ng(cur, new, name):
    require(bool(RULES) and Path(RULES).is_file(), "FLAKEFLEET_STC_RULES (switch-to-configuration-ng's unit rules, built locally)")
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "cur", Path(tmp) / "new"
        a.write_text(render(cur))
        b.write_text(render(new))
        upstream = subprocess.run([RULES, str(a), str(b), name], capture_output=True, text=True, check=True).stdout.strip()
        assert standin_decision(a, b, name) == upstream, (render(cur), render(new), name)
