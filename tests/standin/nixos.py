#!/usr/bin/python3
# Stand-in for a NixOS system's own programs, as a test system's toplevel links them:
#   bin/switch-to-configuration  switch | boot | test | dry-activate   (and `standin-boot`, below)
#   activate                     the activation script (what stage 2 and the switch run)
#
# On a machine that runs systemd (the nspawn test machines) the switch follows nixpkgs'
# switch-to-configuration-ng (pkgs/by-name/sw/switch-to-configuration-ng/src/main.rs):
#   - only active units whose FragmentPath is under /etc/systemd/system are considered;
#   - a unit gone from the new system is stopped (unless X-StopOnRemoval=false);
#   - a changed unit is compared section by section (compare_units): only X-Reload-Triggers in
#     [Unit], ExecReload in [Service] or Options in [Mount] changed -> reload; keys that do not
#     matter ([Unit] Description, Documentation, OnFailure, ...) ignored; anything else ->
#     handle_modified_unit: X-ReloadIfChanged=true -> reload; X-RestartIfChanged=false,
#     RefuseManualStop or X-OnlyManualStart -> left running ("NOT restarting"); X-StopIfChanged=false
#     or not a .service -> restart; else stop now and start after the activation;
#   - order: stop, activate, reset-failed, daemon-reload, reload, restart, start; active targets
#     are started again, so units newly wanted by them start (here: multi-user.target, which
#     Debian keeps in /lib and NixOS in /etc);
#   - exit 4 when a job failed, or a unit is failed or in auto-restart after a non-zero exit.
# Not modelled: socket activation, template instances, mount and swap units from fstab, user
# units, re-executing systemd, the resume-after-interrupt lists.
# Without systemd (the namespace test hosts) there is nothing to restart: the switch activates
# and runs k3s' start once, as the unit would.
#
# `switch` and `boot` install the boot loader (/etc/flakefleet-standin/bootloader, the machine's
# "hardware"): GRUB's grub.cfg as NixOS' install-grub.pl writes it, or a systemd-boot stand-in
# (loader entries and loader.conf; tests/standin/bootctl.sh sets them).
#
# Faults for tests, from /etc/flakefleet/standin-fault (lines "<fault> <toplevel>"):
#   fail  switch, then exit 4 as NixOS does when some units failed to start
#   cut   switch, then drop the SSH connections (the one that ran the activation among them)
#   hang  switch, then keep the activation running for 20 s (a slow activation)
import os
import re
import subprocess
import sys
import time

# The toplevel: the directory of `activate`, the parent of `bin/` (resolved as a directory, so
# /run/current-system/bin/switch-to-configuration names the system it points at).
HERE = os.path.realpath(os.path.dirname(os.path.abspath(sys.argv[0])))
SELF = HERE if os.path.basename(sys.argv[0]) == "activate" else os.path.dirname(HERE)
UNITS = "/etc/systemd/system"
PROFILES = "/nix/var/nix/profiles"
IMAGES = "/var/lib/rancher/k3s/agent/images"
IGNORED_IN_UNIT = {"X-Reload-Triggers", "Description", "Documentation", "OnFailure", "OnSuccess",
                   "OnFailureJobMode", "IgnoreOnIsolate", "StopWhenUnneeded", "RefuseManualStart",
                   "RefuseManualStop", "AllowIsolate", "CollectMode", "SourcePath"}


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def systemd():
    return os.path.isdir("/run/systemd/system")


def faults():
    try:
        lines = open("/etc/flakefleet/standin-fault").read().splitlines()
    except OSError:
        return set()
    return {l.split()[0] for l in lines if len(l.split()) == 2 and l.split()[1] == SELF}


# ------------------------------------------------------------------ the activation script


def store_link(path):
    return os.path.islink(path) and os.readlink(path).startswith("/nix/store/")


