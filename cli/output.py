"""Rendering: plain data in, rich tables, JSON or CSV out. No library calls here."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
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
#: the summary's metrics, in table order (what ``-o tsv/csv`` print one row each)
METRIC_KEYS = tuple(key for key, _, _ in _METRICS)


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


# --------------------------------------------------------------------------- -o / --query
#
# The az conventions (Microsoft docs, azure-cli "Output formats for Azure CLI
# commands" and "How to query Azure CLI command output using a JMESPath query"):
# ``-o/--output json|table|tsv``, ``--query`` a JMESPath expression applied to the
# JSON result before it is formatted. A command adopts them with two parameters
# (``output: OutputFormat = None, query: Query = None``) and one call to
# :func:`emit`.

FORMATS = ("json", "table", "tsv", "csv")

OutputFormat = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="json|table|tsv|csv",
        help="Output format: table (default), json, tsv (tab-separated values, no header, "
        "as az prints them) or csv (with a header).",
        show_default=False,
    ),
]
Query = Annotated[
    str | None,
    typer.Option(
        "--query",
        metavar="JMESPATH",
        help="JMESPath query applied to the JSON result (as az does), e.g. "
        '"results[].strategy"; printed as JSON unless -o says otherwise.',
        show_default=False,
    ),
]


def output_format(output: str | None, json_alias: bool, query: str | None) -> str:
    """The chosen format: ``-o``, else json for ``--json`` or ``--query``, else table."""
    if output is not None:
        fmt = output.strip().lower()
        if fmt not in FORMATS:
            raise InputError(f"--output: expected one of {', '.join(FORMATS)}, got {output!r}")
        if json_alias and fmt != "json":
            raise InputError(f"--json and -o {fmt} disagree: give one of them")
        return fmt
    return "json" if json_alias or query is not None else "table"


def check_output(output: str | None, json_alias: bool, query: str | None) -> str:
    """Check ``-o``/``--json``/``--query`` before a command does any work; the format."""
    fmt = output_format(output, json_alias, query)
    if query is not None:
        import jmespath
        from jmespath.exceptions import JMESPathError

        try:
            jmespath.compile(query)
        except JMESPathError as exc:
            detail = " ".join(str(exc).split())
            raise InputError(f"--query: invalid JMESPath expression {query!r} ({detail})") from None
    return fmt


def apply_query(data: Any, query: str | None) -> Any:
    """``data`` filtered by the JMESPath expression ``query`` (None: unchanged)."""
    if query is None:
        return data
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.search(query, data)
    except JMESPathError as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"--query: cannot apply {query!r} ({detail})") from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level with dotted keys (lists kept whole)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def records(data: Any) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of ``data``: a list of mappings is one row each (dotted
    columns), a mapping one row, a list of scalars one value a row, a scalar one."""
    items = data if isinstance(data, list) else [data]
    if items and all(isinstance(i, Mapping) for i in items):
        flats = [flatten(i) for i in items]
        header: list[str] = []
        for flat in flats:
            header.extend(k for k in flat if k not in header)
        return header, [[flat.get(k) for k in header] for flat in flats]
    if items and all(isinstance(i, list) for i in items):  # --query 'results[].[a, b]'
        width = max(len(i) for i in items)
        return [f"column{n + 1}" for n in range(width)], [list(i) for i in items]
    return ["value"], [[i] for i in items]


def delimited(data: Any, fmt: str) -> str:
    """``data`` as tsv (no header, as az) or csv (header row)."""
    header, rows = records(data)
    buffer = io.StringIO()
    if fmt == "tsv":
        for row in rows:
            buffer.write("\t".join(_cell(v).replace("\t", " ") for v in row) + "\n")
    else:
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def generic_table(data: Any) -> Table:
    """A plain table of any JSON-like value (what ``-o table --query`` prints)."""
    header, rows = records(data)
    table = Table()
    for key in header:
        table.add_column(key, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    return table


def emit(
    data: Any,
    *,
    output: str | None,
    query: str | None = None,
    json_alias: bool = False,
    table: Callable[[], None] | None = None,
    rows: Any = None,
) -> None:
    """Print a command's result in the chosen format.

    ``data`` is the JSON result (what ``-o json`` prints and ``--query`` filters);
    ``table`` prints the command's own table (used for ``-o table`` without a
    query); ``rows`` is what tsv/csv print without a query (default: ``data``)."""
    fmt = output_format(output, json_alias, query)
    if query is not None:
        data = apply_query(data, query)
        rows = data
    elif rows is None:
        rows = data
    if fmt == "json":
        print_json(data)
    elif fmt in ("tsv", "csv"):
        sys.stdout.write(delimited(rows, fmt))
    elif table is not None and query is None:
        table()
    else:
        stdout_console().print(generic_table(data))


# --------------------------------------------------------------------------- help and usage


def usage_message(exc: Exception) -> str:
    """A usage error (typer's ``UsageError``) as one line naming the command's help."""
    message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split())
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None)
    return f"{message} (see {path} --help)" if path else message


