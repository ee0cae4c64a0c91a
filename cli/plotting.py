"""Charts and the HTML report: ``--plot FILE.png|FILE.svg`` and ``--report FILE.html``.

Pure functions over recorded :class:`RunResult` objects (``record=True``, so
they carry their timeline and events); the simulation model (``sim/``) knows
nothing about plotting. matplotlib is an optional extra (``plot``): it is
imported inside the functions that draw, on the Agg canvas (no display), and a
missing matplotlib is an :class:`InputError` naming the flag.

Two panels, one figure:

* top: instances serving over time per strategy, the median over runs as a
  line and the p5-p95 band around it, against the demand line; where a
  strategy's median is below demand (degraded) the gap is shaded in its colour,
  where a median is 0 (outage) the time is shaded red;
* bottom: the waves of one recorded run (the first strategy's first run).
  When every wave lies in one update domain (update-domain, one-at-a-time), a
  heat map of update domain x time, one per zone on a zonal scale set: how
  many instances of each domain are upgrading. Otherwise (window, batches and
  all-at-once cut across domains, so every domain is partly busy at once and
  that heat map is noise) the instances in the order they started upgrading,
  one bar per instance from start to resolution, coloured by outcome: the
  staircase shows the pace and how many were down together.

The legend sits between the title and the top panel (constrained layout
stacks them), so a long legend never runs into the title.
"""

from __future__ import annotations

import html
import io
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.errors import InputError
from ..engine.events import EventKind
from ..engine.model import instance_sort_key
from ..sim.runner import RunResult, percentile
from ..sim.scenario import Scenario
from .output import COMPARE_COLUMNS, OUTAGE_CELL, compare_cells, fmt_duration, fmt_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..engine.model import Instance

PLOT_SUFFIXES = (".png", ".svg")
REPORT_SUFFIXES = (".html", ".htm")
PLOT_EXTRA_MESSAGE = "{flag} needs matplotlib: pip install 'vmss-rollout[plot]'"

#: events that end an instance's upgrade (``instances[0]`` is the instance
#: that was started; a surge replacement is ``instances[1]``)
_RESOLUTIONS = frozenset(
    {
        EventKind.INSTANCE_HEALTHY,
        EventKind.INSTANCE_UNHEALTHY,
        EventKind.INSTANCE_FAILED,
        EventKind.INSTANCE_GONE,
    }
)
_HEAT_COLUMNS = 240


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Bands:
    """Serving instances over a common time grid: percentiles across runs."""

    t: tuple[float, ...]
    p5: tuple[float, ...]
    p50: tuple[float, ...]
    p95: tuple[float, ...]


def serving_bands(results: Sequence[RunResult], points: int = 200) -> Bands:
    """Resample every run's serving count onto ``points`` evenly spaced times
    from the earliest start to the latest end, and take p5, p50 and p95 across
    runs at each time (linear interpolation, numpy's default).

    A timeline is a step function: a row's value holds until the next row, and
    the last row's value holds after it (runs end at different times, so each
    is extended to the longest run's end); before its first row a run serves
    its first row's count.
    """
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    if not results:
        raise ValueError("no runs to resample")
    steps: list[tuple[list[float], list[int]]] = []
    for r in results:
        if not r.timeline:
            raise ValueError(f"run {r.seed} of {r.strategy} has no timeline (record=True)")
        steps.append(([row[0] for row in r.timeline], [row[1] for row in r.timeline]))
    start = min(times[0] for times, _ in steps)
    end = max(times[-1] for times, _ in steps)
    if points == 1 or end <= start:
        grid = [start] if end <= start else [end]
    else:
        width = (end - start) / (points - 1)
        grid = [start + i * width for i in range(points - 1)] + [end]
    p5: list[float] = []
    p50: list[float] = []
    p95: list[float] = []
    for t in grid:
        values = sorted(float(v[max(0, bisect_right(times, t) - 1)]) for times, v in steps)
        p5.append(percentile(values, 5))
        p50.append(percentile(values, 50))
        p95.append(percentile(values, 95))
    return Bands(tuple(grid), tuple(p5), tuple(p50), tuple(p95))


