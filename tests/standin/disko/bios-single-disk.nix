# Stand-in for nixos/disko/bios-single-disk.nix (see single-disk.nix here): the same name, and
# the firmware it sets, which config validation reads (flakefleet/facts/flake.py:layout_firmware).
# flakefleet.install.firmware = "bios";
{ }
