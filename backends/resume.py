"""Where a journaled rollout stopped: the state ``resume`` gives the engine so
that pacing continues instead of starting over, and surge replacements the
stopped process asked for are used instead of asked for again.

Read from the journal's event stream (every attempt's events, in order):

- the first attempt's scope size, from its ``rollout_started`` event: what the
  canary and the checkpoints are shares of;
- the checkpoints already reached (``checkpoint`` events while rolling): never
  repeated, whatever attempt reached them;
- a bake (or ``--pause``) in progress: when no wave started after the last
  ``checkpoint`` (or ``wave_completed``), the next wave waits until that event's
  journaled time plus the bake (or pause), not a whole bake more;
- surge: per scope instance, the replacement its last ``surge_created`` named,
  or, if its ``wave_started`` (action "replace") had none yet, that it was
  asked for; and every instance id the journal names.

Only the journal's clock crosses a restart, so the remaining wait is computed
from its times, as late as possible (:meth:`ResumePoint.at`, when the engine is
built), against a ``now`` on the same clock: the backend's (backends/clock.py),
the wall clock against Azure, the emulator's in a rehearsal, whose journal
holds the emulator's times (the resumed process has read the scale set, so its
clock follows the emulator by then).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine.events import EventKind
from ..engine.options import EngineOptions
from ..engine.rollout import Phase, Resumed
from .journal import Journal, RolloutRecord

#: the engine's ``rollout_started`` detail: "<strategy> over <n> instances: ..."
_SCOPE = re.compile(r" over (\d+) instances: ")
_RESOLVED = {
    EventKind.INSTANCE_HEALTHY.value,
    EventKind.INSTANCE_UNHEALTHY.value,
    EventKind.INSTANCE_FAILED.value,
    EventKind.INSTANCE_GONE.value,
}


@dataclass(frozen=True)
class ResumePoint:
    """A journaled rollout's pacing and surge state, with the journal's time
    (seconds since the epoch) before which its next wave must not start."""

    state: Resumed
    #: the end of the bake or pause in progress when it stopped (None: none)
    not_before: float | None = None

    def at(self, now: float) -> Resumed:
        """The engine's :class:`Resumed` for a rollout starting at ``now``, on the
        journal's clock."""
        if self.not_before is None:
            return self.state
        return dataclasses.replace(self.state, wait=max(0.0, self.not_before - now))


def resume_point(journal: Journal, record: RolloutRecord) -> ResumePoint | None:
    """The state to resume ``record`` from, or None if its first attempt never
    started rolling (then nothing is to be skipped)."""
    options = EngineOptions.from_mapping(record.engine_options, "journal options")
    return point_from_events(journal.events(record.id), options)


def point_from_events(
    events: Sequence[Mapping[str, Any]], options: EngineOptions
) -> ResumePoint | None:
    """:func:`resume_point` on a list of :meth:`Journal.events` rows."""
    scope_size = None
    for e in events:
        if e["kind"] == EventKind.ROLLOUT_STARTED.value:
            match = _SCOPE.search(e["detail"])
            if match:
                scope_size = int(match.group(1))
            break
    if scope_size is None:
        return None
    rollback = any(e["kind"] == EventKind.ROLLBACK_STARTED.value for e in events)
    stops = sum(
        1
        for e in events
        if e["kind"] == EventKind.CHECKPOINT.value and e["phase"] == Phase.ROLLING.value
    )
    not_before = None if rollback else _not_before(events, options)
    replacements: list[tuple[str, str]] = []
    requested: dict[str, None] = {}
    known: set[str] = set()
    for e in events:
        kind, instances = e["kind"], list(e["instances"])
        known.update(instances)
        if kind == EventKind.WAVE_STARTED.value and e["detail"] == "replace":
            requested.update(dict.fromkeys(instances))
        elif kind == EventKind.SURGE_CREATED.value and len(instances) > 1:
            requested.pop(instances[0], None)
            replacements.append((instances[0], instances[1]))
        elif kind in _RESOLVED and instances:
            requested.pop(instances[0], None)
    state = Resumed(
        scope_size=scope_size,
        stops_passed=stops,
        paced=not rollback,
        replacements=tuple(replacements),
        requested=tuple(requested),
        known=frozenset(known),
    )
    return ResumePoint(state, not_before)


def _not_before(events: Sequence[Mapping[str, Any]], options: EngineOptions) -> float | None:
    """The journal's time a bake (after a checkpoint) or a pause (after a wave)
    in progress ends: only if no wave started after it."""
    end = None
    for e in events:
        kind = e["kind"]
        if kind == EventKind.WAVE_STARTED.value:
            end = None
        elif kind == EventKind.CHECKPOINT.value and e["phase"] == Phase.ROLLING.value:
            end = max(end or 0.0, e["wall_time"] + options.bake)
        elif kind == EventKind.WAVE_COMPLETED.value and options.pause > 0:
            end = max(end or 0.0, e["wall_time"] + options.pause)
    return end
