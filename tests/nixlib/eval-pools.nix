# Evaluate each pool's module list (the flake's `lib.modulesFor spec`) with a given module
# system: our stand-in (./lib.nix) in CI, or nixpkgs' real lib where one is at hand. Forces
# every option value and fails as `nixosSystem` would: an undeclared option, a wrong type,
# conflicting definitions, a failed assertion; warnings fail too, so nothing slips by.
#
# nix-instantiate --eval --strict --json tests/nixlib/eval-pools.nix \
#   --arg lib 'import tests/nixlib/lib.nix' --arg flake ./nixos --argstr specsFile specs.json
# Without specsFile it evaluates the flake's own `nixosConfigurations` instead; with
# vmNodes = true the nodes of the flake's VM test (nixos/tests/k3s-cluster-nodes.nix), with
# what nixpkgs' test framework adds to each node.
{
  lib,
  flake,
  specsFile ? null,
  vmNodes ? false,
  # Modules added to every system (tests: an old kernel, say).
  extraModules ? [ ],
}:
let
  # Stand-ins for the packages our modules name: nothing is built, only evaluated.
  drv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  pkgs = named // {
    nvidia-container-toolkit = drv "nvidia-container-toolkit" // {
      tools = drv "nvidia-container-toolkit-tools";
    };
    writeTextDir = path: _text: drv (baseNameOf path);
    # nixpkgs' dockerTools: an image tarball whose tag is its own hash, without string context.
    dockerTools.buildLayeredImage =
      { name, ... }:
      drv "${baseNameOf name}.tar.gz"
      // {
        imageName = name;
        imageTag = "00000000000000000000000000000000";
      };
    linuxPackages = {
      kernel = drv "linux-6.12.0" // {
        version = "6.12.0";
        # nixpkgs' kernel.config: what the kernel's configuration enables.
        config.isEnabled = _: true;
      };
      nvidiaPackages = {
        dc = drv "nvidia-x11-570.172.08-6.12.0";
        stable = drv "nvidia-x11-580.95.05-6.12.0";
      };
    };
  };
  named = builtins.listToAttrs (
    map
      (name: {
        inherit name;
        value = {
          type = "derivation";
          inherit name;
          outPath = "/nix/store/00000000000000000000000000000000-${name}";
        };
      })
      [
        "k3s"
        "k3s_1_31"
        "k3s_1_32"
        "k3s_1_33"
        "k3s_1_34"
        "k3s_1_35"
        "jq"
        "hostname"
        "darkhttpd"
      ]
  );
  nixosSystem =
    { modules, ... }:
    lib.evalModules {
      modules = modules ++ [ ./nixpkgs-options.nix ] ++ extraModules;
      specialArgs = {
        inherit pkgs;
        modulesPath = toString ./modules;
      };
    };
  nixpkgs = {
    lib = lib // {
      inherit nixosSystem;
    };
    legacyPackages = { };
  };
  # What nixpkgs' test framework adds to every node (nixos/lib/testing/network.nix names it with
  # mkDefault; virtualisation/qemu-vm.nix declares the VM's size).
  testFramework =
    name:
    { lib, ... }:
    {
      options.virtualisation = {
        memorySize = lib.mkOption { type = lib.types.int; };
        diskSize = lib.mkOption { type = lib.types.int; };
      };
      config = {
        networking.hostName = lib.mkDefault name;
        # The framework hands each node its nixpkgs (node.pkgs), whose platform this is.
        nixpkgs.hostPlatform = "x86_64-linux";
      };
    };
  vmTest = import (flake + "/tests/k3s-cluster-nodes.nix") {
    self = outputs;
    system = "x86_64-linux";
  };
  outputs = (import (flake + "/flake.nix")).outputs {
    self = outputs;
    inherit nixpkgs;
  };
  systems =
    if vmNodes then
      builtins.mapAttrs (name: node: nixosSystem { modules = [ node (testFramework name) ]; }) vmTest.nodes
    else if specsFile == null then
      outputs.nixosConfigurations
    else
      builtins.mapAttrs (_: outputs.lib.poolSystem) (builtins.fromJSON (builtins.readFile specsFile));
  check =
    name: system:
    let
      config = removeAttrs system.config [ "_module" ];
      failed = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
    in
    if failed != [ ] then
      throw "${name}: failed assertions:\n- ${builtins.concatStringsSep "\n- " failed}"
    else if config.warnings != [ ] then
      throw "${name}: warnings:\n- ${builtins.concatStringsSep "\n- " config.warnings}"
    else
      builtins.deepSeq config {
        inherit (config.services.k3s)
          role
          serverAddr
          nodeName
          nodeIP
          clusterInit
          nodeLabel
          nodeTaint
          ;
        flags = config.services.k3s.extraFlags;
        manifests = builtins.attrNames config.services.k3s.manifests;
        images = map (i: i.name) config.services.k3s.images;
        containerdTemplate = config.services.k3s.containerdConfigTemplate != null;
        hostName = config.networking.hostName;
        sysctl = config.boot.kernel.sysctl;
        firewall = {
          inherit (config.networking.firewall) allowedTCPPortRanges allowedUDPPortRanges trustedInterfaces;
        };
        nvidia = {
          inherit (config.hardware.nvidia) enable open;
          datacenter = config.hardware.nvidia.datacenter.enable;
          toolkit = config.hardware.nvidia-container-toolkit.enable;
        };
        # Which packages this system lets nixpkgs build although unfree (none without a predicate).
        unfree =
          let
            allowed = config.nixpkgs.config.allowUnfreePredicate or (_: false);
          in
          builtins.filter (name: allowed { inherit name; }) [
            "nvidia-x11-570.172.08"
            "nvidia-persistenced-570.172.08"
            "nvidia-fabricmanager-570.172.08"
            "cuda_cudart-12.8.90"
            "steam-1.0"
          ];
      };
in
builtins.mapAttrs check systems
