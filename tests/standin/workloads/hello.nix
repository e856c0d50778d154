# The stand-in's workloads are named by the files of this folder, as nixos/workloads/ names
# the real ones (flakefleet/facts/flake.py:workload_names reads either): the stand-in builds a
# workload's image from its name alone (flake.nix: `image`), so this file holds nothing.
{ }
