"""The availability-preserving unload rule: which AVAILABLE versions may go, given the policy.

TF Serving's `availability_preserving_policy.cc`, as a pure function of two sets of version
numbers. The version manager (`serve.versions.manager`) applies it after loading every aspired
version it can ("load new before unloading old"), and unloads one returned version at a time,
re-asking after each.
"""

from __future__ import annotations

from collections.abc import Collection


def versions_to_unload(aspired: Collection[int], available: Collection[int]) -> list[int]:
    """The AVAILABLE versions that may be unloaded now, oldest first.

    `aspired`: what the version policy wants served (from what is on disk); `available`: what is
    AVAILABLE now. Only unaspired versions are ever unloaded, and never so that a model that
    still aspires to versions is left with nothing serving:

    - an aspired version is AVAILABLE, or nothing is aspired any more (the versions left the
      disk or the model left the config): every unaspired version goes;
    - otherwise (the aspired versions are still loading, or failed): the newest unaspired
      version stays, so requests keep an answer; older ones go.
    """
    wanted = set(aspired)
    unaspired = sorted(set(available) - wanted)
    if wanted and not wanted & set(available):
        return unaspired[:-1]
    return unaspired
