"""A comparison for people (text, one block per pool; Markdown, one collapsible table per
stack) and for machines (JSON, nothing capped). Long lists are sorted by name and capped."""

from __future__ import annotations

from collections.abc import Sequence

from flakefleet.preview.compare import PackageChange, PoolChange, UnitChange

TEXT_CAP = 15
CELL_CAP = 8
UNIT_WORDS = {
    "added": "added",
    "removed": "removed",
    "restart": "restarts",
    "reload": "reloads",
    "keep": "changes, keeps running (restartIfChanged = false)",
    "change": "changes",
}


def capped(items: Sequence[str], cap: int) -> list[str]:
    """At most `cap` items; more end with `and N more`."""
    if len(items) <= cap:
        return list(items)
    return [*items[: cap - 1], f"and {len(items) - cap + 1} more"]


def package_text(change: PackageChange) -> str:
    before, after = ", ".join(change.before), ", ".join(change.after)
    if change.kind == "added":
        return f"{change.name}: added {after}"
    if change.kind == "removed":
        return f"{change.name}: removed {before}"
    return f"{change.name}: {before} → {after}"


def unit_text(change: UnitChange) -> str:
    return f"{change.name} {UNIT_WORDS.get(change.kind, change.kind)}"


def hosts_text(hosts: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"{h} (wave {w})" if w >= 0 else h for h, w in hosts)


def reboot_text(change: PoolChange) -> str:
    kernel = f"kernel {change.kernel[0]} → {change.kernel[1]}; " if change.kernel else ""
    what = f"{kernel}{', '.join(change.boot)} change"
    return f"{what}: reboot pending (reboot: never)" if change.reboot == "never" else f"{what}: the hosts reboot"


def pool_text(change: PoolChange, cap: int = TEXT_CAP) -> str:
    """One pool's block: a headline, then what changes, indented."""
    head = f"pool {change.pool}"
    if change.status == "unchanged":
        return f"{head}: unchanged"
    if change.status == "removed":
        return f"{head}: removed; {hosts_text(change.hosts) or 'no hosts'} leave the cluster"
    if change.status == "added":
        packages, units = change.size
        who = change.pulled or f"{hosts_text(change.hosts) or 'no hosts'} join"
        return f"{head}: added ({packages} packages, {units} units); {who}"
    if change.pulled:
        lines = [f"{head}: {change.pulled}"]
    else:
        lines = [f"{head}: " + (f"changes on {hosts_text(change.hosts)}" if change.hosts else "system unchanged")]
    if change.packages:
        lines += [f"  packages ({len(change.packages)}):"] + [f"    {t}" for t in capped([package_text(c) for c in change.packages], cap)]
    if change.rebuilt:
        lines.append(f"  rebuilt at the same version ({len(change.rebuilt)}): " + ", ".join(capped(change.rebuilt, cap)))
    if change.units:
        lines.append("  services: " + ", ".join(capped([unit_text(u) for u in change.units], cap)))
    if change.boot:
        lines.append(f"  reboot: {reboot_text(change)}")
    if change.resize:
        lines.append(f"  instance type: {change.resize[0]} → {change.resize[1]}: {hosts_text(change.resized)} "
                     "restart (drained, health-gated, in their waves)")
    if change.deploys:
        lines.append("  cluster: deploys " + ", ".join(capped(change.deploys, cap)))
    if change.prunes:
        lines.append("  cluster: prunes " + ", ".join(capped(change.prunes, cap))
                     + " (its objects deleted after the switch: k3s never deletes them)")
    if change.images_removed:
        lines.append("  images no longer preloaded: " + ", ".join(capped(change.images_removed, cap)))
    if change.configuration_only:
        lines.append("  configuration only: no package, service or boot file changes")
    if change.hosts_added:
        lines.append(f"  hosts added: {hosts_text(change.hosts_added)}")
    if change.hosts_removed:
        lines.append(f"  hosts removed: {', '.join(change.hosts_removed)}")
    return "\n".join(lines)


def summary(changes: Sequence[PoolChange]) -> str:
    """`1 of 3 pools change, 2 hosts reboot`."""
    changed = sum(1 for c in changes if c.status != "unchanged")
    reboots = sum(len(c.hosts) for c in changes if c.status == "changed" and c.reboots)
    restarts = sum(len(c.resized) for c in changes)
    resized = f", {restarts} host{'s' if restarts != 1 else ''} restart for a new instance type" if restarts else ""
    return f"{changed} of {len(changes)} pools change, {reboots} host{'s' if reboots != 1 else ''} reboot{resized}"


