# The nixpkgs NixOS options our modules set, declared with the types their nixpkgs declarations
# have (read from nixpkgs' sources: services/cluster/rancher/{default,k3s}.nix,
# services/networking/ssh/sshd.nix, services/networking/firewall.nix, config/nix.nix,
# services/misc/nix-gc.nix, system/boot/systemd.nix, system/etc/etc.nix, config/users-groups.nix,
# tasks/filesystems.nix, config/sysctl.nix, hardware/video/nvidia.nix,
# services/hardware/nvidia-container-toolkit, misc/nixpkgs.nix, system/boot/kernel.nix). Our own declarations, not a copy of nixpkgs' modules:
# they let tests/nixlib/eval-pools.nix evaluate each pool's module list with our stand-in lib
# in CI, or with nixpkgs' real lib locally, and fail where nixpkgs would (an undeclared option,
# a value of the wrong type, conflicting definitions, a failed assertion).
#
# When a module of ours sets a new nixpkgs option, declare it here with its nixpkgs type.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  opt = type: mkOption { inherit type; };
  optDefault = type: default: mkOption { inherit type default; };
  bool = optDefault types.bool false;
  strList = optDefault (types.listOf types.str) [ ];
  # systemd.nix: unitOption accepts a value or a list of values.
  unitOption = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
    (types.listOf (types.oneOf [ types.bool types.int types.str types.path ]))
  ];
  # config/nix.nix: the nix.conf values (semanticConfType).
  confValue = types.oneOf [
    types.bool
    types.int
    types.str
    (types.listOf types.str)
  ];
  k3s = config.services.k3s;
  nvidia = config.hardware.nvidia;
