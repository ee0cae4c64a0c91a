"""How often a driver polls: the schedule ``backends/realtime.py`` follows on
the wall clock (or the emulator's) and ``sim/runner.py`` models in simulated
time, and the one parser of its ``MIN[:MAX]`` text (``--poll-interval``,
the scenario's ``driver.poll_interval``). Pure: no clock, no sleep."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError

__all__ = ["DEFAULT_POLL", "PollInterval", "parse_poll_interval", "poll_text"]

#: ``--poll-interval 5:30``: 5 s after a change, doubling to 30 s while nothing changes
DEFAULT_POLL = (5.0, 30.0)
#: the MAX a bare ``MIN`` gets (at least MIN)
_DEFAULT_MAX = 30.0
#: a day between polls is far beyond any real rollout's
_LONGEST = 86_400.0


@dataclass
class PollInterval:
    """Seconds between polls: ``minimum`` after a change, doubling to ``maximum``."""

    minimum: float = DEFAULT_POLL[0]
    maximum: float = DEFAULT_POLL[1]

    def __post_init__(self) -> None:
        self.current = self.minimum

    def next(self, active: bool) -> float:
        self.current = self.minimum if active else min(self.maximum, self.current * 2)
        return self.current


def parse_poll_interval(
    text: object, key: str = "--poll-interval", *, allow_zero: bool = False
) -> tuple[float, float]:
    """``(MIN, MAX)`` seconds from ``"MIN[:MAX]"`` (a bare MIN gets MAX
    ``max(MIN, 30)``). ``allow_zero``: ``"0"`` is ``(0, 0)``, the idealised
    driver that sees every change at once (the scenario's, not ``upgrade``'s).
    Raises a one-line :class:`InputError` naming ``key``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = f"{text:g}"
    if not isinstance(text, str):
        raise InputError(f"{key}: expected MIN or MIN:MAX seconds such as 5:30, got {text!r}")
    low, colon, high = text.strip().partition(":")
    try:
        lo = float(low)
        hi = float(high) if colon else max(lo, _DEFAULT_MAX)
    except ValueError:
        raise InputError(f"{key}: expected MIN or MIN:MAX seconds, got {text!r}") from None
    if allow_zero and lo == 0 and (not colon or hi == 0):
        return (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        zero = ' (or "0": every change seen at once)' if allow_zero else ""
        raise InputError(f"{key}: need 0 < MIN <= MAX{zero}, got {text!r}")
    if hi > _LONGEST:
        raise InputError(f"{key}: MAX must be at most {_LONGEST:g} s (a day), got {text!r}")
    return (lo, hi)


def poll_text(poll: tuple[float, float]) -> str:
    """``"MIN:MAX"`` (``"0"``: the idealised driver), as :func:`parse_poll_interval` reads it."""
    lo, hi = poll
    return "0" if hi == 0 else f"{lo!r}:{hi!r}".replace(".0:", ":").removesuffix(".0")
