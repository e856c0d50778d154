"""flakefleet's Pulumi components: each a thin shell over the pure core in `flakefleet/`."""

from __future__ import annotations

import pulumi


def resolved(**outputs: pulumi.Input) -> pulumi.Output[dict]:
    """Outputs resolved by name, never by position: one Output of {name: value} ({} for none)."""
    return pulumi.Output.all(**outputs) if outputs else pulumi.Output.from_input({})


def whole(value: object, secret: bool = False) -> pulumi.Output:
    """An Output of a plain value kept whole. `Output.from_input` (which `Output.all`, `Output.secret`
    and every input go through) unwraps a mapping or list into one Output per item, recursively,
    and the SDK then waits on each of them: a 5,000-host node table became a few hundred thousand
    Outputs, and an update's end took minutes (docs/benchmarks.md). A value returned by an apply
    is kept as it is (and `Output.secret(None)` has nothing to unwrap)."""
    return (pulumi.Output.secret(None) if secret else pulumi.Output.from_input(None)).apply(lambda _: value)


def joined(**outputs: pulumi.Input) -> pulumi.Output[dict]:
    """Outputs resolved by name into one {name: value}, each value kept whole (see `whole`): for
    values that are large mappings (every host's report, the node table's parts). `resolved` is
    for small ones."""
    result: pulumi.Output = whole({})
    for name, value in outputs.items():
        out = value if isinstance(value, pulumi.Output) else whole(value)
        result = result.apply(lambda acc, n=name, o=out: o.apply(lambda v, acc=acc, n=n: {**acc, n: v}))
    return result
