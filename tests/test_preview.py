"""Tier 1: what a change does to each pool's system, from derivation graphs (pure)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flakefleet.preview.compare import PoolHosts, Side, compare, version_key
from flakefleet.preview.derivations import closure, parse_drv_name, read_show, show_argv
from flakefleet.preview.manifest import Manifest, manifest_of, on_change
from flakefleet.preview.render import as_json, capped, markdown, pool_text, summary, text
from flakefleet.common.outputs import StackOutputs
from flakefleet.preview.sides import deployed_side

H = "0" * 31  # a store hash is 32 characters: one distinguishing letter + H


def drv(letter: str, name: str) -> str:
    return f"{letter}{H}-{name}.drv"


# One small system graph, written as each Nix version prints it (see flakefleet/preview/derivations.py).
TOP, K3S, SRC, UNITS, UNIT, LINUX = (drv("a", "nixos-system-w-26.05"), drv("b", "k3s-1.31.2+k3s1"),
                                     drv("c", "k3s-1.31.2.tar.gz"), drv("d", "system-units"),
                                     drv("f", "unit-k3s.service"), drv("g", "linux-6.12.0"))
EDGES = {TOP: [UNITS, K3S, LINUX], K3S: [SRC], UNITS: [UNIT], UNIT: [K3S], SRC: [], LINUX: []}
TEXT = {UNIT: "[Service]\nExecStart=/nix/store/x-k3s/bin/k3s server\n"}


def _out(path: str, v: int) -> dict:
    if path == SRC:  # a fetch: fixed-output
        return {"out": {"path": f"/nix/store/{H}z-src", "hashAlgo": "sha256", "hash": "ab" * 32}} if v < 2 else \
            {"out": {"method": "flat", "hashAlgo": "sha256", "hash": "ab" * 32}}
    return {"out": {"path": f"/nix/store/{H}y-out" if v < 3 else f"{H}y-out"}}


def show_v1(paths=EDGES):  # Nix <= 2.17
    return {f"/nix/store/{p}": {"outputs": _out(p, 1), "inputDrvs": {f"/nix/store/{i}": ["out"] for i in ins},
                                "env": {"name": p[33:-4], **({"text": TEXT[p]} if p in TEXT else {})}}
            for p, ins in paths.items()}


def show_v2():  # Nix 2.18 - 2.31: inputDrvs values are {outputs, dynamicOutputs}
    doc = show_v1()
    for body in doc.values():
        body["inputDrvs"] = {k: {"outputs": v, "dynamicOutputs": {}} for k, v in body["inputDrvs"].items()}
    return doc


def show_v3():  # Nix 2.32: base names, a name field, no name in env
    return {p: {"name": p[33:-4], "version": 3, "outputs": _out(p, 3), "inputDrvs": {i: ["out"] for i in ins},
                "env": {"text": TEXT[p]} if p in TEXT else {}} for p, ins in EDGES.items()}


def show_v4():  # Nix 2.33: wrapped, inputs.drvs / inputs.srcs
    return {"version": 4, "derivations": {
        p: {"name": p[33:-4], "version": 4, "outputs": _out(p, 4), "inputs": {"srcs": [], "drvs": {i: ["out"] for i in ins}},
            "env": {"text": TEXT[p]} if p in TEXT else {}} for p, ins in EDGES.items()}}


def show_v5():  # environment values may be objects carrying passAsFile
    doc = show_v4()
    for body in doc["derivations"].values():
        body["version"] = 5
        body["env"] = {k: {"value": v, "passAsFile": True} for k, v in body["env"].items()}
    return doc


@pytest.mark.parametrize("document", [show_v1(), show_v2(), show_v3(), show_v4(), show_v5()],
                         ids=["nix-2.8", "nix-2.18", "format-3", "format-4", "format-5"])
def test_every_derivation_format_reads_to_the_same_manifest(document):
    manifest = manifest_of(read_show(json.loads(json.dumps(document))), f"/nix/store/{TOP}", {"kernel": "k"})
    assert manifest.packages == {"k3s": {"1.31.2+k3s1": "b" + H[:7]}, "linux": {"6.12.0": "g" + H[:7]},
                                 "nixos-system-w": {"26.05": "a" + H[:7]}}  # the fetch is not a package
    assert manifest.units == {"k3s.service": ("f" + H[:7], "restart")}
    assert manifest.derivations == 5 and manifest.system == "a" + H[:7] and manifest.boot == {"kernel": "k"}


def test_closure_is_what_the_root_is_built_from():
    graph = read_show(show_v1())
    assert {d.name for d in closure(graph, UNIT)} == {"unit-k3s.service", "k3s-1.31.2+k3s1", "k3s-1.31.2.tar.gz"}


@pytest.mark.parametrize(("name", "expected"), [
    ("hello-2.12.1", ("hello", "2.12.1")),
    ("k3s-1.31.2+k3s1", ("k3s", "1.31.2+k3s1")),
    ("python3.12-requests-2.32.3", ("python3.12-requests", "2.32.3")),
    ("nixos-system-workers-26.05.20261101.abcdef0", ("nixos-system-workers", "26.05.20261101.abcdef0")),
    ("openssh-9.9p1", ("openssh", "9.9p1")),
    ("system-path", ("system-path", "")),
    ("unit-script-k3s-start", ("unit-script-k3s-start", "")),
    ("foo-", ("foo-", "")),
    ("linux-6.12.8-modules-shrunk", ("linux", "6.12.8-modules-shrunk")),
    ("-1.0", ("", "1.0")),
])
def test_names_split_as_nix_splits_them(name, expected):
    assert parse_drv_name(name) == expected


@given(st.text(alphabet="ab1.-_+", max_size=12))
def test_a_split_name_joins_back(name):
    pname, version = parse_drv_name(name)
    assert (f"{pname}-{version}" if version else pname) == name


@pytest.mark.parametrize(("unit", "text", "expected"), [
    ("k3s.service", "[Service]\nExecStart=k3s\n", "restart"),
    ("sshd.service", "[Service]\nX-ReloadIfChanged=true\n", "reload"),
    ("nix-daemon.service", "[Service]\nX-RestartIfChanged=false\n", "keep"),
    ("sshd.socket", "", "restart"),
    ("logrotate.timer", "", "restart"),
    ("multi-user.target", "", "change"),
])
def test_what_a_switch_does_to_a_changed_unit(unit, text, expected):
    assert on_change(unit, text) == expected


@pytest.mark.parametrize(("nix", "command"), [((2, 8, 0), ["show-derivation"]), ((2, 15, 0), ["derivation", "show"]),
                                              ((2, 33, 1), ["derivation", "show"]), (None, ["derivation", "show"])])
def test_the_show_command_follows_the_installed_nix(nix, command):
    argv = show_argv(["/nix/store/x.drv"], nix)
    assert argv[3 : 3 + len(command)] == command and argv[-2:] == ["--recursive", "/nix/store/x.drv"]


def test_versions_sort_as_people_read_them():
    assert sorted(["1.10", "1.9", "1.9.1", "2.0rc1"], key=version_key) == ["1.9", "1.9.1", "1.10", "2.0rc1"]


def test_a_packed_manifest_round_trips_and_junk_unpacks_to_none():
    m = Manifest(system="s", packages={"k3s": {"1.0": "a"}}, units={"k3s.service": ("b", "restart")},
                 boot={"kernel": "/k"}, derivations=3, links={"manifests": ("workload-hello.yaml",), "images": ()})
    assert Manifest.unpack(m.pack()) == m and len(m.pack()) < 220
    # A manifest packed before links were kept: they are not known (None), not "none".
    old = Manifest.from_json({k: v for k, v in m.to_json().items() if k != "links"})
    assert old.links is None and Manifest.unpack(old.pack()) == old
    for junk in (None, 3, "", "z1:not-base64!", "plain"):
        assert Manifest.unpack(junk) is None


# Comparisons: two sides written out by hand.
def mf(system: str, packages: dict, units: dict | None = None, kernel: str = "6.12.0") -> Manifest:
    return Manifest(system=system, packages={n: {v: f"{n}{v}{system}" if n in ("rebuilt",) else f"{n}{v}"}
                                             for n, v in packages.items()},
                    units=units or {}, boot={"kernel": f"/nix/store/{H}k-linux-{kernel}/bzImage", "initrd": kernel,
                                             "modules": kernel, "params": "quiet"})


BASE_PKGS = {"bash": "5.2", "k3s": "1.31.2", "nano": "8.2"}
UNITS = {"k3s.service": ("u1", "restart"), "sshd.service": ("s1", "reload")}


def two_pools(workers_after: Manifest, reboot: str = "auto") -> tuple[Side, Side]:
    cp = mf("c", BASE_PKGS, UNITS)
    base = Side({"cp": PoolHosts((("cp-0", 0, "cp"),)), "workers": PoolHosts((("w-0", 1, "workers"), ("w-1", 1, "workers")))},
                {"cp": cp, "workers": mf("w", BASE_PKGS, UNITS)})
    head = Side({"cp": PoolHosts((("cp-0", 0, "cp"),)),
                 "workers": PoolHosts((("w-0", 1, "workers"), ("w-1", 1, "workers")), reboot)},
                {"cp": cp, "workers": workers_after})
    return base, head


def test_an_unchanged_system_is_unchanged():
    base, head = two_pools(mf("w", BASE_PKGS, UNITS))
    assert [c.status for c in compare(base, head)] == ["unchanged", "unchanged"]
    assert summary(compare(base, head)) == "0 of 2 pools change, 0 hosts reboot"


def test_a_version_bump_an_added_and_a_removed_package_and_a_restart():
    after = mf("w2", {"bash": "5.2", "k3s": "1.31.3", "htop": "3.3.0"}, {**UNITS, "k3s.service": ("u2", "restart")})
    [cp, workers] = compare(*two_pools(after))
    assert cp.status == "unchanged" and workers.status == "changed"
    assert [(p.name, p.kind, p.before, p.after) for p in workers.packages] == [
        ("htop", "added", (), ("3.3.0",)), ("k3s", "changed", ("1.31.2",), ("1.31.3",)), ("nano", "removed", ("8.2",), ())]
    assert [(u.name, u.kind) for u in workers.units] == [("k3s.service", "restart")]
    assert workers.hosts == (("w-0", 1), ("w-1", 1)) and not workers.boot
    assert pool_text(workers) == "\n".join([
        "pool workers: changes on w-0 (wave 1), w-1 (wave 1)",
        "  packages (3):", "    htop: added 3.3.0", "    k3s: 1.31.2 → 1.31.3", "    nano: removed 8.2",
        "  services: k3s.service restarts"])


def test_a_kernel_change_reboots_the_pools_hosts_in_their_waves():
    [_, workers] = compare(*two_pools(mf("w2", BASE_PKGS, UNITS, kernel="6.13.1")))
    assert workers.boot == ("kernel", "initrd", "modules") and workers.kernel == ("6.12.0", "6.13.1") and workers.reboots
    assert "  reboot: kernel 6.12.0 → 6.13.1; kernel, initrd, modules change: the hosts reboot" in pool_text(workers)
    [_, never] = compare(*two_pools(mf("w2", BASE_PKGS, UNITS, kernel="6.13.1"), reboot="never"))
    assert not never.reboots and "reboot pending (reboot: never)" in pool_text(never)


def test_a_new_instance_type_names_the_hosts_that_restart_in_their_waves():
    base, head = two_pools(mf("w", BASE_PKGS, UNITS))
    base = Side({**base.pools, "workers": PoolHosts(base.pools["workers"].hosts, instance_type="m7i.large")}, base.manifests)
    head = Side({**head.pools, "workers": PoolHosts(head.pools["workers"].hosts, instance_type="m7i.xlarge")}, head.manifests)
    [cp, workers] = compare(base, head)
    assert cp.status == "unchanged" and workers.status == "changed" and workers.hosts == ()
    assert workers.resize == ("m7i.large", "m7i.xlarge") and workers.resized == (("w-0", 1), ("w-1", 1))
    assert pool_text(workers) == "\n".join([
        "pool workers: system unchanged",
        "  instance type: m7i.large → m7i.xlarge: w-0 (wave 1), w-1 (wave 1) restart (drained, health-gated, in their waves)"])
    assert summary([cp, workers]) == "1 of 2 pools change, 0 hosts reboot, 2 hosts restart for a new instance type"
    assert "w-0 (wave 1) restarts as m7i.xlarge" in markdown("staging", "main", [cp, workers])
    # A last update from before types were exported compares nothing.
    unknown = Side({**base.pools, "workers": PoolHosts(base.pools["workers"].hosts)}, base.manifests)
    assert [c.status for c in compare(unknown, head)] == ["unchanged", "unchanged"]


def test_a_rebuild_at_the_same_version_is_named_apart_from_version_changes():
    base, head = two_pools(mf("w2", {**BASE_PKGS, "rebuilt": "1.0"}, UNITS))
    base.manifests["workers"].packages["rebuilt"] = {"1.0": "old-build"}
    [_, workers] = compare(base, head)
    assert workers.packages == () and workers.rebuilt == ("rebuilt",)


def test_pools_added_and_removed_are_said_plainly():
    base = Side({"old": PoolHosts((("old-0", 1, "old"),))}, {"old": mf("o", BASE_PKGS)})
    head = Side({"gpu": PoolHosts((("gpu-0", 2, "gpu"), ("gpu-1", 2, "gpu")))}, {"gpu": mf("g", BASE_PKGS, UNITS)})
    gpu, old = compare(base, head)
    assert pool_text(gpu) == "pool gpu: added (3 packages, 2 units); gpu-0 (wave 2), gpu-1 (wave 2) join"
    assert pool_text(old) == "pool old: removed; old-0 leave the cluster"


def test_hosts_are_compared_one_by_one_across_per_host_closures():
    """A pool that switches to per-host closures compares each host with what it ran."""
    shared = mf("w", BASE_PKGS)
    base = Side({"workers": PoolHosts((("w-0", 1, "workers"), ("w-1", 1, "workers")))}, {"workers": shared})
    head = Side({"workers": PoolHosts((("w-0", 1, "workers/w-0"), ("w-1", 1, "workers/w-1"), ("w-2", 2, "workers/w-2")))},
                {"workers/w-0": shared, "workers/w-1": mf("w1", {**BASE_PKGS, "k3s": "1.32.0"}), "workers/w-2": shared})
    [workers] = compare(base, head)
    assert workers.hosts == (("w-1", 1),) and workers.hosts_added == (("w-2", 2),)
    assert [p.name for p in workers.packages] == ["k3s"]


def test_a_configuration_only_change_says_so():
    [_, workers] = compare(*two_pools(mf("w2", BASE_PKGS, UNITS)))
    assert "configuration only: no package, service or boot file changes" in pool_text(workers)


def test_long_lists_are_sorted_and_capped():
    after = mf("w2", {"bash": "5.2", "k3s": "1.31.2", **{f"pkg{i:02}": "1.0" for i in range(30)}}, UNITS)
    [_, workers] = compare(*two_pools(after))
    lines = pool_text(workers, cap=5).splitlines()
    assert lines[1:7] == ["  packages (31):", "    nano: removed 8.2", "    pkg00: added 1.0", "    pkg01: added 1.0",
                          "    pkg02: added 1.0", "    and 27 more"]
    assert capped(["a", "b", "c"], 3) == ["a", "b", "c"] and capped(["a", "b", "c", "d"], 3) == ["a", "b", "and 2 more"]


def test_the_json_shape_is_uncapped_and_complete():
    after = mf("w2", {"bash": "5.2", "k3s": "1.31.2", **{f"pkg{i:02}": "1.0" for i in range(30)}}, UNITS, kernel="6.13.0")
    doc = as_json("dev", {"ref": "main", "commit": "abc"}, compare(*two_pools(after)))
    assert set(doc) == {"stack", "base", "summary", "pools"} and doc["summary"] == "1 of 2 pools change, 2 hosts reboot"
    workers = doc["pools"][1]
    assert set(workers) == {"pool", "status", "hosts", "packages", "rebuilt", "units", "reboot", "hosts_added",
                            "hosts_removed", "cluster", "instance_type", "added", "configuration_only", "autoscaled"}
    assert len(workers["packages"]) == 31 and workers["packages"][0] == {"name": "nano", "change": "removed",
                                                                        "before": ["8.2"], "after": []}
    assert workers["reboot"] == {"parts": ["kernel", "initrd", "modules"], "mode": "reboot",
                                 "kernel": {"before": "6.12.0", "after": "6.13.0"}}
    assert workers["hosts"] == [{"name": "w-0", "wave": 1}, {"name": "w-1", "wave": 1}]
    json.dumps(doc)


def test_markdown_escapes_table_characters():
    after = mf("w2", {**BASE_PKGS, "a|b<c>": "1.0"}, UNITS)
    table = markdown("dev", "main (abc)", compare(*two_pools(after)))
    assert "a\\|b&lt;c&gt;: added 1.0" in table and table.startswith("<details><summary><b>dev</b>")


def test_the_text_headline_names_the_base():
    assert text("dev", "main (abc)", compare(*two_pools(mf("w", BASE_PKGS, UNITS)))).splitlines()[0] == \
        "stack dev: 0 of 2 pools change, 0 hosts reboot (working tree against main (abc))"


def test_the_deployed_side_comes_from_the_last_updates_outputs():
    m = mf("w", BASE_PKGS)
    side = deployed_side(StackOutputs({"system_manifests": {"workers": m.pack(), "solo/s-0": m.pack(), "bad": "junk"},
                                       "nodes": {"w-0": {"pool": "workers"}, "s-0": {"pool": "solo"}}}))
    assert side.pools["workers"].hosts == (("w-0", -1, "workers"),) and side.pools["solo"].hosts == (("s-0", -1, "solo/s-0"),)
    assert side.manifests["workers"] == m and "bad" not in side.manifests
    assert deployed_side(StackOutputs({"boot": {}})) is None
    assert deployed_side(StackOutputs({"system_manifests": None, "nodes": {}})) is None


# What the cluster gets and loses: the links a system makes in k3s' directories (lib.k3sLinks).
def with_links(m: Manifest, manifests=(), images=()) -> Manifest:
    return replace(m, links={"manifests": tuple(manifests), "images": tuple(images)})


def test_a_removed_workload_is_named_as_pruned_and_an_added_one_as_deployed():
    cp_before = with_links(mf("c", BASE_PKGS, UNITS), ["workload-api.yaml", "workload-hello.yaml"])
    cp_after = with_links(mf("c2", BASE_PKGS, UNITS), ["workload-api.yaml", "workload-web.yaml"])
    base = Side({"cp": PoolHosts((("cp-0", 0, "cp"),)), "workers": PoolHosts((("w-0", 1, "workers"),))},
                {"cp": cp_before, "workers": with_links(mf("w", BASE_PKGS), images=["hello.tar.gz", "api.tar.gz"])})
    head = Side(base.pools, {"cp": cp_after, "workers": with_links(mf("w2", BASE_PKGS), images=["api.tar.gz"])})
    cp, workers = compare(base, head)
    assert (cp.deploys, cp.prunes, cp.images_removed) == (("workload-web.yaml",), ("workload-hello.yaml",), ())
    assert (workers.deploys, workers.prunes, workers.images_removed) == ((), (), ("hello.tar.gz",))
    assert not cp.configuration_only and not workers.configuration_only
    assert pool_text(cp).splitlines()[1:] == [
        "  cluster: deploys workload-web.yaml",
        "  cluster: prunes workload-hello.yaml (its objects deleted after the switch: k3s never deletes them)"]
    assert pool_text(workers).splitlines()[1:] == ["  images no longer preloaded: hello.tar.gz"]
    table = markdown("dev", "main", [cp, workers])
    assert "deploys workload-web.yaml<br>**prunes workload-hello.yaml**" in table and "image hello.tar.gz removed" in table
    assert as_json("dev", {}, [cp, workers])["pools"][0]["cluster"] == {
        "deploys": ["workload-web.yaml"], "prunes": ["workload-hello.yaml"], "images_removed": []}


@pytest.mark.parametrize("known", ["before", "after"])
def test_links_not_known_on_one_side_name_nothing(known):
    """A last update older than the links (None) is not a side that linked nothing."""
    linked = with_links(mf("c", BASE_PKGS), ["workload-hello.yaml"])
    bare = mf("c0", BASE_PKGS)
    before, after = (linked, bare) if known == "before" else (bare, linked)
    [cp] = compare(Side({"cp": PoolHosts((("cp-0", 0, "cp"),))}, {"cp": before}),
                   Side({"cp": PoolHosts((("cp-0", 0, "cp"),))}, {"cp": after}))
    assert cp.status == "changed" and (cp.deploys, cp.prunes, cp.images_removed) == ((), (), ())


def test_the_json_holds_an_instance_type_change_the_text_shows():
    """`diff --json` holds everything the text shows: a new instance type and who restarts for it."""
    from flakefleet.preview.compare import PoolHosts, Side, compare
    from flakefleet.preview.render import as_json, text

    before = Side({"w": PoolHosts((("w-0", 1, "w"),), instance_type="t3.large")}, {})
    after = Side({"w": PoolHosts((("w-0", 1, "w"),), instance_type="m6i.large")}, {})
    changes = compare(before, after)
    assert "instance type: t3.large → m6i.large: w-0 (wave 1) restart" in text("s", "main", changes)
    pool = as_json("s", {}, changes)["pools"][0]
    assert pool["status"] == "changed" and pool["instance_type"] == {
        "before": "t3.large", "after": "m6i.large", "hosts_restarting": [{"name": "w-0", "wave": 1}]}
