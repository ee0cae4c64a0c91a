"""Rendering: plain data in, rich tables, JSON or CSV out. No library calls here."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..engine.errors import InputError

TIMELINE_HEADER = ("time_s", "serving", "upgrading", "unhealthy", "on_new_model")

# metric key -> (label, kind); kind picks the formatting
_METRICS: tuple[tuple[str, str, str], ...] = (
    ("duration_s", "duration", "time"),
    ("min_serving", "min serving", "count"),
    ("outage_s", "outage (nothing serving)", "time"),
    ("degraded_s", "degraded (below demand)", "time"),
    ("capacity_loss_instance_s", "capacity loss (instance-min)", "instance_s"),
    ("upgraded", "upgraded", "count"),
    ("failed", "failed or unhealthy", "count"),
)


def stdout_console() -> Console:
    """Console for data. Piped output gets 120 columns (not 80) unless COLUMNS is set."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


def stderr_console() -> Console:
    """Console for progress and errors."""
    return Console(stderr=True, highlight=False)


def print_error(console: Console, message: str) -> None:
    """``error: <message>`` on one line (never wrapped, no markup)."""
    line = " ".join(message.split())
    console.print(Text.assemble(("error:", "bold red"), " ", line), soft_wrap=True)


def print_json(data: Any) -> None:
    """Exactly one JSON document on stdout."""
    print(json.dumps(data, indent=2, sort_keys=False, allow_nan=False))


# --------------------------------------------------------------------------- formatting


def fmt_duration(seconds: float) -> str:
    """``42.5s``, ``20m31s``, ``1h02m03s``."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds else "0s"
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def fmt_number(value: float, digits: int = 1) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _fmt(kind: str, value: float) -> str:
    if kind == "time":
        return fmt_duration(value)
    if kind == "instance_s":
        return fmt_number(value / 60)
    return fmt_number(value)


# --------------------------------------------------------------------------- strategies


def strategies_table(described: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Installed strategies", show_lines=True, title_justify="left")
    table.add_column("strategy", style="bold cyan", no_wrap=True)
    table.add_column("what it does / guarantee")
    table.add_column("parameters (default)")
    for item in described:
        about = Text(str(item["summary"]))
        about.append("\nguarantee: ", style="dim")
        about.append(str(item["guarantee"]), style="green")
        params = Text()
        for i, p in enumerate(item["parameters"]):
            if i:
                params.append("\n")
            params.append(str(p["name"]), style="bold")
            params.append(f" ({p['default']})", style="dim")
            if p["help"]:
                params.append(f": {p['help']}")
        table.add_row(str(item["name"]), about, params if item["parameters"] else Text("-"))
    return table


# --------------------------------------------------------------------------- simulate


def scenario_line(scenario: Mapping[str, Any]) -> str:
    zones = scenario["zones"]
    where = f"zones {','.join(zones)}" if zones else "regional"
    uds = f"{scenario['update_domains']} UDs"
    if scenario.get("orchestration") == "Flexible":
        uds = "Flexible: no UDs"
    return (
        f"scenario {scenario['name']}: {scenario['instances']} instances ({where}, "
        f"{uds}, {scenario['fault_domains']} FDs), "
        f"upgrade {scenario['upgrade']}, {scenario['required']} must keep serving"
    )


def simulate_table(summary: Mapping[str, Any], required: int) -> Table:
    table = Table(
        title=f"{summary['strategy']}: {summary['runs']} runs, seed {summary['seed']}",
        title_justify="left",
    )
    table.add_column("metric")
    for col in ("mean", "p50", "p95", "min", "max"):
        table.add_column(col, justify="right")
    for key, label, kind in _METRICS:
        stats = summary[key]
        if key == "degraded_s":
            label = f"degraded (< {required} serving)"
        table.add_row(label, *(_fmt(kind, stats[c]) for c in ("mean", "p50", "p95", "min", "max")))
    return table


def print_simulation(
    console: Console,
    summary: Mapping[str, Any],
    *,
    guarantee: str,
    scenario: Mapping[str, Any],
) -> None:
    console.print(simulate_table(summary, scenario["required_count"]))
    console.print(scenario_line(scenario), soft_wrap=True)
    console.print(f"guarantee: {guarantee} (most down at once: {summary['max_down']})")
    halted = summary["halted_runs"]
    line = f"halted runs: {halted} of {summary['runs']}"
    if halted:
        line += f" ({'; '.join(summary['halt_reasons'])})"
    console.print(line, soft_wrap=True)


# --------------------------------------------------------------------------- compare

COMPARE_COLUMNS = (
    "strategy",
    "duration\nmean",
    "duration\np95",
    "min\nserving",
    "outage\nmean",
    "degraded\nmean",
    "capacity loss\nmean inst-min",
    "failed\nmean",
    "halted\nruns",
)


def compare_table(summaries: Iterable[Mapping[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(COMPARE_COLUMNS):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for s in summaries:
        outage = s["outage_s"]["mean"]
        table.add_row(
            s["strategy"],
            fmt_duration(s["duration_s"]["mean"]),
            fmt_duration(s["duration_s"]["p95"]),
            fmt_number(s["min_serving"]["min"]),
            Text(fmt_duration(outage), style="bold red" if outage > 0 else ""),
            fmt_duration(s["degraded_s"]["mean"]),
            fmt_number(s["capacity_loss_instance_s"]["mean"] / 60),
            fmt_number(s["failed"]["mean"], 2),
            f"{s['halted_runs']}/{s['runs']}",
        )
    return table


# --------------------------------------------------------------------------- timeline


def write_timeline(path: Path, rows: Iterable[Sequence[float]], flag: str = "--timeline") -> int:
    """Write timeline rows as CSV; the number of rows written."""
    count = 0
    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(TIMELINE_HEADER)
            for time_s, *counts in rows:
                writer.writerow([repr(float(time_s)), *(int(c) for c in counts)])
                count += 1
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"{flag}: cannot write {path} ({reason})") from None
    return count
