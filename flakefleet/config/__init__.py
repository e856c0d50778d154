"""Typed stack configuration: one module per stack key (its pydantic model and its rules), the
rules shared between keys (`rules`), and the whole stack (`stack`). Nothing here imports Pulumi.
Everything callers need is importable from `flakefleet.config`."""

from flakefleet.config.base import NAMESPACE, Arch, ConfigError, DnsLabel, Role, did_you_mean
from flakefleet.config.cluster import CiliumConfig, ClusterConfig
from flakefleet.config.delivery import DEMO_DEPLOY_KEY_BLOB, BuilderConfig, CacheConfig, DeliveryConfig
from flakefleet.config.dr import DrConfig
from flakefleet.config.network import NetworkConfig
from flakefleet.config.pools import MetalHost, PoolConfig, RootVolume, Taint
from flakefleet.config.rules import host_key_problem, kubelet_may_set, label_problem, ssh_key_problem
from flakefleet.config.stack import STACK_KEYS, StackConfig, parse_stack_config
from flakefleet.config.storage import StorageConfig
from flakefleet.config.workloads import WorkloadConfig

__all__ = [
    "NAMESPACE", "Arch", "ConfigError", "DnsLabel", "Role", "did_you_mean", "CiliumConfig", "ClusterConfig", "DEMO_DEPLOY_KEY_BLOB",
    "BuilderConfig", "CacheConfig", "DeliveryConfig", "DrConfig", "NetworkConfig", "MetalHost", "PoolConfig", "RootVolume", "Taint",
    "host_key_problem", "kubelet_may_set", "label_problem", "ssh_key_problem", "STACK_KEYS", "StackConfig",
    "parse_stack_config", "StorageConfig", "WorkloadConfig",
]