def text(stack: str, against: str, changes: Sequence[PoolChange]) -> str:
    return "\n".join([f"stack {stack}: {summary(changes)} (working tree against {against})",
                      *(pool_text(c) for c in changes)])


def _md(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _cell(items: Sequence[str]) -> str:
    return "<br>".join(_md(i) for i in capped(items, CELL_CAP))


def _row(c: PoolChange) -> str:
    if c.status == "unchanged":
        return f"| {_md(c.pool)} | unchanged | | | | |"
    if c.status in ("added", "removed"):
        what = f"{c.size[0]} packages, {c.size[1]} units" if c.status == "added" else ""
        who = [c.pulled] if c.pulled else [hosts_text([h]) for h in c.hosts]
        return f"| {_md(c.pool)} | **{c.status}** | {what} | | | {_cell(who)} |"
    packages = [package_text(p) for p in c.packages]
    if c.rebuilt:
        packages.append(f"{len(c.rebuilt)} rebuilt at the same version: " + ", ".join(capped(c.rebuilt, CELL_CAP)))
    hosts = [hosts_text([h]) for h in c.hosts] + [f"{hosts_text([h])} added" for h in c.hosts_added] + [
        f"{h} removed" for h in c.hosts_removed]
    hosts += [f"{hosts_text([h])} restarts as {c.resize[1]}" for h in c.resized] if c.resize else []
    hosts += [c.pulled] if c.pulled else []
    change = "configuration" if c.configuration_only else "changed"
    services = [unit_text(u) for u in c.units] + [f"deploys {m}" for m in c.deploys] + [
        f"**prunes {m}**" for m in c.prunes] + [f"image {i} removed" for i in c.images_removed]
    return (f"| {_md(c.pool)} | {change} | {_cell(packages)} | {_cell(services)} "
            f"| {_md(_reboot_cell(c))} | {_cell(hosts)} |")


def _reboot_cell(c: PoolChange) -> str:
    if not c.boot:
        return "no"
    what = f"kernel {c.kernel[0]} → {c.kernel[1]}" if c.kernel else ", ".join(c.boot)
    return f"{'pending (reboot: never)' if c.reboot == 'never' else '**yes**'}: {what}"


def markdown(stack: str, against: str, changes: Sequence[PoolChange]) -> str:
    """A collapsible table: one row per pool (the pull-request comment's NixOS part)."""
    return "\n".join([
        f"<details><summary><b>{_md(stack)}</b>: NixOS systems: {summary(changes)} (against {_md(against)})</summary>",
        "",
        "| pool | change | packages | services | reboot | hosts (wave) |",
        "|---|---|---|---|---|---|",
        *(_row(c) for c in changes),
        "",
        "</details>",
    ]) + "\n"


def as_json(stack: str, base: dict, changes: Sequence[PoolChange]) -> dict:
    """Everything, uncapped: for scripts and bots."""
    return {
        "stack": stack,
        "base": base,
        "summary": summary(changes),
        "pools": [
            {
                "pool": c.pool,
                "status": c.status,
                "hosts": [{"name": h, "wave": w if w >= 0 else None} for h, w in c.hosts],
                "packages": [{"name": p.name, "change": p.kind, "before": list(p.before), "after": list(p.after)}
                             for p in c.packages],
                "rebuilt": list(c.rebuilt),
                "units": [{"name": u.name, "change": u.kind} for u in c.units],
                "reboot": {"parts": list(c.boot), "mode": "pending" if c.reboot == "never" else "reboot",
                           "kernel": {"before": c.kernel[0], "after": c.kernel[1]} if c.kernel else None}
                if c.boot else None,
                "hosts_added": [{"name": h, "wave": w} for h, w in c.hosts_added],
                "hosts_removed": list(c.hosts_removed),
                "cluster": {"deploys": list(c.deploys), "prunes": list(c.prunes),
                            "images_removed": list(c.images_removed)},
                "instance_type": {"before": c.resize[0], "after": c.resize[1],
                                  "hosts_restarting": [{"name": h, "wave": w} for h, w in c.resized]}
                if c.resize else None,
                "added": {"packages": c.size[0], "units": c.size[1]} if c.status == "added" else None,
                "configuration_only": c.configuration_only,
                "autoscaled": c.pulled or None,
            }
            for c in changes
        ],
    }
