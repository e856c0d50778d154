"""EC2 machines, virtual and `*.metal`: official NixOS AMI, IMDSv2, encrypted gp3 root, fixed private IP, scoped S3 access, host keys checked against the console."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncio

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from components import resolved

from flakefleet.config import PoolConfig, RootVolume
from flakefleet.delivery.hostkey import TARGET_ENV
from flakefleet.plan.contract import INSTANCE_ENV, HostKeyTarget
from flakefleet.plan.firstboot import first_boot_user_data
from flakefleet.facts.aws import partition_of
from flakefleet.plan.iam import ASSUME_EC2, group_arn, node_policy
from flakefleet.plan.inventory import Host, Inventory

NIXOS_AMI_OWNER = "427812963091"  # the NixOS project's AWS account, publisher of the official AMIs
AMI_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}
MACHINE_TYPE = "flakefleet:index:Machine"  # the component instances once sat in
HOST_KEY = "./scripts/flakefleet host-key"


def nixos_image(release: str, arch: str, opts: pulumi.InvokeOptions | None = None):
    """The newest official NixOS AMI of `release` for `arch` (id, root device name, ...)."""
    return aws.ec2.get_ami_output(
        owners=[NIXOS_AMI_OWNER],
        most_recent=True,
        filters=[
            {"name": "name", "values": [f"nixos/{release}*"]},
            {"name": "architecture", "values": [AMI_ARCH[arch]]},
        ],
        opts=opts,
    )


def nixos_ami(release: str, arch: str, opts: pulumi.InvokeOptions | None = None) -> pulumi.Output[str]:
    """Id of the newest official NixOS AMI of `release` for `arch`."""
    return nixos_image(release, arch, opts).id


def instance(
    name: str,
    host: Host,
    ami: pulumi.Input[str],
    subnet_id: pulumi.Input[str],
    security_group_id: pulumi.Input[str],
    instance_profile: pulumi.Input[str],
    root_volume: RootVolume,
    user_data: pulumi.Input[str],
    tags: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.ec2.Instance:
    """One EC2 host that boots NixOS and waits for delivery: one resource, no component around it
    (a fleet registers three resources per host: host key, instance, delivery)."""
    return aws.ec2.Instance(
        name,
        ami=ami,
        instance_type=host.instance_type,
        subnet_id=subnet_id,
        private_ip=str(host.address),
        vpc_security_group_ids=[security_group_id],
        iam_instance_profile=instance_profile,
        # CIS AWS 5.6: session tokens only; hop limit 1 keeps pods from borrowing the node's role.
        metadata_options={"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1},
        root_block_device={
            "encrypted": True,
            "volume_type": "gp3",
            "volume_size": root_volume.size_gib,
            "iops": root_volume.iops,
            "throughput": root_volume.throughput_mibps,
            "delete_on_termination": True,
            "tags": dict(tags),
        },
        user_data=user_data,
        tags=dict(tags),
        # The AMI and the user data only boot the host (first boot pins its SSH key); delivery
        # owns its system from then on. Neither may replace or restart a running node.
        # pulumi-aws applies a new instance type by stop and start as this resource's own step,
        # behind the rollout's drain and health gate: the host's delivery resizes it in its wave
        # instead (flakefleet/delivery/resize.py), so the type is ignored here.
        # A fixed private address cannot be held by two instances: replace by delete first.
        opts=pulumi.ResourceOptions.merge(
            opts,
            pulumi.ResourceOptions(ignore_changes=["ami", "user_data", "instance_type"], delete_before_replace=True),
        ),
    )


@dataclass(frozen=True)
class MachinesArgs:
    """Every EC2 host of the stack."""

    inventory: Inventory
    """The plan; its EC2 hosts become machines."""
    pools: tuple[PoolConfig, ...]
    """The validated pools (instance shape, AMI override, root volume)."""
    nixos_release: str
    """NixOS release of the boot AMI."""
    subnet_ids: Mapping[str, pulumi.Input[str]]
    """Zone -> private subnet id."""
    security_group_ids: Mapping[str, pulumi.Input[str]]
    """Role -> security group id."""
    authorized_keys: tuple[str, ...] = ()
    """Deploy keys authorized for root at first boot."""
    signing_public_key: str = ""
    """The Nix signing key hosts trust from first boot."""
    boot_timeout_s: float = 600
    region: str = ""
    """The stack's region (the console is read there)."""
    """How long a new instance may take to print its host key fingerprints on its console."""
    autoscaled_groups: tuple[str, ...] = ()
    """The autoscaled pools' group names: the control planes' role lets the cluster autoscaler scale them."""
    cache_arn: pulumi.Input[str] | None = None
    """Binary-cache bucket every node may read."""
    snapshot_arn: pulumi.Input[str] | None = None
    """Snapshot bucket control planes may write their folder of."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags for every taggable child."""


