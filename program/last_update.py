"""What the stack's last update exported, and what the program does with it before any resource:
refuse a CNI switch or a k3s change against the version skew policy, and say per pool what
changes since then."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pulumi

from flakefleet.common.retry import backoff_delays
from flakefleet.common.outputs import StackOutputs
from flakefleet.config import StackConfig
from flakefleet.facts.flake import default_cache_dir
from flakefleet.plan.contract import System
from flakefleet.plan.inventory import Inventory
from flakefleet.plan.rollout import reboot_notes, waves
from flakefleet.plan.specs import gpu_spec
from flakefleet.preview.compare import compare
from flakefleet.preview.derivations import ShowError
from flakefleet.preview.manifest import Manifest, manifests
from flakefleet.preview.render import pool_text
from flakefleet.preview.sides import deployed_side, stack_side
from flakefleet.preview.upgrade import Upgrade, k3s_versions
from flakefleet.preview.upgrade import problems as skew_problems
from flakefleet.preview.upgrade import upgrade as planned_upgrade

DIAGNOSTIC_CAP = 10  # lines of packages or services per pool in a preview
READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"
READ_ATTEMPTS = 5  # reads of it before the program stops (pauses 0.2, 0.4, 0.8, 1.6 s)


@dataclass(frozen=True)
class LastUpdate:
    """What the stack's last update exported."""

    outputs: pulumi.Output[dict]
    """Its outputs ({} before the first update), secret as the engine answers them."""
    host_keys: dict[str, str]
    """Host name -> the SSH host key it pinned (its `nodes` output), plain: keys are public, and
    known now rather than as an Output, since whether an EC2 control plane exists already decides
    how the rollout is registered (components/delivery.py)."""
    batches: tuple[tuple[str, ...], ...] = ()
    """The worker batches it rolled out (its `batches` output), plain: host names; workers keep
    them (flakefleet/plan/rollout.py:worker_batches)."""
    nodes: dict[str, tuple[str, str]] | None = None
    """Host name -> its role and address (its `nodes` output), plain: what the fleet's firewalls
    admitted until now."""


def last_update() -> LastUpdate:
    """This stack's own outputs as its last update exported them, read once with the engine's
    builtin invoke `pulumi:pulumi:readStackOutputs` (pkg/resource/deploy/builtins.go, what a
    StackReference reads through too), before any resource. An invoke is not a resource: a
    StackReference to the stack itself was, and every preview after an update showed its outputs
    as `~ outputs`. The engine answers secret outputs as secrets: the whole answer is then secret."""
    name = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    answer = read_own_outputs(name)
    outputs = (answer.value or {}).get("outputs") or {}
    exported = StackOutputs(outputs, READ_STACK_OUTPUTS)
    # Kept whole, not unwrapped value by value as Output.from_input and Output.secret do: its tables
    # have a row per host (components.whole says why that is slow); an apply's value is kept whole.
    kept = (pulumi.Output.secret(None) if answer.is_secret else pulumi.Output.from_input(None)).apply(lambda _: outputs)
    return LastUpdate(kept,
                      exported.host_keys, exported.batches, exported.node_addresses)


def read_own_outputs(name: str, attempts: int = READ_ATTEMPTS):
    """The invoke's answer, read again when it fails: with a file backend a read can meet the
    checkpoint while the engine writes it (gocloud's fileblob rewrites the checkpoint's `.attrs`
    sidecar in place, blob/fileblob/attrs.go setAttrs; a read in between fails with `failed to load
    checkpoint: EOF`, seen in about one first update in five with the real engine). A failure
    that lasts stops the program with one line, before any resource."""
    delays, last = backoff_delays(first=0.2, cap=2.0), ""
    for attempt in range(attempts):
        try:
            return pulumi.runtime.invoke(READ_STACK_OUTPUTS, {"name": name})
        except Exception as err:  # noqa: BLE001 - the SDK raises a bare Exception for a failed invoke
            last = str(err).splitlines()[0] if str(err) else type(err).__name__
            if attempt < attempts - 1:
                time.sleep(next(delays))
    raise pulumi.RunError(f"cannot read this stack's last outputs ({READ_STACK_OUTPUTS}, {attempts} attempts): {last}")


def read(previous: dict) -> StackOutputs:
    """The last update's outputs (as `LastUpdate.outputs` resolves) through the one typed reader
    the commands use too (flakefleet/common/outputs.py)."""
    return StackOutputs(previous if isinstance(previous, dict) else {}, "the last update")


def cni_problem(cfg: StackConfig, previous: str | None) -> str | None:
    """One line when the cluster's last update ran another CNI. Pods keep their addresses and
    policies from the old CNI: switching needs a rebuild, not a rollout."""
    if previous and previous != cfg.cluster.cni:
        return (f"flakefleet:cluster.cni: the cluster runs {previous}; switching a running cluster to "
                f"{cfg.cluster.cni} is refused (pods keep {previous}'s addresses and policies): rebuild the "
                f"cluster with {cfg.cluster.cni} (docs/nixos.md) or keep cni: {previous}")
    return None


def skew_check(cfg: StackConfig, inventory: Inventory, mine: dict[str, Manifest], previous: StackOutputs
               ) -> tuple[list[str], Upgrade | None]:
    """The k3s version change against the last update: problems (one line each) and the upgrade."""
    before = deployed_side(previous) if mine else None
    if before is None:
        return [], None
    head = stack_side(cfg, inventory, mine)
    old, new = k3s_versions(before), k3s_versions(head)
    roles = {h.name: h.role for h in inventory.hosts}
    order = [h.name for wave in waves(cfg, inventory) for h in wave]
    return skew_problems(old, new, roles), planned_upgrade(old, new, roles, order)