def shaded_intervals(
    bands: Bands, required: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(degraded, outage) intervals of the median, read as a step function on
    the grid: degraded where it is below ``required``, outage where it is 0.
    Adjacent grid steps merge into one interval."""

    def spans(flag: Sequence[bool]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for i in range(len(bands.t) - 1):
            if not flag[i]:
                continue
            lo, hi = bands.t[i], bands.t[i + 1]
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        return out

    return (
        spans([m < required for m in bands.p50]),
        spans([m == 0 for m in bands.p50]),
    )


def upgrade_intervals(result: RunResult) -> dict[str, list[tuple[float, float]]]:
    """Instance id -> the (start, end) times it was upgrading: a WAVE_STARTED
    starts its instances, a resolution (healthy, unhealthy, failed, gone) ends
    its first instance. An upgrade never resolved ends at the last event."""
    busy: dict[str, float] = {}
    out: dict[str, list[tuple[float, float]]] = {}
    for e in result.events:
        if e.kind is EventKind.WAVE_STARTED:
            for iid in e.instances:
                busy.setdefault(iid, e.time)
        elif e.kind in _RESOLUTIONS and e.instances:
            started = busy.pop(e.instances[0], None)
            if started is not None:
                out.setdefault(e.instances[0], []).append((started, e.time))
    last = result.events[-1].time if result.events else 0.0
    for iid, started in busy.items():
        out.setdefault(iid, []).append((started, last))
    return out


def wave_schedule(result: RunResult) -> list[tuple[int, float, str, tuple[str, ...]]]:
    """(wave number, start time, phase, instance ids) of each wave, in order."""
    return [
        (e.wave if e.wave is not None else n, e.time, e.phase, e.instances)
        for n, e in enumerate(
            (e for e in result.events if e.kind is EventKind.WAVE_STARTED), start=1
        )
    ]


def upgrade_order(result: RunResult) -> list[tuple[str, list[tuple[float, float]], str]]:
    """(instance id, its upgrading intervals, how it ended: ``healthy``,
    ``unhealthy``, ``failed``, ``gone`` or ``unresolved``) per instance, in the
    order they first started upgrading (ties: by instance id)."""
    intervals = upgrade_intervals(result)
    ended: dict[str, str] = {}
    for e in result.events:
        if e.kind in _RESOLUTIONS and e.instances:
            ended[e.instances[0]] = e.kind.value.removeprefix("instance_")
    order = sorted(intervals, key=lambda iid: (intervals[iid][0][0], instance_sort_key(iid)))
    return [(iid, intervals[iid], ended.get(iid, "unresolved")) for iid in order]


def waves_follow_domains(result: RunResult, topology: Mapping[str, int]) -> bool:
    """Every wave's instances lie in one update domain (update-domain,
    one-at-a-time): a heat map of domain x time shows the waves. A window,
    batches or all-at-once cut across domains: that heat map is noise."""
    return all(len({topology.get(i) for i in ids}) <= 1 for *_, ids in wave_schedule(result))


def domain_heat(
    result: RunResult, topology: Mapping[str, int], end: float, columns: int = _HEAT_COLUMNS
) -> tuple[list[int], list[list[float]]]:
    """Update domains (sorted) and, per domain, the mean number of its
    instances upgrading in each of ``columns`` equal time bins over [0, end]."""
    intervals = upgrade_intervals(result)
    domains = sorted(set(topology.values()) | {topology[i] for i in intervals if i in topology})
    row_of = {ud: n for n, ud in enumerate(domains)}
    matrix = [[0.0] * columns for _ in domains]
    if end <= 0:
        return domains, matrix
    width = end / columns
    for iid, spans in intervals.items():
        ud = topology.get(iid)
        if ud is None:
            continue
        row = matrix[row_of[ud]]
        for lo, hi in spans:
            first = max(0, min(columns - 1, int(lo / width)))
            last = max(0, min(columns - 1, int(hi / width)))
            for c in range(first, last + 1):
                overlap = min(hi, (c + 1) * width) - max(lo, c * width)
                if overlap > 0:
                    row[c] += overlap / width
    return domains, matrix


# --------------------------------------------------------------------------- the simulator side


def _fleet(scenario: Scenario, fleet: Sequence[Instance] | None) -> Sequence[Instance]:
    if fleet is not None:
        return fleet
    from ..sim.runner import build

    _, scale_set = build(scenario, 0)
    return scale_set.read()[1]


def topology_of(scenario: Scenario, fleet: Sequence[Instance] | None = None) -> dict[str, int]:
    """Instance id -> update domain of the scenario's (or ``fleet``'s) scale set."""
    return {i.instance_id: i.update_domain for i in _fleet(scenario, fleet)}


def zones_of(scenario: Scenario, fleet: Sequence[Instance] | None = None) -> dict[str, str]:
    """Instance id -> zone of the scenario's (or ``fleet``'s) scale set; empty
    when it is not zonal."""
    return {i.instance_id: i.zone for i in _fleet(scenario, fleet) if i.zone}


# --------------------------------------------------------------------------- for the commands


def check_chart_paths(plot_path: Path | None, report_path: Path | None) -> None:
    """Fail fast, before any simulation: a bad suffix or a missing matplotlib
    is an :class:`InputError` naming the flag."""
    if plot_path is not None:
        _check_suffix(plot_path, "--plot", PLOT_SUFFIXES)
        _matplotlib("--plot")
    if report_path is not None:
        _check_suffix(report_path, "--report", REPORT_SUFFIXES)
        _matplotlib("--report")


def write_charts(
    scenario: Scenario,
    studies: Mapping[str, Sequence[RunResult]],
    summaries: Sequence[Mapping[str, Any]],
    *,
    plot_path: Path | None = None,
    report_path: Path | None = None,
    title: str,
    fleet: Sequence[Instance] | None = None,
    grid: Sequence[Mapping[str, Any]] = (),
) -> list[Path]:
    """``--plot`` and ``--report`` of a command: ``studies`` (label -> recorded
    runs, in table order) on ``scenario``; the heat map shows the first study's
    first run. The files written."""
    if not studies or not any(studies.values()):
        raise InputError("--plot/--report: no runs to chart (--runs must be >= 1)")
    first = next(iter(studies.values()))
    args: dict[str, Any] = {
        "studies": studies,
        "required": scenario.required_serving(),
        "instances": scenario.instances,
        "waves_of": first[0],
        "topology": topology_of(scenario, fleet),
        "zones": zones_of(scenario, fleet),
        "title": title,
    }
    written = []
    if plot_path is not None:
        written.append(plot(plot_path, **args))
    if report_path is not None:
        written.append(
            write_report(report_path, scenario=scenario, summaries=summaries, grid=grid, **args)
        )
    return written


# --------------------------------------------------------------------------- drawing


def _matplotlib(flag: str) -> None:
    """Import matplotlib (and its Agg canvas) or raise the InputError naming ``flag``."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError:
        raise InputError(PLOT_EXTRA_MESSAGE.format(flag=flag)) from None


