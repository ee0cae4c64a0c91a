"""What the operator commands print around their data: the plan's summary, wave
tables that collapse at scale, status lines that name instances, the history
table, the live view's clock and the JSON-lines event stream of ``upgrade -o json``.

Plain data in, text or rich tables out; no Azure calls here."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from rich.table import Table
from rich.text import Text

from ..backends.journal import model_from_dict
from ..engine.errors import InputError
from ..engine.events import Event
from ..engine.polling import poll_text
from .output import fmt_duration, fmt_number
from .plotting import WAVE_ROWS, collapse_waves

# --------------------------------------------------------------------------- plan


def assumed_timings(
    scenario: Any, origin: str, driver: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The timings, faults, demand and driver a prediction assumed, and where
    they came from (``origin``: the built-in scenario, ``--scenario FILE``, a
    calibration; ``driver``: the origin of ``poll_interval`` and
    ``request_latency`` when not the scenario, e.g. ``--poll-interval``)."""
    origins = {"poll_interval": origin, "request_latency": origin}
    origins.update({k: v for k, v in (driver or {}).items() if v != "scenario"})
    return {
        "driver": {
            "poll_interval": poll_text(scenario.poll_interval),
            "poll_interval_origin": origins["poll_interval"],
            "request_latency_s": scenario.request_latency,
            "request_latency_origin": origins["request_latency"],
            "page_size": scenario.page_size,
        },
        "origin": origin,
        "upgrade": str(scenario.upgrade),
        "health_delay": str(scenario.health_delay),
        "upgrade_failure": scenario.upgrade_failure,
        "unhealthy_after_upgrade": scenario.unhealthy_after_upgrade,
        "required": str(scenario.required),
        "required_count": scenario.required_serving(),
    }


def plan_summary(result: Mapping[str, Any], instances: int) -> list[str]:
    """The prediction in a few lines: duration, halts, lowest serving against
    demand, degraded and outage time, failed instances, and the timings assumed."""
    s = result["simulation"]
    assumed = result.get("assumed") or {}
    required = assumed.get("required_count")
    runs = s["runs"]
    lowest = s["min_serving"]["min"]
    lines = [
        f"predicted over {runs} simulated run{'s' if runs != 1 else ''}: duration p50 "
        f"{fmt_duration(s['duration_s']['p50'])}, p95 {fmt_duration(s['duration_s']['p95'])}",
    ]
    demand = ""
    if required is not None:
        verdict = "meets" if lowest >= required else "BELOW"
        demand = f" ({verdict} demand {required} = {assumed['required']})"
    lines.append(f"lowest serving: {fmt_number(lowest)} of {instances}{demand}")
    halted = s["halted_runs"]
    halt = f"halted in {halted} of {runs} runs"
    if halted:
        halt += f" ({'; '.join(s['halt_reasons'])})"
    lines.append(halt)
    lines.append(
        f"degraded (below demand): mean {fmt_duration(s['degraded_s']['mean'])}, p95 "
        f"{fmt_duration(s['degraded_s']['p95'])}; outage (nothing serving) in "
        f"{result['outage_runs']} of {runs} runs"
    )
    lines.append(
        f"failed or unhealthy instances: mean {fmt_number(s['failed']['mean'])}, "
        f"max {fmt_number(s['failed']['max'])}"
    )
    if assumed:
        lines.append(
            f"assumed ({assumed['origin']}): upgrade {assumed['upgrade']}, health delay "
            f"{assumed['health_delay']}, upgrade failure {assumed['upgrade_failure']:g}, "
            f"unhealthy after upgrade {assumed['unhealthy_after_upgrade']:g}, "
            f"demand {assumed['required']}"
        )
    if assumed.get("driver"):
        lines.append(driver_line(assumed["driver"]))
    return lines


def driver_line(driver: Mapping[str, Any]) -> str:
    """How the prediction's driver polls, as ``upgrade`` will, and what a call costs."""
    if driver["poll_interval"] == "0":
        return f"driver: sees every change at once ({driver['poll_interval_origin']})"
    return (
        f"driver: polls every {driver['poll_interval']} s ({driver['poll_interval_origin']}), "
        f"{driver['request_latency_s']:.3g} s per ARM call ({driver['request_latency_origin']}), "
        f"{driver['page_size']} instances per list page"
    )


def prompt_summary(result: Mapping[str, Any], instances: int, options: Any) -> list[str]:
    """What the confirmation prompt shows: the plan's prediction, canary and bake."""
    full = plan_summary(result, instances)
    canary = f"canary {options.canary}" if options.canary is not None else "no canary"
    bake = f"bake {fmt_duration(options.bake)}" if options.bake else "no bake"
    pause = f", pause {fmt_duration(options.pause)} between waves" if options.pause else ""
    return [*full[:3], f"{canary}, {bake}{pause}", *full[3:]]