#: the metavar an option without one shows, by its value type (typer shows <int>)
_METAVARS = {int: "N", float: "X", str: "TEXT", Path: "FILE"}


def _paragraphs(text: str) -> str:
    """Help text with each paragraph on one line (the terminal wraps it), so a
    summary is never cut at the docstring's line breaks; ``[x]`` kept literally."""
    text = text.replace("\\[", "[")
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
    return "\n\n".join(escape(p) for p in paragraphs if p)


def tidy_help(command: Any) -> None:
    """Clean ``--help`` for ``command`` and its subcommands: flags show no
    ``<bool>``, values a plain metavar (N, X, TEXT, FILE), brackets such as
    ``[plot]`` are not eaten as markup, paragraphs are not broken mid-sentence."""
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
    get_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:  # --help is made on demand: no <bool> on it either
        option = get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    if getattr(command, "help", None):
        command.help = _paragraphs(command.help)
        if not command.short_help:
            command.short_help = command.help.split("\n\n")[0]
    tidy_options(command)


def _no_type(ctx: Any = None) -> None:
    return None


def tidy_options(command: Any) -> None:
    """The option part of :func:`tidy_help` (idempotent; for options added late,
    such as typer's completion options)."""
    for param in getattr(command, "params", ()):
        if getattr(param, "help", None):
            param.help = _paragraphs(param.help)
        if param.param_type_name == "argument":  # its name says what it is: no <str> beside it
            param.display_type_rich = _no_type
            continue
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
            continue
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        param.metavar = _METAVARS.get(annotation, "VALUE")  # type: ignore[arg-type]


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
    line = (
        f"scenario {scenario['name']}: {scenario['instances']} instances ({where}, "
        f"{uds}, {scenario['fault_domains']} FDs), "
        f"upgrade {scenario['upgrade']}, {scenario['required']} must keep serving"
    )
    poll = scenario.get("poll_interval")
    if poll == "0":
        line += "; driver sees every change at once (poll_interval 0)"
    elif poll is not None:
        latency = scenario.get("request_latency_s") or 0
        per_call = f", {latency:g} s per ARM call" if latency else ""
        line += f"; driver polls every {poll} s{per_call} (as upgrade --poll-interval)"
    return line


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
    "resolved on the scope",
    "duration\nmean",
    "duration\np95",
    "min\nserving",
    "most\ndown",
    "outage\nmean",
    "degraded\nmean",
    "capacity\nloss\ninst-min",
    "failed\nmean",
    "halted\nruns",
)


