"""What a removed workload or add-on leaves behind, removed after the host's new system is confirmed.

nixpkgs' k3s module links each manifest (`services.k3s.manifests`, auto-deployed charts) into
k3s' manifests directory and each image (`services.k3s.images`) into its image directory with
tmpfiles `L+` rules (nixos/modules/services/cluster/k3s/default.nix, settings."10-k3s";
tmpfiles.nix writes them to /etc/tmpfiles.d/10-k3s.conf). A rule that is gone removes nothing:
systemd-tmpfiles only does what a rule says, so the old link stays, k3s keeps applying the
manifest on every start and containerd keeps importing the image. And k3s never deletes what a
manifest created when the file goes ("Deleting files out of this directory will not delete the
corresponding resources from the cluster", docs.k3s.io/installation/packaged-components; k3s#1971).

So after each confirmed switch, delivery lists the links in those two directories that point into
the Nix store and that no tmpfiles rule of the running system names any more (k3s' own files,
written by k3s, are not links into the store and are never touched), and on a server deletes a
stale manifest's objects (`kubectl delete -f` of the old file, still in the store, and its AddOn
record in kube-system), then removes the link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flakefleet.cluster.kubectl import K3S

if TYPE_CHECKING:
    from flakefleet.host.session import HostSession

MANIFESTS = "/var/lib/rancher/k3s/server/manifests"
IMAGES = "/var/lib/rancher/k3s/agent/images"
# Links into the store in those directories that no rule in /etc/tmpfiles.d names ('<path>').
STALE_LINKS = ["sh", "-c", f"""for f in {MANIFESTS}/* {IMAGES}/*; do
  [ -L "$f" ] || continue
  case "$(readlink "$f")" in /nix/store/*) ;; *) continue ;; esac
  grep -qsF "'$f'" /etc/tmpfiles.d/*.conf || printf '%s\\n' "$f"
done"""]


def addon_name(path: str) -> str:
    """The AddOn k3s tracks a manifest file as: its base name without the YAML suffix."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".yaml", ".yml"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def prune(run: HostSession) -> list[str]:
    """Remove the stale links (and a stale manifest's objects); returns what was pruned. A failure
    is said and left for the next delivery: the new system is confirmed already."""
    res = run.ssh(STALE_LINKS, timeout=60)
    pruned = []
    for path in (p for p in res.stdout.split("\n") if p.startswith("/")) if res.returncode == 0 else ():
        if path.startswith(MANIFESTS + "/"):
            deleted = run.ssh([K3S, "kubectl", "delete", "-f", path, "--ignore-not-found"], timeout=300)
            if deleted.returncode != 0:
                run.say(f"could not delete the objects of {path} (left for the next delivery): "
                        f"{deleted.stderr.strip()[-300:]}")
                continue
            run.ssh([K3S, "kubectl", "delete", "addon", "-n", "kube-system", addon_name(path), "--ignore-not-found"],
                    timeout=120)
        if run.ssh(["rm", "-f", path], timeout=30).returncode == 0:
            pruned.append(path.rsplit("/", 1)[-1])
    if pruned:
        run.say(f"pruned what the stack no longer has: {', '.join(pruned)}")
    return pruned
