"""flakefleet's Pulumi components: each a thin shell over the pure core in `flakefleet/`."""

from __future__ import annotations

import pulumi


def resolved(**outputs: pulumi.Input) -> pulumi.Output[dict]:
    """Outputs resolved by name, never by position: one Output of {name: value} ({} for none)."""
    return pulumi.Output.all(**outputs) if outputs else pulumi.Output.from_input({})
