"""Tier 1: workers keep their batches from one update to the next (flakefleet/plan/rollout.py:
worker_batches), so a host joining or leaving changes no other host's plan but its batchmates'."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from flakefleet.plan.inventory import Host
from flakefleet.plan.rollout import worker_batches


def workers(names) -> tuple[Host, ...]:
    return tuple(Host(name=n, pool="w", role="worker", provider="metal", arch="x86_64",
                      address=IPv4Address("192.0.2.1"), ssh_user="root") for n in names)


def names(batches) -> list[tuple[str, ...]]:
    return [tuple(h.name for h in b) for b in batches]


def test_without_a_last_update_workers_are_cut_in_order():
    assert names(worker_batches(workers("abcde"), 2)) == [("a", "b"), ("c", "d"), ("e",)]


def test_a_leaving_worker_shrinks_only_its_own_batch():
    kept = (("a", "b"), ("c", "d"), ("e",))
    assert names(worker_batches(workers("acde"), 2, kept)) == [("a",), ("c", "d"), ("e",)]


def test_joining_workers_form_new_batches_at_the_end():
    kept = (("a", "b"), ("c",))
    assert names(worker_batches(workers("xabcyz"), 2, kept)) == [("a", "b"), ("c",), ("x", "y"), ("z",)]


def test_a_smaller_batch_size_splits_the_kept_batches():
    kept = (("a", "b", "c", "d"),)
    assert names(worker_batches(workers("abcd"), 3, kept)) == [("a", "b", "c"), ("d",)]


def test_churn_past_twice_the_batches_needed_cuts_afresh():
    kept = (("a",), ("b",), ("c",), ("d",), ("e",))  # five batches where a fresh cut of 3 needs two
    assert names(worker_batches(workers("abcde"), 3, kept)) == [("a", "b", "c"), ("d", "e")]
    kept = (("a",), ("b",), ("c", "d"), ("e",))  # four: within twice, kept
    assert names(worker_batches(workers("abcde"), 3, kept)) == [("a",), ("b",), ("c", "d"), ("e",)]


fleet = st.lists(st.sampled_from([f"w{k}" for k in range(40)]), unique=True, max_size=30)


@settings(max_examples=300, deadline=None)
@given(before=fleet, after=fleet, size=st.integers(1, 6), size_after=st.integers(1, 6))
def test_every_worker_is_in_one_batch_and_stayers_keep_theirs(before, after, size, size_after):
    kept = tuple(names(worker_batches(workers(before), size)))
    now = names(worker_batches(workers(after), size_after, kept))
    assert sorted(n for b in now for n in b) == sorted(after)  # every worker, once
    assert all(0 < len(b) <= size_after for b in now)
    fresh = names(worker_batches(workers(after), size_after))
    assert len(now) <= 2 * len(fresh)  # the rollout is at most twice as long as a fresh cut
    if now == fresh:
        return  # cut afresh (or it is the same)
    was = {n: tuple(m for m in b if m in after) for b in kept for n in b}
    for b in now:
        stayers = [n for n in b if n in was]
        assert not stayers or len(stayers) == len(b)  # joiners are never put with stayers
        for n in stayers:  # a stayer's batch is its old one, less who left (split only if the size shrank)
            old = was[n]
            assert b == old if len(old) <= size_after else set(b) < set(old)


def test_a_leaving_host_stays_admitted_until_the_update_after_its_drain():
    """Inventory.after: an address of the last update's nodes that no network of its role covers
    any more (a host leaving now, admitted by its own address) is still in the peers file this
    update, whose end drains it; covered ones change nothing."""
    from flakefleet.config import parse_stack_config
    from flakefleet.plan.inventory import plan_inventory
    from tests.stackgen import DEPLOY_KEY, HOST_KEYS
    import json

    def inventory(networks):
        pools = [{"name": "cp", "role": "control-plane", "provider": "metal", **networks,
                  "hosts": [{"name": "cp-0", "address": "192.0.2.10", "ssh_host_key": HOST_KEYS[0]}]},
                 {"name": "w", "role": "worker", "provider": "metal", **networks,
                  "hosts": [{"name": "w-0", "address": "192.0.2.20", "ssh_host_key": HOST_KEYS[1]}]}]
        raw = {"flakefleet:cluster": json.dumps({"name": "t"}), "flakefleet:storage": json.dumps({"enabled": False}),
               "flakefleet:delivery": json.dumps({"authorized_keys": [DEPLOY_KEY]}), "flakefleet:pools": json.dumps(pools)}
        return plan_inventory(parse_stack_config(raw, None))

    last = {"cp-0": ("control-plane", "192.0.2.10"), "w-0": ("worker", "192.0.2.20"), "w-1": ("worker", "192.0.2.21")}
    exact = inventory({})
    assert exact.peers == {"control-plane": ["192.0.2.10/32"], "worker": ["192.0.2.20/32"]}
    assert exact.after((), last).peers == {"control-plane": ["192.0.2.10/32"], "worker": ["192.0.2.20/31"]}
    ranged = inventory({"networks": ["192.0.2.0/24"]})
    assert ranged.after((), last).peers == ranged.peers == {"control-plane": ["192.0.2.0/24"], "worker": ["192.0.2.0/24"]}
    assert ranged.after((("w-1", "w-0"),), last).kept_batches == (("w-1", "w-0"),)