in
{
  options = {
    assertions = optDefault (types.listOf types.unspecified) [ ];
    warnings = optDefault (types.listOf types.str) [ ];
    nixpkgs.hostPlatform = opt (types.either types.str types.attrs);
    nixpkgs.config = optDefault (types.attrsOf types.anything) { };
    boot.kernelPackages = optDefault types.raw pkgs.linuxPackages;

    # hardware/video/nvidia.nix
    hardware.nvidia = {
      enable = bool;
      datacenter.enable = bool;
      package = optDefault types.raw config.boot.kernelPackages.nvidiaPackages.${if config.hardware.nvidia.datacenter.enable then "dc" else "stable"};
      open = optDefault (types.nullOr types.bool) null;
      nvidiaPersistenced = bool;
    };
    # services/hardware/nvidia-container-toolkit
    hardware.nvidia-container-toolkit.enable = bool;
    system.stateVersion = opt types.str;

    networking.hostName = optDefault (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";
    networking.firewall = {
      enable = optDefault types.bool true;
      allowedTCPPortRanges = optDefault (types.listOf (types.attrsOf types.port)) [ ];
      allowedUDPPortRanges = optDefault (types.listOf (types.attrsOf types.port)) [ ];
      trustedInterfaces = strList;
    };

    services.openssh = {
      enable = bool;
      openFirewall = optDefault types.bool true;
      hostKeys = optDefault (types.listOf types.attrs) [ ];
      settings = optDefault (types.submodule {
        freeformType = types.attrsOf (types.nullOr confValue);
        options = {
          PasswordAuthentication = optDefault types.bool true;
          KbdInteractiveAuthentication = optDefault types.bool true;
          PermitRootLogin = optDefault (types.enum [
            "yes"
            "without-password"
            "prohibit-password"
            "forced-commands-only"
            "no"
          ]) "prohibit-password";
        };
      }) { };
    };
    users.users = optDefault (types.attrsOf (types.submodule {
      options.openssh.authorizedKeys.keys = optDefault (types.listOf types.singleLineStr) [ ];
    })) { };

    nix.settings = optDefault (types.submodule {
      freeformType = types.attrsOf confValue;
      options = {
        require-sigs = optDefault types.bool true;
        trusted-public-keys = strList;
        substituters = strList;
      };
    }) { };
    nix.gc = {
      automatic = bool;
      dates = optDefault (types.either types.singleLineStr (types.listOf types.str)) [ "03:15" ];
      options = optDefault types.singleLineStr "";
    };
    nix.optimise.automatic = bool;
    nix.extraOptions = optDefault types.lines "";

    services.journald.extraConfig = optDefault types.lines "";
    boot.kernel.sysctl = optDefault (types.attrsOf (types.nullOr (types.oneOf [ types.bool types.str types.int ]))) { };
    boot.loader.systemd-boot.enable = bool;
    boot.loader.efi.canTouchEfiVariables = bool;
    boot.initrd.availableKernelModules = strList;
    hardware.enableRedistributableFirmware = bool;
    fileSystems = optDefault (types.attrsOf (types.submodule {
      options = {
        device = optDefault (types.nullOr types.nonEmptyStr) null;
        fsType = optDefault types.nonEmptyStr "auto";
        options = optDefault (types.listOf types.nonEmptyStr) [ "defaults" ];
      };
    })) { };

    environment.systemPackages = optDefault (types.listOf types.package) [ ];
    environment.etc = optDefault (types.attrsOf (types.submodule (
      { name, config, ... }:
      {
        options = {
          enable = optDefault types.bool true;
          text = optDefault (types.nullOr types.lines) null;
          source = opt types.path;
          mode = optDefault types.str "symlink";
        };
        # etc.nix: `text` becomes a store file that is the entry's source.
        config.source = lib.mkIf (config.text != null) "/nix/store/00000000000000000000000000000000-etc-${baseNameOf name}";
      }
    ))) { };
    systemd.tmpfiles.rules = strList;
    systemd.services = optDefault (types.attrsOf (types.submodule {
      options = {
        enable = optDefault types.bool true;
        description = optDefault types.singleLineStr "";
        wantedBy = strList;
        requiredBy = strList;
        before = strList;
        after = strList;
        wants = strList;
        requires = strList;
        path = optDefault (types.listOf (types.either types.package types.str)) [ ];
        environment = optDefault (types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]))) { };
        unitConfig = optDefault (types.attrsOf unitOption) { };
        serviceConfig = optDefault (types.attrsOf unitOption) { };
        script = optDefault types.lines "";
      };
    })) { };

    # services/cluster/rancher/default.nix and k3s.nix
    services.k3s = {
      enable = bool;
      package = opt types.package;
      role = optDefault (types.enum [ "server" "agent" ]) "server";
      serverAddr = optDefault types.str "";
      token = optDefault types.str "";
      tokenFile = optDefault (types.nullOr types.path) null;
      agentToken = optDefault types.str "";
      agentTokenFile = optDefault (types.nullOr types.path) null;
      extraFlags = optDefault (types.either types.str (types.listOf types.str)) [ ];
      environmentFile = optDefault (types.nullOr types.path) null;
      configPath = optDefault (types.nullOr types.path) null;
      disable = strList;
      nodeName = optDefault (types.nullOr types.str) null;
      nodeLabel = strList;
      nodeTaint = strList;
      nodeIP = optDefault (types.nullOr types.str) null;
      clusterInit = bool;
      disableAgent = bool;
      images = optDefault (types.listOf types.package) [ ];
      containerdConfigTemplate = optDefault (types.nullOr types.str) null;
      manifests = optDefault (types.attrsOf (types.submodule (
        { name, config, ... }:
        {
          options = {
            enable = optDefault types.bool true;
            target = opt types.nonEmptyStr;
            content = optDefault (types.nullOr (types.either types.attrs (types.listOf types.attrs))) null;
            source = opt types.path;
          };
          # rancher/default.nix: the target defaults to the name (with .yaml), `content` becomes
          # a store file that is the manifest's source.
          config = {
            target = lib.mkDefault "${name}.yaml";
            source = lib.mkIf (config.content != null) "/nix/store/00000000000000000000000000000000-${name}-manifest";
          };
        }
      ))) { };
      gracefulNodeShutdown.enable = bool;
      extraKubeletConfig = optDefault (types.attrsOf types.anything) { };
    };
  };

  # The checks nixpkgs' modules make of these options: k3s (rancher/default.nix, k3s.nix),
  # the NVIDIA driver (nvidia.nix) and container toolkit.
  config = lib.mkIf k3s.enable {
    assertions = [
      {
        assertion = k3s.role == "agent" -> !k3s.clusterInit;
        message = "k3s: clusterInit must be false if role is 'agent'";
      }
      {
        assertion = !(nvidia.enable && nvidia.datacenter.enable);
        message = "You cannot configure both standard and Data Center drivers at the same time.";
      }
      {
        assertion = (nvidia.enable || nvidia.datacenter.enable) -> (nvidia.open != null || nvidia.datacenter.enable);
        message = "You must configure `hardware.nvidia.open` on NVIDIA driver versions >= 560.";
      }
      {
        assertion = config.hardware.nvidia-container-toolkit.enable -> (nvidia.enable || nvidia.datacenter.enable);
        message = "`nvidia-container-toolkit` requires nvidia drivers: set `hardware.nvidia.datacenter.enable` or add \"nvidia\" to `services.xserver.videoDrivers`";
      }
    ];
    warnings =
      lib.optional (k3s.role != "server" && k3s.manifests != { })
        "k3s: Auto deploying manifests are only installed on server nodes (role == server), they will be ignored by this node."
      ++
      lib.optional (k3s.role == "agent" && k3s.configPath == null && k3s.serverAddr == "")
        "k3s: serverAddr or configPath (with 'server' key) should be set if role is 'agent'"
      ++ lib.optional (k3s.role == "agent" && k3s.configPath == null && k3s.tokenFile == null && k3s.token == "")
        "k3s: token, tokenFile or configPath (with 'token' or 'token-file' keys) should be set if role is 'agent'"
      ++ lib.optional (k3s.role == "agent" && (k3s.agentTokenFile != null || k3s.agentToken != ""))
        "k3s: agentToken and agentTokenFile should not be set if role is 'agent'";
  };
}
