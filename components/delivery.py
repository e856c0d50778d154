"""NixOS delivery: one Command per host puts its pool's system on it, in rollout order."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command
from pulumi.resource import DependencyResource

from components import joined, resolved
from components.machine import Machines
from flakefleet.config import StackConfig
from components.install import Installs
from flakefleet.plan.contract import INSTANCE_ENV, PLAN_ENV, SIGNING_KEY_ENV, report_in
from flakefleet.plan.inventory import Host, Inventory
from flakefleet.plan.rollout import RestorePoint, waves
from flakefleet.plan.hostplans import Resolved, host_plan
from flakefleet.plan.specs import ca_files, token_files
from flakefleet.plan.contract import System

RUNNER = "./scripts/flakefleet deliver"
# pulumi-command runs `create` for a new Command, `update` when an input changed (the runner
# delivers only when the system, files, host key or instance changed, else records and touches
# no host), and `delete` when the Command goes: for a host leaving the stack it drains the node;
# for the old half of any replacement it sees the new Command holds the host and does nothing.
CREATE, UPDATE, DELETE = RUNNER, f"{RUNNER} --update", f"{RUNNER} --remove"
# A *.metal boot plus copy and activation; Pulumi's default would cut a slow first delivery.
COMMAND_TIMEOUT = "120m"


@dataclass(frozen=True)
class DeliveryArgs:
    """What is delivered where."""

    config: StackConfig
    """The validated stack (pools, delivery settings)."""
    inventory: Inventory
    """The hosts, in rollout order."""
    systems: Mapping[str, System]
    """System name (pool, or pool/host) -> evaluated system."""
    generated_host_keys: Mapping[str, pulumi.Input[str]]
    """EC2 and bootstrapped host name -> the SSH host key the stack checked or made; other
    bring-your-own hosts' keys come from config."""
    signing_key: pulumi.Input[str]
    """The Nix signing key (a secret); reaches the runner only through its environment."""
    secret_environment: Mapping[str, pulumi.Input[str]]
    """FLAKEFLEET_SECRET_* -> secret value (the k3s tokens), for the host files that name them."""
    machines: Machines | None = None
    """Makes each EC2 host's machine when its wave comes (None: bring-your-own hosts only)."""
    installs: Installs | None = None
    """Installs NixOS on each bootstrapped host when its wave comes (None: no pool is bootstrapped)."""
    api_ready: Sequence[pulumi.Resource] = ()
    """What joining hosts need first (the API load balancer): every wave after the first waits for it."""
    snapshot_bucket: pulumi.Input[str] | None = None
    """Bucket control planes write etcd snapshots to (their folder), or None for local snapshots only."""
    restore: RestorePoint | None = None
    """A rebuild's snapshot: restored by the first control plane before the others join."""
    uploads: Sequence[pulumi.Resource] = ()
    """The pools' publish steps (build once, upload once): the first wave waits for them."""
    cache_bucket: pulumi.Input[str] | None = None
    """The binary cache hosts substitute from (None: SSH copies from the deployer)."""
    ca_hash: pulumi.Input[str] = ""
    """The stack's server CA hash, which secure tokens carry (components/tokens.py)."""
    upgrade_snapshot: pulumi.Input[Mapping[str, str]] = ()
    """Host -> the etcd snapshot it takes before a k3s minor upgrade (the first server to move)."""
    known_host_keys: Mapping[str, str] = ()
    """Host name -> the key the last update pinned (its `nodes` output): an EC2 control plane of
    a later wave that exists is made (changed, replaced) after the earlier ones' deliveries, so
    their plans name it by this key; one not among them does not exist yet and is made before the
    first wave, so every control plane's plan names it from the first update on."""


def host_outputs(stdout: str, instance_id: str | None) -> dict:
    """What a host's last delivery report says, for the stack outputs: the system it confirmed
    (None when unknown), what it found before acting, whether a reboot is pending, its outcome
    (activated, rebooted, up to date)."""
    report = report_in(stdout)
    return {
        "system": report.get("system") or None,
        "found": report.get("found", {}),
        "reboot_pending": bool(report.get("reboot_pending")),
        "instance_id": instance_id,
        "outcome": report.get("outcome") or None,
    }