def wave_table(title: str, waves: Sequence[Sequence[str]], *, all_waves: bool) -> Table:
    """The waves in order; beyond ``WAVE_ROWS`` the middle collapses into one
    range row unless ``all_waves``."""
    table = Table(title=title, title_justify="left")
    table.add_column("wave", justify="right")
    table.add_column("instances")
    rows = [(n, 0.0, "", tuple(w)) for n, w in enumerate(waves, 1)]
    shown = rows if all_waves else collapse_waves(rows, WAVE_ROWS)
    for row in shown:
        if len(row) == 3:
            first, last, count = row
            table.add_row(
                f"{first}-{last}",
                Text(
                    f"... {count} instances in {last - first + 1} waves (--all-waves lists them)",
                    style="italic",
                ),
            )
        else:
            table.add_row(str(row[0]), " ".join(row[3]))
    return table


# --------------------------------------------------------------------------- status


def legend(styles: Mapping[str, str]) -> Text:
    """The heat map's legend on one short line (printed under the table, not as a
    caption squeezed to the table's width)."""
    text = Text()
    for key, style in styles.items():
        if text:
            text.append("  ")
        text.append("■ ", style=style)
        text.append(key)
    return text


def named_states(instances: Sequence[Mapping[str, Any]], states: Sequence[str]) -> list[str]:
    """``failed: 3 7`` lines naming the instances in each of ``states``."""
    lines = []
    for state in states:
        ids = [i["instance_id"] for i in instances if i["state"] == state]
        if ids:
            lines.append(f"{state} ({len(ids)}): {' '.join(ids)}")
    return lines


# --------------------------------------------------------------------------- history


def iso(ts: float | None) -> str:
    """ISO 8601 in UTC, seconds precision: ``2026-12-01T16:05:09Z``."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def model_text(model: Mapping[str, Any]) -> str:
    """A journaled model as the text ``status`` and ``plan`` print for it."""
    try:
        return str(model_from_dict(model))
    except InputError:
        return json.dumps(model, separators=(",", ":"))


def history_row(record: Mapping[str, Any], now: float) -> dict[str, Any]:
    """One rollout for ``history``: its record plus target, ISO times and duration."""
    end = record["finished_at"]
    running = end is None
    duration = (now if running else end) - record["started_at"]
    return {
        "kind": "rollout",
        **record,
        "target": model_text(record["target_model"]),
        "started": iso(record["started_at"]),
        "finished": iso(end),
        "duration_s": round(duration, 1),
    }


def operation_row(record: Mapping[str, Any], now: float) -> dict[str, Any]:
    """One operator command that is not a rollout (``instances ACTION``,
    ``scale``) for ``history``: its record plus what it targeted, ISO times and
    duration, in the keys a rollout's row has."""
    end = record["finished_at"]
    duration = (now if end is None else end) - record["started_at"]
    return {
        "kind": "operation",
        **record,
        "target": operation_target(record),
        "started": iso(record["started_at"]),
        "finished": iso(end),
        "duration_s": round(duration, 1),
    }


def operation_target(record: Mapping[str, Any]) -> str:
    """What an operation asked for: ``capacity 30 -> 33; added 30 31 32`` or
    ``2 instances: 3 7``."""
    request = record.get("request") or {}
    if record["action"] == "scale":
        text = f"capacity {request.get('previous', '?')} -> {request.get('capacity', '?')}"
        result = record.get("result") or {}
        for key in ("added", "removed"):
            if result.get(key):
                text += f"; {key} {_ids(result[key])}"
        return text
    ids = list(request.get("instances") or record.get("instances") or [])
    return f"{len(ids)} instance{'' if len(ids) == 1 else 's'}: {_ids(ids)}"


def _ids(ids: Sequence[str], most: int = 20) -> str:
    return " ".join(ids[:most]) + (f" ... ({len(ids)})" if len(ids) > most else "")


#: below this console width ``history`` prints one block per rollout, not a table
HISTORY_TABLE_WIDTH = 200


