"""The files a delivery puts on a host outside the Nix store (facts, tokens, drop-ins): how they
are staged for hostctl.sh, and the digest that says whether a host has them (pure)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
from collections.abc import Mapping

from flakefleet.host.protocol import REMOTE_HOSTCTL

SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
SAFE_UNIT = re.compile(r"^[A-Za-z0-9:_.@-]+\.(service|socket|target|timer|path|mount)$")

# (absolute path, octal mode, content): one host file.
HostFile = tuple[str, str, bytes]


def staging_script(token: str, hostctl: str, files: list[HostFile],
                   restarts: Mapping[str, tuple[str, ...]] | None = None, create_only: frozenset[str] = frozenset()) -> str:
    """A shell script (sent on stdin, never as arguments) that stages files for `hostctl activate`.

    `files` holds (absolute path, octal mode, content); `restarts`, the units that read a path
    (hostctl restarts them when the file changed); `create_only`, paths hostctl writes only where
    the host has no such file (staged apart, under `create-only/`). Contents travel
    base64-encoded inside here-documents; nothing of them appears on any command line.
    """
    stage = f"/run/flakefleet/{token}"
    lines = [
        "set -eu",
        "umask 077",
        "mkdir -p /run/flakefleet",
        f"base64 -d > {REMOTE_HOSTCTL}.new <<'FLAKEFLEET_EOF'",
        base64.b64encode(hostctl.encode()).decode(),
        "FLAKEFLEET_EOF",
        f"chmod 0700 {REMOTE_HOSTCTL}.new && mv -f {REMOTE_HOSTCTL}.new {REMOTE_HOSTCTL}",
        f"rm -rf {stage} && mkdir -p {stage}/files",
    ]
    for path, mode, content in files:
        if not SAFE_PATH.match(path) or "/../" in path or path.endswith("/.."):
            raise ValueError(f"unsafe path for a host file: {path!r}")
        target = f"{stage}/{'create-only' if path in create_only else 'files'}{path}"
        lines += [
            f"mkdir -p {shlex.quote(os.path.dirname(target))}",
            f"base64 -d > {shlex.quote(target)} <<'FLAKEFLEET_EOF'",
            base64.b64encode(content).decode(),
            "FLAKEFLEET_EOF",
            f"chmod {mode} {shlex.quote(target)}",
        ]
    readers = [f"{path} {' '.join(units)}" for path, units in sorted((restarts or {}).items()) if units]
    for unit in (u for _, units in (restarts or {}).items() for u in units):
        if not SAFE_UNIT.match(unit):
            raise ValueError(f"unsafe unit name: {unit!r}")
    lines += [f"cat > {stage}/restarts <<'FLAKEFLEET_EOF'", *readers, "FLAKEFLEET_EOF"] if readers else []
    return "\n".join(lines) + "\n"


def files_digest(system: str, files: list[HostFile]) -> str:
    """What the host must have applied to be up to date: the system and every file (secrets hashed)."""
    digest = hashlib.sha256(system.encode())
    for path, mode, content in sorted(files):
        digest.update(b"\0" + path.encode() + b"\0" + mode.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()