def after_urns(urns: Sequence[str]) -> list[pulumi.Resource]:
    """Dependencies on already-registered resources, by URN. The SDK checks every new edge for a
    cycle by walking the dependency's whole history (pulumi/runtime/resource_cycle_breaker.py),
    so an edge to the previous wave's Command made each registration cost the length of the
    rollout so far; an edge to a `DependencyResource` (the SDK's own stand-in for a resource
    known by URN, as remote components use) records the same dependency for the engine and
    has no history to walk."""
    return [DependencyResource(urn) for urn in urns]


class Delivery(pulumi.ComponentResource):
    """Control planes one at a time (the cluster-initializing one first), then workers in batches."""

    first: command.local.Command
    """The first control plane's delivery Command (the cluster's first server)."""
    first_system: pulumi.Output[str | None]
    """The system its last delivery confirmed there (None when unknown)."""
    host_keys: dict[str, pulumi.Output[str]]
    """Host name -> the SSH host key its delivery pinned."""
    hosts: pulumi.Output[dict[str, dict]]
    """Host name -> what its last delivery reported (`host_outputs`), once every wave is registered."""
    last_wave: pulumi.Output[list[pulumi.Resource]]
    """The last wave's Commands: what waits for the whole rollout depends on these."""

    def __init__(self, name: str, args: DeliveryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:Delivery", name, None, opts)
        self._name, self._args = name, args
        self.host_keys = {
            h.name: pulumi.Output.from_input(args.generated_host_keys.get(h.name) or h.ssh_host_key)
            for h in args.inventory.hosts
        }
        self._waves = waves(args.config, args.inventory)
        self._wave_of = {h.name: n for n, wave in enumerate(self._waves) for h in wave}
        # Plain, never an Output: an Output of a dict is unwrapped value by value wherever it is an
        # input (pulumi's Output.from_input), which for every host's plan was hosts x hosts.
        self._known = dict(args.known_host_keys or {})
        # EC2 control planes of later waves that do not exist yet: made now, before the first wave
        # (nothing of theirs can be disrupted), so their checked host keys are in every control
        # plane's plan at the first update as they are (from `known_host_keys`) at every later one,
        # and an unchanged second update changes no plan. Those that exist wait for their wave:
        # a change that restarts or replaces instances reaches one control plane at a time.
        self._made = {h.name: args.machines.instance(h, list(args.uploads)) for h in args.inventory.control_planes
                      if h.provider == "ec2" and args.machines and self._wave_of[h.name] > 0
                      and h.name not in args.known_host_keys}
        self._snapshots = pulumi.Output.from_input(args.upgrade_snapshot or {})
        # One secret Output each, shared by every host's environment (not one wrapper per host).
        self._secrets = {
            SIGNING_KEY_ENV: pulumi.Output.secret(args.signing_key),
            **{env: pulumi.Output.secret(v) for env, v in args.secret_environment.items()},
        }
        self._raw: dict[str, tuple[pulumi.Output[str], pulumi.Input[str] | None]] = {}  # stdout, instance id
        # Wave 0 (the first control plane) now: the kubeconfig reads from it. Every later wave is
        # registered only once the previous one is (in `up`: delivered and healthy): the SDK's
        # wait for outstanding outputs scans all of them each time one resolves, so a fleet made
        # all at once paid hosts x waves; made wave by wave it pays for one wave at a time.
        first_wave = self._wave(0, list(args.uploads))
        self.first = first_wave[0]
        self.first_system = self.first.stdout.apply(lambda out: host_outputs(out, None)["system"])
        rest = asyncio.ensure_future(self._later_waves(first_wave))
        self.last_wave = pulumi.Output.from_input(rest)
        # One Output over every host's report (not three per host: each Output costs the SDK's
        # wait loop a look per step). pulumi-command marks every output secret when any input
        # is (the signing key is), but the report carries nothing secret by construction
        # (tested): the node table stays readable.
        self.hosts = pulumi.Output.unsecret(self.last_wave.apply(lambda _: self._reports()))
        self.register_outputs({"hosts": self.hosts})

    def _reports(self) -> pulumi.Output[dict[str, dict]]:
        stdout = resolved(**{name: out for name, (out, _) in self._raw.items()})
        instance = resolved(**{name: instance for name, (_, instance) in self._raw.items()})
        return joined(stdout=stdout, instance=instance).apply(
            lambda v: {name: host_outputs(v["stdout"][name], v["instance"][name]) for name in self._raw})

    async def _later_waves(self, previous: list[command.local.Command]) -> list[pulumi.Resource]:
        """Each wave after the first, registered once the previous wave is; returns the last wave."""
        for number in range(1, len(self._waves)):
            urns = await asyncio.gather(*(cmd.urn.future() for cmd in previous))
            previous = self._wave(number, after_urns(urns) + list(self._args.api_ready))
        return previous

    def _secrets_of(self, host: Host) -> dict[str, pulumi.Output[str]]:
        """The secrets a host's runner needs: the signing key and those its files name (its role's
        token; the CAs on the first control plane only). Each is encrypted into every Command's
        state that carries it: all of them on every host cost the engine a fifth of its time at
        a thousand hosts."""
        first = host.name == self._args.inventory.control_planes[0].name
        named = {f.secret_env for f in token_files(host) + (ca_files() if first else ())}
        return {env: value for env, value in self._secrets.items() if env == SIGNING_KEY_ENV or env in named}

    def _wave(self, number: int, waits: list[pulumi.Resource]) -> list[command.local.Command]:
        """One wave's Commands, each after `waits` (the previous wave, the cache uploads)."""
        return [self._host(host, self._waves[number], waits) for host in self._waves[number]]

    def _host(self, host: Host, wave: tuple[Host, ...], waits: list[pulumi.Resource]) -> command.local.Command:
        """One host's delivery Command (and, on EC2, its instance first)."""
        args, cfg, inv = self._args, self._args.config, self._args.inventory
        # An EC2 host's instance waits for the previous wave too, so a change that replaces or
        # restarts instances reaches one control plane (one batch) at a time, each healthy first.
        machine = self._made.get(host.name) or (args.machines.instance(host, waits) if host.provider == "ec2" else None)
        # A plan needs its own host's key and the control planes' (readiness is asked there), never
        # every host's: each Command then depends on a handful of inputs, not on the whole fleet.
        # EC2 control planes of later waves that exist are made after this one: their keys are
        # the last update's (those made before the first wave are this update's own).
        later = {h.name for h in inv.control_planes if h.provider == "ec2" and h.name not in self._made
                 and self._wave_of[h.name] > self._wave_of[host.name]}
        needed = [n for n in dict.fromkeys([host.name, *(h.name for h in inv.control_planes)]) if n not in later]

        def plan_json(v: dict) -> str:
            keys = {**{n: k for n, k in self._known.items() if n in later}, **v["keys"]}
            values = Resolved(snapshot_bucket=v["snapshot_bucket"], cache_bucket=v["cache_bucket"],
                              ca_hash=v["ca_hash"], snapshot_before=v["snapshots"].get(host.name, ""))
            return host_plan(cfg, inv, host, wave, args.systems, keys, values, args.restore).to_json()

        plan = resolved(snapshot_bucket=args.snapshot_bucket, cache_bucket=args.cache_bucket, ca_hash=args.ca_hash,
                        snapshots=self._snapshots,
                        keys=resolved(**{n: self.host_keys[n] for n in needed})).apply(plan_json)
        # A bootstrapped host gets NixOS first, in its wave too (its plan drains it for a reinstall).
        install = args.installs.install(host, waits, plan) if host.install and args.installs else None
        cmd = command.local.Command(
            f"{self._name}-{host.name}",
            create=CREATE,
            update=UPDATE,
            delete=DELETE,
            environment={
                PLAN_ENV: plan,
                # A replaced instance (same address, same key) gets its system again.
                INSTANCE_ENV: machine.id if machine else "",
                **self._secrets_of(host),
            },
            # No triggers: a replacement would delete the old Command, and its delete is the
            # host's removal. Every change is an update; the runner decides what reaches the host.
            # Progress is on stderr (logged); stdout is the JSON report (kept in state, not logged).
            logging=command.local.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=self,
                # The instance waits for the previous wave already; one edge is enough.
                # Its machine (which waits for the previous wave), else its install, else the wave
                # before; a machine made before the first wave does not wait, so its Command does.
                depends_on=[machine, *waits] if host.name in self._made else [machine] if machine
                else [install] if install else waits,
                custom_timeouts=pulumi.CustomTimeouts(create=COMMAND_TIMEOUT, update=COMMAND_TIMEOUT),
            ),
        )
        self._raw[host.name] = (cmd.stdout, machine.id if machine else None)
        return cmd
