"""flakefleet's pure core: configuration, inventory planning and command construction (no Pulumi)."""
