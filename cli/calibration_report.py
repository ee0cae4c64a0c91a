"""``calibrate --report FILE.html``: each fit of the calibration, drawn.

One self-contained page (the conventions of ``--report`` in
:mod:`.plotting`: inline CSS and SVG, a Content-Security-Policy that forbids
fetching anything), with per fitted quantity (upgrade time, health delay):

* a figure: the **empirical CDF band** the interval-censored observations
  allow (at time *x*, from the share of intervals that end by *x*, surely
  done, to the share that start before *x*, possibly done; the band is the
  set of every empirical CDF some placement of the observations inside their
  intervals gives), the empirical CDF of the intervals' **midpoints** (a
  single curve inside the band), the **chosen** fitted CDF and, faded, the
  other candidates' CDFs;
* a table: every candidate's log-likelihood, AIC and parameters, the chosen
  one marked, the sample size and the Kolmogorov-Smirnov distance of the
  chosen CDF outside the band (the number the scenario's comments give);

then the failure and unhealthy counts and the scenario TOML itself.
"""

from __future__ import annotations

import html
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.errors import InputError
from .output import fmt_duration
from .plotting import REPORT_SUFFIXES, _check_suffix, _inline_svg, _matplotlib, page_head

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..backends.calibrate import Fit, History

Interval = tuple[float, float]

#: the quantities ``calibrate`` fits: (History attribute, name in the report)
QUANTITIES = (("upgrade", "upgrade time"), ("health_delay", "health delay"))


def cdf_band(data: Sequence[Interval], xs: Sequence[float]) -> tuple[list[float], list[float]]:
    """At each ``x``: (the share of intervals ``(low, high]`` that end by
    ``x``, the share that start before ``x``): the lowest and highest values
    an empirical CDF of the observations can take there."""
    n = len(data)
    lows = sorted(a for a, _ in data)
    highs = sorted(b for _, b in data)
    below = [bisect_right(highs, x) / n for x in xs]
    maybe = [bisect_left(lows, x) / n for x in xs]
    return below, maybe


def midpoint_cdf(data: Sequence[Interval], xs: Sequence[float]) -> list[float]:
    """The empirical CDF of the intervals' midpoints at each ``x``."""
    mids = sorted((a + b) / 2 for a, b in data)
    return [bisect_right(mids, x) / len(mids) for x in xs]


def _grid(data: Sequence[Interval], points: int = 400) -> list[float]:
    top = max(b for _, b in data) * 1.1 or 1.0
    return [top * i / (points - 1) for i in range(points)]


def fit_figure(what: str, data: Sequence[Interval], result: Fit) -> Figure:
    """The band, the midpoints' ECDF, the chosen CDF and the other candidates'."""
    _matplotlib("--report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..backends.calibrate import _cdf_of, _rounded

    xs = _grid(data)
    minutes = [x / 60 for x in xs]
    below, maybe = cdf_band(data, xs)
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.fill_between(
        minutes,
        below,
        maybe,
        step="post",
        color="#9ecae1",
        alpha=0.6,
        linewidth=0,
        label="empirical CDFs the intervals allow (band)",
    )
    ax.plot(
        minutes,
        midpoint_cdf(data, xs),
        drawstyle="steps-post",
        color="#3c3c3c",
        linestyle=":",
        linewidth=1.2,
        label="empirical CDF of the intervals' midpoints",
    )
    for c in result.candidates:
        if c.distribution is None or c.family == result.family:
            continue
        cdf = _cdf_of(c.distribution)
        ax.plot(
            minutes,
            [cdf(x) for x in xs],
            linewidth=1,
            alpha=0.55,
            label=f"{c.family} (AIC {c.aic:.1f}): {_rounded(c.distribution)}",
        )
    chosen = _cdf_of(result.chosen)
    ax.plot(
        minutes,
        [chosen(x) for x in xs],
        color="#b42318",
        linewidth=2.2,
        label=f"chosen: {result.chosen}",
    )
    ax.set_xlim(0, minutes[-1])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"{what} (minutes)")
    ax.set_ylabel("share of instances done")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    fig.suptitle(
        f"{what}: {result.samples} interval-censored observations; chosen by AIC: "
        f"{result.family}; KS distance outside the band {result.ks:.3f}",
        fontsize="medium",
    )
    return fig