def _check_suffix(path: Path, flag: str, suffixes: Sequence[str]) -> str:
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        valid = " or ".join(f"FILE{s}" for s in suffixes)
        raise InputError(f"{flag}: expected {valid}, got {str(path)!r}")
    return suffix


#: bar colours of the upgrade-order panel, by how an upgrade ended
_OUTCOME_COLORS = {
    "healthy": "#2f6fb0",
    "unhealthy": "#d4880f",
    "failed": "#c0392b",
    "gone": "#8c8c8c",
    "unresolved": "#b0b0b0",
}


def _figure(
    studies: Mapping[str, Sequence[RunResult]],
    *,
    required: int,
    instances: int,
    waves_of: RunResult,
    topology: Mapping[str, int],
    title: str,
    flag: str,
    zones: Mapping[str, str] | None = None,
) -> Figure:
    _matplotlib(flag)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not studies:
        raise ValueError("nothing to plot: no strategies")
    bands = {name: serving_bands(results) for name, results in studies.items()}
    end = max(b.t[-1] for b in bands.values())
    end = max(end, waves_of.timeline[-1][0] if waves_of.timeline else 0.0)
    minutes = 1 / 60

    by_domain = waves_follow_domains(waves_of, topology)
    zone_names = sorted(set((zones or {}).values()), key=_zone_key) if by_domain else []
    panels = max(1, len(zone_names))
    if not by_domain:  # one row per instance: more room as the fleet grows
        rows = len(upgrade_intervals(waves_of))
        # up to 30 rows are labelled with their ids: room for each label
        lower = max(2.4, 0.15 * rows) if rows <= 30 else 2.2 + min(2.8, rows / 100)
    else:
        lower = 2.0 if panels == 1 else 1.3 * panels
    fig = Figure(figsize=(12, 4.8 + lower), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + panels, 1, sharex=True, height_ratios=(3.2, *[lower / panels] * panels))
    top, bottoms = axes[0], list(axes[1:])
    fig.suptitle(title, fontsize="large")

    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    handles: list[Any] = []
    any_degraded = any_outage = False
    highest = float(instances)
    for n, (name, b) in enumerate(bands.items()):
        color = colors[n % len(colors)]
        t = [x * minutes for x in b.t]
        top.fill_between(t, b.p5, b.p95, step="post", color=color, alpha=0.18, linewidth=0)
        (line,) = top.plot(t, b.p50, drawstyle="steps-post", color=color, linewidth=1.8)
        line.set_label(f"{name} (median, p5-p95 band)")
        handles.append(line)
        highest = max(highest, *b.p95)
        degraded, outage = shaded_intervals(b, required)
        for lo, hi in degraded:  # the gap between the median and demand
            any_degraded = True
            first, last = b.t.index(lo), b.t.index(hi) + 1
            top.fill_between(
                t[first:last],
                b.p50[first:last],
                required,
                step="post",
                facecolor=color,
                edgecolor=color,
                alpha=0.15,
                hatch="//",
                linewidth=0,
            )
        for lo, hi in outage:
            any_outage = True
            top.axvspan(lo * minutes, hi * minutes, color="red", alpha=0.15, linewidth=0)
    demand = top.axhline(required, color="black", linestyle="--", linewidth=1.2)
    demand.set_label(f"demand ({required} serving)")
    handles.append(demand)
    if any_degraded:
        handles.append(
            Patch(facecolor="grey", alpha=0.3, hatch="//", label="degraded (median below demand)")
        )
    if any_outage:
        handles.append(Patch(facecolor="red", alpha=0.3, label="outage (median 0 serving)"))
    top.set_ylim(0, highest * 1.05 + 0.5)
    top.set_xlim(0, max(end * minutes, 1e-9))
    top.set_ylabel("instances serving")
    top.grid(True, alpha=0.3)
    # above the panel, in columns, attached to it: constrained layout counts it
    # as part of the panel and puts the title above both, so however long the
    # labels, the legend never covers the title
    longest = max(len(str(h.get_label())) for h in handles)
    top.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.01),
        # about 150 characters of small type fit across the figure
        ncols=max(1, min(len(handles), 3, 150 // (longest + 8))),
        fontsize="small",
        frameon=False,
    )

    xmax = max(end * minutes, 1e-9)
    if by_domain:
        _domain_panels(fig, bottoms, waves_of, topology, zones or {}, zone_names, end, xmax)
    else:
        _order_panel(bottoms[0], waves_of, minutes, end)
    bottoms[-1].set_xlabel("time since the rollout started (minutes)")
    return fig


def _zone_key(zone: str) -> tuple[int, str]:
    return (int(zone), "") if zone.isdigit() else (1 << 30, zone)


def _domain_panels(
    fig: Figure,
    axes: Sequence[Any],
    waves_of: RunResult,
    topology: Mapping[str, int],
    zones: Mapping[str, str],
    zone_names: Sequence[str],
    end: float,
    xmax: float,
) -> None:
    """One heat map of update domain x time per zone (one in all when not
    zonal), on one colour scale."""
    maps = []
    every: list[str | None] = [*zone_names] or [None]
    for zone in every:
        members = {i: ud for i, ud in topology.items() if zone is None or zones.get(i) == zone}
        maps.append((zone, *domain_heat(waves_of, members, end)))
    peak = max((max(row) for _, _, m in maps for row in m), default=0.0)
    image = None
    for ax, (zone, domains, matrix) in zip(axes, maps, strict=True):
        image = ax.imshow(
            matrix,
            aspect="auto",
            interpolation="nearest",
            origin="lower",
            cmap="Blues",
            vmin=0,
            vmax=max(peak, 1.0),
            extent=(0, xmax, -0.5, len(domains) - 0.5),
        )
        ax.set_yticks(range(len(domains)), [str(d) for d in domains])
        ax.set_ylabel("update domain" if zone is None else f"zone {zone}\nupdate domain")
    where = "per update domain" + (", one map per zone" if zone_names else "")
    axes[0].set_title(
        f"waves of {waves_of.strategy} (its first run): instances upgrading {where}",
        fontsize="medium",
    )
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="upgrading", location="right", shrink=0.9)


