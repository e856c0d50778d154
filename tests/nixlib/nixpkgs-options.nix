# The NixOS options our modules set or read, declared as nixpkgs declares them, and the checks and
# definitions of nixpkgs' modules that can fail for the values our modules give them. Not a copy
# of nixpkgs' modules: a restatement of the parts we meet, each under the nixpkgs file it was read
# from (NixOS/nixpkgs, read file by file with the search tool's look-ups; the pinned
# nixos-26.05 tree itself cannot be fetched here, so the newest copies of each file that could
# be read were used: see docs/nixos.md, "How an option is checked before it is used").
#
# tests/nixlib/eval-pools.nix evaluates each pool's module list with these declarations, with
# our stand-in lib in CI or nixpkgs' real lib locally, and fails where nixpkgs would: an
# undeclared option, a value of the wrong type, conflicting definitions, a failed assertion.
#
# Rules: a declaration has nixpkgs' exact type and default (where a default is computed from
# other options, the same computation); when a module of ours sets a new nixpkgs option, read
# its declaration first and add it here under its file. Nothing is declared because we would
# like it to exist.
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
  # lib/systemd-lib.nix: unitOption accepts a value or a list of values.
  unitOption = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
    (types.listOf (types.oneOf [ types.bool types.int types.str types.path ]))
  ];
  k3s = config.services.k3s;
  nvidia = config.hardware.nvidia;
  toolkit = config.hardware.nvidia-container-toolkit;
  kernel = config.boot.kernelPackages.kernel;
  # hardware/video/nvidia.nix: which driver mode is on, and the driver package it then uses.
  nvidiaX11 = builtins.elem "nvidia" config.services.xserver.videoDrivers;
  nvidiaDriver = if nvidiaX11 || nvidia.datacenter.enable then nvidia.package else null;
  useOpenModules = nvidia.open == true;
