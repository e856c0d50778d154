"""Run the real `__main__.py` under Pulumi mocks and record the resource graph it registers.

Each registration is kept with its type, name, parent, dependencies, inputs and which inputs
are secret; the stack's exports are resolved. Used by the tier-2 tests and by `bench/`.
"""

from __future__ import annotations

import base64
import json
import runpy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc
from pulumi.runtime.config import set_all_config
from pulumi.runtime.settings import SETTINGS, get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from flakefleet.plan.contract import PUBLISH_ENV, PublishReport
from flakefleet.plan.contract import INSTANCE_ENV, PLAN_ENV, Report
from flakefleet.config.stackfile import read_stack_file, stack_names  # noqa: F401  (re-exported for tests)
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_ID = "123456789012"
# A Nix signing key for tests only (nix key generate-secret --key-name flakefleet-test-1).
TEST_SIGNING_KEY = "flakefleet-test-1:" + "A" * 86 + "=="
SIGNING_KEY = "flakefleet:signing_key"
STANDIN_KUBECONFIG = (
    "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: U1RBTkRJTi1DQQ==\n"
    "    server: https://10.0.0.1:6443\n  name: t\nusers:\n- name: t\n  user:\n    client-key-data: U0VDUkVU\n"
)
AMI_ID = "ami-0123456789abcdef0"


@dataclass
class Registration:
    """One resource the program registered."""

    urn: str
    type: str
    name: str
    parent: str
    dependencies: list[str]
    inputs: dict[str, Any]
    secret_inputs: set[str]
    custom: bool
    options: dict[str, Any] = field(default_factory=dict)
    # Where the wire holds a secret, as the engine stores it ("environment.FLAKEFLEET_SECRET_X");
    # secret_inputs only says which top-level inputs hold one somewhere.
    secret_paths: frozenset[str] = frozenset()


