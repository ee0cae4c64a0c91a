"""The real-time driver: the engine's loop on the wall clock.

Poll, observe, step, execute, then wait until the engine's deadline or the
next poll. ``sim/runner.py``'s polled driver models this loop in simulated
time (its calls' latency included), so a simulation predicts what this
driver takes: change one, change the other. Waiting is sleep-and-poll with an
adaptive interval: short while things change, doubling up to a ceiling while
nothing does. The clock and the sleep are parameters, so tests can drive it on
a fake clock, and Ctrl-C handling stays with the caller (``should_stop``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..engine.backend import Backend, execute
from ..engine.polling import PollInterval
from ..engine.rollout import Rollout, Step

__all__ = ["run"]


def run(
    rollout: Rollout,
    backend: Backend,
    *,
    etag: str | None,
    interval: PollInterval | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[Step], None] | None = None,
    until: Callable[[Step], bool] = lambda step: False,
) -> str | None:
    """Drive ``rollout`` on ``backend`` until it finishes; returns the last etag.
    The first poll happens at once; ``should_stop()`` turning true makes the
    rollout stop starting waves and finish the ones in flight; ``until(step)``
    returns at once after that step's actions (``--no-wait``)."""
    interval = interval or PollInterval()
    stopping = False
    while True:
        obs = backend.poll()
        now = clock()
        rollout.observe(now, obs.changed, obs.deleted)
        if not stopping and should_stop():
            stopping = True
            rollout.request_stop(now)
        step = rollout.step(now)
        etag = execute(rollout, backend, step.actions, clock, etag)
        if on_step is not None:
            on_step(step)
        if rollout.finished or until(step):
            return etag
        wait = interval.next(bool(obs.changed or obs.deleted or step.actions))
        if step.wake_at is not None:
            wait = min(wait, max(0.0, step.wake_at - clock()))
        sleep(wait)
