"""The Kubernetes API load balancer: an internal NLB on fixed addresses in front of every control plane."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from flakefleet.plan.inventory import API_PORT, Inventory


@dataclass(frozen=True)
class ApiLoadBalancerArgs:
    """Where the load balancer sits and what it fronts."""

    inventory: Inventory
    """The plan: zones, the fixed load-balancer addresses and the control planes."""
    vpc_id: pulumi.Input[str]
    """The VPC."""
    subnet_ids: Mapping[str, pulumi.Input[str]]
    """Zone -> private subnet id."""
    security_group_id: pulumi.Input[str]
    """The `lb` security group."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags for every taggable child."""


class ApiLoadBalancer(pulumi.ComponentResource):
    """Internal NLB, TCP 6443, health-checked, with one IP target per control plane."""

    dns_name: pulumi.Output[str]
    """The load balancer's DNS name (known after creation)."""
    target_group_arn: pulumi.Output[str]
    """The control planes' target group."""

    def __init__(self, name: str, args: ApiLoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:ApiLoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        inv = args.inventory
        lb = aws.lb.LoadBalancer(
            name,
            load_balancer_type="network",
            internal=True,
            # Fixed addresses make the endpoint known at preview time and stable across rebuilds.
            subnet_mappings=[
                {"subnet_id": args.subnet_ids[zone.name], "private_ipv4_address": str(address)}
                for zone, address in zip(inv.zones, inv.api_lb_addresses, strict=True)
            ],
            security_groups=[args.security_group_id],
            enable_cross_zone_load_balancing=True,  # a zone without a healthy server still reaches the others
            tags=dict(args.tags),
            opts=child,
        )
        target_group = aws.lb.TargetGroup(
            name,
            port=API_PORT,
            protocol="TCP",
            target_type="ip",
            vpc_id=args.vpc_id,
            preserve_client_ip="false",  # targets then see the LB's group, which the port table admits
            deregistration_delay=30,
            health_check={"protocol": "TCP", "port": str(API_PORT), "interval": 10, "healthy_threshold": 2, "unhealthy_threshold": 2},
            tags=dict(args.tags),
            opts=child,
        )
        for host in inv.control_planes:
            aws.lb.TargetGroupAttachment(
                f"{name}-{host.name}",
                target_group_arn=target_group.arn,
                target_id=str(host.address),
                port=API_PORT,
                opts=child,  # IP targets: registered by address, before or after the instance exists
            )
        aws.lb.Listener(
            name,
            load_balancer_arn=lb.arn,
            port=API_PORT,
            protocol="TCP",
            default_actions=[{"type": "forward", "target_group_arn": target_group.arn}],
            tags=dict(args.tags),
            opts=child,
        )
        self.dns_name = lb.dns_name
        self.target_group_arn = target_group.arn
        self.register_outputs({"dns_name": self.dns_name, "target_group_arn": self.target_group_arn})
