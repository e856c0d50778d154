# Stand-in for nixos/disko/single-disk.nix: the stand-in flake offers the layouts nixos/disko/
# offers, one file each (tests/test_standin_likeness.py keeps the names alike), so config
# validation (flakefleet/facts/flake.py:disk_layouts) reads the same list from both flakes. The
# stand-in's lib.diskoScript refuses a layout without a file here, as nixos/flake.nix's import of
# ./disko/<layout>.nix would fail; nothing partitions for real (it logs the disk it was given).
{ }
