"""The cluster's trust: its k3s CAs and tokens, made by the stack, kept as Pulumi secrets, delivered as 0600 files outside the store."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from components import resolved

from flakefleet.plan.specs import AGENT_TOKEN, K3S_CAS, SERVER_TOKEN

TOKEN_LENGTH = 48
CA_VALIDITY_HOURS = 10 * 365 * 24  # k3s' own CAs are valid for 10 years (docs.k3s.io/advanced)


def ca_hash(server_ca_pem: str) -> str:
    """The CA hash of k3s' secure token for a one-certificate bundle: the SHA256 of the PEM file's
    bytes as k3s serves them at /cacerts (k3s pkg/clientaccess/token.go, hashCA)."""
    return hashlib.sha256(server_ca_pem.encode()).hexdigest()


@dataclass(frozen=True)
class ClusterTokensArgs:
    """How tokens are made."""

    cluster: str = "flakefleet"
    """The cluster's name, in its CAs' common names."""
    length: int = TOKEN_LENGTH
    """Characters per token secret (letters and digits)."""
    server_token: str | None = None
    """The original cluster's server token, for a rebuild from its snapshot (a secret); None generates one."""


class ClusterTokens(pulumi.ComponentResource):
    """k3s' five CAs and the two token secrets, as Pulumi secrets; every join pins the server CA."""

    server_token: pulumi.Output[str]
    """The server token's secret: joins control planes, encrypts etcd bootstrap data; needed to restore a snapshot."""
    agent_token: pulumi.Output[str]
    """The agent token's secret: joins workers only."""
    ca_hash: pulumi.Output[str]
    """The SHA256 a secure token carries for the stack's server CA (K10<hash>::...)."""
    ca_certificates: dict[str, pulumi.Output[str]]
    """CA name (server-ca, client-ca, request-header-ca, etcd/server-ca, etcd/peer-ca) -> its PEM certificate."""
    ca_keys: dict[str, pulumi.Output[str]]
    """CA name -> its PEM private key (a secret)."""

    def __init__(self, name: str, args: ClusterTokensArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:ClusterTokens", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        server = random.RandomPassword(f"{name}-server", length=args.length, special=False, opts=child)
        agent = random.RandomPassword(f"{name}-agent", length=args.length, special=False, opts=child)
        # A snapshot's bootstrap data is encrypted with the server token it was taken with.
        self.server_token = pulumi.Output.secret(args.server_token if args.server_token else server.result)
        self.agent_token = pulumi.Output.secret(agent.result)
        self.ca_certificates, self.ca_keys = {}, {}
        for ca in K3S_CAS:
            slug = ca.replace("/", "-")
            # ECDSA P-256, as k3s makes its own (certutil.NewPrivateKey).
            key = tls.PrivateKey(f"{name}-{slug}", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
            cert = tls.SelfSignedCert(
                f"{name}-{slug}",
                private_key_pem=key.private_key_pem,
                is_ca_certificate=True,
                allowed_uses=["cert_signing", "digital_signature", "key_encipherment"],
                subject={"common_name": f"{args.cluster}-{slug}"},
                validity_period_hours=CA_VALIDITY_HOURS,
                set_subject_key_id=True,
                opts=child,
            )
            self.ca_certificates[ca], self.ca_keys[ca] = cert.cert_pem, pulumi.Output.secret(key.private_key_pem)
        self.ca_hash = self.ca_certificates["server-ca"].apply(ca_hash)
        self.register_outputs({})  # secrets are never outputs of the component, let alone of the stack

    def environment(self) -> dict[str, pulumi.Output[str]]:
        """The runner's environment entries that carry the token secrets and the CAs (the first
        control plane's files: certificates and keys alike, all in the secret environment)."""
        return {
            SERVER_TOKEN[1]: self.server_token,
            AGENT_TOKEN[1]: self.agent_token,
            **{K3S_CAS[ca][0]: self.ca_certificates[ca] for ca in K3S_CAS},
            **{K3S_CAS[ca][1]: self.ca_keys[ca] for ca in K3S_CAS},
        }

    def worker_join_token(self) -> pulumi.Output[str]:
        """A worker's token file as delivery writes it (`K10<CA hash>::node:<secret>`,
        docs.k3s.io/cli/token): what an autoscaled pool's instances read from SSM (a secret)."""
        return pulumi.Output.secret(resolved(ca_hash=self.ca_hash, secret=self.agent_token).apply(
            lambda v: f"K10{v['ca_hash']}::node:{v['secret']}"))