#: beyond this many instances the upgrade-order panel is one raster image (bars
#: a pixel or two high leave anti-aliasing stripes in a browser's SVG)
_ORDER_BARS = 60


def _order_panel(ax: Any, waves_of: RunResult, minutes: float, end: float) -> None:
    """The instances in the order they started upgrading, a bar each from its
    start to its resolution, coloured by outcome."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    order = upgrade_order(waves_of)
    outcomes = {o for _, _, o in order}
    if len(order) > _ORDER_BARS:
        codes = {o: n + 1 for n, o in enumerate(_OUTCOME_COLORS)}
        columns = _HEAT_COLUMNS * 2
        width = max(end, 1e-9) / columns
        matrix = [[0] * columns for _ in order]
        for rank, (_, spans, outcome) in enumerate(order):
            for lo, hi in spans:  # every bin the upgrade covers, at least the first
                first = min(columns - 1, int(lo / width))
                last = min(columns - 1, max(first, int(hi / width - 1e-9)))
                for c in range(first, last + 1):
                    matrix[rank][c] = codes[outcome]
        ax.imshow(
            matrix,
            aspect="auto",
            interpolation="nearest",
            cmap=ListedColormap(["white", *_OUTCOME_COLORS.values()]),
            vmin=-0.5,
            vmax=len(_OUTCOME_COLORS) + 0.5,
            extent=(0, max(end * minutes, 1e-9), len(order) - 0.5, -0.5),
        )
    else:
        for outcome in outcomes:
            bars = [
                (rank, lo * minutes, max(hi - lo, 0.0) * minutes)
                for rank, (_, spans, o) in enumerate(order)
                if o == outcome
                for lo, hi in spans
            ]
            ax.barh(
                [b[0] for b in bars],
                [b[2] for b in bars],
                left=[b[1] for b in bars],
                height=0.85,
                color=_OUTCOME_COLORS[outcome],
                linewidth=0,
            )
    ax.set_ylim(len(order) - 0.5, -0.5)  # the first to start at the top
    if len(order) <= 30:
        ax.set_yticks(range(len(order)), [iid for iid, _, _ in order], fontsize="x-small")
    ax.set_ylabel("instances, in the order\nthey started upgrading")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(
        f"upgrades of {waves_of.strategy} (its first run): one bar per instance from its "
        "start to its outcome (the waves do not follow update domains)",
        fontsize="medium",
    )
    ax.legend(
        handles=[
            Patch(color=_OUTCOME_COLORS[o], label=o) for o in _OUTCOME_COLORS if o in outcomes
        ],
        loc="upper left",
        bbox_to_anchor=(1.005, 1),
        fontsize="small",
        frameon=False,
    )


def plot(
    path: str | Path,
    studies: Mapping[str, Sequence[RunResult]],
    *,
    required: int,
    instances: int,
    waves_of: RunResult,
    topology: Mapping[str, int],
    title: str,
    zones: Mapping[str, str] | None = None,
) -> Path:
    """Write the chart to ``path`` (PNG or SVG, by suffix)."""
    path = Path(path)
    suffix = _check_suffix(path, "--plot", PLOT_SUFFIXES)
    fig = _figure(
        studies,
        required=required,
        instances=instances,
        waves_of=waves_of,
        topology=topology,
        title=title,
        flag="--plot",
        zones=zones,
    )
    try:
        _save(fig, path, suffix[1:])
    except OSError as exc:
        raise InputError(f"--plot: cannot write {path} ({exc.strerror or exc})") from None
    return path


def _save(fig: Figure, target: Any, fmt: str) -> None:
    import matplotlib

    metadata: dict[str, Any] | None = None
    if fmt == "svg":  # no date (reproducible files), no external metadata URLs
        metadata = {"Date": None, "Creator": None, "Format": None, "Type": None}
    with matplotlib.rc_context({"svg.hashsalt": "vmss-rollout", "svg.fonttype": "path"}):
        fig.savefig(target, format=fmt, dpi=110, metadata=metadata)


def _inline_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element for an HTML page: no XML prolog,
    DOCTYPE or namespace URLs (the HTML parser knows SVG and xlink)."""
    buffer = io.StringIO()
    _save(fig, buffer, "svg")
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return text.replace("<svg ", '<svg role="img" aria-label="serving and waves chart" ', 1)


