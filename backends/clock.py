"""The operator commands' clock: the wall clock, or the ARM emulator's.

The emulator runs its simulated time ``--time-scale`` times faster than wall
time and announces it on every response (``x-vmss-rollout-emulator-time``: its
simulated now in seconds since the epoch; ``x-vmss-rollout-emulator-time-scale``).
Once a response carries them, :class:`Clock` follows the emulator: ``time()``
is the last announced time plus the wall time elapsed since that response
times the scale, never going backwards, and ``sleep(d)`` sleeps ``d / scale``
wall seconds. So every wait of a rehearsal (poll interval, pause, bake, health
timeout, retry backoff) lasts what it would on Azure, in the emulator's time,
and every timestamp (the journal's, the live view's) is the emulator's.

Azure never sends those headers, and against a public Azure cloud's endpoint
they are ignored anyway (defence in depth): nothing changes there. The
lease (backends/lease.py) does not use this clock: it is about processes
being alive, and processes live in wall time.

Standard library only: backends/azure.py reads the headers with an azure-core
policy (``ClockPolicy``) and makes azure-core's own retries wait on this clock
(``ClockTransport``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

#: the emulator's simulated now (seconds since the epoch) and its time scale
#: (emulator/state.py announces them; vmss-rollout's own, never Azure's)
TIME_HEADER = "x-vmss-rollout-emulator-time"
TIME_SCALE_HEADER = "x-vmss-rollout-emulator-time-scale"
#: the ARM endpoints' domains of Azure's clouds (global, US Government, China, the
#: retired Germany cloud): management.azure.com, management.usgovcloudapi.net,
#: management.chinacloudapi.cn, management.microsoftazure.de (Microsoft docs,
#: key-vault access-behind-firewall; azure-cli core/cloud.py's clouds); their
#: responses never set the clock
AZURE_ARM_DOMAINS = ("azure.com", "usgovcloudapi.net", "chinacloudapi.cn", "microsoftazure.de")


def is_azure_cloud(endpoint: str) -> bool:
    """Whether ``endpoint`` is one of Azure's clouds' (``management.azure.com`` and
    the like), whose answers may never move the clock."""
    host = (urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").hostname or "").lower()
    return any(host == d or host.endswith(f".{d}") for d in AZURE_ARM_DOMAINS)


class Clock:
    """``monotonic()``, ``time()`` (seconds since the epoch) and ``sleep(seconds)``
    on the wall clock, until :meth:`announce` is told the emulator's time; from
    then on, in the emulator's time (see the module's docstring).

    ``honour=False`` (an Azure cloud's endpoint): announcements are ignored.
    The wall clock's three functions are parameters, so a test can drive it."""

    def __init__(
        self,
        *,
        honour: bool = True,
        wall_time: Callable[[], float] = time.time,
        wall_monotonic: Callable[[], float] = time.monotonic,
        wall_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.honour = honour
        self._wall_time = wall_time
        self._wall_monotonic = wall_monotonic
        self._wall_sleep = wall_sleep
        self._lock = threading.Lock()
        #: simulated seconds per wall second; None: on the wall clock
        self.scale: float | None = None
        #: the last announced time, and the wall monotonic time it came at
        self._announced = 0.0
        self._received = 0.0
        #: the latest time() returned (it never goes backwards)
        self._last = 0.0
        #: monotonic() = time() + this, set when the emulator's time is first
        #: announced so that monotonic() goes on from where the wall one was
        self._offset = 0.0

    @property
    def emulated(self) -> bool:
        """Whether this clock follows an emulator's announced time."""
        return self.scale is not None

    def announce(self, now: float, scale: float) -> None:
        """The emulator said its time is ``now`` (epoch seconds), running ``scale``
        times faster than wall time."""
        if not self.honour or not (scale > 0 and now > 0):
            return
        with self._lock:
            received = self._wall_monotonic()
            if self.scale is None:
                self._offset = received - now
                self._last = now
            self.scale = scale
            self._announced = now
            self._received = received

    def time(self) -> float:
        """Now, in seconds since the epoch."""
        if self.scale is None:
            return self._wall_time()
        with self._lock:
            assert self.scale is not None
            now = self._announced + (self._wall_monotonic() - self._received) * self.scale
            self._last = max(self._last, now)
            return self._last

    def monotonic(self) -> float:
        """A clock for durations and deadlines (its origin means nothing)."""
        if self.scale is None:
            return self._wall_monotonic()
        return self.time() + self._offset

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (``seconds / scale`` wall seconds)."""
        if seconds <= 0:
            return
        self._wall_sleep(seconds / (self.scale or 1.0))

    def wall_seconds(self, seconds: float) -> float:
        """How long ``seconds`` of this clock's time last in wall time."""
        return seconds / (self.scale or 1.0)


def announced(headers: Any) -> tuple[float, float] | None:
    """(time, scale) from a response's headers, or None when they are absent or
    not numbers."""
    now, scale = headers.get(TIME_HEADER), headers.get(TIME_SCALE_HEADER)
    if not now or not scale:
        return None
    try:
        return float(now), float(scale)
    except ValueError:
        return None


#: the wall clock, for what has no backend (and the lease)
WALL = Clock(honour=False)


def clock_of(backend: Any) -> Clock:
    """A backend's clock (its ``clock``); the wall clock for a backend without one."""
    clock = getattr(backend, "clock", None)
    return clock if isinstance(clock, Clock) else WALL
