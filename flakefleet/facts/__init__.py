"""What flakefleet knows of the world, as pure tables and arithmetic that import nothing of
flakefleet: AWS's zones and instance types, the k3s port table, the address blocks, where the
flake and the caches are."""
