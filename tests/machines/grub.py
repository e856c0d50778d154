"""What GRUB does at boot with the grub.cfg NixOS writes and the environment block grub-reboot and
grub-set-default write: the nspawn machines' boot loader (they have no firmware and no kernel).

NixOS' grub.cfg (nixos/modules/system/boot/loader/grub/install-grub.pl) begins:

    if [ -s $prefix/grubenv ]; then load_env; fi
    # ‘grub-reboot’ sets a one-time saved entry, which we process here and then delete.
    if [ "${next_entry}" ]; then
      set default="${next_entry}"; set next_entry=; save_env next_entry; ...
    else
      set default=0            (or "${saved_entry}" with boot.loader.grub.default = "saved")
    fi

then `menuentry "NixOS - Default"` for the configuration installed last and `submenu "NixOS - All
configurations"` with `menuentry "NixOS - Configuration N (date - version)"` per generation, each
`linux <kernel> init=<toplevel>/init <kernel-params>`. GRUB resolves `default` as an index into
the top-level entries, a title, or a "submenu>entry" path; an entry it cannot find is entry 0.
The VM tier (tests/test_vm_boot.py) checks this emulation against the real GRUB.

The environment block (grub-core/lib/envblk.c): 1024 bytes, "# GRUB Environment Block\\n", then
`name=value` lines (backslash escapes `\\\\` and newline), padded with '#'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ENV_HEADER = "# GRUB Environment Block\n"
ENV_SIZE = 1024


def read_env(path: Path) -> dict[str, str]:
    """The variables of an environment block ({} when there is none)."""
    if not path.exists():
        return {}
    text = path.read_bytes().decode(errors="replace")
    if not text.startswith(ENV_HEADER):
        return {}
    env = {}
    for line in text[len(ENV_HEADER):].split("\n"):
        if "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            env[name] = value.replace("\\n", "\n").replace("\\\\", "\\")
    return env


def write_env(path: Path, env: dict[str, str]) -> None:
    """The block as GRUB's save_env leaves it (same size, '#' padding)."""
    body = "".join(f"{k}={v.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n" for k, v in env.items())
    block = (ENV_HEADER + body).encode()
    if len(block) > ENV_SIZE:
        raise ValueError("GRUB environment block overflow")
    path.write_bytes(block + b"#" * (ENV_SIZE - len(block)))


@dataclass(frozen=True)
class Entry:
    """A menu entry: its title path ("submenu>entry" inside a submenu) and its linux line."""

    title: str
    kernel: str
    params: tuple[str, ...]

    @property
    def init(self) -> str | None:
        return next((p.split("=", 1)[1] for p in self.params if p.startswith("init=")), None)

    @property
    def toplevel(self) -> str | None:
        """The system the entry boots (NixOS: `init=<toplevel>/init`)."""
        init = self.init
        return init.rsplit("/", 1)[0] if init and init.endswith("/init") else None


TITLE = re.compile(r'^\s*(menuentry|submenu)\s+"([^"]*)"')


def menu(cfg: str) -> list[tuple[str, list[Entry] | Entry]]:
    """Top-level items in order: (title, Entry) for an entry, (title, [entries]) for a submenu.
    Blocks open on their title line and close with a line of their own, as install-grub writes."""
    items: list[tuple[str, list[Entry] | Entry]] = []
    stack: list[tuple[str, str, list[Entry]]] = []  # (kind, title, the submenu's entries)
    linux: list[str] = []
    for line in cfg.splitlines():
        opened = TITLE.match(line)
        if opened:
            kind, title = opened.groups()
            stack.append((kind, title, []))
            linux = []
            if kind == "submenu" and len(stack) == 1:
                items.append((title, stack[-1][2]))
            continue
        words = line.split()
        if words[:1] == ["linux"] and stack and stack[-1][0] == "menuentry":
            linux = words[1:]
        elif words == ["}"] and stack:
            kind, title, _ = stack.pop()
            if kind == "menuentry" and linux:
                parents = [t for k, t, _ in stack if k == "submenu"]
                entry = Entry(">".join([*parents, title]), linux[0], tuple(linux[1:]))
                if stack:
                    stack[-1][2].append(entry)
                else:
                    items.append((title, entry))
    return items


def entries(cfg: str) -> list[Entry]:
    """Every bootable entry, submenus flattened."""
    out: list[Entry] = []
    for _, item in menu(cfg):
        out.extend(item if isinstance(item, list) else [item])
    return out


def resolve(cfg: str, default: str) -> Entry | None:
    """The entry `default` names: an index into the top level, a title, or "submenu>entry"; GRUB
    boots entry 0 when it names nothing."""
    items = menu(cfg)
    if not items:
        return None
    found: Entry | None = None
    if default.isdigit() and int(default) < len(items):
        item = items[int(default)][1]
        found = item[0] if isinstance(item, list) and item else item if isinstance(item, Entry) else None
    else:
        found = next((e for e in entries(cfg) if e.title == default), None)
    if found is None:
        first = items[0][1]
        found = first if isinstance(first, Entry) else (first[0] if first else None)
    return found


def choose(cfg_path: Path, consume: bool) -> Entry | None:
    """GRUB's choice at a boot now: the one-shot entry (cleared when `consume`, as NixOS' grub.cfg
    does), else the default; None when there is no grub.cfg (the machine boots its own init)."""
    if not cfg_path.exists():
        return None
    cfg = cfg_path.read_text()
    env_path = cfg_path.with_name("grubenv")
    env = read_env(env_path)
    one_shot = "next_entry" in cfg and "save_env next_entry" in cfg
    if one_shot and env.get("next_entry"):
        default = env["next_entry"]
        if consume:
            env["next_entry"] = ""
            write_env(env_path, env)
    else:
        default = default_of(cfg, env)
    return resolve(cfg, default)


def default_of(cfg: str, env: dict[str, str]) -> str:
    """The `set default=` of the branch taken without a one-shot entry (`${saved_entry}` resolved)."""
    match = re.search(r"^\s*else\s*\n\s*set default=(\S+)", cfg, re.M) or re.search(r"^\s*set default=(\S+)", cfg, re.M)
    default = match.group(1).strip('"') if match else "0"
    return env.get("saved_entry", "0") if default == "${saved_entry}" else default


def boot(cfg_path: Path) -> Entry | None:
    """What GRUB boots now, one-shot entry consumed."""
    return choose(cfg_path, consume=True)


def default_entry(cfg_path: Path) -> Entry | None:
    """What GRUB boots when no one-shot entry is set (the boot default), without changing anything."""
    if not cfg_path.exists():
        return None
    cfg = cfg_path.read_text()
    return resolve(cfg, default_of(cfg, read_env(cfg_path.with_name("grubenv"))))
