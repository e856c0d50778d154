"""The cluster's admin kubeconfig, read over pinned SSH from the first control plane once it is healthy."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from flakefleet.cluster.kubeconfig import ca_certificate
from flakefleet.plan.contract import KUBECONFIG_PLAN_ENV, Endpoint, KubeconfigPlan
from flakefleet.plan.inventory import Host


@dataclass(frozen=True)
class KubeconfigArgs:
    """Where the kubeconfig comes from and which address it should point at."""

    cluster: str
    """Cluster name: the kubeconfig's cluster and context name."""
    api_endpoint: str
    """`https://<API address>:6443`, written into the kubeconfig as the server."""
    first_control_plane: Host
    """The cluster-initializing control plane, whose /etc/rancher/k3s/k3s.yaml is read."""
    host_key: pulumi.Input[str]
    """Its pinned SSH host key."""
    system: pulumi.Input[str]
    """The system it runs, once delivered (re-read when it changes)."""
    after: pulumi.Resource
    """Its delivery: the kubeconfig is read only once it is healthy."""


class Kubeconfig(pulumi.ComponentResource):
    """The admin kubeconfig, read over pinned SSH from the first control plane once it is healthy."""

    kubeconfig: pulumi.Output[str]
    """The kubeconfig with its server rewritten to the API endpoint (a secret: it holds admin credentials)."""
    ca_certificate: pulumi.Output[str]
    """The cluster CA certificate (PEM; public)."""

    def __init__(self, name: str, args: KubeconfigArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:Kubeconfig", name, None, opts)
        plan = pulumi.Output.from_input(args.host_key).apply(lambda key: KubeconfigPlan(
            cluster=args.cluster, api_endpoint=args.api_endpoint,
            endpoint=Endpoint.of(args.first_control_plane, key)).to_json())
        fetch = command.local.Command(
            name,
            create="./scripts/flakefleet kubeconfig",
            environment={KUBECONFIG_PLAN_ENV: plan},
            triggers=[args.system, args.host_key, args.api_endpoint],
            # The kubeconfig is stdout, which Pulumi keeps in state: only ever as a secret.
            logging=command.local.Logging.STDERR,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.after], additional_secret_outputs=["stdout"]),
        )
        self.kubeconfig = pulumi.Output.secret(fetch.stdout)
        self.ca_certificate = pulumi.Output.unsecret(fetch.stdout.apply(ca_certificate))
        self.register_outputs({"ca_certificate": self.ca_certificate})