def tmpfiles(top):
    """/etc/tmpfiles.d/10-k3s.conf from the system (NixOS' /etc), and its `L+` rules applied as
    systemd-tmpfiles --create does: each listed link made or replaced. A link no rule names any
    more is left where it is: tmpfiles removes nothing it is not told to (tmpfiles.d(5))."""
    conf = os.path.join(top, "etc/tmpfiles.d/10-k3s.conf")
    os.makedirs("/etc/tmpfiles.d", exist_ok=True)
    if os.path.lexists("/etc/tmpfiles.d/10-k3s.conf"):
        os.unlink("/etc/tmpfiles.d/10-k3s.conf")
    if not os.path.exists(conf):
        return
    os.symlink(os.path.realpath(conf), "/etc/tmpfiles.d/10-k3s.conf")
    with open(conf) as f:
        for line in f:
            words = line.split()
            if len(words) == 7 and words[0] == "'L+'":
                path = words[1].strip("'")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if os.path.lexists(path):
                    os.unlink(path)
                os.symlink(words[6], path)


def activate(top):
    """/etc's units from the system (links into the store, as NixOS' /etc/static), k3s' images and
    manifests as the k3s module's tmpfiles L+ rules link them, and /run/current-system."""
    new = os.path.join(top, "etc/systemd/system")
    for dirpath, _, files in os.walk(UNITS):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, UNITS)
            if store_link(path) and not os.path.lexists(os.path.join(new, rel)):
                os.unlink(path)
    for dirpath, _, files in os.walk(new):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), new)
            dest = os.path.join(UNITS, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.lexists(dest):
                os.unlink(dest)
            os.symlink(os.path.realpath(os.path.join(new, rel)), dest)
    tmpfiles(top)
    tmp = "/run/current-system.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(top, tmp)
    os.rename(tmp, "/run/current-system")


# ------------------------------------------------------------------ unit files


def parse_unit(path):
    """{section: {key: [values]}} as parse_systemd_ini reads a unit ([Install] skipped, an empty
    value clears the key), with the unit's .d/*.conf drop-ins."""
    data = {}
    files = [path] + sorted(os.path.join(path + ".d", f) for f in (os.listdir(path + ".d") if os.path.isdir(path + ".d") else ())
                            if f.endswith(".conf"))
    for name in files:
        section = None
        for line in open(name).read().splitlines():
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                if section != "Install":
                    data.setdefault(section, {})  # an empty section counts, as rust-ini reads it
                continue
            if section is None or section == "Install" or "=" not in line:
                continue
            key, value = (s.strip() for s in line.split("=", 1))
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]  # rust-ini with enabled_quote: a quoted value is its content
            values = data.setdefault(section, {}).setdefault(key, [])
            if value == "":
                values.clear()
            else:
                values.append(value)
    return data


def boolean(unit, section, key, default):
    values = unit.get(section, {}).get(key)
    return values[-1] in ("1", "yes", "true", "on") if values else default


def compare_units(cur, new):
    """'equal', 'reload' or 'restart': compare_units in main.rs, step by step."""
    result = "equal"
    new_sections = set(new)
    for section, values in cur.items():
        if section not in new:  # a section removed
            if section == "Unit":
                if any(k not in IGNORED_IN_UNIT for k in values):
                    return "restart"
                continue
            if section == "Service" and set(values) == {"ExecReload"}:
                continue  # dropping ExecReload leaves the running process alone
            return "restart"
        new_sections.discard(section)
        added = set(new[section])
        for key, value in values.items():
            added.discard(key)
            if key not in new[section]:  # a key removed
                if (section == "Unit" and key in IGNORED_IN_UNIT) or (section == "Service" and key == "ExecReload"):
                    continue
                return "restart"
            if value != new[section][key]:
                if section == "Unit" and key == "X-Reload-Triggers":
                    result = "reload"
                elif section == "Unit" and key in IGNORED_IN_UNIT:
                    continue
                elif (section, key) in (("Service", "ExecReload"), ("Mount", "Options")):
                    result = "reload"
                else:
                    return "restart"
        if added:  # keys introduced
            if section == "Unit":
                for key in added:
                    if key == "X-Reload-Triggers":
                        result = "reload"
                    elif key not in IGNORED_IN_UNIT:
                        return "restart"
            elif section == "Service" and added == {"ExecReload"}:
                result = "reload"
            else:
                return "restart"
    if new_sections:  # sections introduced
        if len(new_sections) > 1:
            return "restart"
        (section,) = new_sections
        if section == "Unit":
            for key in new["Unit"]:
                if key not in IGNORED_IN_UNIT:
                    return "restart"
                if key == "X-Reload-Triggers":
                    result = "reload"
        elif section == "Service":
            if set(new["Service"]) != {"ExecReload"}:
                return "restart"
            result = "reload"
        else:
            return "restart"
    return result