in
{
  options = {
    # misc/assertions.nix
    assertions = optDefault (types.listOf types.unspecified) [ ];
    warnings = optDefault (types.listOf types.str) [ ];
    # misc/lib.nix
    lib = optDefault (types.attrsOf types.attrs) { };
    # misc/nixpkgs.nix (hostPlatform: types.either types.str types.attrs, coerced to a platform;
    # config: an attribute set merged recursively)
    nixpkgs.hostPlatform = opt (types.either types.str types.attrs);
    nixpkgs.config = optDefault (types.attrsOf types.anything) { };
    # misc/version.nix (its default is the release of the nixpkgs lib: lib.trivial.release)
    system.stateVersion = opt types.str;

    # system/boot/kernel.nix
    boot.kernelPackages = optDefault types.raw pkgs.linuxPackages;
    boot.extraModulePackages = optDefault (types.listOf types.package) [ ];
    boot.initrd.availableKernelModules = strList;
    boot.initrd.includeDefaultModules = optDefault types.bool true;
    # system/boot/stage-1.nix (its default is !config.boot.isContainer: true on our hosts)
    boot.initrd.enable = optDefault types.bool true;
    # internal; checked only for kernels without `features` (see config below)
    system.requiredKernelConfig = optDefault (types.listOf types.attrs) [ ];
    # config/sysctl.nix: a submodule whose free-form values are bool, str, int or null (or an
    # override of one), each defined once (mergeOneOption), plus two declared keys that keep the
    # highest of their values.
    boot.kernel.sysctl = optDefault (types.submodule {
      freeformType = types.attrsOf (lib.mkOptionType {
        name = "sysctl option value";
        check =
          val:
          let
            checkType = x: builtins.isBool x || builtins.isString x || builtins.isInt x || x == null;
          in
          checkType val || (val._type or "" == "override" && checkType val.content);
        merge = loc: defs: lib.mergeOneOption loc defs;
      });
      options = {
        "net.core.rmem_max" = optDefault (types.nullOr types.ints.unsigned) null;
        "net.core.wmem_max" = optDefault (types.nullOr types.ints.unsigned) null;
      };
    }) { };
    # system/boot/loader/systemd-boot/systemd-boot.nix
    boot.loader.systemd-boot.enable = bool;
    # system/boot/loader/efi.nix
    boot.loader.efi.canTouchEfiVariables = bool;
    # system/boot/loader/grub/grub.nix (enable's default is `!config.boot.isContainer`: a node is
    # no container)
    boot.loader.grub.enable = optDefault types.bool true;
    boot.loader.grub.devices = strList;
    # hardware/all-firmware.nix
    hardware.enableRedistributableFirmware = bool;

    # hardware/video/nvidia.nix (the options our GPU pools set or read). There is no `enable`:
    # the driver is chosen by services.xserver.videoDrivers or by datacenter.enable.
    hardware.nvidia = {
      enabled = optDefault types.bool (nvidiaDriver != null); # readOnly in nixpkgs
      datacenter.enable = bool; # mkEnableOption
      # no type in nixpkgs' declaration
      package = mkOption {
        type = types.unspecified;
        default = config.boot.kernelPackages.nvidiaPackages.${if nvidia.datacenter.enable then "dc" else "stable"};
      };
      open = optDefault (types.nullOr types.bool) (
        if lib.versionOlder nvidiaDriver.version "560" then false else null
      );
      gsp.enable = optDefault types.bool (useOpenModules || lib.versionAtLeast nvidiaDriver.version "555");
      nvidiaSettings = optDefault types.bool true; # mkEnableOption // { default = true; }
      nvidiaPersistenced = bool; # mkEnableOption
    };
    # services/x11/xserver.nix
    services.xserver.videoDrivers = optDefault (types.listOf types.str) [
      "modesetting"
      "fbdev"
    ];
    # services/hardware/nvidia-container-toolkit/default.nix
    hardware.nvidia-container-toolkit = {
      enable = bool;
      suppressNvidiaDriverAssertion = bool;
      package = optDefault types.package pkgs.nvidia-container-toolkit; # mkPackageOption
    };

    # tasks/network-interfaces.nix
    networking.useNetworkd = bool;
    networking.useDHCP = optDefault types.bool true;
    networking.hostName = optDefault (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";
    # services/networking/firewall.nix
    networking.firewall = {
      enable = optDefault types.bool true;
      allowedTCPPortRanges = optDefault (types.listOf (types.attrsOf types.port)) [ ];
      allowedUDPPortRanges = optDefault (types.listOf (types.attrsOf types.port)) [ ];
      trustedInterfaces = strList;
      # services/networking/firewall-iptables.nix: run just before the final refuse rule
      extraCommands = optDefault types.lines "";
    };

    # services/networking/ssh/sshd.nix
    services.openssh = {
      enable = bool;
      openFirewall = optDefault types.bool true;
      hostKeys = optDefault (types.listOf types.attrs) [
        {
          type = "rsa";
          bits = 4096;
          path = "/etc/ssh/ssh_host_rsa_key";
        }
        {
          type = "ed25519";
          path = "/etc/ssh/ssh_host_ed25519_key";
        }
      ];
      settings = optDefault (types.submodule {
        # pkgs.formats.keyValue's type: single atoms
        freeformType = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.int types.float types.str ]));
        options = {
          PasswordAuthentication = optDefault (types.nullOr types.bool) true;
          KbdInteractiveAuthentication = optDefault (types.nullOr types.bool) true;
          PermitRootLogin = optDefault (types.nullOr (types.enum [
            "yes"
            "without-password"
            "prohibit-password"
            "forced-commands-only"
            "no"
          ])) "prohibit-password";
        };
      }) { };
    };
    # config/users-groups.nix declares users.users; sshd.nix adds openssh.authorizedKeys.
    users.users = optDefault (types.attrsOf (types.submodule {
      options.openssh.authorizedKeys.keys = optDefault (types.listOf types.singleLineStr) [ ];
    })) { };

    # services/system/nix-daemon.nix
    nix.enable = optDefault types.bool true;
    # config/nix.nix: settings is a submodule over semanticConfType (null, bool, int, float, str,
    # path or package, or a list of those); substituters, trusted-public-keys and trusted-users
    # have no default and are given one by the module's config (below).
    nix.settings = optDefault (types.submodule {
      freeformType =
        let
          atom = types.nullOr (types.oneOf [ types.bool types.int types.float types.str types.path types.package ]);
        in
        types.attrsOf (types.either atom (types.listOf atom));
      options = {
        require-sigs = optDefault types.bool true;
        trusted-public-keys = opt (types.listOf types.str);
        substituters = opt (types.listOf types.str);
        trusted-users = opt (types.listOf types.str);
      };
    }) { };
    nix.extraOptions = optDefault types.lines "";
    # services/misc/nix-gc.nix
    nix.gc = {
      automatic = bool;
      dates = optDefault (types.either types.singleLineStr (types.listOf types.str)) [ "03:15" ];
      options = optDefault types.singleLineStr "";
    };
    # services/misc/nix-optimise.nix
    nix.optimise.automatic = bool;

    # system/boot/systemd/journald.nix
    services.journald.extraConfig = optDefault types.lines "";
    # tasks/filesystems.nix
    fileSystems = optDefault (types.attrsOf (types.submodule {
      options = {
        device = optDefault (types.nullOr types.nonEmptyStr) null;
        fsType = optDefault types.nonEmptyStr "auto";
        options = optDefault (types.listOf types.nonEmptyStr) [ "defaults" ];
      };
    })) { };

    # config/system-path.nix
    environment.systemPackages = optDefault (types.listOf types.package) [ ];
    # system/etc/etc.nix
    environment.etc = optDefault (types.attrsOf (types.submodule (
      { name, config, ... }:
      {
        options = {
          enable = optDefault types.bool true;
          text = optDefault (types.nullOr types.lines) null;
          source = opt types.path;
          mode = optDefault types.str "symlink";
        };
        # etc.nix: `text` becomes a store file (pkgs.writeText "etc-<name>") that is the source.
        config.source = lib.mkIf (config.text != null) "/nix/store/00000000000000000000000000000000-etc-${baseNameOf name}";
      }
    ))) { };
    # system/boot/systemd/tmpfiles.nix
    systemd.tmpfiles.rules = strList;
    # system/boot/systemd.nix with lib/systemd-unit-options.nix
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
        path = optDefault (types.listOf (types.oneOf [ types.package types.str ])) [ ];
        environment = optDefault (types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]))) { };
        unitConfig = optDefault (types.attrsOf unitOption) { };
        # checkService: Type and Restart must be values systemd knows (a typo fails the build).
        serviceConfig = optDefault (types.addCheck (types.attrsOf unitOption) (
          c:
          builtins.elem (c.Type or "simple") [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "notify-reload" "idle" ]
          && builtins.elem (c.Restart or "no") [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "always" ]
        )) { };
        script = optDefault types.lines "";
      };
    })) { };

    # services/cluster/rancher/default.nix (mkRancherModule) and k3s.nix
    services.k3s = {
      enable = bool; # mkEnableOption
      package = optDefault types.package pkgs.k3s; # mkPackageOption pkgs "k3s"
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
          # mkManifestTarget: the name, with .yaml unless it has a YAML/JSON suffix; `content`
          # becomes a store file named "<name>-manifest-<name>" that is the source.
          config = {
            target = lib.mkDefault (
              if lib.hasSuffix ".yaml" name || lib.hasSuffix ".yml" name || lib.hasSuffix ".json" name then name else "${name}.yaml"
            );
            source = lib.mkIf (config.content != null) "/nix/store/00000000000000000000000000000000-${name}-manifest-${name}";
          };
        }
      ))) { };
      gracefulNodeShutdown.enable = bool;
      extraKubeletConfig = optDefault (types.attrsOf types.anything) { };
    };
  };

  config = lib.mkMerge [
    # system/boot/loader/systemd-boot/systemd-boot.nix (under its enable): GRUB is off unless said.
    (lib.mkIf config.boot.loader.systemd-boot.enable { boot.loader.grub.enable = lib.mkDefault false; })
    # services/networking/firewall.nix (under networking.firewall.enable)
    (lib.mkIf config.networking.firewall.enable { networking.firewall.trustedInterfaces = [ "lo" ]; })
    # config/nix.nix (under nix.enable): cache.nixos.org's key is always trusted, and its cache
    # is the last substituter.
    (lib.mkIf config.nix.enable {
      nix.settings = {
        trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
        trusted-users = [ "root" ];
        substituters = lib.mkAfter [ "https://cache.nixos.org/" ];
      };
    })
    # config/sysctl.nix and system/boot/kernel.nix: the defaults they give every system.
    {
      boot.kernel.sysctl = {
        "kernel.kptr_restrict" = lib.mkDefault 1;
        "vm.max_map_count" = lib.mkDefault 1048576;
        "kernel.printk" = lib.mkDefault 4;
      };
    }
    # system/boot/kernel.nix: the initrd's default modules, at normal priority.
    (lib.mkIf config.boot.initrd.enable {
      boot.initrd.availableKernelModules = lib.optionals config.boot.initrd.includeDefaultModules [
        "ahci" "sata_nv" "sata_via" "sata_sis" "sata_uli" "ata_piix" "pata_marvell" "nvme" "sd_mod" "sr_mod"
        "mmc_block" "uhci_hcd" "ehci_hcd" "ehci_pci" "ohci_hcd" "ohci_pci" "xhci_hcd" "xhci_pci" "usbhid"
        "hid_generic" "hid_lenovo" "hid_apple" "hid_roccat" "hid_logitech_hidpp" "hid_logitech_dj"
        "hid_microsoft" "hid_cherry" "hid_corsair"
      ] ++ lib.optionals (config.boot.initrd.includeDefaultModules && pkgs.stdenv.hostPlatform.isx86_64) [
        "pcips2" "atkbd" "i8042"
      ];
    })
    # system/boot/kernel.nix: the kernel configuration checks modules ask for, made only for
    # kernels without `features` ("nixpkgs kernels are assumed to have all required features").
    {
      lib.kernelConfig.isEnabled = option: {
        assertion = cfg: cfg.isEnabled option;
        message = "CONFIG_${option} is not enabled!";
        configLine = "CONFIG_${option}=y";
      };
      assertions =
        if kernel ? features then
          [ ]
        else
          map (attrs: {
            assertion = attrs.assertion kernel.config;
            inherit (attrs) message;
          }) config.system.requiredKernelConfig;
    }
    # rancher/default.nix and k3s.nix: their warnings and assertions.
    (lib.mkIf k3s.enable {
      assertions = [
        {
          assertion = k3s.role == "agent" -> !k3s.disableAgent;
          message = "k3s: disableAgent must be false if role is 'agent'";
        }
        {
          assertion = k3s.role == "agent" -> !k3s.clusterInit;
          message = "k3s: clusterInit must be false if role is 'agent'";
        }
      ];
      warnings =
        lib.optional (k3s.role != "server" && k3s.manifests != { })
          "k3s: Auto deploying manifests are only installed on server nodes (role == server), they will be ignored by this node."
        ++ lib.optional (k3s.role == "agent" && k3s.configPath == null && k3s.serverAddr == "")
          "k3s: serverAddr or configPath (with 'server' key) should be set if role is 'agent'"
        ++ lib.optional (k3s.role == "agent" && k3s.configPath == null && k3s.tokenFile == null && k3s.token == "")
          "k3s: token, tokenFile or configPath (with 'token' or 'token-file' keys) should be set if role is 'agent'"
        ++ lib.optional (k3s.role == "agent" && (k3s.agentTokenFile != null || k3s.agentToken != ""))
          "k3s: agentToken and agentTokenFile should not be set if role is 'agent'"
        ++ lib.optional (k3s.disableAgent && k3s.images != [ ])
          "k3s: Images are only imported on nodes with an enabled agent, they will be ignored by this node.";
      environment.systemPackages = [ k3s.package ];
    })
    # hardware/video/nvidia.nix: common to both modes, then the X11 mode (videoDrivers), then
    # the Data Center mode. The definitions kept are the ones whose type can refuse a value:
    # packages in environment.systemPackages and boot.extraModulePackages.
    (lib.mkIf nvidia.enabled {
      assertions = [
        {
          assertion = !(nvidiaX11 && nvidia.datacenter.enable);
          message = "You cannot configure both X11 and Data Center drivers at the same time.";
        }
        {
          assertion = nvidia.open != null || nvidia.datacenter.enable;
          message = "You must configure `hardware.nvidia.open` on NVIDIA driver versions >= 560.";
        }
      ];
      environment.systemPackages = [ nvidiaDriver.bin ];
    })
    (lib.mkIf (nvidia.enabled && nvidiaX11) {
      assertions = [
        {
          assertion = nvidia.gsp.enable -> (nvidia.package ? firmware);
          message = "This version of NVIDIA driver does not provide a GSP firmware.";
        }
        {
          assertion = useOpenModules -> (nvidia.package ? open);
          message = "This version of NVIDIA driver does not provide a corresponding opensource kernel driver.";
        }
        {
          assertion = useOpenModules -> nvidia.gsp.enable;
          message = "The GSP cannot be disabled when using the opensource kernel driver.";
        }
      ];
      environment.systemPackages =
        lib.optional nvidia.nvidiaSettings nvidiaDriver.settings
        ++ lib.optional nvidia.nvidiaPersistenced nvidiaDriver.persistenced;
      boot.extraModulePackages = if useOpenModules then [ nvidiaDriver.open ] else [ nvidiaDriver.bin ];
    })
    (lib.mkIf (nvidia.enabled && nvidia.datacenter.enable) {
      boot.extraModulePackages = [ nvidiaDriver.bin ];
      environment.systemPackages =
        [ nvidiaDriver.fabricmanager ] ++ lib.optional nvidia.nvidiaPersistenced nvidiaDriver.persistenced;
    })
    # pkgs/stdenv/generic/check-meta.nix: nixpkgs refuses a package whose meta.platforms does
    # not include the host platform (the driver is built as part of the system).
    (lib.mkIf nvidia.enabled {
      assertions = [
        {
          assertion = builtins.elem pkgs.stdenv.hostPlatform.system nvidiaDriver.meta.platforms;
          message = "Package ‘${nvidiaDriver.name}’ is not available on the requested hostPlatform: ${pkgs.stdenv.hostPlatform.system}";
        }
      ];
    })
    # services/hardware/nvidia-container-toolkit/default.nix
    (lib.mkIf toolkit.enable {
      assertions = [
        {
          assertion = nvidia.datacenter.enable || nvidiaX11 || toolkit.suppressNvidiaDriverAssertion;
          message = "`nvidia-container-toolkit` requires nvidia drivers: set `hardware.nvidia.datacenter.enable`, add \"nvidia\" to `services.xserver.videoDrivers`, or set `hardware.nvidia-container-toolkit.suppressNvidiaDriverAssertion` if the driver is provided by another NixOS module (e.g. from NixOS-WSL)";
        }
      ];
    })
  ];
}
