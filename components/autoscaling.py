"""Autoscaled worker pools: per pool one EC2 Auto Scaling group and launch template whose instances pull their signed system, and nothing per host."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components import resolved

from components.machine import nixos_image
from flakefleet.config import PoolConfig, StackConfig
from flakefleet.facts.aws import partition_of
from flakefleet.plan.contract import System
from flakefleet.plan.iam import ASSUME_EC2, group_arn, pulled_pool_policy
from flakefleet.plan.rollout import pulled_min_healthy
from flakefleet.pull.pointer import pointer_key, store_hash
from flakefleet.pull.userdata import EC2_USER_DATA_MAX, pull_config, pulled_user_data

LAUNCH_HOOK = "flakefleet-health"  # the launch lifecycle hook the pull agent completes
DRAIN_HOOK = "flakefleet-drain"  # the termination lifecycle hook flakefleet-drain completes
DRAIN_MARGIN_S = 60  # the hook outlives the drain: its CONTINUE, not the timeout, ends the wait
BOOT_ALLOWANCE_S = 600  # the instance's boot and its system's download, before the health window


def group_name(cluster: str, pool: str) -> str:
    """The Auto Scaling group's name (known before it exists: the user data and IAM name it)."""
    return f"{cluster}-{pool}"


def token_parameter(cluster: str) -> str:
    """The SSM parameter holding the agent join token (a SecureString)."""
    return f"/flakefleet/{cluster}/k3s-agent-token"


def autoscaler_tags(cluster: str, pool: PoolConfig) -> dict[str, str]:
    """The cluster autoscaler's auto-discovery tags and its node-template hints for scaling from
    zero: the pool's labels and taints (kubernetes/autoscaler cluster-autoscaler/cloudprovider/aws/README.md)."""
    tags = {"k8s.io/cluster-autoscaler/enabled": "true", f"k8s.io/cluster-autoscaler/{cluster}": "owned"}
    tags.update({f"k8s.io/cluster-autoscaler/node-template/label/{k}": v for k, v in sorted(pool.labels.items())})
    tags.update({f"k8s.io/cluster-autoscaler/node-template/taint/{t.key}": f"{t.value}:{t.effect}" for t in pool.taints})
    return tags


def user_data(cfg: StackConfig, pool: PoolConfig, system: System, bucket: str) -> str:
    """The launch template's user data of an autoscaled pool (public material only)."""
    conf = pull_config(cfg.cluster.name, pool.name, cfg.region or "", bucket, pointer_key(cfg.cluster.name, pool.name, system.out),
                       store_hash(system.out), cfg.signing_public_key or "", token_parameter(cfg.cluster.name),
                       group_name(cfg.cluster.name, pool.name), LAUNCH_HOOK, cfg.delivery.health_timeout_s,
                       cfg.delivery.settle_s, drain_hook=DRAIN_HOOK,
                       drain_timeout_s=pool.autoscaling.drain_timeout_s)
    return pulled_user_data(conf, system.agent or "", list(cfg.delivery.authorized_keys), cfg.signing_public_key or "")


def user_data_size(cfg: StackConfig, systems: Mapping[str, System]) -> int:
    """The largest user data of the stack's autoscaled pools, with a bucket name of S3's longest."""
    return max([len(user_data(cfg, p, systems[p.name], "b" * 63).encode()) for p in cfg.pools if p.autoscaling] or [0])


@dataclass(frozen=True)
class PulledPoolsArgs:
    """The autoscaled pools and what their instances need."""

    config: StackConfig
    """The validated stack (its pools with `autoscaling`, delivery's health settings)."""
    systems: Mapping[str, System]
    """System name -> evaluated system (each pulled pool's has its `agent`)."""
    nixos_release: str
    """NixOS release of the boot AMI."""
    subnet_ids: Mapping[str, pulumi.Input[str]]
    """Zone -> private subnet id (the groups spread over all)."""
    security_group_id: pulumi.Input[str]
    """The workers' security group."""
    cache_bucket: pulumi.Input[str]
    """The binary cache bucket (systems, agents and pointers)."""
    agent_token: pulumi.Input[str]
    """The workers' join token as its file holds it (a secret): into SSM, never user data."""
    after: Sequence[pulumi.Resource] = ()
    """What a group waits for: its pool's publish (pointer and system in the cache) and the first control plane."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags for every taggable child."""


