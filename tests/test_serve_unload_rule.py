"""serve.versions.unload_rule: which AVAILABLE versions may be unloaded (TF Serving's
availability-preserving policy), as a pure function of version numbers."""

from __future__ import annotations

import itertools

from serve.versions.unload_rule import versions_to_unload


def test_once_the_new_version_is_available_the_old_one_goes():
    assert versions_to_unload(aspired={2}, available={1, 2}) == [1]


def test_while_the_new_version_is_still_loading_the_old_one_keeps_serving():
    assert versions_to_unload(aspired={2}, available={1}) == []


def test_while_nothing_aspired_is_available_only_the_newest_unaspired_version_stays():
    assert versions_to_unload(aspired={5}, available={1, 2, 3}) == [1, 2]


def test_with_nothing_aspired_every_version_goes():
    """The versions left the disk, or the model left the config: nothing is kept."""
    assert versions_to_unload(aspired=set(), available={1, 3}) == [1, 3]


def test_aspired_versions_are_never_unloaded():
    assert versions_to_unload(aspired={1, 3}, available={1, 2, 3}) == [2]
    assert versions_to_unload(aspired={1, 2}, available={1, 2}) == []


def test_nothing_available_means_nothing_to_unload():
    assert versions_to_unload(aspired={1}, available=set()) == []
    assert versions_to_unload(aspired=set(), available=set()) == []


def test_versions_come_oldest_first_whatever_the_input_order():
    assert versions_to_unload(aspired=[9], available=[7, 3, 9, 5]) == [3, 5, 7]


def test_unloading_one_at_a_time_never_leaves_an_aspiring_model_with_nothing_served():
    """Every (aspired, available) pair over 4 versions: apply the rule step by step as the
    manager does; a model that aspires to something always keeps an AVAILABLE version, and
    an aspired AVAILABLE version is never touched."""
    subsets = [set(c) for k in range(5) for c in itertools.combinations(range(1, 5), k)]
    for aspired, available in itertools.product(subsets, subsets):
        left = set(available)
        while victims := versions_to_unload(aspired, left):
            assert victims[0] not in aspired
            left.discard(victims[0])
        if aspired and available:
            assert left, (aspired, available)
        assert left & aspired == available & aspired
        assert not (left - aspired) or not (available & aspired), (aspired, available, left)
