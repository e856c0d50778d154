"""A change of k3s version, planned as a Kubernetes upgrade under the version skew policy (pure).

The versions come from the systems themselves: the `k3s` package of each host's system
manifest, before (the last update's, `system_manifests` and `nodes`) and after (this update's).
What is refused, one line each, before any resource (`flakefleet:cluster.k3s_channel`):

- a downgrade on any host: Kubernetes supports no downgrade (restore a snapshot instead);
- a skipped minor (1.32 -> 1.34): "upgrade one minor version at a time"
  (kubernetes.io/releases/version-skew-policy; k3s' docs: servers first, then agents);
- a kubelet newer than the oldest API server, or more than three minors older than it
  (version-skew-policy, kubelet: "must not be newer than kube-apiserver, and may be up to three
  minor versions older");
- etcd 3.5 -> 3.6 from below etcd 3.5.26: nixpkgs' k3s update (NixOS/nixpkgs#487047) carries
  k3s' warning that "K3s v1.34 and higher include etcd 3.6" and that the only safe path is from
  etcd 3.5.26, which k3s backported to 1.32 and 1.33 (k3s-io/k3s#13494, #13493) and nixpkgs
  shipped as v1.32.11+k3s3 and v1.33.7+k3s3; k3s 1.33 itself moved to etcd 3.6 later
  (k3s-io/k3s#14183: v1.33.13). Servers below those releases must update within their minor
  first.

What is allowed is announced: "k3s 1.33 -> 1.34: servers first (cp-0, cp-1, cp-2), then workers".
The rollout's waves already put every control plane first, one at a time, and workers after.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flakefleet.preview.compare import Side, version_key

KEY = "flakefleet:cluster.k3s_channel"
VERSION = re.compile(r"^1\.(\d+)\.(\d+)(?:\+k3s(\d+))?")
# The first release of each k3s line with etcd >= 3.5.26 that nixpkgs shipped (see above).
ETCD_SAFE_FROM = {32: (11, 3), 33: (7, 3)}
ETCD_36_FROM = {33: (13, 0)}  # a line that moved to etcd 3.6 within itself; every line from 1.34 has it


@dataclass(frozen=True, order=True)
class K3sVersion:
    minor: int
    patch: int
    release: int
    text: str = ""

    @property
    def line(self) -> str:
        return f"1.{self.minor}"


def parse(text: str) -> K3sVersion | None:
    """`1.33.7+k3s3` -> K3sVersion(33, 7, 3); None when it is not a k3s version."""
    match = VERSION.match(text or "")
    if not match:
        return None
    return K3sVersion(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0), text)


def k3s_versions(side: Side) -> dict[str, K3sVersion]:
    """Host -> the k3s its system carries (hosts whose manifest has no k3s are left out)."""
    found = {}
    for pool in side.pools.values():
        for host, _, key in pool.hosts:
            manifest = side.manifests.get(key)
            versions = sorted((manifest.packages.get("k3s") or {}) if manifest else (), key=version_key)
            if versions and (version := parse(versions[-1])):
                found[host] = version
    return found


def etcd_36(v: K3sVersion) -> bool:
    return v.minor >= 34 or (v.minor in ETCD_36_FROM and (v.patch, v.release) >= ETCD_36_FROM[v.minor])


def etcd_safe_to_36(v: K3sVersion) -> bool:
    return etcd_36(v) or (v.minor in ETCD_SAFE_FROM and (v.patch, v.release) >= ETCD_SAFE_FROM[v.minor])


def hosts_text(hosts: list[str]) -> str:
    return ", ".join(hosts[:6]) + (f" and {len(hosts) - 6} more" if len(hosts) > 6 else "")


def problems(before: Mapping[str, K3sVersion], after: Mapping[str, K3sVersion], roles: Mapping[str, str]) -> list[str]:
    """The skew rules above, one line each (empty: allowed)."""
    out = []
    both = sorted(h for h in after if h in before)
    down = [h for h in both if after[h] < before[h]]
    if down:
        h = down[0]
        out.append(f"{KEY}: k3s would go back from {before[h].text} to {after[h].text} on {hosts_text(down)}: "
                   "Kubernetes does not support downgrades; restore a snapshot taken before the upgrade instead "
                   "(docs/disaster-recovery.md)")
    skipped = [h for h in both if after[h].minor > before[h].minor + 1]
    if skipped:
        h = skipped[0]
        between = ", ".join(f"1.{m}" for m in range(before[h].minor + 1, after[h].minor))
        out.append(f"{KEY}: k3s {before[h].line} -> {after[h].line} on {hosts_text(skipped)} skips {between}: "
                   f"Kubernetes upgrades one minor version at a time (set k3s_channel to 1.{before[h].minor + 1}, "
                   "pulumi up, then the next)")
    servers = [after[h] for h in after if roles.get(h) == "control-plane"]
    if servers:
        oldest = min(servers)
        ahead = sorted(h for h in after if roles.get(h) == "worker" and after[h].minor > oldest.minor)
        if ahead:
            out.append(f"{KEY}: workers {hosts_text(ahead)} would run k3s {after[ahead[0]].line} while a control plane "
                       f"runs {oldest.line}: a kubelet may not be newer than the API server (upgrade the servers first)")
        behind = sorted(h for h in after if roles.get(h) == "worker" and after[h].minor < oldest.minor - 3)
        if behind:
            out.append(f"{KEY}: workers {hosts_text(behind)} would run k3s {after[behind[0]].line}, more than three minor "
                       f"versions behind the API server's {oldest.line}: upgrade them first")
    unsafe = [h for h in both if roles.get(h) == "control-plane" and etcd_36(after[h]) and not etcd_safe_to_36(before[h])]
    if unsafe:
        h = unsafe[0]
        first = ETCD_SAFE_FROM.get(before[h].minor)
        within = (f"to 1.{before[h].minor}.{first[0]}+k3s{first[1]} or later (a flake.lock bump)" if first
                  else "to a release with etcd 3.5.26 (1.32.11+k3s3, 1.33.7+k3s3)")
        out.append(f"{KEY}: k3s {before[h].text} -> {after[h].text} on {hosts_text(unsafe)} moves etcd from 3.5 to 3.6, "
                   f"which is safe only from etcd 3.5.26 (removed members can come back and break quorum): update "
                   f"{within} first (NixOS/nixpkgs#487047)")
    return out


@dataclass(frozen=True)
class Upgrade:
    """An allowed change of k3s minor: from, to, and the hosts in rollout order by role."""

    before: str
    after: str
    servers: tuple[str, ...]
    workers: tuple[str, ...]

    def text(self) -> str:
        workers = "then workers" if self.workers else "no workers"
        return f"k3s {self.before} -> {self.after}: servers first ({hosts_text(list(self.servers))}), {workers}"


def upgrade(before: Mapping[str, K3sVersion], after: Mapping[str, K3sVersion], roles: Mapping[str, str],
            order: list[str]) -> Upgrade | None:
    """The minor change this update makes (None: no host changes minor). `order`: hosts in rollout order."""
    moving = [h for h in order if h in before and h in after and after[h].minor != before[h].minor]
    if not moving:
        return None
    old = min(before[h] for h in moving).line
    new = max(after[h] for h in moving).line
    return Upgrade(old, new, tuple(h for h in moving if roles.get(h) == "control-plane"),
                   tuple(h for h in moving if roles.get(h) != "control-plane"))
