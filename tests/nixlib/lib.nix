# A small NixOS module system with nixpkgs' semantics where our modules meet them, for CI,
# which has no nixpkgs. Written from the behaviour of nixpkgs' lib/modules.nix, not copied:
#
# - a module's `config` is pushed down through mkIf/mkMerge/mkOverride at every level that is
#   not an option, and pushing down evaluates the *content* of an mkIf to learn its attribute
#   names, whatever the condition (the class of defect issue 10 found);
# - definitions nobody declared are an error ("The option `x' does not exist"), checked as soon
#   as the configuration is read, which walks every definition of every module;
# - at an option, mkIf conditions are evaluated (non-Booleans refused), mkOverride priorities
#   keep the highest (default value = priority 1500), mkOrder sorts, then the type checks every
#   definition and merges them; later modules' definitions come first (conflicting values of a str/bool/enum are an error);
# - types.submodule evaluates its definitions as modules (freeformType supported at its root).
#
# tests/test_nix_modules.py runs the same conformance cases through this and, where a copy of
# nixpkgs' lib is at hand (FLAKEFLEET_NIXPKGS_LIB), through the real one, and requires the same
# outcome from both. Keep it small: add what our modules use, with a conformance case.
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    genericClosure
    head
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    tail
    typeOf
    ;

  showOption = loc: concatStringsSep "." loc;
  showValue = v: if isAttrs v || isList v || isFunction v then "<${typeOf v}>" else builtins.toJSON v;
  showDefs = defs: concatStringsSep "" (map (d: "\n- In `${d.file}': ${showValue d.value}") defs);
  zipAttrs = sets: builtins.zipAttrsWith (_: vs: vs) sets;
  isOption = x: isAttrs x && x._type or "" == "option";

  # ------------------------------------------------------------------ properties

  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkOrder = priority: content: {
    _type = "order";
    inherit priority content;
  };
  defaultPriority = 100;

  # Evaluates an mkIf's content whatever its condition: mapAttrs needs the content's names.
  pushDownProperties =
    cfg:
    if cfg._type or "" == "merge" then
      concatMap pushDownProperties cfg.contents
    else if cfg._type or "" == "if" then
      map (mapAttrs (_: v: mkIf cfg.condition v)) (pushDownProperties cfg.content)
    else if cfg._type or "" == "override" then
      map (mapAttrs (_: v: mkOverride cfg.priority v)) (pushDownProperties cfg.content)
    else
      [ cfg ];

  dischargeProperties =
    def:
    if def._type or "" == "merge" then
      concatMap dischargeProperties def.contents
    else if def._type or "" == "if" then
      if isBool def.condition then
        if def.condition then dischargeProperties def.content else [ ]
      else
        throw "‘mkIf’ called with a non-Boolean condition"
    else
      [ def ];

  priorityOf = def: if def.value._type or "" == "override" then def.value.priority else defaultPriority;

  filterOverrides =
    defs:
    let
      highest = foldl' (p: d: if priorityOf d < p then priorityOf d else p) 9999 defs;
      strip = d: if d.value._type or "" == "override" then d // { value = d.value.content; } else d;
    in
    map strip (filter (d: priorityOf d == highest) defs);

  sortOrders =
    defs:
    let
      strip =
        d:
        if d.value._type or "" == "order" then
          d
          // {
            value = d.value.content;
            order = d.value.priority;
          }
        else
          d;
    in
    builtins.sort (a: b: (a.order or 1000) < (b.order or 1000)) (map strip defs);

  # ------------------------------------------------------------------ merging at an option

  mergeDefinitions =
    loc: type: defs:
    let
      discharged = concatMap (
        d:
        map (value: {
          inherit (d) file;
          inherit value;
        }) (dischargeProperties d.value)
      ) defs;
      filtered = filterOverrides discharged;
      values = if any (d: d.value._type or "" == "order") filtered then sortOrders filtered else filtered;
      isDefined = values != [ ];
      invalid = filter (d: !type.check d.value) values;
      mergedValue =
        if isDefined then
          if invalid == [ ] then
            type.merge loc values
          else
            throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs invalid}"
        else if type ? emptyValue then
          type.emptyValue
        else
          throw "The option `${showOption loc}' was accessed but has no value defined. Try setting the option.";
    in
    {
      inherit isDefined mergedValue;
      optionalValue = if isDefined then { value = mergedValue; } else { };
    };

  evalOptionValue =
    loc: opt: defs:
    let
      withDefault =
        (
          if opt ? default then
            [
              {
                file = "default of ${showOption loc}";
                value = mkOverride 1500 opt.default;
              }
            ]
          else
            [ ]
        )
        ++ defs;
      value = (mergeDefinitions loc (opt.type or types.unspecified) withDefault).mergedValue;
    in
    if opt ? apply then opt.apply value else value;

  # ------------------------------------------------------------------ the option tree

  # decls: [ { file; options } ] at this level; configs: [ { file; config } ], already pushed down.
  # Returns { value = the configuration at this level; unmatched = [ { file; prefix; value } ] }.
  mergeTree =
    loc: decls: configs:
    let
      declsByName = zipAttrs (
        map (d: mapAttrs (_: o: {
          inherit (d) file;
          options = o;
        }) d.options) decls
      );
      checked = map (
        c:
        if isAttrs c.config then
          c
        else
          throw "In module `${c.file}', you're trying to define a value of type `${typeOf c.config}' rather than an attribute set for the option `${showOption loc}'!"
      ) configs;
      rawByName = zipAttrs (
        map (c: mapAttrs (_: value: {
          inherit (c) file;
          inherit value;
        }) c.config) checked
      );
      pushedByName = builtins.zipAttrsWith (_: concatLists) (
        map (
          c:
          mapAttrs (
            _: value:
            map (config: {
              inherit (c) file;
              inherit config;
            }) (pushDownProperties value)
          ) c.config
        ) checked
      );
      results = mapAttrs (
        name: ds:
        let
          options = filter (d: isOption d.options) ds;
        in
        if options == [ ] then
          mergeTree (loc ++ [ name ]) ds (pushedByName.${name} or [ ])
        else if length options == length ds then
          {
            value = evalOptionValue (loc ++ [ name ]) (foldl' (a: d: a // d.options) { } options) (
              rawByName.${name} or [ ]
            );
            unmatched = [ ];
          }
        else
          throw "The option `${showOption (loc ++ [ name ])}' would be a parent of other options, but its type does not support nested options."
      ) declsByName;
      undeclared = removeAttrs rawByName (attrNames declsByName);
    in
    {
      value = mapAttrs (_: r: r.value) results;
      unmatched =
        if configs == [ ] then
          [ ]
        else
          concatLists (map (name: map (u: u // { prefix = [ name ] ++ u.prefix; }) results.${name}.unmatched) (attrNames results))
          ++ concatLists (map (name: map (d: d // { prefix = [ name ]; }) undeclared.${name}) (attrNames undeclared));
    };

  # ------------------------------------------------------------------ modules

  moduleKeys = [
    "_file"
    "key"
    "disabledModules"
    "imports"
    "options"
    "config"
    "meta"
    "freeformType"
    "_class"
  ];

  # A module in any of its forms (path, function, attribute set) -> { file; imports; options; config; freeformType }.
  loadModule =
    args: fallbackFile: m:
    let
      file = if isPath m || isString m then toString m else fallbackFile;
      value = if isPath m || isString m then import m else m;
      applied = if isFunction value then value args else value;
      extra = removeAttrs applied moduleKeys;
      structured = applied ? config || applied ? options;
    in
    if !isAttrs applied then
      throw "module `${file}' is a ${typeOf applied}, not a module"
    else if structured && extra != { } then
      throw "Module `${file}' has an unsupported attribute `${head (attrNames extra)}'. This is caused by introducing a top-level `config' or `options' attribute. Add configuration attributes immediately on the top-level instead, or move all of them into the explicit `config' attribute."
    else
      {
        file = applied._file or file;
        key = applied.key or file;
        imports = applied.imports or [ ];
        options = applied.options or { };
        config = if structured then applied.config or { } else removeAttrs applied moduleKeys;
        freeformType = applied.freeformType or null;
      };

  # Every module and its imports, each once (a path imported twice is one module).
  collectModules =
    args: modules:
    map (i: i.module) (genericClosure {
      startSet = builtins.genList (
        i:
        let
          m = loadModule args "<module #${toString i}>" (builtins.elemAt modules i);
        in
        {
          key = m.key;
          module = m;
        }
      ) (length modules);
      operator =
        item:
        builtins.genList (
          i:
          let
            m = loadModule args "${item.key}:imports[${toString i}]" (builtins.elemAt item.module.imports i);
          in
          {
            key = m.key;
            module = m;
          }
        ) (length item.module.imports);
    });

  evalModules =
    {
      modules,
      specialArgs ? { },
      prefix ? [ ],
    }:
    let
      # Modules see the configuration unchecked; only the result is checked (as in nixpkgs).
      args = specialArgs // {
        inherit lib;
        config = unchecked;
        options = throw "the stand-in module system does not pass `options' to modules";
      };
      # nixpkgs merges the collected modules in reverse: a later module's definitions come first.
      collected = lib.reverseList (collectModules args modules);
      merged = mergeTree prefix collected (
        concatMap (
          m:
          map (config: {
            inherit (m) file;
            inherit config;
          }) (pushDownProperties m.config)
        ) collected
      );
      freeformTypes = filter (t: t != null) (map (m: m.freeformType) collected);
      freeformValue =
        if merged.unmatched == [ ] then
          { }
        else
          (head freeformTypes).merge prefix (
            map (u: {
              inherit (u) file;
              value = lib.setAttrByPath u.prefix u.value;
            }) merged.unmatched
          );
      checkUnmatched =
        if freeformTypes == [ ] && merged.unmatched != [ ] then
          let
            first = head merged.unmatched;
          in
          throw "The option `${showOption (prefix ++ first.prefix)}' does not exist. Definition values:${showDefs [ first ]}"
        else
          null;
      unchecked = if freeformTypes == [ ] then merged.value else lib.recursiveUpdate freeformValue merged.value;
    in
    {
      config = builtins.seq checkUnmatched unchecked;
    };

  # ------------------------------------------------------------------ types

  mergeEqualOption =
    loc: defs:
    let
      first = head defs;
    in
    foldl' (
      acc: d:
      if d.value == first.value then
        acc
      else
        throw "The option `${showOption loc}' has conflicting definition values:${showDefs [ first d ]}"
    ) first.value (tail defs);

  mergeOneOption =
    loc: defs:
    if length defs == 1 then
      (head defs).value
    else
      throw "The option `${showOption loc}' is defined multiple times while it's expected to be unique.${showDefs defs}";

  mkOptionType =
    {
      name,
      description ? name,
      check ? (_: true),
      merge ? mergeOneOption,
      ...
    }@attrs:
    attrs
    // {
      _type = "option-type";
      inherit
        name
        description
        check
        merge
        ;
    };

  str' =
    name: description: check:
    mkOptionType {
      inherit name description;
      check = x: isString x && check x;
      merge = mergeEqualOption;
    };

  types = rec {
    unspecified = mkOptionType { name = "unspecified"; };
    raw = mkOptionType { name = "raw"; };
    bool = mkOptionType {
      name = "bool";
      description = "boolean";
      check = isBool;
      merge = mergeEqualOption;
    };
    int = mkOptionType {
      name = "int";
      description = "signed integer";
      check = isInt;
      merge = mergeEqualOption;
    };
    float = mkOptionType {
      name = "float";
      description = "floating point number";
      check = builtins.isFloat;
      merge = mergeEqualOption;
    };
    ints.unsigned = mkOptionType {
      name = "unsignedInt";
      description = "unsigned integer, meaning >=0";
      check = x: isInt x && x >= 0;
      merge = mergeEqualOption;
    };
    port = mkOptionType {
      name = "port";
      description = "16 bit unsigned integer; between 0 and 65535 (both inclusive)";
      check = x: isInt x && x >= 0 && x <= 65535;
      merge = mergeEqualOption;
    };
    str = str' "str" "string" (_: true);
    nonEmptyStr = str' "nonEmptyStr" "non-empty string" (s: builtins.match "[ \t\n]*" s == null);
    singleLineStr = str' "singleLineStr" "(optionally newline-terminated) single-line string" (
      s: builtins.match "[^\n]*\n?" s != null
    );
    strMatching = pattern: str' "strMatching" "string matching the pattern ${pattern}" (s: builtins.match pattern s != null);
    lines = mkOptionType {
      name = "lines";
      description = "strings concatenated with \"\\n\"";
      check = isString;
      merge = _: defs: concatStringsSep "\n" (map (d: d.value) defs);
    };
    path = mkOptionType {
      name = "path";
      description = "absolute path";
      check = x: (isPath x || isString x || x ? outPath) && builtins.substring 0 1 (toString x) == "/";
      merge = mergeEqualOption;
    };
    package = mkOptionType {
      name = "package";
      description = "package";
      check = x: isAttrs x && x ? outPath || isString x;
      merge = mergeOneOption;
    };
    attrs = mkOptionType {
      name = "attrs";
      description = "attribute set";
      check = isAttrs;
      merge = _: defs: foldl' (a: d: a // d.value) { } defs;
    };
    anything = mkOptionType {
      name = "anything";
      check = _: true;
      merge =
        loc: defs:
        if all (d: isAttrs d.value && !(d.value ? outPath)) defs then
          (attrsOf anything).merge loc defs
        else
          mergeEqualOption loc defs;
    };
    enum =
      values:
      mkOptionType {
        name = "enum";
        description = "one of ${concatStringsSep ", " (map builtins.toJSON values)}";
        check = x: elem x values;
        merge = mergeEqualOption;
      };
    listOf =
      elemType:
      mkOptionType {
        name = "listOf";
        description = "list of ${elemType.description}";
        check = isList;
        emptyValue = [ ];
        merge =
          loc: defs:
          concatLists (
            builtins.genList (
              n:
              let
                def = builtins.elemAt defs n;
              in
              concatLists (
                builtins.genList (
                  m:
                  let
                    r = mergeDefinitions (loc ++ [ "[definition ${toString (n + 1)}-entry ${toString (m + 1)}]" ]) elemType [
                      {
                        inherit (def) file;
                        value = builtins.elemAt def.value m;
                      }
                    ];
                  in
                  if r.isDefined then [ r.mergedValue ] else [ ]
                ) (length def.value)
              )
            ) (length defs)
          );
      };
    attrsOf =
      elemType:
      mkOptionType {
        name = "attrsOf";
        description = "attribute set of ${elemType.description}";
        check = isAttrs;
        emptyValue = { };
        merge =
          loc: defs:
          let
            byName = zipAttrs (
              map (d: mapAttrs (_: v: {
                inherit (d) file;
                value = v;
              }) d.value) defs
            );
            merged = mapAttrs (name: ds: mergeDefinitions (loc ++ [ name ]) elemType ds) byName;
          in
          mapAttrs (_: r: r.mergedValue) (lib.filterAttrs (_: r: r.isDefined) merged);
      };
    nullOr =
      elemType:
      mkOptionType {
        name = "nullOr";
        description = "null or ${elemType.description}";
        check = x: x == null || elemType.check x;
        emptyValue = null;
        merge =
          loc: defs:
          let
            nulls = filter (d: d.value == null) defs;
          in
          if nulls == [ ] then
            elemType.merge loc defs
          else if length nulls == length defs then
            null
          else
            throw "The option `${showOption loc}' is defined both null and not null, in ${concatStringsSep ", " (map (d: d.file) defs)}.";
      };
    either =
      a: b:
      mkOptionType {
        name = "either";
        description = "${a.description} or ${b.description}";
        check = x: a.check x || b.check x;
        merge =
          loc: defs:
          if all (d: a.check d.value) defs then
            a.merge loc defs
          else if all (d: b.check d.value) defs then
            b.merge loc defs
          else
            mergeOneOption loc defs;
      };
    oneOf = ts: foldl' either (head ts) (tail ts);
    # A type whose every definition must also pass `check` (nixpkgs' checks each definition).
    addCheck = elemType: check: elemType // { check = x: elemType.check x && check x; };
    submodule =
      module:
      mkOptionType {
        name = "submodule";
        description = "submodule";
        check = x: isAttrs x || isFunction x || isPath x;
        emptyValue = { };
        merge =
          loc: defs:
          (evalModules {
            prefix = loc;
            specialArgs.name = lib.last loc;
            modules = [ module ] ++ map (d: {
              _file = d.file;
              config = d.value;
            }) defs;
          }).config;
      };
  };

  lib = {
    inherit
      mkIf
      mkMerge
      mkOverride
      mkOrder
      mergeOneOption
      mkOptionType
      types
      evalModules
      isOption
      ;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption =
      name:
      lib.mkOption {
        type = types.bool;
        default = false;
        description = "Whether to enable ${name}.";
      };
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    mkOptionDefault = mkOverride 1500;
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalAttrs = cond: set: if cond then set else { };
    optionalString = cond: s: if cond then s else "";
    genAttrs = names: f: listToAttrs (map (n: {
      name = n;
      value = f n;
    }) names);
    filterAttrs =
      pred: set:
      listToAttrs (
        concatMap (n: if pred n set.${n} then [ {
          name = n;
          value = set.${n};
        } ] else [ ]) (attrNames set)
      );
    mapAttrsToList = f: set: map (n: f n set.${n}) (attrNames set);
    concatStringsSep = concatStringsSep;
    concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
    concatMapStrings = f: xs: concatStringsSep "" (map f xs);
    last = xs: builtins.elemAt xs (length xs - 1);
    reverseList = xs: builtins.genList (i: builtins.elemAt xs (length xs - 1 - i)) (length xs);
    toList = x: if isList x then x else [ x ];
    versionAtLeast = v: min: builtins.compareVersions v min >= 0;
    versionOlder = v: than: builtins.compareVersions v than < 0;
    hasSuffix =
      suffix: s:
      let
        n = builtins.stringLength s;
        k = builtins.stringLength suffix;
      in
      k <= n && builtins.substring (n - k) k s == suffix;
    toInt =
      s:
      let
        n = builtins.fromJSON s;
      in
      if builtins.match "[0-9]+" s != null && isInt n then n else throw "toInt: ${s} is not an integer";
    getOutput = output: pkg: pkg.${output} or pkg;
    getName = pkg: pkg.pname or (builtins.parseDrvName pkg.name).name;
    nameValuePair = name: value: { inherit name value; };
    concatLines = xs: concatStringsSep "\n" xs + (if xs == [ ] then "" else "\n");
    setAttrByPath =
      path: value:
      if path == [ ] then value else { ${head path} = lib.setAttrByPath (tail path) value; };
    recursiveUpdate =
      a: b:
      a
      // mapAttrs (n: v: if isAttrs v && isAttrs (a.${n} or null) && !(v ? _type) then lib.recursiveUpdate a.${n} v else v) b;
  };
in
lib
