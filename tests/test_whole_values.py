"""Tier 2: large values stay whole Outputs (components.whole, components.joined): Output.all and
Output.from_input make an Output of every value of a mapping, recursively, and the SDK waits on
each; at 5,000 hosts the node table and the reports took an update's end minutes (issue 38)."""

from __future__ import annotations

from unittest import mock

import pulumi
from pulumi.output import Output

from components import joined, resolved, whole
from tests.harness import FleetMocks


def made_while(build) -> tuple[dict, int]:
    """The value `build()`'s Output resolves to, and how many Outputs were made meanwhile."""
    pulumi.runtime.set_mocks(FleetMocks(), project="flakefleet", stack="t", preview=False)
    made = 0
    track = Output._track

    def counting(self):
        nonlocal made
        made += 1
        return track(self)

    found: dict = {}

    @pulumi.runtime.test
    def run():
        return build().apply(lambda v: found.update(value=v))

    with mock.patch.object(Output, "_track", counting):
        run()
    return found["value"], made


TABLE = {f"host-{k}": {"system": "/nix/store/x", "found": {"booted": "/nix/store/y", "n": k}} for k in range(2000)}


def test_joined_keeps_a_large_table_whole_and_resolves_it_by_name():
    value, made = made_while(lambda: joined(delivered=whole(TABLE), key=pulumi.Output.from_input("k"), plain=3))
    assert value == {"delivered": TABLE, "key": "k", "plain": 3}
    assert made < 40  # a handful per name, none per row


def test_output_all_would_make_an_output_of_every_value():
    """What `joined` avoids (and why `resolved` is for small values)."""
    value, made = made_while(lambda: resolved(delivered=whole(TABLE)))
    assert value == {"delivered": TABLE}
    assert made > 4 * len(TABLE)


def test_a_secret_whole_value_stays_secret():
    pulumi.runtime.set_mocks(FleetMocks(), project="flakefleet", stack="t", preview=False)
    seen = {}

    @pulumi.runtime.test
    def run():
        out = whole(TABLE, secret=True)
        return Output.all(out.is_secret(), out).apply(lambda v: seen.update(secret=v[0], same=v[1] == TABLE))

    run()
    assert seen == {"secret": True, "same": True}