class Machines(pulumi.ComponentResource):
    """Instance profiles per role, boot AMIs, and per EC2 host an SSH host key; `instance()` makes the
    host's instance when the rollout reaches it."""

    instance_ids: dict[str, pulumi.Output[str]]
    """Host name -> instance id (filled as the rollout creates the machines)."""
    host_keys: dict[str, pulumi.Output[str]]
    """Host name -> the SSH host key the host made at first boot, checked against its console
    (known once the rollout has made its instance)."""
    role_arns: dict[str, pulumi.Output[str]]
    """Node role -> IAM role ARN."""

    def __init__(self, name: str, args: MachinesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:Machines", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        inv = args.inventory
        ec2_hosts = [h for h in inv.hosts if h.provider == "ec2"]

        profiles: dict[str, pulumi.Output[str]] = {}
        self.role_arns = {}
        groups = pulumi.Output.from_input(
            aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id if args.autoscaled_groups
            else "").apply(lambda account: [group_arn(partition_of(args.region), args.region, account, g)
                                            for g in args.autoscaled_groups])
        for role in sorted({h.role for h in ec2_hosts}):
            iam_role = aws.iam.Role(f"{name}-{role}", assume_role_policy=json.dumps(ASSUME_EC2), tags=dict(args.tags), opts=child)
            policy = resolved(cache=args.cache_arn, snapshots=args.snapshot_arn, groups=groups).apply(
                lambda arns, role=role: json.dumps(node_policy(role, inv.cluster, arns["cache"], arns["snapshots"],
                                                               arns["groups"]))
            )
            if args.cache_arn is not None or (role == "control-plane" and (args.snapshot_arn or args.autoscaled_groups)):
                aws.iam.RolePolicy(f"{name}-{role}-s3", role=iam_role.id, policy=policy, opts=child)
            profile = aws.iam.InstanceProfile(f"{name}-{role}", role=iam_role.name, tags=dict(args.tags), opts=child)
            profiles[role], self.role_arns[role] = profile.name, iam_role.arn

        pools = {p.name: p for p in args.pools}
        amis: dict[str, pulumi.Input[str]] = {}
        for pool_name in sorted({h.pool for h in ec2_hosts}):
            pool = pools[pool_name]
            amis[pool_name] = pool.ami or nixos_ami(args.nixos_release, pool.arch, pulumi.InvokeOptions(parent=self))

        self.instance_ids, self.host_keys = {}, {}
        self._args, self._name, self._profiles, self._amis, self._pools = args, name, profiles, amis, pools
        # No private key in the user data: only the deploy keys and the signing key's public half.
        self._user_data = first_boot_user_data(list(args.authorized_keys), args.signing_public_key)
        self._keys: dict[str, asyncio.Future] = {}
        for host in ec2_hosts:
            # Known once the rollout made the instance and its console showed the key (instance()).
            self._keys[host.name] = asyncio.get_event_loop().create_future()
            self.host_keys[host.name] = pulumi.Output.from_input(self._keys[host.name]).apply(lambda out: out)
        self.register_outputs({"role_arns": self.role_arns})

    def instance(self, host: Host, depends_on: pulumi.Input[list[pulumi.Resource]]) -> aws.ec2.Instance:
        """The host's instance, made by the rollout so that it waits for `depends_on` (the previous
        wave, healthy): changes to instances then roll one control plane, one batch, at a time."""
        args, pools = self._args, self._pools
        name = f"{self._name}-{host.name}"
        made = instance(
            name,
            host,
            ami=self._amis[host.pool],
            subnet_id=args.subnet_ids[host.zone],
            security_group_id=args.security_group_ids[host.role],
            instance_profile=self._profiles[host.role],
            root_volume=pools[host.pool].root_volume,
            user_data=self._user_data,
            tags={
                **args.tags,
                "Name": f"{args.inventory.cluster}-{host.name}",
                "flakefleet:pool": host.pool,
                "flakefleet:role": host.role,
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=depends_on,
                # Earlier versions put each instance in a `Machine` component of the same name: the
                # alias keeps existing instances (no replacement) now that the component is gone.
                aliases=[pulumi.Alias(parent=pulumi.create_urn(name, MACHINE_TYPE, parent=self))],
            ),
        )
        self.instance_ids[host.name] = made.id
        key = command.local.Command(
            f"{name}-host-key",
            create=HOST_KEY,
            environment={
                INSTANCE_ENV: made.id,
                # Only what identifies the host: any other input change would run the step again.
                TARGET_ENV: HostKeyTarget(host=host.name, address=str(host.address), port=host.ssh_port,
                                          region=args.region).to_json(),
            },
            # An update (say, the stack's region spelled anew) checks the host still presents the key
            # verified before (its stdout): the console of a long-running host may have moved on.
            update=HOST_KEY,
            triggers=[made.id],  # a new instance makes a new key
            logging=command.local.Logging.STDERR,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[made]),
        )
        self._keys[host.name].set_result(key.stdout.apply(lambda out: out.strip()))
        return made
