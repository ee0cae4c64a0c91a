"""Two error families, by blame (as h11 does it).

* :class:`InputError`: the user's input is wrong (a scenario key, a strategy
  spec, an engine option). Always one line that names the offending key or
  value; the CLI turns it into exit code 2 and changes nothing.
* :class:`BackendError`: the scale set (simulated or real) reported a failure
  the rollout cannot work around; the CLI turns it into exit code 3.
"""

from __future__ import annotations


class RolloutError(Exception):
    """Base class of every error vmss-rollout raises on purpose."""


class InputError(RolloutError, ValueError):
    """Invalid user input: a one-line message naming the problem."""


class StrategyLoadError(InputError):
    """A strategy plugin could not be found, loaded or configured."""


class BackendError(RolloutError):
    """The backend failed in a way the engine cannot handle."""


class ConcurrencyError(BackendError):
    """Someone else changed the scale set model (the etag no longer matches)."""
