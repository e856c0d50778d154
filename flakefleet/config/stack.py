"""A whole stack: every `flakefleet:*` key validated on its own, then the rules between keys.

`parse_stack_config` turns the raw config of a stack into a `StackConfig`, or raises
`ConfigError` listing every problem at once, one line each, named by its key path
(`flakefleet:pools[1].count: ...`). Each key's model and rules live in the module of that key
(cluster, network, pools, storage, delivery, dr); this module only orchestrates.
"""

from __future__ import annotations

import base64
import re
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from flakefleet.config import cluster, delivery, dr, hostfiles, network, pools, stackfile, storage, workloads
from flakefleet.config.base import NAMESPACE, ConfigError, Model, did_you_mean, validate
from flakefleet.config.cluster import ClusterConfig
from flakefleet.config.delivery import DeliveryConfig
from flakefleet.config.dr import DrConfig
from flakefleet.config.network import NetworkConfig, zone_names
from flakefleet.config.parsed import Parsed
from flakefleet.config.pools import PoolConfig
from flakefleet.config.rules import region_problem
from flakefleet.config.storage import StorageConfig
from flakefleet.config.stackfile import Secure, secure_paths
from flakefleet.config.workloads import WorkloadConfig


class StackConfig(Model):
    """A whole validated stack."""

    cluster: ClusterConfig
    network: NetworkConfig = NetworkConfig()
    pools: list[PoolConfig]
    storage: StorageConfig = StorageConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    dr: DrConfig = DrConfig()
    workloads: list[WorkloadConfig] = Field(default_factory=list)
    region: str | None = None
    signing_key: str | None = Field(None, repr=False)  # `flakefleet:signing_key`, a Pulumi secret
    server_token: str | None = Field(None, repr=False)  # `flakefleet:server_token`, a Pulumi secret (rebuilds)

    @property
    def signing_public_key(self) -> str | None:
        """The public half of the Nix signing key (`name:base64`), which every host trusts."""
        if self.signing_key is None:
            return None
        name, _, secret = self.signing_key.partition(":")
        return f"{name}:{base64.b64encode(base64.b64decode(secret)[32:]).decode()}"

    def pool(self, name: str) -> PoolConfig:
        """The pool called `name`."""
        return next(p for p in self.pools if p.name == name)

    @property
    def cache_region(self) -> str:
        """The binary cache bucket's region: its own, else the stack's ("" when neither is known)."""
        return self.delivery.cache.region or self.region or ""

    @property
    def uses_ec2(self) -> bool:
        """Whether any pool runs on EC2 (and so a VPC is needed)."""
        return any(p.provider == "ec2" for p in self.pools)

    @property
    def uses_aws(self) -> bool:
        """Whether the stack creates any AWS resource."""
        return self.uses_ec2 or self.storage.enabled

    @property
    def zones(self) -> list[str]:
        """Zones hosts are spread over, in order."""
        names, count = zone_names(self.network, self.region)
        return names[:count]


STACK_KEYS: dict[str, type[Model] | None] = {
    "cluster": ClusterConfig,
    "network": NetworkConfig,
    "pools": None,  # a list of PoolConfig
    "storage": StorageConfig,
    "delivery": DeliveryConfig,
    "dr": DrConfig,
    "workloads": None,  # a list of WorkloadConfig
    "signing_key": None,  # a Nix secret key, `name:base64` (a Pulumi secret)
    "server_token": None,  # the original cluster's k3s server token, for a rebuild (a Pulumi secret)
}
SECRET_STRING_KEYS = ("signing_key", "server_token")
REQUIRED_KEYS = ("cluster", "pools")
# The local stack's fleet runs on `make demo`'s test hosts, which trust the demo's own signing key.
DEMO_SECRETS_HOWTO = ("For the local demo, use the key `make demo` set: `source .demo/env.sh` and pass "
                      "`--config-file .demo/Pulumi.local.yaml` (docs/operations.md)")


def _secrets(stack: Parsed) -> list[str]:
    """Under Pulumi (secret keys known): the signing key given, well-formed and a Pulumi secret;
    a server token, when given, a Pulumi secret."""
    if stack.secret_keys is None:
        return []
    problems = []
    if stack.raw.get("server_token") is not None and f"{NAMESPACE}:server_token" not in stack.secret_keys:
        problems.append(f"{NAMESPACE}:server_token: must be a Pulumi secret, not plain config: "
                        f"pulumi config set --secret {NAMESPACE}:server_token ...")
    at, signing_key = f"{NAMESPACE}:signing_key", stack.raw.get("signing_key")
    if signing_key is None:
        howto = DEMO_SECRETS_HOWTO if stack.loopback_fleet else f"Create it: {SIGNING_KEY_HOWTO}"
        problems.append(f"{at}: required; hosts accept only signed systems. {howto}")
    elif not isinstance(signing_key, str) or not SIGNING_KEY.match(signing_key.strip()):
        problems.append(f"{at}: not a Nix secret key (name:base64 of 64 bytes, from nix key generate-secret)")
    elif at not in stack.secret_keys:
        problems.append(f"{at}: must be a Pulumi secret, not plain config: pulumi config set --secret {at} ...")
    return problems


def _region(stack: Parsed) -> list[str]:
    """`aws:region`, when given, is a region (the zone table and the buckets need one)."""
    if stack.region is not None and (why := region_problem(stack.region)) is not None:
        return [f"aws:region: {why}"]
    return []


