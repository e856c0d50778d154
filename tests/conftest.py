"""Shared test policy: a missing prerequisite skips locally but fails under FLAKEFLEET_REQUIRE_ALL=1 (CI)."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ALL = os.environ.get("FLAKEFLEET_REQUIRE_ALL") == "1"


def require(condition: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) when a prerequisite such as a tool or root is missing."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"prerequisite missing under FLAKEFLEET_REQUIRE_ALL=1: {what}")
    pytest.skip(f"prerequisite missing: {what}")


def require_tool(name: str) -> str:
    """Path of an executable on PATH, or skip/fail as `require` does."""
    path = shutil.which(name)
    require(path is not None, f"`{name}` on PATH")
    return path
