# The flakefleet options: what a pool's system is built from. They are declared from
# ./spec-schema.json, which flakefleet/plan/schema.py emits from the one typed definition of a
# pool's spec (flakefleet/plan/contract.py:PoolSpec) and `flakefleet configurations` keeps
# current; the flake's `lib.specModule` sets them from a spec. A new key is a field there and
# the module that reads `config.flakefleet.<key>`, nothing else. Everything per host lives
# outside the store.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  schema = builtins.fromJSON (builtins.readFile ./spec-schema.json);

  # The schema's type names -> NixOS option types (flakefleet/plan/schema.py:nix_type).
  typeOf =
    t:
    if t == "str" then
      types.str
    else if t == "bool" then
      types.bool
    else if t == "int" then
      types.int
    else if t == "ints.unsigned" then
      types.ints.unsigned
    else if t == "anything" then
      types.anything
    else if t ? enum then
      types.enum t.enum
    else if t ? strMatching then
      types.strMatching t.strMatching
    else if t ? listOf then
      types.listOf (typeOf t.listOf)
    else if t ? attrsOf then
      types.attrsOf (typeOf t.attrsOf)
    else if t ? nullOr then
      types.nullOr (typeOf t.nullOr)
    else if t ? submodule then
      types.submodule { options = optionsOf t.submodule; }
    else
      throw "flakefleet: spec-schema.json: no option type for ${builtins.toJSON t}";

  # One declaration: an option, or (`group`) a set of options under its name.
  declare =
    d:
    if d ? group then
      optionsOf d.group
    else
      mkOption (
        {
          type = typeOf d.type;
          inherit (d) description;
        }
        // builtins.intersectAttrs {
          default = null;
          example = null;
        } d
      );

  optionsOf = builtins.mapAttrs (_: declare);
in
{
  options.flakefleet = optionsOf schema.options;
}