# --------------------------------------------------------------------------- the report


def verdict(summary: Mapping[str, Any], required: int) -> tuple[str, str]:
    """One strategy against demand, in words: (``ok``/``warn``/``bad``, the sentence)."""
    name = summary["strategy"]
    runs = summary["runs"]
    lowest = summary["min_serving"]["min"]
    halted = summary["halted_runs"]
    outage = summary["outage_s"]["mean"]
    if outage > 0:
        return "bad", (
            f"{name}: an outage (nothing serving) of {fmt_duration(outage)} on average; "
            f"lowest serving {fmt_number(lowest)} against demand {required}."
        )
    if lowest < required:
        below = max(0.0, summary["degraded_s"]["mean"] - outage)
        return "warn", (
            f"{name}: below demand: as few as {fmt_number(lowest)} serving against {required}, "
            f"for {fmt_duration(below)} on average"
            + (f"; halted in {halted} of {runs} runs." if halted else ".")
        )
    if halted:
        return "warn", (
            f"{name}: meets demand ({fmt_number(lowest)} or more serving, demand {required}) "
            f"but halted in {halted} of {runs} runs."
        )
    return "ok", (
        f"{name}: meets demand in every run: at least {fmt_number(lowest)} serving "
        f"(demand {required}), done in {fmt_duration(summary['duration_s']['mean'])} on average."
    )


