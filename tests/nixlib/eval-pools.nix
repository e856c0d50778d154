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
  # The flake's outputs evaluated with this module system, unchecked (bench/eval_once.nix).
  outputsOnly ? false,
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
    # pkgs/build-support/trivial-builders (runCommand name env buildCommand) and
    # pkgs/development/interpreters/python (python3.withPackages f): what nixos/host/default.nix
    # builds the pull agent with.
    runCommand = name: _env: _script: drv name;
    runtimeShell = "/nix/store/00000000000000000000000000000000-bash/bin/bash";
    python3.withPackages = _f: drv "python3-env";
    # nixpkgs' dockerTools: an image tarball whose tag is its own hash, without string context.
    dockerTools.buildLayeredImage =
      { name, ... }:
      drv "${baseNameOf name}.tar.gz"
      // {
        imageName = name;
        imageTag = "00000000000000000000000000000000";
      };
    linuxPackages = {
      kernel = linux;
      nvidiaPackages = {
        dc = nvidiaDriver {
          version = "580.159.04";
          dataCenter = true;
          # dc_580 has only sha256_64bit: generic.nix's meta.platforms is x86_64 alone.
          platforms = [ "x86_64-linux" ];
        };
        stable = nvidiaDriver {
          version = "595.84";
          dataCenter = false;
          platforms = [
            "x86_64-linux"
            "aarch64-linux"
          ];
        };
      };
    };
  };
  # pkgs/os-specific/linux/kernel/generic.nix and build.nix: a nixpkgs kernel has `features`
  # (so nixos/modules/system/boot/kernel.nix trusts it to have what modules require), and while
  # evaluating its `config` knows only the three options generic.nix passes in.
  linux =
    let
      known = {
        CONFIG_MODULES = "y";
        CONFIG_FW_LOADER = "y";
        CONFIG_RUST = "n";
      };
      value = option: known."CONFIG_${option}" or null;
    in
    drv "linux-6.12.0"
    // {
      version = "6.12.0";
      features = { };
      config = known // {
        isSet = option: known ? "CONFIG_${option}";
        getValue = value;
        isYes = option: value option == "y";
        isNo = option: value option == "n";
        isModule = option: value option == "m";
        isEnabled = option: value option == "m" || value option == "y";
        isDisabled = option: value option == null || value option == "n";
      };
    };
  # pkgs/os-specific/linux/nvidia-x11/generic.nix (and default.nix's dc_580 / production): the
  # attributes nixos/modules/hardware/video/nvidia.nix uses. A data-center driver
  # (useFabricmanager) is named nvidia-dc-*, has no nvidia-settings (`settings = { }`) and has
  # a fabric manager; the others are named nvidia-x11-*, have nvidia-settings and
  # `fabricmanager = { }`. Both branches here have open kernel modules (openSha256) and so a
  # `firmware` output.
  nvidiaDriver =
    {
      version,
      dataCenter,
      platforms,
    }:
    let
      name = "nvidia-${if dataCenter then "dc" else "x11"}-${version}-6.12.0";
    in
    drv name
    // {
      inherit version;
      bin = drv "${name}-bin";
      firmware = drv "${name}-firmware";
      lib32 = drv "${name}-lib32";
      open = drv "nvidia-open-${version}-6.12.0";
      settings = if dataCenter then { } else drv "nvidia-settings-${version}";
      persistenced = drv "nvidia-persistenced-${version}";
      fabricmanager = if dataCenter then drv "fabricmanager-${version}" else { };
      meta.platforms = platforms;
    };
  named = builtins.listToAttrs (
    map
      (name: {
        inherit name;
        value = {
          type = "derivation";
          inherit name;
          outPath = "/nix/store/00000000000000000000000000000000-${name}";
        }
        # pkgs/applications/networking/cluster/k3s/builder.nix: `version = k3sVersion`, of the
        # attribute's minor (k3s_1_NN); the patch here is made up, `k3s` taken as 1.34.
        // (
          if builtins.substring 0 3 name == "k3s" then
            { version = if name == "k3s" then "1.34.0+k3s1" else "1.${builtins.substring 6 2 name}.0+k3s1"; }
          else
            { }
        );
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
  # nixpkgs' misc/nixpkgs.nix hands every module the package set of the system's
  # nixpkgs.hostPlatform; here that is the stand-in set with that platform's stdenv.
  platformOf =
    modules:
    let
      set = builtins.filter (m: builtins.isAttrs m && m ? nixpkgs && m.nixpkgs ? hostPlatform) modules;
    in
    if set == [ ] then "x86_64-linux" else (builtins.head set).nixpkgs.hostPlatform;
  pkgsFor =
    system:
    pkgs
    // {
      stdenv.hostPlatform = {
        inherit system;
        isx86_64 = system == "x86_64-linux";
        isAarch64 = system == "aarch64-linux";
      };
    };
  # nixos/lib/eval-config.nix returns the module system's result with the system's `pkgs`.
  nixosSystem =
    { modules, ... }:
    let
      pkgs = pkgsFor (platformOf modules);
    in
    lib.evalModules {
      modules = modules ++ [ ./nixpkgs-options.nix ] ++ extraModules;
      specialArgs = {
        inherit pkgs;
        modulesPath = toString ./modules;
      };
    }
    // {
      inherit pkgs;
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
    # Bootstrapped pools import disko's module: its stand-in here (./disko.nix).
    disko.nixosModules.disko = ./disko.nix;
  };
  systems =
    if vmNodes then
      builtins.mapAttrs (name: node: nixosSystem { modules = [ node (testFramework name) ]; }) vmTest.nodes
    else if specsFile == null then
      outputs.nixosConfigurations
    else
      builtins.mapAttrs (_: outputs.lib.poolSystem) specs;
  specs = builtins.fromJSON (builtins.readFile specsFile);
  # What the flake says each system links into k3s' directories (its lib.k3sLinks, which the
  # program reads at plan time), next to what the module system holds.
  withLinks =
    name: result:
    if specsFile != null && !vmNodes && outputs.lib ? k3sLinks then
      result // { links = outputs.lib.k3sLinks specs.${name}; }
    else
      result;
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
      builtins.deepSeq (if config.hardware.nvidia.enabled then config else config // { hardware = removeAttrs config.hardware [ "nvidia" ]; }) {
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
        # What each manifest deploys (content: an object or a list of them), for the real API.
        manifestObjects = builtins.mapAttrs (_: m: m.content) config.services.k3s.manifests;
        autoscaler =
          let
            m = config.services.k3s.manifests;
          in
          if m ? cluster-autoscaler then
            m.cluster-autoscaler.content.spec // { values = builtins.fromJSON m.cluster-autoscaler.content.spec.valuesContent; }
          else
            null;
        images = map (i: i.name) config.services.k3s.images;
        containerdTemplate = config.services.k3s.containerdConfigTemplate != null;
        hostName = config.networking.hostName;
        fileSystems = builtins.mapAttrs (_: f: { inherit (f) device fsType options; }) config.fileSystems;
        diskoScript = config.system.build.diskoScript or null;
        boot = {
          systemdBoot = config.boot.loader.systemd-boot.enable;
          grub = config.boot.loader.grub.enable;
          grubDevices = config.boot.loader.grub.devices;
        };
        networkd = config.networking.useNetworkd;
        sysctl = config.boot.kernel.sysctl;
        firewall = {
          inherit (config.networking.firewall) allowedTCPPortRanges allowedUDPPortRanges trustedInterfaces extraCommands;
        };
        nvidia =
          let
            n = config.hardware.nvidia;
          in
          if n.enabled then
            {
              inherit (n) open;
              datacenter = n.datacenter.enable;
              x11 = builtins.elem "nvidia" config.services.xserver.videoDrivers;
              toolkit = config.hardware.nvidia-container-toolkit.enable;
              modules = map (p: p.name) config.boot.extraModulePackages;
            }
          else
            null;
        packages = map (p: p.name) config.environment.systemPackages;
        # flakefleet's own units as the module system holds them (a test compares the stand-in
        # flake's restatement): the program an ExecStart runs named by what follows `/bin/`.
        units = builtins.mapAttrs (_: u: {
          inherit (u) description after wantedBy unitConfig;
          serviceConfig = removeAttrs u.serviceConfig [ "ExecStart" ];
          exec = if u.serviceConfig ? ExecStart then builtins.head (builtins.match ".*/bin/(.*)" u.serviceConfig.ExecStart) else null;
          path = map (p: p.pname or p.name) u.path;
        }) (lib.filterAttrs (n: _: builtins.match "flakefleet-.*" n != null) config.systemd.services);
        initrdModules = config.boot.initrd.availableKernelModules;
        # Which packages this system lets nixpkgs build although unfree (none without a
        # predicate), by the names nixpkgs gives them (nvidia-x11/generic.nix, persistenced.nix,
        # fabricmanager.nix, settings.nix).
        unfree =
          let
            allowed = config.nixpkgs.config.allowUnfreePredicate or (_: false);
          in
          builtins.filter (name: allowed { inherit name; }) [
            "nvidia-dc-580.159.04-6.12.0"
            "nvidia-x11-595.84-6.12.0"
            "nvidia-persistenced-580.159.04"
            "fabricmanager-580.159.04"
            "nvidia-settings-595.84"
            "cuda_cudart-12.8.90"
            "steam-1.0"
          ];
      };
in
if outputsOnly then outputs else builtins.mapAttrs (name: system: withLinks name (check name system)) systems