def handle_modified(name, new, plan):
    """handle_modified_unit in main.rs (no socket activation)."""
    if name in ("sysinit.target", "basic.target", "multi-user.target", "graphical.target") \
            or name.endswith((".path", ".slice", ".socket")):
        return
    if name.endswith(".mount"):  # / and /nix cannot be unmounted safely: remounted instead
        plan["reload" if name in ("-.mount", "nix.mount") else "restart"].add(name)
    elif boolean(new, "Service", "X-ReloadIfChanged", False) and name not in plan["restart"] | plan["stop"]:
        plan["reload"].add(name)
    elif not boolean(new, "Service", "X-RestartIfChanged", True) or boolean(new, "Unit", "RefuseManualStop", False) \
            or boolean(new, "Unit", "X-OnlyManualStart", False):
        plan["skip"].add(name)
    elif not boolean(new, "Service", "X-StopIfChanged", True) or not name.endswith(".service"):
        plan["restart"].add(name)
        plan["reload"].discard(name)
    else:
        plan["stop"].add(name)
        plan["start"].add(name)
        plan["reload"].discard(name)


def systemctl(*args, check=False):
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=check)


def active_units():
    """{unit: (active state, sub state, fragment path)} of units that are not inactive."""
    out = systemctl("list-units", "--all", "--plain", "--no-legend", "--full").stdout
    names = [l.split()[0] for l in out.splitlines() if len(l.split()) >= 4 and l.split()[2] != "inactive"]
    units = {}
    if names:
        shown = systemctl("show", "-p", "Id,ActiveState,SubState,FragmentPath,Following", "--", *names).stdout
        for block in shown.strip().split("\n\n"):
            props = dict(l.split("=", 1) for l in block.splitlines() if "=" in l)
            if props.get("Id") and not props.get("Following") and props.get("ActiveState") != "inactive":
                units[props["Id"]] = (props["ActiveState"], props["SubState"], props.get("FragmentPath", ""))
    return units


def collect(top, active):
    """What to stop, start, reload, restart and leave (collect_unit_changes in main.rs)."""
    plan = {k: set() for k in ("stop", "start", "reload", "restart", "skip")}
    new_dir = os.path.join(top, "etc/systemd/system")
    for name, (state, _, fragment) in active.items():
        if not fragment.startswith(UNITS) or state not in ("active", "activating"):
            continue
        cur, new = os.path.join(UNITS, name), os.path.join(new_dir, name)
        if not os.path.exists(cur):
            continue
        if not os.path.exists(new) or os.path.realpath(new) == "/dev/null":
            if boolean(parse_unit(cur), "Unit", "X-StopOnRemoval", True):
                plan["stop"].add(name)
            continue
        if name.endswith(".target"):
            plan["start"].add(name)
            continue
        cur_unit, new_unit = parse_unit(cur), parse_unit(new)
        verdict = compare_units(cur_unit, new_unit)
        if verdict == "restart":
            handle_modified(name, new_unit, plan)
        elif verdict == "reload" and name not in plan["restart"]:
            plan["reload"].add(name)
    plan["start"].add("multi-user.target")  # see the header: NixOS keeps it in /etc
    return plan


VERBS = {"stop": ("would stop", "stopping"), "skip": ("would NOT stop", "NOT restarting"),
         "reload": ("would reload", "reloading"), "restart": ("would restart", "restarting"),
         "start": ("would start", "starting")}