def _fit_section(what: str, data: Sequence[Interval], result: Fit) -> str:
    from ..backends.calibrate import _clean, _rounded

    data = _clean(data)  # as fit() saw them: an exact time is a tiny interval around it
    e = html.escape
    svg = _inline_svg(fit_figure(what, data, result)).replace(
        'aria-label="serving and waves chart"', f'aria-label="{e(what)} fit"', 1
    )
    rows = []
    for c in sorted(result.candidates, key=lambda c: c.aic):
        chosen = c.family == result.family
        shown = str(_rounded(c.distribution)) if c.distribution is not None else "no fit"
        rows.append(
            f'<tr class="{"front" if chosen else ""}"><td>{e(c.family)}'
            f"{' (chosen)' if chosen else ''}</td>"
            f'<td class="num">{c.log_likelihood:.2f}</td><td class="num">{c.aic:.2f}</td>'
            f'<td class="num">{c.params}</td><td>{e(shown)}</td></tr>'
        )
    lows = [a for a, _ in data]
    highs = [b for _, b in data]
    widths = sorted(b - a for a, b in data)
    return f"""<section class="fit">
<h2 id="{e(what.replace(" ", "-"))}">{e(what.capitalize())}</h2>
<p>{result.samples} interval-censored observations, from {e(fmt_duration(min(lows)))} to
{e(fmt_duration(max(highs)))}; median interval width {e(fmt_duration(widths[len(widths) // 2]))}.
Chosen: <strong>{e(str(result.chosen))}</strong> ({e(result.family)}, lowest AIC); KS distance
outside the band: <strong>{result.ks:.3f}</strong> (0: consistent with every interval).</p>
<figure>
{svg}
</figure>
<table>
<thead><tr><th>form</th><th>log L</th><th>AIC</th><th>parameters</th><th>maximum-likelihood fit</th>
</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</section>"""


def render_calibration_report(
    *, history: History, fits: Sequence[tuple[str, Fit]], toml: str, title: str
) -> str:
    """The report page as text; ``fits``: (History attribute, its fit) per
    quantity with observations, in :data:`QUANTITIES` order."""
    e = html.escape
    names = dict(QUANTITIES)
    sections = [_fit_section(names[attr], getattr(history, attr), f) for attr, f in fits]
    missing = [what for attr, what in QUANTITIES if attr not in dict(fits)]
    none = (
        f'<p class="note">No journaled observations of {e(" or ".join(missing))}: '
        "the scenario keeps Azure's coarse figures or the defaults there (its comments say "
        "which).</p>"
        if missing
        else ""
    )
    rollouts = ", ".join(history.rollouts) or "none"
    notes = "".join(f"<li>{e(n)}</li>" for n in history.poll_notes)
    return f"""{page_head(title)}
<p class="note">Fitted from {len(history.rollouts)} journaled rollout(s): {e(rollouts)}.
Each observation is interval-censored: the driver sees an instance only at a poll, so its time
lies between the previous poll and the poll that saw it. The band is every empirical CDF a
placement of the observations inside their intervals gives; the dotted line places each at its
interval's midpoint.</p>
<ul class="note">{notes}</ul>
{none}
{chr(10).join(sections)}
<h2 id="rates">Rates</h2>
<p>Upgrade failure: {history.failed} of {history.finished} finished upgrades failed.
Unhealthy after upgrade: {history.unhealthy} reported unhealthy and {history.never_healthy}
never healthy (health timeout) of {history.provisioned} provisioned.</p>
<h2 id="scenario">Scenario</h2>
<pre style="white-space: pre-wrap">{e(toml)}</pre>
<script>document.body.dataset.rendered = "yes";</script>
</body>
</html>
"""


def write_calibration_report(path: Path, *, history: History, toml: str, title: str) -> Path:
    """Fit each quantity the history has observations of and write the page."""
    from ..backends.calibrate import fit

    _check_suffix(path, "--report", REPORT_SUFFIXES)
    _matplotlib("--report")
    fits = [(attr, fit(getattr(history, attr))) for attr, _ in QUANTITIES if getattr(history, attr)]
    page = render_calibration_report(history=history, fits=fits, toml=toml, title=title)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--report: cannot write {path} ({exc.strerror or exc})") from None
    return path
