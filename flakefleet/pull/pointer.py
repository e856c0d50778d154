"""A pulled pool's pointer: which system its instances boot, signed with the fleet's key (pure).

One immutable object per (pool, system) in the binary cache bucket, under
`flakefleet/pointers/<cluster>/<pool>/<system hash>.json`; the pool's launch template names the
one its instances boot, so a new system is a new launch template version (an instance refresh)
and a rollback of the group is a rollback to a pointer that still exists. The object holds the
pointer's canonical JSON as text, the key's name and an Ed25519 signature over
`flakefleet-pointer-v1\\n` + that text, made with the Nix signing key (`name:base64`, the seed
and the public half, as `nix key generate-secret` writes it) whose public half the hosts trust.
The pull agent verifies it (nixos/host/flakefleet_pull.py: `verify`, the one reader) before it
realises or activates anything, and refuses a pointer for another cluster, pool or system than
its launch template's; openssl verifies the same bytes in the tests.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from flakefleet.plan.contract import POINTERS

POINTER_SCHEMA = 1
DOMAIN = b"flakefleet-pointer-v1\n"  # what is signed starts so: a pointer signature is never a narinfo's
# The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): + the 32-byte key is what openssl reads.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


class PointerRefused(ValueError):
    """Not something a pointer can be made of (a path that is not a store path, a bad key)."""


def store_hash(path: str) -> str:
    """The hash part of a store path (`/nix/store/<hash>-name`)."""
    name = path.rsplit("/", 1)[-1]
    if not path.startswith("/nix/store/") or len(name) < 34 or name[32] != "-":
        raise PointerRefused(f"{path!r} is not a store path")
    return name[:32]


def pointer_key(cluster: str, pool: str, system: str) -> str:
    """The bucket key of a pool's pointer to `system`."""
    return f"{POINTERS}/{cluster}/{pool}/{store_hash(system)}.json"


@dataclass(frozen=True)
class Pointer:
    """What an instance of a pulled pool boots and is told: the system and the pool's host facts
    (the host's own name and address it reads from the instance metadata)."""

    cluster: str
    pool: str
    system: str
    facts: dict

    def canonical(self) -> str:
        return json.dumps({"schema": POINTER_SCHEMA, "cluster": self.cluster, "pool": self.pool,
                           "system": self.system, "facts": self.facts}, sort_keys=True, separators=(",", ":"))


def _secret(signing_key: str) -> tuple[str, bytes]:
    name, _, encoded = signing_key.strip().partition(":")
    raw = base64.b64decode(encoded)
    if not name or len(raw) != 64:
        raise ValueError("the signing key is not a Nix Ed25519 secret key (name:base64 of 64 bytes)")
    return name, raw[:32]


def public_key_der(public_key: str) -> bytes:
    """A Nix public key (`name:base64` of 32 bytes) as the DER SubjectPublicKeyInfo openssl reads."""
    _, _, encoded = public_key.strip().partition(":")
    raw = base64.b64decode(encoded)
    if len(raw) != 32:
        raise PointerRefused("the trusted key is not a Nix Ed25519 public key (name:base64 of 32 bytes)")
    return ED25519_SPKI_PREFIX + raw


def sign(pointer: Pointer, signing_key: str) -> dict:
    """The pointer object: its canonical text, the key's name, the signature."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    name, seed = _secret(signing_key)
    text = pointer.canonical()
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(DOMAIN + text.encode())
    return {"pointer": text, "key": name, "signature": base64.b64encode(signature).decode()}