#: wave tables longer than this collapse their middle into one row
WAVE_ROWS = 20


def collapse_waves(
    rows: Sequence[tuple[int, float, str, tuple[str, ...]]], limit: int = WAVE_ROWS
) -> list[tuple[int, float, str, tuple[str, ...]] | tuple[int, int, int]]:
    """``rows`` as they are when there are at most ``limit``; else the first and
    last ``limit // 2`` with one ``(first wave, last wave, instances)`` range for
    the middle (``-o json`` and the report's full list keep every wave)."""
    if len(rows) <= limit:
        return list(rows)
    head, tail = rows[: limit // 2], rows[len(rows) - limit // 2 :]
    middle = rows[limit // 2 : len(rows) - limit // 2]
    summary = (middle[0][0], middle[-1][0], sum(len(r[3]) for r in middle))
    return [*head, summary, *tail]


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1b1f24; line-height: 1.45; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.outage { color: #b42318; font-weight: 600; }
td.ids { font-family: ui-monospace, monospace; font-size: .8rem; word-break: break-word; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .85rem; }
figure { margin: 0; }
figure svg { width: 100%; height: auto; }
.note { color: #57606a; font-size: .85rem; }
ul.verdicts { list-style: none; padding: 0; }
ul.verdicts li { padding: .35rem .6rem; margin: .25rem 0; border-left: 4px solid; }
li.ok { border-color: #1a7f37; background: #dafbe1; }
li.warn { border-color: #9a6700; background: #fff8c5; }
li.bad { border-color: #b42318; background: #ffebe9; }
tr.front td { font-weight: 600; background: #dafbe1; }
tr.range td { font-style: italic; color: #57606a; }
"""

# Everything is inline: the policy forbids any fetch, so a stray external
# reference shows up as a console error in a browser instead of a request.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def page_head(title: str) -> str:
    """A report page from its doctype to its ``<h1>``: inline CSS, and the
    policy that forbids fetching anything."""
    e = html.escape
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{e(title)}</h1>"""


def write_report(
    path: str | Path,
    *,
    scenario: Scenario,
    summaries: Sequence[Mapping[str, Any]],
    studies: Mapping[str, Sequence[RunResult]],
    required: int,
    instances: int,
    waves_of: RunResult,
    topology: Mapping[str, int],
    title: str,
    grid: Sequence[Mapping[str, Any]] = (),
    zones: Mapping[str, str] | None = None,
) -> Path:
    """Write one self-contained HTML page (no network): the scenario, the
    comparison table, the chart (inline SVG) and the wave schedule."""
    path = Path(path)
    _check_suffix(path, "--report", REPORT_SUFFIXES)
    fig = _figure(
        studies,
        required=required,
        instances=instances,
        waves_of=waves_of,
        topology=topology,
        title=title,
        flag="--report",
        zones=zones,
    )
    page = render_report(
        scenario=scenario,
        summaries=summaries,
        svg=_inline_svg(fig),
        waves_of=waves_of,
        topology=topology,
        title=title,
        required=required,
        grid=grid,
    )
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--report: cannot write {path} ({exc.strerror or exc})") from None
    return path


def render_report(
    *,
    scenario: Scenario,
    summaries: Sequence[Mapping[str, Any]],
    svg: str,
    waves_of: RunResult,
    topology: Mapping[str, int],
    title: str,
    required: int,
    grid: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The report page as text (``write_report`` without the chart drawing)."""
    e = html.escape
    head = "".join(f"<th>{e(c).replace(chr(10), '<br>')}</th>" for c in COMPARE_COLUMNS)
    rows = []
    for s in summaries:
        cells = compare_cells(s)
        tds = [f"<th scope=row>{e(cells[0])}</th>", f"<td>{e(cells[1])}</td>"]
        for n, cell in enumerate(cells[2:], start=2):
            cls = "num outage" if n == OUTAGE_CELL and s["outage_s"]["mean"] > 0 else "num"
            tds.append(f'<td class="{cls}">{e(cell)}</td>')
        rows.append(f"<tr>{''.join(tds)}</tr>")
    verdicts = "".join(
        f'<li class="{kind}">{e(text)}</li>'
        for kind, text in (verdict(s, required) for s in summaries)
    )

    def wave_row(row: tuple[int, float, str, tuple[str, ...]]) -> str:
        number, start, phase, ids = row
        uds = sorted({topology[i] for i in ids if i in topology})
        return (
            f'<tr><td class="num">{number}</td><td class="num">{e(fmt_duration(start))}</td>'
            f"<td>{e(phase)}</td><td>{e(', '.join(map(str, uds)) or '-')}</td>"
            f'<td class="num">{len(ids)}</td><td class="ids">{e(" ".join(ids))}</td></tr>'
        )

    schedule = wave_schedule(waves_of)
    waves = []
    for item in collapse_waves(schedule):
        if len(item) == 3:
            first, last, count = item
            waves.append(
                f'<tr class="range"><td class="num">{first}-{last}</td>'
                f'<td colspan="5">{last - first + 1} waves, {count} instances '
                "(every wave is in the full list below)</td></tr>"
            )
        else:
            waves.append(wave_row(item))
    full_waves = (
        "<details><summary>all "
        f"{len(schedule)} waves</summary><table><thead><tr>{{wave_head}}</tr></thead><tbody>"
        + "".join(wave_row(r) for r in schedule)
        + "</tbody></table></details>"
        if len(schedule) > WAVE_ROWS
        else ""
    )
    grid_html = ""
    if grid:
        columns = list(grid[0])
        grid_html = (
            '<h2 id="grid">Grid</h2><table><thead><tr>'
            + "".join(f"<th>{e(str(c))}</th>" for c in columns)
            + "</tr></thead><tbody>"
            + "".join(
                ('<tr class="front">' if row.get("front") else "<tr>")
                + "".join(f'<td class="num">{e(str(row[c]))}</td>' for c in columns)
                + "</tr>"
                for row in grid
            )
            + '</tbody></table><p class="note">front (*): the Pareto front of its condition '
            "among points with no halted run; halt rate: halted runs / runs.</p>"
        )
    wave_note = (
        f"One recorded run of {e(waves_of.strategy)} (seed {waves_of.seed}); "
        f"{'halted: ' + e(waves_of.reason) if waves_of.halted else 'completed'}."
    )
    strategies = "strategy" if len(summaries) == 1 else "strategies"
    intro = (
        f"vmss-rollout simulation report: {len(summaries)} {strategies}, "
        f"demand {required} instances serving."
    )
    legend = (
        "durations: mean and p95 over runs; min serving: the fewest instances serving in any "
        f"run; outage: nothing serving; degraded: serving, but fewer than {required} (outage "
        "not included); capacity loss in instance-minutes."
    )
    wave_head = "".join(
        f"<th>{c}</th>"
        for c in ("wave", "start", "phase", "update domains", "instances", "instance ids")
    )
    full_waves = full_waves.replace("{wave_head}", wave_head)
    return f"""{page_head(title)}
<p class="note">{intro}</p>
<h2 id="verdict">Verdict against demand ({required} serving)</h2>
<ul class="verdicts">{verdicts}</ul>
<h2 id="comparison">Comparison</h2>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<p class="note">{legend}</p>
{grid_html}
<h2 id="charts">Serving capacity and waves</h2>
<figure>
{svg}
</figure>
<h2 id="waves">Wave schedule</h2>
<p class="note">{wave_note}</p>
<table>
<thead><tr>{wave_head}</tr></thead>
<tbody>
{chr(10).join(waves)}
</tbody>
</table>
{full_waves}
<h2 id="scenario">Scenario</h2>
<pre>{e(scenario.to_toml())}</pre>
<script>document.body.dataset.rendered = "yes";</script>
</body>
</html>
"""
