# What flakefleet/nixos/evaluate.py asks of a flake: for every system of `specsFile` (a JSON
# object, name -> pool spec), its derivation and out path, boot files, k3s links and pull agent
# (flakefleet/plan/contract.py:System), each pool's system evaluated once (the flake's
# `lib.evaluate`). A flake without `lib.evaluate` is asked value by value: the test stand-in
# (no module system to evaluate once), and flakes from before it, which `flakefleet diff`
# evaluates as the base side of a change: those (no `lib.specSchema`) read the spec's keys by
# their earlier names, which `earlier` adds.
#   nix eval --json --impure --expr 'import evaluate.nix { flake = builtins.getFlake "path:…"; specsFile = …; }'
{ flake, specsFile }:
let
  specs = builtins.fromJSON (builtins.readFile specsFile);
  lib = flake.lib;
  # The keys a flake from before the spec's schema read (its `lib.specModule` renamed them).
  earlier =
    spec:
    spec
    // {
      schema = 1;
      api_endpoint = spec.apiEndpoint;
      tls_sans = spec.tlsSans;
      pod_cidr = spec.podCidr;
      service_cidr = spec.serviceCidr;
      k3s_channel = spec.k3sChannel;
      authorized_keys = spec.authorizedKeys;
      trusted_public_keys = spec.trustedPublicKeys;
      cluster_gpus = spec.clusterHasGpus;
      cluster_autoscaler = spec.clusterAutoscaler;
    };
  perValue =
    given:
    let
      spec = if lib ? specSchema then given else earlier given;
      t = lib.toplevel spec;
    in
    {
      drv = t.drvPath;
      out = t.outPath;
      boot = if lib ? boot then builtins.mapAttrs (_: builtins.unsafeDiscardStringContext) (lib.boot spec) else null;
      links = if lib ? k3sLinks then lib.k3sLinks spec else null;
      agent = if (spec.pull or false) && lib ? pullAgent then (lib.pullAgent spec).outPath else null;
    };
in
builtins.mapAttrs (_: if lib ? evaluate then lib.evaluate else perValue) specs
