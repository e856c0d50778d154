"""Primitives every layer may use and that use nothing of flakefleet: pinned SSH, the `nix`
command's flags and version, bounded retries, files for secrets."""
