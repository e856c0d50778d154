# bench/eval_once.py and tests/test_nix_modules.py: every spec of `specsFile` evaluated through the flake's own
# functions, with a module system given as `lib` (nixpkgs' real one, or tests/nixlib's), the
# NixOS options of tests/nixlib and the toplevel of ./nixos-build.nix.
#   mode = "per-value": what the program asked of the flake before issue 36, each value from
#                       the spec (`lib.toplevel`, `lib.boot`, `lib.k3sLinks`, `lib.pullAgent`);
#   mode = "once":      flakefleet/nixos/evaluate.nix, as the program asks now.
{
  lib,
  flake,
  specsFile,
  mode,
}:
let
  outputs = import ./eval-pools.nix {
    inherit lib flake;
    outputsOnly = true;
    extraModules = [ ./nixos-build.nix ];
  };
  # Without `lib.evaluate`, evaluate.nix asks the flake value by value.
  flake' = if mode == "once" then outputs else outputs // { lib = removeAttrs outputs.lib [ "evaluate" ]; };
in
import ../../flakefleet/nixos/evaluate.nix {
  flake = flake';
  inherit specsFile;
}