RULES = (_secrets, _region, pools.check, pools.placement, cluster.check, network.check, storage.check, dr.check, delivery.check,
         delivery.build_problems, workloads.check)
LIST_KEYS = {"pools": PoolConfig, "workloads": WorkloadConfig}
SIGNING_KEY = re.compile(r"^[A-Za-z0-9._-]+:[A-Za-z0-9+/]{86}==$")
SIGNING_KEY_HOWTO = ("nix --extra-experimental-features nix-command key generate-secret --key-name <cluster>-1 "
                     "| pulumi config set --secret flakefleet:signing_key")


def _decode(value: Any) -> Any:
    # Pulumi hands structured config to programs as JSON text.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _one_edit(a: str, b: str) -> bool:
    """Whether `a` is one insertion, deletion, substitution or adjacent swap away from `b`."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [k for k in range(len(a)) if a[k] != b[k]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long_ = sorted((a, b), key=len)
    return any(long_[:k] + long_[k + 1:] == short for k in range(len(long_)))


def _read_keys(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The stack's own keys, decoded; problems with key names and namespaces."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    unreadable: set[str] = set()
    for full_key in sorted(raw):
        ns, sep, key = full_key.partition(":")
        if ns != NAMESPACE:
            if sep and (ns.lower() == NAMESPACE or _one_edit(ns.lower(), NAMESPACE)):
                problems.append(f"{full_key}: namespace {ns!r} is not {NAMESPACE!r}, so this key would be ignored; "
                                f"did you mean {NAMESPACE}:{key}?")
            continue
        if key not in STACK_KEYS:
            problems.append(f"{full_key}: unknown stack key{did_you_mean(key, STACK_KEYS)} (known: {', '.join(STACK_KEYS)})")
            continue
        value = raw[full_key] if key in SECRET_STRING_KEYS else _decode(raw[full_key])
        encrypted = [key] if isinstance(value, Secure) and key not in SECRET_STRING_KEYS else secure_paths(value, key)
        if encrypted:  # reported once, here; the key is not validated further
            problems += [f"{NAMESPACE}:{path}: stored encrypted (`secure:`), which only the Pulumi CLI can read; "
                         "flakefleet plans this key offline too (plan, diff, previews): keep it in plain config"
                         for path in encrypted]
            unreadable.add(key)
            continue
        values[key] = value
    problems += [f"{NAMESPACE}:{key}: required" for key in REQUIRED_KEYS if key not in values and key not in unreadable]
    return values, problems


def _validate_keys(values: dict[str, Any], parsed: Parsed) -> list[str]:
    """Each key alone; a key with errors keeps what is valid around them (see base.validate)."""
    problems: list[str] = []
    for key, value in values.items():
        if key in SECRET_STRING_KEYS:
            continue
        if key in LIST_KEYS:
            if not isinstance(value, list):
                problems.append(f"{NAMESPACE}:{key}: must be a list of {key}")
                parsed.dropped.add(key)
                continue
            for i, item in enumerate(value):
                model, errors, gone = validate(LIST_KEYS[key], item, f"{key}[{i}]")
                problems += errors
                parsed.dropped |= gone
                getattr(parsed, key).append(model)
            continue
        model, errors, gone = validate(STACK_KEYS[key], value, key)
        problems += errors
        parsed.dropped |= gone
        if model is not None:
            parsed.models[key] = model
    return problems


def parse_stack_config(
    raw: Mapping[str, Any], region: str | None = None, secret_keys: set[str] | None = None,
    stacks_dir: Path | None = None,
) -> StackConfig:
    """Validate the `flakefleet:*` entries of a stack's config (key -> JSON text or value).

    `secret_keys` are the config keys Pulumi holds as secrets; when given (the program), the
    signing key is required and must be one of them. Without it (offline planning) secrets
    are not needed. A pool's `hosts_file` is read from `stacks_dir` (default: the project's
    stacks/). Raises ConfigError with every problem found, one line each.
    """
    values, problems = _read_keys(raw)
    files, unknown = {}, set()
    if "pools" in values:
        values["pools"], file_problems, files, unknown = hostfiles.expand(values["pools"], stacks_dir or stackfile.STACKS)
        problems += file_problems
    secrets_given = {k for k in SECRET_STRING_KEYS if values.get(k) is not None}
    parsed = Parsed({}, [], set(unknown), region, secrets_given, set(values), raw=values, secret_keys=secret_keys)
    problems += _validate_keys(values, parsed)
    # A field already reported as invalid was dropped; the rules do not report it again.
    reported = {line.split(": ", 1)[0] for line in problems}
    problems += [line for rule in RULES for line in rule(parsed) if line.split(": ", 1)[0] not in reported]
    if problems:
        raise ConfigError(hostfiles.located(list(dict.fromkeys(problems)), files))
    signing_key, server_token = values.get("signing_key"), values.get("server_token")
    return StackConfig(
        **parsed.models,
        pools=parsed.pools,
        workloads=parsed.workloads,
        region=region,
        # Offline, an encrypted key (Secure) is known to be set, not what it holds: None here.
        signing_key=signing_key.strip() if isinstance(signing_key, str) else None,
        server_token=server_token.strip() if isinstance(server_token, str) else None,
    )