def show(plan, key, dry):
    """The line main.rs prints before a phase (targets not shown, as without STC_DISPLAY_ALL_UNITS)."""
    units = sorted((u for u in plan[key] if not u.endswith(".target")), key=str.lower)
    if units:
        changed = " changed" if key == "skip" else ""
        say(f"{VERBS[key][0 if dry else 1]} the following{changed} units: {', '.join(units)}")


def jobs(verb, units):
    """systemctl VERB on the units, waiting for the jobs (as block_on_jobs); False if one failed."""
    if not units:
        return True
    res = systemctl(verb, *sorted(units))
    if res.returncode != 0:
        say(f"Failed to {verb} {', '.join(sorted(units))}: {res.stderr.strip()}")
    return res.returncode == 0


def failed_units():
    """Units failed, or in auto-restart after a non-zero exit (the end of do_system_switch)."""
    failed = []
    for name, (state, sub, _) in active_units().items():
        if state == "failed":
            failed.append(name)
        elif sub == "auto-restart" and name.endswith(".service"):
            if systemctl("show", "-p", "ExecMainStatus", "--value", name).stdout.strip() not in ("", "0"):
                failed.append(name)
    return sorted(failed)


def switch_systemd(top, dry):
    plan = collect(top, active_units())
    if dry:
        show(plan, "stop", dry)
        show(plan, "skip", dry)
        say("would activate the configuration...")
        for key in ("reload", "restart", "start"):
            show(plan, key, dry)
        return 0
    show(plan, "stop", dry)
    ok = jobs("stop", plan["stop"])
    show(plan, "skip", dry)
    say("activating the configuration...")
    activate(top)
    systemctl("reset-failed")
    systemctl("daemon-reload")
    for unit in sorted(plan["reload"]):
        if systemctl("is-active", "--quiet", unit).returncode != 0:
            plan["reload"].discard(unit)
            plan["start"].add(unit)
    for key in ("reload", "restart", "start"):
        show(plan, key, dry)
        ok = jobs(key, plan[key]) and ok
    time.sleep(0.25)  # main.rs waits for the bus to settle before looking for failed units
    failed = failed_units()
    if failed:
        say(f"warning: the following units failed: {', '.join(failed)}")
    return 0 if ok and not failed else 4


# ------------------------------------------------------------------ without systemd


def switch_plain(top):
    """The namespace test hosts: activate, then k3s' start as its unit would (asserting its files)."""
    activate(top)
    for required in open(os.path.join(top, "k3s-required")).read().split():
        if not os.path.exists(required):
            say(f"warning: the following units failed: k3s.service (assertion failed: {required})")
            return 4
    args = open(os.path.join(top, "k3s-args")).read().split()
    return subprocess.run([os.path.join(top, "sw/bin/k3s"), *args]).returncode


# ------------------------------------------------------------------ boot loaders


def generations():
    """(number, link) of the system profile's generations, newest first."""
    found = []
    for name in os.listdir(PROFILES) if os.path.isdir(PROFILES) else ():
        m = re.fullmatch(r"system-(\d+)-link", name)
        if m:
            found.append((int(m.group(1)), os.path.join(PROFILES, name)))
    return sorted(found, reverse=True)


def grub_entry(title, top, options):
    params = open(os.path.join(top, "kernel-params")).read().strip()
    kernel, initrd = os.path.realpath(os.path.join(top, "kernel")), os.path.realpath(os.path.join(top, "initrd"))
    return (f'menuentry "{title}" {options} {{\n  linux {kernel} init={os.path.realpath(top)}/init {params}\n'
            f"  initrd {initrd}\n}}\n\n")