def history_view(rows: Sequence[Mapping[str, Any]], scale_set: Any, width: int) -> Any:
    """``history``'s text: a table on a wide console, else one short block per
    rollout or operation (eleven columns squeezed into 80 wrap every cell)."""
    if width >= HISTORY_TABLE_WIDTH:
        return history_table(rows, scale_set)
    text = Text()
    for r in rows:
        operation = r.get("kind") == "operation"
        if text:
            text.append("\n")
        text.append(r["id"], style="bold")
        what = r["action"] if operation else r["strategy"]
        text.append(f"  {r['state']}  {what}  {scale_set(r['scale_set_id'])}\n")
        text.append(f"  target    {r['target']}\n")
        text.append(f"  started   {r['started']}")
        text.append(f"  finished {r['finished']}" if r["finished"] else "  running")
        text.append(f"  ({_took(r)})\n")
        counts = "" if operation else f"upgraded {r['upgraded']}, failed {r['failed']}"
        last = "; ".join(part for part in (counts, r["reason"]) if part)
        if last:  # a long reason (Azure's message) wraps within the width
            text.append(
                textwrap.fill(
                    last,
                    width=max(40, width),
                    initial_indent="  ",
                    subsequent_indent="    ",
                    break_on_hyphens=False,
                )
                + "\n"
            )
    return text


def _took(row: Mapping[str, Any]) -> str:
    return fmt_duration(row["duration_s"]) + (" so far" if row["finished_at"] is None else "")


def history_table(rows: Sequence[Mapping[str, Any]], scale_set: Any) -> Table:
    table = Table(
        title="rollouts and operations (instances, scale; times UTC, ISO 8601)",
        title_justify="left",
    )
    for col in (
        "id",
        "scale set",
        "target",
        "strategy / action",
        "state",
        "started",
        "finished",
        "duration",
        "upgraded",
        "failed",
        "reason",
    ):
        wraps = col in ("scale set", "target", "strategy", "reason")
        table.add_column(col, overflow="fold", no_wrap=not wraps)
    for r in rows:
        operation = r.get("kind") == "operation"
        table.add_row(
            r["id"],
            scale_set(r["scale_set_id"]),
            r["target"],
            r["action"] if operation else r["strategy"],
            r["state"],
            r["started"],
            r["finished"] or "-",
            _took(r),
            "-" if operation else str(r["upgraded"]),
            "-" if operation else str(r["failed"]),
            r["reason"],
        )
    return table


# --------------------------------------------------------------------------- live view


class TimeSource(Protocol):
    """What the live view reads the time from: the ``time`` module, or a
    backend's clock (backends/clock.py: the ARM emulator's in a rehearsal)."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class Clock:
    """Elapsed time, an ETA from the plan's predicted duration, and the
    countdown of a pause or bake in progress, on ``source``'s time (the
    emulator's in a rehearsal, so that they match the plan's and the engine's
    seconds); :meth:`time` is the wall-clock-like time of event lines."""

    def __init__(self, predicted_s: float | None, source: TimeSource = time) -> None:
        self.source = source
        self.now = source.monotonic
        self.started = self.now()
        self.predicted = predicted_s
        self.wait_until: float | None = None
        self.waiting = ""

    def event(self, event: Event, pause: float, bake: float) -> None:
        kind = event.kind.value
        if kind == "wave_completed" and pause > 0:
            self.wait_until, self.waiting = self.now() + pause, "pause"
        elif kind == "checkpoint" and bake > 0:
            self.wait_until, self.waiting = self.now() + bake, "bake"
        elif kind in ("wave_started", "halted", "rollout_finished"):
            self.wait_until, self.waiting = None, ""

    def time(self) -> float:
        """Now, in seconds since the epoch."""
        return self.source.time()

    def line(self, done: int = 0, scope: int = 0) -> str:
        """``elapsed 1m02s; ETA 20m (plan: 21m); ~3m at the pace so far; bake: 12s left``."""
        elapsed = self.now() - self.started
        parts = [f"elapsed {fmt_duration(elapsed)}"]
        if self.predicted is not None:
            left = self.predicted - elapsed
            parts.append(
                f"ETA {fmt_duration(left)} (plan: {fmt_duration(self.predicted)})"
                if left >= 0
                else f"over the plan's {fmt_duration(self.predicted)} by {fmt_duration(-left)}"
            )
        if 0 < done < scope:
            parts.append(f"~{fmt_duration(elapsed / done * (scope - done))} at the pace so far")
        if self.wait_until is not None:
            left = self.wait_until - self.now()
            if left > 0:
                parts.append(f"{self.waiting}: {fmt_duration(left)} left")
        return "; ".join(parts)


def event_json(event: Event, at: float | None = None) -> dict[str, Any]:
    """One event as a JSON object (a line of ``upgrade -o json``); ``at``: when it
    happened, seconds since the epoch (default: now)."""
    return {
        "type": "event",
        "time": event.time,
        "at": iso(time.time() if at is None else at),
        "kind": event.kind.value,
        "phase": event.phase,
        "wave": event.wave,
        "instances": list(event.instances),
        "detail": event.detail,
    }


def json_line(data: Any) -> None:
    """One JSON document on one line of stdout, flushed (a consumer reads it now)."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")
    sys.stdout.flush()
