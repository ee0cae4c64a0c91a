"""Strategy plugins: pure decisions over the rollout's view.

Write one by subclassing :class:`StrategyBase` (see README) and registering it
under the entry-point group ``vmss_rollout.strategies``.
"""

from .base import DomainKind, Duration, InstanceInfo, Strategy, StrategyBase, View
from .registry import available, describe, load, make, parse_spec

__all__ = [
    "DomainKind",
    "Duration",
    "InstanceInfo",
    "Strategy",
    "StrategyBase",
    "View",
    "available",
    "describe",
    "load",
    "make",
    "parse_spec",
]