def _same_results(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    keys = ("halted_runs", "max_down", *METRIC_KEYS)
    return all(a[k] == b[k] for k in keys)


def compare_results(
    summaries: Sequence[Mapping[str, Any]], resolved: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``compare``'s JSON rows: each summary with what its strategy resolves to
    on the scope, the mean time degraded but not out (``degraded_s`` counts any
    time below demand, outage included), and whether an earlier row had the
    same results on every seed (``same_as``, with the reason)."""
    rows: list[dict[str, Any]] = []
    for s in summaries:
        row = dict(s)
        row["resolved"] = resolved.get(s["strategy"], s["strategy"])
        row["degraded_not_out_mean_s"] = max(
            0.0, float(s["degraded_s"]["mean"]) - float(s["outage_s"]["mean"])
        )
        twin = next((r for r in rows if _same_results(r, s)), None)
        row["same_as"] = None if twin is None else twin["strategy"]
        row["same_reason"] = (
            None
            if twin is None
            else f"same results as {twin['strategy']} on all {s['runs']} seeds: "
            f"{row['resolved']} and {twin['resolved']} take the same instances down "
            f"together (at most {s['max_down']} at once)"
        )
        rows.append(row)
    return rows


def compare_cells(summary: Mapping[str, Any]) -> list[str]:
    """One row of the compare table (:data:`output.COMPARE_COLUMNS`), as text."""
    degraded = summary.get("degraded_not_out_mean_s")
    if degraded is None:  # a plain summary: degraded_s counts outage time too
        degraded = max(0.0, summary["degraded_s"]["mean"] - summary["outage_s"]["mean"])
    return [
        str(summary["strategy"]),
        str(summary.get("resolved", summary["strategy"])),
        fmt_duration(summary["duration_s"]["mean"]),
        fmt_duration(summary["duration_s"]["p95"]),
        fmt_number(summary["min_serving"]["min"]),
        fmt_number(summary["max_down"]),
        fmt_duration(summary["outage_s"]["mean"]),
        fmt_duration(degraded),
        fmt_number(summary["capacity_loss_instance_s"]["mean"] / 60),
        fmt_number(summary["failed"]["mean"], 2),
        f"{summary['halted_runs']}/{summary['runs']}",
    ]


#: the column of :func:`compare_cells` that holds the outage (shown red when > 0)
OUTAGE_CELL = 6


def compare_table(rows: Iterable[Mapping[str, Any]], title: str) -> Table:
    """The compare table: :func:`compare_cells`, with the resolved spec (when it
    says more than the name) and an identical row's twin under the strategy."""
    rows = list(rows)
    table = Table(title=title, title_justify="left", pad_edge=False)  # fits 100 columns
    columns = [c for i, c in enumerate(COMPARE_COLUMNS) if i != 1]
    for i, col in enumerate(columns):
        if i == 0:  # the spec folds (window:max-unavailable=4 is one long word)
            table.add_column(col, overflow="fold", min_width=8)
        else:
            table.add_column(col, justify="right")
    for s in rows:
        cells: list[str | Text] = list(compare_cells(s))
        name, resolved = str(cells[0]), str(cells.pop(1))
        first = Text(name, style="bold")
        if resolved != name:
            first.append(f"\n{resolved}", style="cyan")
        if s.get("same_as"):
            first.append(f"\n= {s['same_as']}", style="yellow")
        cells[0] = first
        outage = OUTAGE_CELL - 1
        if s["outage_s"]["mean"] > 0:
            cells[outage] = Text(str(cells[outage]), style="bold red")
        table.add_row(*cells)
    return table


def compare_view(rows: Sequence[Mapping[str, Any]], title: str, width: int) -> Any:
    """The compare table when every column fits ``width`` unshortened; else one
    block per strategy (its name, resolved spec, twin, then every column as
    ``label value``, packed into lines of ``width``), so that a narrow
    terminal (80 columns) cuts no value short."""
    from rich.console import Console

    table = compare_table(rows, title)
    probe = Console(width=10_000, color_system=None)  # unclamped: what the table needs
    if probe.measure(table).minimum <= width:
        return table
    labels = [" ".join(c.split("\n")) for i, c in enumerate(COMPARE_COLUMNS) if i > 1]
    text = Text(title + "\n")
    for s in rows:
        cells = compare_cells(s)
        text.append(f"\n{cells[0]}", style="bold")
        if cells[1] != cells[0]:
            text.append(f"  {cells[1]}", style="cyan")
        if s.get("same_as"):
            text.append(f"  = {s['same_as']}", style="yellow")
        line = ""
        for label, value in zip(labels, cells[2:], strict=True):
            pair = f"{label} {value}"
            if label.endswith(" inst-min"):  # capacity loss 88.1 inst-min
                pair = f"{label.removesuffix(' inst-min')} {value} inst-min"
            if line and len(line) + len(pair) + 5 > width:  # "  " + line + "; " + pair + ";"
                text.append(f"\n  {line};")
                line = pair
            else:
                line = f"{line}; {pair}" if line else pair
        text.append(f"\n  {line}\n")
    return text


def compare_footer(rows: Sequence[Mapping[str, Any]], scope: str, required: int) -> list[str]:
    """The lines under the compare table: the scope, what the columns mean, and
    why rows are identical."""
    lines = [
        f"scope: {scope}; durations: mean and p95 over runs; min serving: the fewest "
        "instances serving in any run; outage: nothing serving; degraded: serving, but "
        f"fewer than {required} (outage not included).",
    ]
    lines += [f"= {r['strategy']}: {r['same_reason']}" for r in rows if r.get("same_reason")]
    return lines


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