def refuse_unsafe_changes(cfg: StackConfig, inventory: Inventory, mine: dict[str, Manifest],
                          last: pulumi.Output[dict]) -> pulumi.Output[list]:
    """An Output every top-level component depends on: it fails, one line per problem, all at
    once, so nothing is created, changed or delivered, when this update would switch the CNI of a
    running cluster or change k3s against the version skew policy (flakefleet/preview/upgrade.py)."""

    def check(last_outputs: dict) -> list:
        previous = read(last_outputs)
        found = [p for p in [cni_problem(cfg, previous.cluster_cni)] if p]
        found += skew_check(cfg, inventory, mine, previous)[0]
        if found:
            raise pulumi.RunError("\n".join(found))
        return []

    return last.apply(check)


def announce_changes(cfg: StackConfig, inventory: Inventory, systems: dict[str, System],
                     last: pulumi.Output[dict]) -> dict[str, Manifest]:
    """Preview diagnostics, one per pool that changes against the last update (this stack's own
    outputs `system_manifests` and `nodes`, see `last_update`): packages, services,
    reboots, hosts and waves. Returns the systems' manifests (exported for the next preview).
    Stacks last updated before manifests were exported get the reboot lines (`boot`) only."""
    try:
        mine = manifests(systems, default_cache_dir())
    except ShowError as err:
        pulumi.log.warn(f"cannot read the systems' derivations ({err}): the preview lists no package changes")
        mine = {}

    def log(last_outputs: dict) -> None:
        previous = read(last_outputs)
        before = deployed_side(previous) if mine else None
        if before is None:
            lines = reboot_notes(cfg, inventory, systems, previous.boot)
        else:
            changes = compare(before, stack_side(cfg, inventory, mine))
            lines = [pool_text(c, DIAGNOSTIC_CAP) for c in changes if c.status != "unchanged"]
            found, planned = skew_check(cfg, inventory, mine, previous)
            lines += [planned.text()] if planned and not found else []
        for line in lines + install_notes(inventory, previous) + gpu_notes(cfg):
            pulumi.log.info(line)

    last.apply(log)
    return mine


def install_notes(inventory: Inventory, previous: StackOutputs) -> list[str]:
    """What a preview says of bootstrapped hosts against the last update's `nodes`: a host that
    joins is installed (its disks wiped), a new `reinstall` wipes and installs it again."""
    nodes = previous.nodes
    lines = []
    for host in (h for h in inventory.hosts if h.install):
        was = nodes.get(host.name)
        network = host.install.network.summary()
        if was is None:
            lines.append(f"{host.name} will be installed: its disks wiped (layout {host.install.layout}), "
                         f"NixOS installed by nixos-anywhere, then delivered to; its network: {network}")
        elif was.install and was.install.get("network") not in (None, network) and not (
                host.install.reinstall and was.install.get("reinstall") != host.install.reinstall):
            lines.append(f"{host.name}: its network in the stack changed ({network}); it is written at an install "
                         "only, and the running system keeps its own: set hosts[].reinstall to install it anew")
        elif was.install is None:
            lines.append(f"{host.name}: its pool is installed by the stack now, but it runs a delivered system "
                         "already: its install refuses to wipe it. Set hosts[].reinstall to install it anew, or "
                         "take bootstrap off its pool")
        elif was.install.get("reinstall") != host.install.reinstall and host.install.reinstall:
            lines.append(f"{host.name} will be wiped and reinstalled (reinstall: {host.install.reinstall}): "
                         "drained and taken out of the cluster first, in its wave")
    return lines


def gpu_notes(cfg: StackConfig) -> list[str]:
    """What each GPU pool's system carries, and why (plan/specs.py:gpu_spec)."""
    lines = []
    for pool in (p for p in cfg.pools if p.gpu):
        gpu = gpu_spec(cfg, pool.name)
        modules = "open" if gpu.open_modules else "closed (proprietary)"
        switch = "with NVSwitch (data-center driver, fabric manager)" if gpu.nvswitch else "no NVSwitch"
        why = (f"from its instance type {pool.instance_type}" if pool.provider == "ec2" else
               "as the pool says" if pool.gpu_open_modules is not None or pool.gpu_nvswitch is not None else
               "the default for your own hardware (Turing or newer); say gpu_open_modules, gpu_nvswitch otherwise")
        lines.append(f"pool {pool.name}: NVIDIA {modules} kernel modules, {switch}, {why}")
    return lines


def public(value: pulumi.Output) -> pulumi.Output:
    """A value derived from the last update's outputs that holds nothing secret. The stack exports
    secrets too (tokens, the kubeconfig), so the invoke's result is secret as a whole, and so is
    whatever is derived from it: inputs that were plain at the first update would turn secret at
    the next, a change to every Command they feed (seen with the real engine: an unchanged
    preview updating each delivery)."""
    return pulumi.Output.unsecret(value)


def upgrade_snapshot(cfg: StackConfig, inventory: Inventory, mine: dict[str, Manifest],
                     last: pulumi.Output[dict]) -> pulumi.Output[dict[str, str]]:
    """Host -> the etcd snapshot it takes before a k3s minor upgrade: the first server to move,
    once (`flakefleet-pre-k3s-1-34`); {} when this update is no minor upgrade."""

    def pick(last_outputs: dict) -> dict[str, str]:
        found, planned = skew_check(cfg, inventory, mine, read(last_outputs))
        if found or planned is None or not planned.servers:
            return {}
        return {planned.servers[0]: "flakefleet-pre-k3s-" + planned.after.replace(".", "-")}

    return public(last.apply(pick))
