"""Secrets on the deployer: in a file only this process's user can read, for as short as it is needed."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def secret_file(content: str):
    """`content` (the signing key) in a file only this process's user can read, for the block."""
    with tempfile.TemporaryDirectory(prefix="flakefleet-key-") as tmp:
        path = Path(tmp) / "key"
        path.touch(0o600)
        path.write_text(content)
        yield path