class PulledPools(pulumi.ComponentResource):
    """Per autoscaled pool: IAM role and profile (its own pointer, the cache, the token), launch
    template (NixOS AMI, IMDSv2, encrypted gp3, user data without secrets), Auto Scaling group
    (private subnets, launch health hook, instance refresh); one SSM token parameter for all."""

    pools: dict[str, pulumi.Output[dict]]
    """Pool -> {group, bucket, cluster, region}: where status and drift read it (flakefleet/ops/pulled.py)."""
    token_parameter_arn: pulumi.Output[str]
    """The join token's SSM parameter."""

    def __init__(self, name: str, args: PulledPoolsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:PulledPools", name, None, opts)
        cfg = args.config
        if (size := user_data_size(cfg, args.systems)) > EC2_USER_DATA_MAX:
            raise pulumi.RunError(f"flakefleet:delivery.authorized_keys: an autoscaled pool's user data would be {size} "
                                  f"bytes, over EC2's {EC2_USER_DATA_MAX}: authorize fewer deploy keys")
        child = pulumi.ResourceOptions(parent=self)
        token = aws.ssm.Parameter(f"{name}-token", name=token_parameter(cfg.cluster.name), type="SecureString",
                                  value=pulumi.Output.secret(args.agent_token), tags=dict(args.tags), opts=child)
        self.token_parameter_arn = token.arn
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id
        self.pools = {}
        for pool in (p for p in cfg.pools if p.autoscaling is not None):
            group = self._pool(name, pool, args, token, account)
            self.pools[pool.name] = resolved(group=group, bucket=args.cache_bucket).apply(
                lambda v: {**v, "cluster": cfg.cluster.name, "region": cfg.region or ""})
        self.register_outputs({"pools": self.pools, "token_parameter_arn": self.token_parameter_arn})

    def _profile(self, name: str, pool: PoolConfig, args: PulledPoolsArgs, token, account) -> aws.iam.InstanceProfile:
        cfg, region = args.config, args.config.region or ""
        role = aws.iam.Role(f"{name}-{pool.name}", assume_role_policy=json.dumps(ASSUME_EC2), tags=dict(args.tags),
                            opts=pulumi.ResourceOptions(parent=self))
        arn = pulumi.Output.from_input(account).apply(
            lambda a: group_arn(partition_of(region), region, a, group_name(cfg.cluster.name, pool.name)))
        policy = resolved(bucket=args.cache_bucket, token=token.arn, group=arn).apply(
            lambda v: json.dumps(pulled_pool_policy(cfg.cluster.name, pool.name,
                                                    f"arn:{partition_of(region)}:s3:::{v['bucket']}", v["token"], v["group"])))
        aws.iam.RolePolicy(f"{name}-{pool.name}", role=role.id, policy=policy, opts=pulumi.ResourceOptions(parent=self))
        return aws.iam.InstanceProfile(f"{name}-{pool.name}", role=role.name, tags=dict(args.tags),
                                       opts=pulumi.ResourceOptions(parent=self))

    def _template(self, name: str, pool: PoolConfig, args: PulledPoolsArgs, profile) -> aws.ec2.LaunchTemplate:
        cfg, system = args.config, args.systems[pool.name]
        encoded = pulumi.Output.from_input(args.cache_bucket).apply(
            lambda bucket: base64.b64encode(user_data(cfg, pool, system, bucket).encode()).decode())
        tags = {**args.tags, "Name": f"{cfg.cluster.name}-{pool.name}", "flakefleet:pool": pool.name,
                "flakefleet:role": pool.role}
        volume = pool.root_volume
        invoke = pulumi.InvokeOptions(parent=self)
        image = (aws.ec2.get_ami_output(filters=[{"name": "image-id", "values": [pool.ami]}], opts=invoke) if pool.ami
                 else nixos_image(args.nixos_release, pool.arch, invoke))
        return aws.ec2.LaunchTemplate(
            f"{name}-{pool.name}",
            image_id=image.id,
            instance_type=pool.instance_type,
            iam_instance_profile={"arn": profile.arn},
            vpc_security_group_ids=[args.security_group_id],
            # CIS AWS 5.6: session tokens only; hop limit 1 keeps pods from borrowing the node's role.
            metadata_options={"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1},
            # The AMI's own root device, so that this mapping replaces its root volume (not adds one).
            block_device_mappings=[{"device_name": image.root_device_name, "ebs": {
                "encrypted": "true", "volume_type": "gp3", "volume_size": volume.size_gib, "iops": volume.iops,
                "throughput": volume.throughput_mibps, "delete_on_termination": "true"}}],
            user_data=encoded,
            tag_specifications=[{"resource_type": kind, "tags": tags} for kind in ("instance", "volume")],
            update_default_version=True,
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _pool(self, name: str, pool: PoolConfig, args: PulledPoolsArgs, token, account) -> pulumi.Output[str]:
        cfg, scaling = args.config, pool.autoscaling
        assert scaling is not None
        profile = self._profile(name, pool, args, token, account)
        template = self._template(name, pool, args, profile)
        health = cfg.delivery.health_timeout_s + BOOT_ALLOWANCE_S
        tags = {**args.tags, **autoscaler_tags(cfg.cluster.name, pool), "flakefleet:pool": pool.name}
        group = aws.autoscaling.Group(
            f"{name}-{pool.name}",
            name=group_name(cfg.cluster.name, pool.name),
            min_size=scaling.min,
            max_size=scaling.max,
            desired_capacity=scaling.desired if scaling.desired is not None else scaling.min,
            vpc_zone_identifiers=[args.subnet_ids[z] for z in sorted(args.subnet_ids)],
            # A version number, never $Latest: a new system is a new version, and AWS then refreshes
            # (and can roll back: RefreshPreferences.AutoRollback needs an explicit version).
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            # The pull agent's verdict on launch (in service only once its system is healthy); on
            # termination, the instance's own drain (nixos/host/flakefleet_drain.py) holds it until
            # its pods are evicted, and the group
            # goes on (CONTINUE) if the drain overruns: a terminating instance is never kept.
            initial_lifecycle_hooks=[
                {"name": LAUNCH_HOOK, "lifecycle_transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                 "default_result": "ABANDON", "heartbeat_timeout": health},
                {"name": DRAIN_HOOK, "lifecycle_transition": "autoscaling:EC2_INSTANCE_TERMINATING",
                 "default_result": "CONTINUE", "heartbeat_timeout": scaling.drain_timeout_s + DRAIN_MARGIN_S}],
            instance_refresh={"strategy": "Rolling", "preferences": {
                "min_healthy_percentage": pulled_min_healthy(cfg.delivery.max_unavailable, scaling.max),
                "auto_rollback": True, "skip_matching": True}},
            health_check_type="EC2",
            wait_for_capacity_timeout=f"{health}s",
            tags=[{"key": k, "value": v, "propagate_at_launch": True} for k, v in sorted(tags.items())],
            # The cluster autoscaler owns the desired capacity once the group runs.
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.after), ignore_changes=["desired_capacity"]),
        )
        return group.name
