"""Installing NixOS on a bring-your-own machine (pools[].bootstrap: nixos-anywhere): the plan of
one host's install, what is read of the machine first, nixos-anywhere's command, and the runner
its install Command runs."""
