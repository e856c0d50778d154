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
    pytest.skip(f"prerequisite missing (fails instead under FLAKEFLEET_REQUIRE_ALL=1): {what}")


def require_tool(name: str) -> str:
    """Path of an executable on PATH, or skip/fail as `require` does."""
    path = shutil.which(name)
    require(path is not None, f"`{name}` on PATH")
    return path


STANDIN_FLAKE = os.path.join(os.path.dirname(__file__), "standin")


# Offline Nix for the stand-in systems: no binary cache, no build sandbox or build users.
OFFLINE_NIX_CONFIG = "\n".join(
    ["experimental-features = nix-command flakes", "substituters =", "sandbox = false", "build-users-group ="]
)


@pytest.fixture(scope="session", autouse=True)
def standin_flake(tmp_path_factory):
    """The program evaluates the offline stand-in flake, with a cache of the test session's own."""
    saved = {k: os.environ.get(k) for k in ("FLAKEFLEET_FLAKE", "FLAKEFLEET_CACHE_DIR", "NIX_CONFIG")}
    os.environ["FLAKEFLEET_FLAKE"] = STANDIN_FLAKE
    os.environ["FLAKEFLEET_CACHE_DIR"] = str(tmp_path_factory.mktemp("systems-cache"))
    os.environ["NIX_CONFIG"] = "\n".join(filter(None, [saved["NIX_CONFIG"], OFFLINE_NIX_CONFIG]))
    yield STANDIN_FLAKE
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
