"""What a change does to each pool's NixOS system, before anything is built or delivered.

`derivations` reads derivation graphs (`nix derivation show -r`), `manifest` condenses one
system's graph into its packages, units and boot files, `compare` diffs two manifests per pool,
`render` prints the result (text, Markdown, JSON), `base` checks out a git ref of this
repository, and `cli` is `flakefleet diff`.
"""
