"""Charts (``--plot``) and the HTML report (``--report``): the numbers behind the
charts on hand-made timelines, the files written, and the report rendered in
headless Chromium without console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from vmss_rollout.cli import output
from vmss_rollout.cli.plotting import (
    Bands,
    _figure,
    check_chart_paths,
    collapse_waves,
    compare_cells,
    domain_heat,
    plot,
    serving_bands,
    shaded_intervals,
    topology_of,
    upgrade_intervals,
    upgrade_order,
    wave_schedule,
    waves_follow_domains,
    write_charts,
    write_report,
    zones_of,
)
from vmss_rollout.engine.errors import InputError
from vmss_rollout.engine.events import Event, EventKind
from vmss_rollout.sim.parallel import run_study
from vmss_rollout.sim.runner import RunResult, run_many, summarize
from vmss_rollout.sim.scaleset import TimelineRow
from vmss_rollout.sim.scenario import Scenario, default_scenario

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STRATEGIES = ("update-domain", "window", "all-at-once")


def make_run(
    timeline: Sequence[tuple[float, int]] = ((0.0, 1),),
    events: Sequence[Event] = (),
    strategy: str = "hand-made",
) -> RunResult:
    rows: list[TimelineRow] = [(t, s, 0, 0, 0) for t, s in timeline]
    return RunResult(
        strategy=strategy,
        seed=0,
        duration_s=rows[-1][0] - rows[0][0] if rows else 0.0,
        min_serving=min((r[1] for r in rows), default=0),
        outage_s=0.0,
        degraded_s=0.0,
        capacity_loss_instance_s=0.0,
        upgraded=0,
        failed=0,
        unhealthy=0,
        halted=False,
        reason="",
        rolled_back=False,
        scope=0,
        max_down=0,
        timeline=rows,
        events=list(events),
    )


def ev(time: float, kind: EventKind, *ids: str, wave: int | None = None) -> Event:
    return Event(time, kind, "rolling", ids, wave)


# --------------------------------------------------------------------------- the numbers


def test_bands_resample_step_functions_onto_a_common_grid() -> None:
    runs = [
        make_run([(0, 10), (10, 8), (20, 10)]),  # ends at 20: holds 10 until 40
        make_run([(0, 10), (5, 6), (15, 10), (40, 10)]),  # the longest run: grid ends at 40
        make_run([(0, 10), (25, 4), (35, 10)]),
    ]
    bands = serving_bands(runs, points=5)
    assert bands.t == (0.0, 10.0, 20.0, 30.0, 40.0)
    # values at each grid time: a row holds until the next one (step-post)
    # t=0: 10 10 10   t=10: 8 6 10   t=20: 10 10 10   t=30: 10 10 4   t=40: 10 10 10
    assert bands.p50 == (10.0, 8.0, 10.0, 10.0, 10.0)
    assert bands.p5 == pytest.approx((10.0, 6.2, 10.0, 4.6, 10.0))
    assert bands.p95 == pytest.approx((10.0, 9.8, 10.0, 10.0, 10.0))


def test_bands_before_the_first_row_and_at_a_row_time() -> None:
    late = make_run([(10, 3), (20, 5)])  # starts later than the other run: its first value
    early = make_run([(0, 7), (10, 1)])
    bands = serving_bands([late, early], points=3)
    assert bands.t == (0.0, 10.0, 20.0)
    # at exactly t=10 both runs have switched to their row at 10
    assert bands.p50 == (5.0, 2.0, 3.0)
    assert bands.p5 == pytest.approx((3.2, 1.1, 1.2))


def test_bands_need_timelines() -> None:
    with pytest.raises(ValueError, match="record=True"):
        serving_bands([make_run([])])
    with pytest.raises(ValueError):
        serving_bands([])


def test_degraded_and_outage_intervals_of_the_median() -> None:
    bands = Bands(
        t=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0),
        p5=(0, 0, 0, 0, 0, 0),
        p50=(5.0, 3.0, 0.0, 3.0, 5.0, 2.0),
        p95=(5, 5, 5, 5, 5, 5),
    )
    degraded, outage = shaded_intervals(bands, required=4)
    # the last grid point has no width: its value shades nothing
    assert degraded == [(1.0, 4.0)]
    assert outage == [(2.0, 3.0)]


WAVE_EVENTS = [
    ev(0, EventKind.ROLLOUT_STARTED),
    ev(0, EventKind.WAVE_STARTED, "0", "1", wave=1),
    ev(4, EventKind.INSTANCE_UPGRADED, "0", wave=1),
    ev(5, EventKind.INSTANCE_HEALTHY, "0", wave=1),
    ev(7, EventKind.INSTANCE_FAILED, "1", wave=1),
    ev(7, EventKind.WAVE_STARTED, "2", wave=2),
    ev(9, EventKind.INSTANCE_HEALTHY, "2", "20", wave=2),  # surge: the replacement is second
    ev(9, EventKind.WAVE_STARTED, "3", wave=3),
    ev(9.5, EventKind.INSTANCE_HEALTHY, "4"),  # reached the target outside the rollout
    ev(10, EventKind.ROLLOUT_FINISHED),  # "3" never resolved: ends at the last event
]


def test_upgrade_intervals_and_wave_schedule_from_events() -> None:
    run = make_run([(0, 4), (10, 4)], WAVE_EVENTS)
    assert upgrade_intervals(run) == {
        "0": [(0, 5)],
        "1": [(0, 7)],
        "2": [(7, 9)],
        "3": [(9, 10)],
    }
    assert wave_schedule(run) == [
        (1, 0, "rolling", ("0", "1")),
        (2, 7, "rolling", ("2",)),
        (3, 9, "rolling", ("3",)),
    ]


def test_domain_heat_is_instances_upgrading_per_update_domain_and_bin() -> None:
    run = make_run([(0, 4), (10, 4)], WAVE_EVENTS)
    topology = {"0": 0, "1": 1, "2": 0, "3": 2, "4": 1}
    domains, matrix = domain_heat(run, topology, end=10, columns=10)
    assert domains == [0, 1, 2]
    assert matrix[0] == [1, 1, 1, 1, 1, 0, 0, 1, 1, 0]  # "0" 0-5, "2" 7-9
    assert matrix[1] == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]  # "1" 0-7
    assert matrix[2] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # "3" 9-10
    _, halves = domain_heat(run, topology, end=10, columns=4)  # bins of 2.5 s
    assert halves[0] == pytest.approx([1, 1, 0.2, 0.6])


# --------------------------------------------------------------------------- recorded studies


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return default_scenario().with_overrides(instances=10, runs=4, unhealthy_after_upgrade=0.05)


@pytest.fixture(scope="module")
def studies(scenario: Scenario) -> dict[str, list[RunResult]]:
    return {spec: run_study(scenario, spec, record=True) for spec in STRATEGIES}


def chart_args(scenario: Scenario, studies: dict[str, list[RunResult]]) -> dict[str, Any]:
    return {
        "studies": studies,
        "required": scenario.required_serving(),
        "instances": scenario.instances,
        "waves_of": studies[STRATEGIES[0]][0],
        "topology": topology_of(scenario),
        "title": "test chart",
    }


def test_recorded_runs_give_the_same_numbers_as_run_many(
    scenario: Scenario, studies: dict[str, list[RunResult]]
) -> None:
    for spec, results in studies.items():
        assert all(r.timeline and r.events for r in results)
        plain = run_many(scenario, spec)
        assert summarize(spec, scenario.seed, results) == summarize(spec, scenario.seed, plain)


def test_topology_is_the_round_robin_update_domains(scenario: Scenario) -> None:
    topology = topology_of(scenario)
    assert len(topology) == scenario.instances
    assert sorted(set(topology.values())) == list(range(scenario.update_domains))


# --------------------------------------------------------------------------- files


def test_plot_writes_png(
    tmp_path: Path, scenario: Scenario, studies: dict[str, list[RunResult]]
) -> None:
    path = plot(tmp_path / "chart.PNG", **chart_args(scenario, studies))
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000


def test_plot_writes_svg(
    tmp_path: Path, scenario: Scenario, studies: dict[str, list[RunResult]]
) -> None:
    path = plot(tmp_path / "chart.svg", **chart_args(scenario, studies))
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = path.read_text(encoding="utf-8")
    assert "test chart" in text  # the title, as a comment next to its glyphs
    assert "update-domain (median, p5-p95 band)" in text


@pytest.mark.parametrize("name", ["chart.pdf", "chart", "chart.png.txt"])
def test_plot_rejects_other_suffixes(
    tmp_path: Path, name: str, scenario: Scenario, studies: dict[str, list[RunResult]]
) -> None:
    with pytest.raises(InputError, match=r"--plot: expected FILE\.png or FILE\.svg"):
        plot(tmp_path / name, **chart_args(scenario, studies))
    assert not (tmp_path / name).exists()


def test_plot_unwritable_path_is_an_input_error(
    tmp_path: Path, scenario: Scenario, studies: dict[str, list[RunResult]]
) -> None:
    with pytest.raises(InputError, match="--plot: cannot write"):
        plot(tmp_path / "missing" / "chart.png", **chart_args(scenario, studies))


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scenario: Scenario,
    studies: dict[str, list[RunResult]],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(InputError) as info:
        plot(tmp_path / "chart.png", **chart_args(scenario, studies))
    assert str(info.value) == "--plot needs matplotlib: pip install 'vmss-rollout[plot]'"


@pytest.fixture(scope="module")
def report(
    tmp_path_factory: pytest.TempPathFactory,
    scenario: Scenario,
    studies: dict[str, list[RunResult]],
) -> Path:
    summaries = [summarize(spec, scenario.seed, results) for spec, results in studies.items()]
    path = tmp_path_factory.mktemp("report") / "report.html"
    return write_report(
        path, scenario=scenario, summaries=summaries, **chart_args(scenario, studies)
    )


def test_report_is_self_contained(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    for needle in ('src="http', "src='http", 'href="http', "@import", "url(http"):
        assert needle not in page
    assert re.findall(r"url\((?!#)", page) == []  # only the chart's own clip paths
    assert re.findall(r'(?:src|href)="(?!#|data:)', page) == []
    # no URL at all: not even the SVG namespaces (the HTML parser knows SVG)
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page  # and the browser is told to fetch nothing
    assert '<script>document.body.dataset.rendered = "yes";</script>' in page
    assert "<svg" in page and "<?xml" not in page and "<!DOCTYPE svg" not in page


def test_report_has_the_compare_table_scenario_and_every_wave(
    report: Path, scenario: Scenario, studies: dict[str, list[RunResult]]
) -> None:
    page = report.read_text(encoding="utf-8")
    summaries = [summarize(spec, scenario.seed, results) for spec, results in studies.items()]
    for column in output.COMPARE_COLUMNS:
        assert column.replace("\n", "<br>") in page
    for summary in summaries:
        cells = compare_cells(summary)
        row = re.search(rf"<tr><th scope=row>{re.escape(cells[0])}</th>(.*?)</tr>", page)
        assert row is not None, cells[0]
        assert re.findall(r"<td[^>]*>(.*?)</td>", row.group(1)) == cells[1:]
    # the cells are the CLI compare table's
    # (the terminal shows the resolved spec under the name, when it says more)
    table = output.compare_table(summaries, "t")
    cli_rows = list(zip(*(list(map(str, c.cells)) for c in table.columns), strict=True))
    for row, summary in zip(cli_rows, summaries, strict=True):
        cells = compare_cells(summary)
        first = cells[0] if cells[1] == cells[0] else f"{cells[0]}\n{cells[1]}"
        assert list(row) == [first, *cells[2:]]
    # the scenario, escaped
    assert "name = &quot;default&quot;" in page and "instances = 10" in page
    # every wave of the recorded run, with its instances
    waves = studies[STRATEGIES[0]][0].waves()
    assert len(waves) == scenario.update_domains
    for n, ids in enumerate(waves, start=1):
        assert re.search(
            rf'<tr><td class="num">{n}</td>.*?<td class="ids">{" ".join(ids)}</td>', page
        )


def test_report_rejects_other_suffixes(
    tmp_path: Path, scenario: Scenario, studies: dict[str, list[RunResult]]
) -> None:
    with pytest.raises(InputError, match=r"--report: expected FILE\.html or FILE\.htm"):
        write_report(
            tmp_path / "report.pdf",
            scenario=scenario,
            summaries=[],
            **chart_args(scenario, studies),
        )


def test_check_chart_paths_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_chart_paths(None, None)
    check_chart_paths(tmp_path / "a.svg", tmp_path / "a.htm")
    with pytest.raises(InputError, match="--plot: expected"):
        check_chart_paths(tmp_path / "a.jpg", None)
    with pytest.raises(InputError, match="--report: expected"):
        check_chart_paths(None, tmp_path / "a.txt")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    check_chart_paths(None, None)  # nothing asked: matplotlib not needed
    with pytest.raises(InputError, match=r"^--report needs matplotlib: pip install"):
        check_chart_paths(None, tmp_path / "a.html")


def test_write_charts_writes_the_plot_and_the_report(
    tmp_path: Path, scenario: Scenario, studies: dict[str, list[RunResult]]
) -> None:
    summaries = [summarize(spec, scenario.seed, results) for spec, results in studies.items()]
    written = write_charts(
        scenario,
        studies,
        summaries,
        plot_path=tmp_path / "c.png",
        report_path=tmp_path / "r.html",
        title="both",
    )
    assert written == [tmp_path / "c.png", tmp_path / "r.html"]
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "<h1>both</h1>" in (tmp_path / "r.html").read_text(encoding="utf-8")
    with pytest.raises(InputError, match="no runs"):
        write_charts(scenario, {"x": []}, [], plot_path=tmp_path / "d.png", title="none")


# --------------------------------------------------------------------------- headless Chromium

#: Chromium (--enable-logging=stderr) logs every console message, whatever its
#: level, and every uncaught exception and Content-Security-Policy refusal, as
#: `[pid:tid:date:INFO:CONSOLE:line] "message", source: URL (line)` (older
#: builds: `CONSOLE(line)`). The report logs nothing, so any such line is a
#: problem.
_CONSOLE_LINE = re.compile(r":CONSOLE[:(]|Uncaught")


def console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if _CONSOLE_LINE.search(line)]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium installed: apt-get install chromium")


def render(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after load and Chromium's stderr."""
    done = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_console_error_detection_catches_a_broken_page(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'">
<title>broken</title></head><body>
<img src="https://example.invalid/pixel.png" alt="">
<script>console.error("boom from console.error");</script>
<script>notDefinedAnywhere();</script>
<script>document.body.dataset.rendered = "yes";</script>
</body></html>
""",
        encoding="utf-8",
    )
    dom, stderr = render(broken, tmp_path / "profile")
    assert 'data-rendered="yes"' in dom
    problems = "\n".join(console_problems(stderr))
    assert "boom from console.error" in problems
    assert "Uncaught ReferenceError: notDefinedAnywhere is not defined" in problems
    assert "example.invalid/pixel.png" in problems  # a blocked external fetch


def test_report_renders_in_headless_chromium_without_console_errors(
    report: Path, tmp_path: Path
) -> None:
    dom, stderr = render(report, tmp_path / "profile")
    assert re.search(r'<body[^>]*data-rendered="yes"', dom), dom[:500]
    assert "<svg" in dom and "Wave schedule" in dom
    assert console_problems(stderr) == []


# --------------------------------------------------------------------------- at scale (issue 12)


def test_report_opens_with_a_verdict_per_strategy_against_demand(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vmss_rollout.cli.app import app

    page = tmp_path / "r.html"
    result = CliRunner().invoke(
        app,
        ["compare", "-r", "4", "-s", "window", "-s", "all-at-once", "-s", "batch:size=5",
         "--report", str(page)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    verdict = text.index('<h2 id="verdict">')
    assert verdict < text.index('<h2 id="comparison">')  # first thing after the title
    items = re.findall(r'<li class="(ok|warn|bad)">(.*?)</li>', text)
    kinds = {body.split(": ")[0]: kind for kind, body in items}
    assert kinds == {"window": "ok", "all-at-once": "bad", "batch:size=5": "warn"}
    assert any("meets demand in every run" in body for _, body in items)
    assert any("below demand: as few as 15 serving against 16" in body for _, body in items)
    # the resolved parameters and the most-down column are in the report's table too
    assert "window:max-unavailable=4" in text


def test_long_wave_tables_collapse_into_a_range_with_every_wave_kept() -> None:
    rows = [(n, float(n * 60), "rollout", (str(n),)) for n in range(1, 272)]
    collapsed = collapse_waves(rows)
    assert len(collapsed) == 21
    assert collapsed[:10] == rows[:10] and collapsed[-10:] == rows[-10:]
    assert collapsed[10] == (11, 261, 251)  # waves 11-261: 251 instances
    assert collapse_waves(rows[:20]) == rows[:20]


def test_report_collapses_waves_beyond_20_and_lists_all_in_a_details(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vmss_rollout.cli.app import app

    page = tmp_path / "w.html"
    result = CliRunner().invoke(
        app,
        ["simulate", "-r", "2", "--instances", "60", "-s", "one-at-a-time", "--report", str(page)],
    )
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    schedule, _, rest = text.partition("<details>")
    assert '<tr class="range"><td class="num">11-50</td>' in schedule
    assert "40 waves, 40 instances" in schedule
    assert "all 60 waves" in rest
    assert len(re.findall(r'<td class="ids">', rest.split("</details>")[0])) == 60


def test_sweep_report_keeps_the_grid_columns_and_the_front_marker(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vmss_rollout.cli.app import app

    page = tmp_path / "s.html"
    result = CliRunner().invoke(
        app,
        ["sweep", "--vary", "batch:size=1,2,5", "--vary", "faults.upgrade_failure=0,0.3",
         "-r", "4", "--report", str(page)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    grid = text[text.index('<h2 id="grid">') : text.index('<h2 id="charts">')]
    head = re.findall(r"<th>(.*?)</th>", grid)
    assert head[:2] == ["batch:size", "faults.upgrade_failure"]
    assert "halt rate" in head and "front" in head
    rows = re.findall(r"<tr( class=\"front\")?>(.*?)</tr>", grid)
    assert len(rows) == 1 + 6  # the header and every grid point
    marked = [cells for front, cells in rows if front]
    assert marked and all('<td class="num">*</td>' in cells for cells in marked)


# --------------------------------------------------------------------------- the waves panel


def test_upgrade_order_is_by_first_start_with_each_outcome() -> None:
    events = [
        *WAVE_EVENTS[:-1],
        ev(9.8, EventKind.INSTANCE_FAILED, "3"),
        ev(10, EventKind.ROLLOUT_FINISHED),
    ]
    order = upgrade_order(make_run([(0, 4), (10, 4)], events))
    assert [(iid, outcome) for iid, _, outcome in order] == [
        ("0", "healthy"),
        ("1", "failed"),
        ("2", "healthy"),
        ("3", "failed"),
    ]
    assert order[1][1] == [(0, 7)] and order[3][1] == [(9, 9.8)]


def test_only_waves_that_follow_domains_get_the_domain_heat_map(
    scenario: Scenario, studies: dict[str, list[RunResult]]
) -> None:
    topology = topology_of(scenario)
    follows = {spec: waves_follow_domains(runs[0], topology) for spec, runs in studies.items()}
    assert follows == {"update-domain": True, "window": False, "all-at-once": False}


def _svg_text(path: Path) -> str:
    """The SVG's text: matplotlib writes each string as a comment beside its glyphs."""
    return " ".join(re.findall(r"<!-- (.*?) -->", path.read_text(encoding="utf-8")))


def test_a_zonal_scale_set_gets_one_heat_map_per_zone(tmp_path: Path) -> None:
    zonal = default_scenario().with_overrides(instances=30, runs=2, zones=("1", "2", "3"))
    studies = {"update-domain": run_study(zonal, "update-domain", record=True)}
    summaries = [summarize("update-domain", zonal.seed, studies["update-domain"])]
    write_charts(zonal, studies, summaries, plot_path=tmp_path / "z.svg", title="zonal")
    text = _svg_text(tmp_path / "z.svg")
    assert all(f"zone {z}" in text for z in "123"), text
    assert "one map per zone" in text
    # each zone's map holds only that zone's instances: zone 2's rows are its domains
    zones = zones_of(zonal)
    assert sorted(set(zones.values())) == ["1", "2", "3"]
    run = studies["update-domain"][0]
    topology = topology_of(zonal)
    for zone in "123":
        members = {i: ud for i, ud in topology.items() if zones[i] == zone}
        _, matrix = domain_heat(run, members, end=run.duration_s, columns=50)
        # every instance of the zone upgrades once: the map's total is its size in bins
        busy = sum(sum(row) for row in matrix) * run.duration_s / 50
        spans = upgrade_intervals(run)
        assert busy == pytest.approx(sum(hi - lo for i in members for lo, hi in spans[i]))


def test_a_window_gets_the_upgrade_order_not_a_heat_map(tmp_path: Path) -> None:
    scenario = default_scenario().with_overrides(instances=40, runs=2, zones=("1", "2"))
    studies = {"window": run_study(scenario, "window", record=True)}
    summaries = [summarize("window", scenario.seed, studies["window"])]
    write_charts(scenario, studies, summaries, plot_path=tmp_path / "w.svg", title="window")
    text = _svg_text(tmp_path / "w.svg")
    assert "in the order" in text and "one bar per instance" in text
    assert "update domain" not in text.replace("follow update domains", "")


def test_a_long_legend_never_covers_the_title(scenario: Scenario) -> None:
    long = {
        f"window:max-unavailable={n},and-a-rather-long-plugin-parameter=yes": runs
        for n, runs in enumerate(run_study(scenario, s, record=True) for s in STRATEGIES * 2)
    }
    first = next(iter(long.values()))[0]
    fig = _figure(
        long,
        required=scenario.required_serving(),
        instances=scenario.instances,
        waves_of=first,
        topology=topology_of(scenario),
        title="a long title: " + "compare on the default scenario, 4 runs per strategy " * 2,
        flag="--plot",
    )
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.draw(renderer)  # constrained layout runs at draw time
    title = fig.get_suptitle() and fig._suptitle.get_window_extent(renderer)
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    panel = fig.axes[0].get_window_extent(renderer)
    assert title and not title.overlaps(legend)
    assert not legend.overlaps(panel)
    assert title.y0 >= legend.y1 >= legend.y0 >= panel.y1
    width, _ = fig.get_size_inches() * fig.dpi
    assert legend.x0 >= 0 and legend.x1 <= width  # nothing cut at the edges


def test_a_large_upgrade_order_is_one_raster_with_every_instance(tmp_path: Path) -> None:
    scenario = default_scenario().with_overrides(instances=120, runs=1, upgrade_failure=0.05)
    studies = {"window": run_study(scenario, "window", record=True)}
    summaries = [summarize("window", scenario.seed, studies["window"])]
    write_charts(scenario, studies, summaries, plot_path=tmp_path / "big.svg", title="big")
    svg = (tmp_path / "big.svg").read_text(encoding="utf-8")
    assert svg.count("<image ") == 1  # the panel's raster (bars would leave stripes)
    run = studies["window"][0]
    order = upgrade_order(run)
    assert len(order) == len(upgrade_intervals(run)) > 60
    assert {o for _, _, o in order} >= {"healthy"}
    assert "one bar per instance" in _svg_text(tmp_path / "big.svg")