def install_grub(top):
    """/boot/grub/grub.cfg as install-grub.pl writes it (nixos/modules/system/boot/loader/grub/):
    the one-shot stanza, "NixOS - Default" for this system, then every generation."""
    extra = ""
    if os.path.exists("/etc/flakefleet-standin/grub-extra-config"):
        extra = open("/etc/flakefleet-standin/grub-extra-config").read()
    conf = ("# Automatically generated.  DO NOT EDIT THIS FILE!\n\n"
            "        if [ -s $prefix/grubenv ]; then\n          load_env\n        fi\n\n"
            "        # ‘grub-reboot’ sets a one-time saved entry, which we process here and\n"
            "        # then delete.\n"
            '        if [ "${next_entry}" ]; then\n          set default="${next_entry}"\n          set next_entry=\n'
            "          save_env next_entry\n          set timeout=1\n          set boot_once=true\n        else\n"
            "          set default=0\n          set timeout=5\n        fi\n\n" + extra + "\n")
    conf += grub_entry("NixOS - Default", top, "--class nixos --unrestricted")
    conf += 'submenu "NixOS - All configurations" --class submenu {\n'
    for n, link in generations():
        date = time.strftime("%F", time.localtime(os.lstat(link).st_mtime))
        version = open(os.path.join(link, "nixos-version")).read().strip()
        conf += grub_entry(f"NixOS - Configuration {n} ({date} - {version})", link, "--class nixos")
    conf += "}\n"
    os.makedirs("/boot/grub", exist_ok=True)
    with open("/boot/grub/grub.cfg.tmp", "w") as f:
        f.write(conf)
    os.rename("/boot/grub/grub.cfg.tmp", "/boot/grub/grub.cfg")


def install_systemd_boot(top):
    """The systemd-boot stand-in: an entry per generation, this system's the default."""
    os.makedirs("/boot/loader/entries", exist_ok=True)
    for name in os.listdir("/boot/loader/entries"):
        if name.startswith("nixos-generation-"):
            os.unlink(os.path.join("/boot/loader/entries", name))
    default = None
    for n, link in generations():
        with open(f"/boot/loader/entries/nixos-generation-{n}.conf", "w") as f:
            f.write(f"title NixOS generation {n}\nsystem {os.path.realpath(link)}\n")
        if os.path.realpath(link) == os.path.realpath(top) and default is None:
            default = n
    if default is not None:
        with open("/boot/loader/loader.conf", "w") as f:
            f.write(f"default nixos-generation-{default}.conf\n")


def install_bootloader(top):
    try:
        loader = open("/etc/flakefleet-standin/bootloader").read().strip()
    except OSError:
        loader = "systemd-boot"
    (install_grub if loader == "grub" else install_systemd_boot)(top)


# ------------------------------------------------------------------ faults and main


def cut_connection():
    """Drop every SSH connection (as a restart of the network would): kill each per-connection sshd,
    the children of the listening one. Under systemd the switch runs in its own unit, so the
    connection that ran it is not among its ancestors."""
    if not systemd():  # the switch runs under the connection's sshd: kill that one
        pid = os.getpid()
        while pid > 1:
            if open(f"/proc/{pid}/comm").read().strip() == "sshd":
                os.kill(pid, 9)
                return
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        return
    procs = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        procs[int(pid)] = (comm, ppid)
    for pid, (comm, ppid) in procs.items():
        if comm == "sshd" and procs.get(ppid, ("", 0))[0] == "sshd" and procs[ppid][1] in (0, 1):
            os.kill(pid, 9)


def main():
    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"  # the stand-in's "closure" is the machine's /usr
    if os.path.basename(sys.argv[0]) == "activate":
        activate(SELF)
        return 0
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    if action not in ("switch", "boot", "test", "dry-activate"):
        say("usage: switch-to-configuration switch|boot|test|dry-activate")
        return 1
    if action in ("switch", "boot"):
        install_bootloader(SELF)
    if action == "boot":
        return 0
    if action == "dry-activate":
        return switch_systemd(SELF, dry=True) if systemd() else 0
    code = switch_systemd(SELF, dry=False) if systemd() else switch_plain(SELF)
    fault = faults()
    if "fail" in fault:
        say("warning: the following units failed: standin-fault.service")
        return 4
    if "hang" in fault:
        time.sleep(20)
    if "cut" in fault:
        cut_connection()
    return code


if __name__ == "__main__":
    sys.exit(main())