def secret_paths(value: Any, path: str = "") -> set[str]:
    """The paths of the secret values in a registration's wire form (the SDK sends each secret
    value as {<sig>: <secret sig>, value}, inside maps and lists)."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return {path}
        return set().union(*(secret_paths(v, f"{path}.{k}" if path else k) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(secret_paths(v, f"{path}[{i}]") for i, v in enumerate(value)))
    return set()


@dataclass
class ProgramRun:
    """What one run of the program produced."""

    resources: list[Registration]
    exports: dict[str, Any]
    calls: list[tuple[str, dict]] = field(default_factory=list)
    secret_exports: frozenset[str] = frozenset()  # the exports the engine would store as secrets

    def of_type(self, type_: str) -> list[Registration]:
        """Registrations of one resource type."""
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> Registration:
        """The registration of `type_` called `name`."""
        found = [r for r in self.resources if r.type == type_ and r.name == name]
        assert len(found) == 1, f"{len(found)} {type_} named {name}"
        return found[0]

    def by_urn(self, urn: str) -> Registration:
        """The registration with this URN."""
        return next(r for r in self.resources if r.urn == urn)


class FleetMocks(pulumi.runtime.Mocks):
    """Echo inputs, and supply the computed outputs AWS would return. Invokes are kept in `calls`."""

    def __init__(self, previous_outputs: dict | None = None, previous_secrets: frozenset[str] = frozenset()):
        self.calls: list[tuple[str, dict]] = []
        # What the stack's last update exported: the program reads it with the engine's builtin
        # invoke `pulumi:pulumi:readStackOutputs` ({name, outputs, secretOutputNames}, as
        # pkg/resource/deploy/builtins.go:readStackReference answers: the secret outputs come
        # back as secrets, and are named in secretOutputNames).
        self.previous_outputs = previous_outputs or {}
        self.previous_secrets = frozenset(previous_secrets)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        out = dict(args.inputs)
        rid = f"{args.name}-id"
        t = args.typ
        if t == "aws:s3/bucket:Bucket":
            out.update(bucket=f"{args.name}-bkt", arn=f"arn:aws:s3:::{args.name}-bkt")
        elif t == "aws:ec2/instance:Instance":
            rid = f"i-{abs(hash(args.name)) % 16**12:012x}"
            out.update(privateIp=args.inputs.get("privateIp"), arn=f"arn:aws:ec2:::instance/{rid}")
        elif t == "aws:iam/role:Role":
            out.update(arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{args.name}", name=args.name)
        elif t == "aws:iam/instanceProfile:InstanceProfile":
            out.update(name=args.name, arn=f"arn:aws:iam::{ACCOUNT_ID}:instance-profile/{args.name}")
        elif t == "tls:index/privateKey:PrivateKey" and args.inputs.get("algorithm") == "ED25519":
            # terraform-provider-tls: public_key_openssh is an authorized_keys line (ssh
            # MarshalAuthorizedKey: no comment, a trailing newline); private_key_openssh OpenSSH's format.
            pub = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{args.name[-20:]:A>43}\n"
            body = base64.b64encode(f"openssh-key-v1 test {args.name}".encode()).decode()
            out.update(publicKeyOpenssh=pub,
                       privateKeyOpenssh=f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n",
                       privateKeyPem=f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
        elif t == "tls:index/privateKey:PrivateKey":
            pub = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{args.name[-20:]:A>43} {args.name}"
            out.update(publicKeyOpenssh=pub, privateKeyOpenssh=f"-----TEST KEY {args.name}-----",
                       privateKeyPem=f"-----BEGIN EC PRIVATE KEY-----\nTEST{args.name}\n-----END EC PRIVATE KEY-----\n")
        elif t == "tls:index/selfSignedCert:SelfSignedCert":
            # The provider returns the certificate as PEM, with its trailing newline.
            body = base64.b64encode(f"test certificate {args.name}".encode()).decode()
            out.update(certPem=f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
        elif t == "random:index/randomPassword:RandomPassword":
            out.update(result=f"token-{args.name}-{'x' * 20}")
        elif t == "command:local:Command" and args.name.endswith("-host-key"):
            # What `flakefleet host-key` prints: the host's own key, checked against its console.
            host = args.name[: -len("-host-key")]
            out.update(stdout=f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{host[-20:]:A>43}\n", stderr="")
        elif t == "command:local:Command" and "-kubeconfig" in args.name:
            out.update(stdout=STANDIN_KUBECONFIG, stderr="")
        elif t == "command:local:Command" and PLAN_ENV in (env := rpc.unwrap_rpc_secret(args.inputs.get("environment") or {})):
            # What the runner prints last: its report (flakefleet.plan.contract.Report) of a fresh delivery.
            env = {k: rpc.unwrap_rpc_secret(v) for k, v in env.items()}
            plan = json.loads(env[PLAN_ENV])
            report = Report(plan["host"], outcome="activated", system=plan["system"], host_key=plan["host_key"],
                            instance=env.get(INSTANCE_ENV, ""), digest="0" * 64, owner=f"{args.name}-owner",
                            found={"running": "", "outside_flakefleet": False})
            out.update(stdout=json.dumps(asdict(report)), stderr="")
        elif t == "command:local:Command" and PUBLISH_ENV in (env := rpc.unwrap_rpc_secret(args.inputs.get("environment") or {})):
            # What `flakefleet cache` prints last: its report of a first upload.
            plan = json.loads(rpc.unwrap_rpc_secret(env[PUBLISH_ENV]))
            report = PublishReport(plan["pool"], plan["system"], closure=3, uploaded=3, uploaded_bytes=12345)
            out.update(stdout=json.dumps(asdict(report)), stderr="")
        elif t == "command:local:Command":
            out.update(stdout="", stderr="")
        elif t == "aws:ssm/parameter:Parameter":
            # terraform-provider-aws: the ARN is `parameter` + the name when it starts with "/".
            name = args.inputs["name"]
            rid = name
            out.update(arn=f"arn:aws:ssm:eu-west-1:{ACCOUNT_ID}:parameter{name if name.startswith('/') else '/' + name}",
                       version=1, tier="Standard")
        elif t == "aws:ec2/launchTemplate:LaunchTemplate":
            rid = f"lt-{abs(hash(args.name)) % 16**17:017x}"
            out.update(arn=f"arn:aws:ec2:eu-west-1:{ACCOUNT_ID}:launch-template/{rid}", latestVersion=1, defaultVersion=1)
        elif t == "aws:autoscaling/group:Group":
            rid = args.inputs["name"]  # the group's id is its name
            out.update(arn=f"arn:aws:autoscaling:eu-west-1:{ACCOUNT_ID}:autoScalingGroup:"
                           f"00000000-0000-0000-0000-000000000000:autoScalingGroupName/{rid}")
        elif t == "aws:lb/loadBalancer:LoadBalancer":
            out.update(dnsName=f"{args.name}.elb.example", arn=f"arn:aws:elasticloadbalancing:::loadbalancer/{args.name}")
        elif t in ("aws:lb/targetGroup:TargetGroup", "aws:lb/listener:Listener"):
            out.update(arn=f"arn:aws:elasticloadbalancing:::{args.name}")
        return rid, out

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        if args.token == "pulumi:pulumi:readStackOutputs":
            outputs = {k: {rpc._special_sig_key: rpc._special_secret_sig, "value": v} if k in self.previous_secrets else v
                       for k, v in self.previous_outputs.items()}
            return {"name": args.args["name"], "outputs": outputs,
                    "secretOutputNames": sorted(self.previous_secrets & set(outputs))}
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": AMI_ID, "architecture": "x86_64", "rootDeviceName": "/dev/xvda"}
        if args.token == "aws:index/getRegion:getRegion":
            return {"region": "eu-west-1", "name": "eu-west-1", "id": "eu-west-1"}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/ci", "userId": "AIDA", "id": ACCOUNT_ID}
        return {}


class RecordingMonitor(pmocks.MockMonitor):
    """The SDK's mock monitor, keeping each registration's parent, dependencies and secrets."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.records: list[Registration] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = rpc.deserialize_properties(request.object)
            self.records.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    inputs={k: rpc.unwrap_rpc_secret(v) for k, v in raw.items()},
                    secret_inputs={k for k, v in raw.items() if rpc.is_rpc_secret(v)},
                    secret_paths=frozenset(secret_paths(json_format.MessageToDict(request.object))),
                    custom=request.custom,
                    options={
                        "ignore_changes": list(request.ignoreChanges),
                        "replace_on_changes": list(request.replaceOnChanges),
                        "delete_before_replace": request.deleteBeforeReplace,
                        "additional_secret_outputs": list(request.additionalSecretOutputs),
                        # Alias specs as the engine gets them: the old parent's URN, or a full URN.
                        "aliases": [a.spec.parentUrn or a.urn for a in request.aliases],
                    },
                )
            )
        return response


