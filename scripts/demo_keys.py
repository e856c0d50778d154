"""The demo's test-only keys: ed25519 from public seeds, so their private halves are known to
everyone (the local stack pins these host keys and authorizes this deploy key; never use them
elsewhere)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SEED = "flakefleet demo, test-only, never trust this key: {name}"
DEPLOY_KEY_NAME = "deploy"
DEPLOY_KEY_COMMENT = "flakefleet-demo-deploy-test-only"


def demo_private_key(name: str) -> Ed25519PrivateKey:
    """The demo key called `name`: ed25519 from a public seed (test-only by construction)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(SEED.format(name=name).encode()).digest())


def demo_public_key(name: str, comment: str = "") -> str:
    """`ssh-ed25519 AAAA...` (plus comment) of the demo key `name`."""
    public = demo_private_key(name).public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                               serialization.PublicFormat.OpenSSH).decode()
    return f"{public} {comment}".strip()


def write_demo_keypair(path: Path, name: str, comment: str) -> None:
    """The OpenSSH private key file at `path` (0600) and its `.pub`, as ssh-keygen would write them."""
    private = demo_private_key(name).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                   serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(private)
    path.chmod(0o600)
    path.with_suffix(".pub").write_text(demo_public_key(name, comment) + "\n")
