"""flakefleet's Pulumi components: each a thin shell over the pure core in `flakefleet/`."""
