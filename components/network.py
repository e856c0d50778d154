"""The VPC: subnets per zone, routes, NAT, the k3s security-group matrix, a closed default group and flow logs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.secure_bucket import SecureBucket, SecureBucketArgs
from flakefleet.config import NetworkConfig
from flakefleet.plan.inventory import Inventory
from flakefleet.facts.addresses import block_cidr, planned_blocks
from flakefleet.facts.ports import security_group_rules

FLOW_LOG_RETENTION_DAYS = 90


@dataclass(frozen=True)
class NetworkArgs:
    """What the network is built from."""

    inventory: Inventory
    """The plan: VPC range, zones and their subnets."""
    config: NetworkConfig
    """The validated `network` stack key."""
    force_destroy: bool = False
    """Whether `pulumi destroy` may delete the non-empty flow-log bucket."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags for every taggable child."""
    features: frozenset[str] = frozenset({"flannel"})
    """The cluster's CNI features: which of the port table's conditional rules apply."""
    reserve_planned: bool = False
    """Reserve the planned hosts' address blocks (an autoscaled pool's instances take the rest)."""


def _flow_log_delivery(bucket_arn: str, account_id: str | None) -> list[dict]:
    # Written by us rather than left to AWS, which would otherwise edit the policy Pulumi owns.
    condition = {"StringEquals": {"aws:SourceAccount": account_id}} if account_id else {}
    principal = {"Service": "delivery.logs.amazonaws.com"}
    return [
        {
            "Sid": "AWSLogDeliveryWrite",
            "Effect": "Allow",
            "Principal": principal,
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/AWSLogs/*",
            "Condition": condition,
        },
        {
            "Sid": "AWSLogDeliveryAclCheck",
            "Effect": "Allow",
            "Principal": principal,
            "Action": ["s3:GetBucketAcl", "s3:ListBucket"],
            "Resource": bucket_arn,
            "Condition": condition,
        },
    ]


class Network(pulumi.ComponentResource):
    """VPC with private node subnets behind NAT, public subnets for NAT, and least-privilege security groups."""

    vpc_id: pulumi.Output[str]
    """The VPC's id."""
    private_subnet_ids: dict[str, pulumi.Output[str]]
    """Zone name -> id of that zone's private (node) subnet."""
    security_group_ids: dict[str, pulumi.Output[str]]
    """`control-plane`, `worker` and (with an API load balancer) `lb` -> security group id."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:Network", name, None, opts)
        self._name, self._args, self._tags = name, args, dict(args.tags)
        self._child = pulumi.ResourceOptions(parent=self)
        vpc, igw = self._vpc()
        private_rts = self._zones(vpc, igw)
        self._s3_endpoint(vpc, private_rts)
        sgs = self._security_groups(vpc)
        if args.config.flow_logs:
            self._flow_logs(vpc)
        self.vpc_id = vpc.id
        self.security_group_ids = {g: sg.id for g, sg in sgs.items()}
        self.register_outputs(
            {"vpc_id": self.vpc_id, "private_subnet_ids": self.private_subnet_ids, "security_group_ids": self.security_group_ids}
        )

    def _vpc(self) -> tuple[aws.ec2.Vpc, aws.ec2.InternetGateway]:
        """The VPC, its default security group stripped, an internet gateway for the NAT gateways."""
        name, tags, child = self._name, self._tags, self._child
        vpc = aws.ec2.Vpc(
            name,
            cidr_block=str(self._args.inventory.vpc),
            enable_dns_hostnames=True,  # instances resolve each other and the S3 endpoint by name
            enable_dns_support=True,
            tags={**tags, "Name": name},
            opts=child,
        )
        # CIS AWS 5.4: adopt the default group and strip every rule, so nothing can fall back to it.
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[], tags=tags, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)
        return vpc, igw

    def _zones(self, vpc: aws.ec2.Vpc, igw: aws.ec2.InternetGateway) -> list[aws.ec2.RouteTable]:
        """Per zone a public subnet (NAT only) and a private one (the nodes), routes and NAT; returns
        the private route tables (the S3 endpoint joins them)."""
        name, tags, child, cfg = self._name, self._tags, self._child, self._args.config
        public_rt = aws.ec2.RouteTable(f"{name}-public", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-public"}, opts=child)
        aws.ec2.Route(
            f"{name}-public-default", route_table_id=public_rt.id, destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id, opts=child,
        )
        self.private_subnet_ids = {}
        private_rts: list[aws.ec2.RouteTable] = []
        nat_ids: list[pulumi.Output[str]] = []
        for z, zone in enumerate(self._args.inventory.zones):
            public = self._subnet(vpc, zone.name, "public", zone.public)
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{zone.name}", subnet_id=public.id, route_table_id=public_rt.id, opts=child
            )
            private = self._subnet(vpc, zone.name, "private", zone.private)
            self.private_subnet_ids[zone.name] = private.id
            if self._args.reserve_planned:
                for block in planned_blocks(self._args.inventory.pool_blocks):
                    aws.ec2.SubnetCidrReservation(
                        f"{name}-planned-{zone.name}-{block}", subnet_id=private.id, reservation_type="explicit",
                        cidr_block=str(block_cidr(zone.private, block)), description="flakefleet: planned hosts",
                        opts=child,
                    )
            if cfg.nat == "per-az" or (cfg.nat == "single" and z == 0):
                eip = aws.ec2.Eip(f"{name}-nat-{zone.name}", domain="vpc", tags=tags, opts=child)
                nat = aws.ec2.NatGateway(
                    f"{name}-nat-{zone.name}", allocation_id=eip.id, subnet_id=public.id, tags=tags,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
                nat_ids.append(nat.id)
            rt = aws.ec2.RouteTable(
                f"{name}-private-{zone.name}", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-private-{zone.name}"},
                opts=child,
            )
            if nat_ids:
                aws.ec2.Route(
                    f"{name}-private-{zone.name}-default", route_table_id=rt.id, destination_cidr_block="0.0.0.0/0",
                    nat_gateway_id=nat_ids[-1], opts=child,
                )
            aws.ec2.RouteTableAssociation(f"{name}-private-{zone.name}", subnet_id=private.id, route_table_id=rt.id,
                                          opts=child)
            private_rts.append(rt)
        return private_rts

    def _subnet(self, vpc: aws.ec2.Vpc, zone: str, kind: str, cidr) -> aws.ec2.Subnet:
        return aws.ec2.Subnet(
            f"{self._name}-{kind}-{zone}",
            vpc_id=vpc.id,
            cidr_block=str(cidr),
            availability_zone=zone,
            map_public_ip_on_launch=False,  # only NAT gateways live in the public subnets, with their own EIPs
            tags={**self._tags, "Name": f"{self._name}-{kind}-{zone}"},
            opts=self._child,
        )

    def _s3_endpoint(self, vpc: aws.ec2.Vpc, private_rts: list[aws.ec2.RouteTable]) -> None:
        """S3 through a gateway endpoint: free, private, and independent of NAT for cache and snapshots."""
        region = aws.get_region_output().region
        aws.ec2.VpcEndpoint(
            f"{self._name}-s3",
            vpc_id=vpc.id,
            service_name=region.apply(lambda r: f"com.amazonaws.{r}.s3"),
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts],
            tags=self._tags,
            opts=self._child,
        )

    def _security_groups(self, vpc: aws.ec2.Vpc) -> dict[str, aws.ec2.SecurityGroup]:
        """One group per role (and the API load balancer's), with the rules of the port table."""
        name, tags, child, args = self._name, self._tags, self._child, self._args
        inv, cfg = args.inventory, args.config
        with_lb = bool(inv.api_lb_addresses)
        groups = ["control-plane", "worker"] + (["lb"] if with_lb else [])
        sgs = {
            g: aws.ec2.SecurityGroup(
                f"{name}-{g}",
                vpc_id=vpc.id,
                description=f"flakefleet {inv.cluster} {g}",
                tags={**tags, "Name": f"{name}-{g}"},
                opts=child,
            )
            for g in groups
        }
        for rule in security_group_rules(
            [str(c) for c in cfg.admin_cidrs], [str(c) for c in cfg.api_cidrs], with_lb, args.features
        ):
            kind = aws.vpc.SecurityGroupIngressRule if rule.direction == "ingress" else aws.vpc.SecurityGroupEgressRule
            kind(
                f"{name}-{rule.key}",
                security_group_id=sgs[rule.group].id,
                ip_protocol=rule.protocol,
                from_port=rule.from_port,
                to_port=rule.to_port,
                referenced_security_group_id=sgs[rule.peer_group].id if rule.peer_group else None,
                cidr_ipv4=rule.cidr,
                description=rule.description[:255],
                tags=tags,
                opts=child,
            )
        return sgs

    def _flow_logs(self, vpc: aws.ec2.Vpc) -> None:
        """VPC flow logs (CIS AWS 3.7) into a SecureBucket of their own."""
        name = self._name
        logs = SecureBucket(
            f"{name}-flow-logs",
            SecureBucketArgs(
                noncurrent_days=1,
                force_destroy=self._args.force_destroy,
                expire_days=FLOW_LOG_RETENTION_DAYS,
                tags=self._tags,
                extra_statements=_flow_log_delivery,
                account_id=aws.get_caller_identity_output().account_id,
            ),
            self._child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="s3",
            log_destination=logs.arn,
            tags=self._tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs]),
        )