def reaches(run: ProgramRun, start: str, target: str) -> bool:
    """Whether the resource with URN `start` depends, directly or through others, on `target`."""
    deps = {r.urn: r.dependencies for r in run.resources}
    seen, todo = set(), [start]
    while todo:
        for d in deps.get(todo.pop(), []):
            if d == target:
                return True
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return False


def run_program(
    config: dict[str, Any],
    stack: str = "test",
    preview: bool = False,
    monitor: RecordingMonitor | None = None,
    secret_keys: list[str] | None = None,
) -> ProgramRun:
    """Run `__main__.py` with `config` (key -> JSON text) under mocks; raises what the program raises.

    Without `secret_keys`, a test signing key is added as `pulumi config set --secret` would hold it.
    The program evaluates each pool's system with Nix: without it the test skips (fails in CI).
    """
    require_tool("nix")
    monitor = monitor or RecordingMonitor(FleetMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="flakefleet", stack=stack, preview=preview, monitor=monitor)
    config = dict(config)
    if secret_keys is None:
        config.setdefault(SIGNING_KEY, TEST_SIGNING_KEY)
        secret_keys = [SIGNING_KEY]
    set_all_config(config, secret_keys=secret_keys)
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()
    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")))
    outputs = get_root_resource().outputs
    exports = _sync_await(pulumi.Output.from_input(outputs).future(with_unknowns=True)) if outputs else {}
    secrets = frozenset(k for k, v in (outputs or {}).items() if _sync_await(pulumi.Output.from_input(v).is_secret()))
    return ProgramRun(monitor.records, exports or {}, monitor.mocks.calls, secrets)


def run_stack(stack: str, preview: bool = False) -> ProgramRun:
    """Run the program with a stack file's config."""
    return run_program(read_stack_file(stack), stack=stack, preview=preview)
