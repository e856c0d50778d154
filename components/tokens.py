"""The cluster's k3s tokens: random, kept as Pulumi secrets, delivered to hosts as 0600 files outside the store."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from flakefleet.plan.specs import AGENT_TOKEN, SERVER_TOKEN

TOKEN_LENGTH = 48


@dataclass(frozen=True)
class ClusterTokensArgs:
    """How tokens are made."""

    length: int = TOKEN_LENGTH
    """Characters per token (letters and digits)."""
    server_token: str | None = None
    """The original cluster's server token, for a rebuild from its snapshot (a secret); None generates one."""


class ClusterTokens(pulumi.ComponentResource):
    """Random k3s tokens, kept as Pulumi secrets and delivered to hosts as 0600 files outside the store."""

    server_token: pulumi.Output[str]
    """The server token: joins control planes, encrypts etcd bootstrap data; needed to restore a snapshot."""
    agent_token: pulumi.Output[str]
    """The agent token: joins workers only."""

    def __init__(self, name: str, args: ClusterTokensArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:ClusterTokens", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        server = random.RandomPassword(f"{name}-server", length=args.length, special=False, opts=child)
        agent = random.RandomPassword(f"{name}-agent", length=args.length, special=False, opts=child)
        # A snapshot's bootstrap data is encrypted with the server token it was taken with.
        self.server_token = pulumi.Output.secret(args.server_token if args.server_token else server.result)
        self.agent_token = pulumi.Output.secret(agent.result)
        self.register_outputs({})  # tokens are never outputs of the component, let alone of the stack

    def environment(self) -> dict[str, pulumi.Output[str]]:
        """The runner's environment entries that carry the tokens."""
        return {SERVER_TOKEN[1]: self.server_token, AGENT_TOKEN[1]: self.agent_token}
