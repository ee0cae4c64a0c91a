"""Scenarios fitted from history: ``vmss-rollout calibrate`` and ``plan --calibrated``.

Three parts, in this order:

1. **Observations from the journal** (:func:`observations`). An instance's
   upgrade starts with its wave (the engine time of ``wave_started``), ends at
   ``instance_upgraded`` and is healthy at ``instance_healthy`` (both at once
   when one poll saw both); ``instance_failed`` is a failed upgrade,
   ``instance_unhealthy`` an unhealthy one (the health-timeout detail ``not
   healthy ...`` meaning it never became healthy). The driver sees a change
   only at a poll, so each time is *interval-censored*: it happened after the
   previous poll and no later than the poll that saw it. Polls that saw
   nothing are not journaled, so the previous poll is reconstructed: it is no
   earlier than the last journaled event of the attempt, and the driver's
   schedule (``backends/realtime.py``: MIN after a change or an action,
   doubling to MAX) from that event gives it exactly when the sighting falls on
   that schedule; otherwise the gap is bounded by MAX. The poll interval is the
   journaled ``poll_interval`` option when recorded, else the caller's, else the
   default ``5:30`` (and the TOML says which).
2. **Interval-censored maximum likelihood** (:func:`fit`) of the four forms
   ``sim/distributions.py`` samples (fixed, uniform, exponential, lognormal),
   with ``math`` only: the likelihood of an observation in ``(a, b]`` is
   ``F(b) - F(a)``; exponential by golden-section search, uniform and lognormal
   by Nelder-Mead, fixed in closed form (any value in every interval). The
   form with the lowest AIC (``2k - 2 log L``) is chosen; its fit quality is a
   Kolmogorov-Smirnov distance of the fitted CDF from the band of empirical
   CDFs the intervals allow (0: the fit is consistent with every interval).
3. **The scenario** (:func:`calibrated_scenario`): the fits, the failure and
   unhealthy rates, the live topology, as TOML whose comments give sample
   sizes and every candidate's log-likelihood and AIC. Without journal history,
   Azure's own coarse figures (``osUpgradeHistory``, ``rollingUpgrades/latest``:
   duration per batch) stand in, and the comments say so.

:func:`simulated_history` journals polled rollouts on the simulated scale set
with known distributions: the tests and the benchmark measure recovery on it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..engine.errors import InputError
from ..engine.model import Instance
from ..engine.options import EngineOptions
from ..engine.polling import DEFAULT_POLL, parse_poll_interval  # the driver's default: 5:30
from ..sim.distributions import Distribution, Exponential, Fixed, LogNormal, Uniform
from ..sim.scenario import Scenario, default_scenario, load_scenario_text
from .journal import Journal, RolloutRecord

__all__ = [
    "DEFAULT_POLL",
    "AzureFigures",
    "Candidate",
    "Fit",
    "History",
    "azure_figures",
    "calibrated_scenario",
    "fit",
    "golden_section",
    "nelder_mead",
    "observations",
    "parse_since",
    "simulated_history",
]

#: a sighting within this many seconds of the reconstructed schedule falls on it
_ON_SCHEDULE = 0.05
_NEVER_HEALTHY = "not healthy"
_TINY = 1e-300

Interval = tuple[float, float]


# --------------------------------------------------------------------------- optimisers


def golden_section(
    f: Callable[[float], float], low: float, high: float, tol: float = 1e-7
) -> float:
    """The minimiser of a unimodal ``f`` on ``[low, high]``."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while abs(b - a) > tol * (1 + abs(a) + abs(b)):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def _halfway(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [(x + y) / 2 for x, y in zip(a, b, strict=True)]


def nelder_mead(
    f: Callable[[Sequence[float]], float],
    start: Sequence[float],
    step: Sequence[float],
    iterations: int = 600,
    tol: float = 1e-10,
) -> list[float]:
    """The minimiser of ``f`` found by Nelder-Mead from ``start`` (standard
    coefficients: reflect 1, expand 2, contract 1/2, shrink 1/2)."""
    n = len(start)
    simplex = [list(start)]
    for i in range(n):
        point = list(start)
        point[i] += step[i]
        simplex.append(point)
    values = [f(p) for p in simplex]
    for _ in range(iterations):
        order = sorted(range(n + 1), key=lambda i: values[i])
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if abs(values[-1] - values[0]) <= tol * (1 + abs(values[0])):
            break
        centroid = [sum(p[j] for p in simplex[:-1]) / n for j in range(n)]
        worst = simplex[-1]

        def toward(
            t: float, centroid: list[float] = centroid, worst: list[float] = worst
        ) -> list[float]:
            return [c + t * (w - c) for c, w in zip(centroid, worst, strict=True)]

        reflected = toward(-1.0)
        fr = f(reflected)
        if fr < values[0]:
            expanded = toward(-2.0)
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = toward(0.5 if fr >= values[-1] else -0.5)
            fc = f(contracted)
            if fc < min(fr, values[-1]):
                simplex[-1], values[-1] = contracted, fc
            else:
                best = simplex[0]
                simplex = [best] + [_halfway(best, p) for p in simplex[1:]]
                values = [values[0]] + [f(p) for p in simplex[1:]]
    return simplex[min(range(n + 1), key=lambda i: values[i])]


# --------------------------------------------------------------------------- likelihoods


def _log_mass(cdf: Callable[[float], float], data: Sequence[Interval]) -> float:
    total = 0.0
    for low, high in data:
        mass = cdf(high) - cdf(low)
        if mass <= 0:
            return -math.inf
        total += math.log(max(mass, _TINY))
    return total


def _exp_cdf(mean: float) -> Callable[[float], float]:
    return lambda x: 0.0 if x <= 0 else -math.expm1(-x / mean)


def _lognormal_cdf(mu: float, sigma: float) -> Callable[[float], float]:
    def cdf(x: float) -> float:
        if x <= 0:
            return 0.0
        return 0.5 * math.erfc(-(math.log(x) - mu) / (sigma * math.sqrt(2)))

    return cdf


def _uniform_cdf(low: float, high: float) -> Callable[[float], float]:
    width = high - low

    def cdf(x: float) -> float:
        if x <= low:
            return 0.0
        if x >= high:
            return 1.0
        return (x - low) / width

    return cdf


def _cdf_of(dist: Distribution) -> Callable[[float], float]:
    if isinstance(dist, Fixed):
        return lambda x: 1.0 if x >= dist.seconds else 0.0
    if isinstance(dist, Uniform):
        return (
            _uniform_cdf(dist.low, dist.high) if dist.high > dist.low else _cdf_of(Fixed(dist.low))
        )
    if isinstance(dist, Exponential):
        return _exp_cdf(dist.mean_s)
    assert isinstance(dist, LogNormal)
    if dist.sd_s == 0:
        return _cdf_of(Fixed(dist.mean_s))
    sigma2 = math.log1p((dist.sd_s / dist.mean_s) ** 2)
    return _lognormal_cdf(math.log(dist.mean_s) - sigma2 / 2, math.sqrt(sigma2))


@dataclass(frozen=True)
class Candidate:
    """One family's maximum-likelihood fit."""

    family: str
    distribution: Distribution | None  # None: no parameters give the data any mass
    log_likelihood: float
    params: int

    @property
    def aic(self) -> float:
        """Akaike's information criterion, ``2k - 2 log L`` (lower is better)."""
        return 2 * self.params - 2 * self.log_likelihood


@dataclass(frozen=True)
class Fit:
    """The chosen distribution, every candidate, the sample size and the KS distance."""

    chosen: Distribution
    family: str
    candidates: tuple[Candidate, ...]
    samples: int
    ks: float

    def comment(self, what: str) -> list[str]:
        """TOML comment lines describing the fit."""
        lines = [
            f"# {what}: {self.samples} interval-censored observations; chosen by AIC "
            f"(2k - 2 log L, lowest wins): {self.family}; KS distance outside the "
            f"empirical CDFs the intervals allow: {self.ks:.3f}"
        ]
        for c in sorted(self.candidates, key=lambda c: c.aic):
            shown = str(_rounded(c.distribution)) if c.distribution is not None else "no fit"
            lines.append(
                f"#   {c.family:<11} log L {c.log_likelihood:10.2f}  AIC {c.aic:10.2f}  {shown}"
            )
        return lines


def _clean(data: Iterable[Interval]) -> list[Interval]:
    out = []
    for low, high in data:
        low = max(0.0, low)
        if not (math.isfinite(low) and math.isfinite(high)) or high < low:
            raise ValueError(f"not an observation interval: ({low!r}, {high!r}]")
        if high - low < 1e-6:  # an exact observation: a tiny interval around it
            low, high = max(0.0, low - 5e-7), high + 5e-7
        out.append((low, high))
    return out


def _fit_fixed(data: Sequence[Interval]) -> Candidate:
    low = max(a for a, _ in data)
    high = min(b for _, b in data)
    if low < high:
        # every interval holds every value in (low, high]: log L = 0 on all of
        # it; the middle is the estimate with the least worst-case error
        return Candidate("fixed", Fixed((low + high) / 2), 0.0, 1)
    return Candidate("fixed", None, -math.inf, 1)


def _fit_exponential(data: Sequence[Interval]) -> Candidate:
    mid = sum((a + b) / 2 for a, b in data) / len(data)
    if mid <= 0:
        return Candidate("exponential", None, -math.inf, 1)

    def nll(log_mean: float) -> float:
        value = -_log_mass(_exp_cdf(math.exp(log_mean)), data)
        return value if math.isfinite(value) else 1e300

    best = golden_section(nll, math.log(mid) - 4, math.log(mid) + 4)
    mean = math.exp(best)
    return Candidate("exponential", Exponential(mean), -nll(best), 1)


def _fit_lognormal(data: Sequence[Interval]) -> Candidate:
    logs = [math.log(max((a + b) / 2, 1e-3)) for a, b in data]
    mu0 = sum(logs) / len(logs)
    s0 = math.sqrt(sum((x - mu0) ** 2 for x in logs) / len(logs)) or 0.1

    def nll(p: Sequence[float]) -> float:
        value = -_log_mass(_lognormal_cdf(p[0], math.exp(p[1])), data)
        return value if math.isfinite(value) else 1e300

    mu, log_sigma = nelder_mead(nll, [mu0, math.log(s0)], [0.1, 0.3])
    sigma = math.exp(log_sigma)
    mean = math.exp(mu + sigma**2 / 2)
    sd = mean * math.sqrt(math.expm1(sigma**2))
    return Candidate("lognormal", LogNormal(mean, sd), -nll([mu, log_sigma]), 2)


def _fit_uniform(data: Sequence[Interval]) -> Candidate:
    low0 = min(a for a, _ in data)
    high0 = max(b for _, b in data)
    span = high0 - low0

    def nll(p: Sequence[float]) -> float:
        low, high = max(0.0, p[0]), p[1]
        if high <= low:
            return 1e300
        value = -_log_mass(_uniform_cdf(low, high), data)
        return value if math.isfinite(value) else 1e300

    low, high = nelder_mead(nll, [low0, high0], [0.05 * span, -0.05 * span])
    low = max(0.0, low)
    if nll([low, high]) >= 1e300:
        return Candidate("uniform", None, -math.inf, 2)
    return Candidate("uniform", Uniform(low, high), -nll([low, high]), 2)


def _ks(dist: Distribution, data: Sequence[Interval]) -> float:
    """How far the fitted CDF strays outside the band of empirical CDFs the
    intervals allow (at ``x``: from the share of intervals ending by ``x`` to
    the share starting before it): a Kolmogorov-Smirnov distance for censored
    data, 0 when some placement of the observations in their intervals has
    exactly the fitted CDF's values at every endpoint."""
    cdf = _cdf_of(dist)
    n = len(data)
    lows = sorted(a for a, _ in data)
    highs = sorted(b for _, b in data)
    points = set(lows) | set(highs)
    if isinstance(dist, Fixed):
        points |= {dist.seconds, math.nextafter(dist.seconds, -math.inf)}
    worst = 0.0
    for x in points:
        below = bisect.bisect_right(highs, x) / n  # surely at or below x
        maybe = bisect.bisect_left(lows, x) / n  # possibly at or below x
        worst = max(worst, below - cdf(x), cdf(x) - maybe)
    return max(0.0, worst)


def _rounded(dist: Distribution) -> Distribution:
    """Parameters to 0.1 s, for a readable scenario."""
    if isinstance(dist, Fixed):
        return Fixed(round(dist.seconds, 1))
    if isinstance(dist, Uniform):
        return Uniform(round(dist.low, 1), round(dist.high, 1))
    if isinstance(dist, Exponential):
        return Exponential(max(0.1, round(dist.mean_s, 1)))
    assert isinstance(dist, LogNormal)
    return LogNormal(max(0.1, round(dist.mean_s, 1)), round(dist.sd_s, 1))


def fit(data: Iterable[Interval]) -> Fit:
    """Fit fixed, uniform, exponential and lognormal to interval-censored
    observations ``(low, high]`` (seconds) by maximum likelihood; choose the
    lowest AIC. Needs at least one observation."""
    clean = _clean(data)
    if not clean:
        raise ValueError("no observations to fit")
    candidates = (
        _fit_fixed(clean),
        _fit_uniform(clean),
        _fit_exponential(clean),
        _fit_lognormal(clean),
    )
    fitted = [c for c in candidates if c.distribution is not None]
    best = min(fitted, key=lambda c: c.aic)
    assert best.distribution is not None
    chosen = _rounded(best.distribution)
    return Fit(chosen, best.family, candidates, len(clean), _ks(chosen, clean))


# --------------------------------------------------------------------------- the journal


@dataclass
class History:
    """What the journal says about one scale set's upgrades."""

    rollouts: list[str] = field(default_factory=list)
    upgrade: list[Interval] = field(default_factory=list)
    health_delay: list[Interval] = field(default_factory=list)
    #: upgrades that ended (provisioned or failed), failed ones, and of the
    #: provisioned ones: unhealthy (reported) and never healthy (timed out)
    finished: int = 0
    failed: int = 0
    unhealthy: int = 0
    never_healthy: int = 0
    #: how the poll interval of each rollout was known
    poll_notes: list[str] = field(default_factory=list)

    @property
    def provisioned(self) -> int:
        return self.finished - self.failed


def _poll_of(
    options: Mapping[str, Any], fallback: tuple[float, float] | None
) -> tuple[tuple[float, float], str]:
    raw = options.get("poll_interval")
    try:
        if isinstance(raw, str) and raw.strip():
            return parse_poll_interval(raw, "journaled poll_interval"), "journaled"
        if isinstance(raw, list | tuple) and len(raw) == 2:
            return (float(raw[0]), float(raw[1])), "journaled"
    except (InputError, ValueError):
        pass
    if fallback is not None:
        return fallback, "given with --poll-interval (not journaled)"
    return DEFAULT_POLL, "not journaled: assumed the default 5:30"


def _previous_poll(t: float, polls: Sequence[float], poll: tuple[float, float]) -> float:
    """The latest moment the previous poll before the one at ``t`` can have been."""
    low, high = poll
    i = bisect.bisect_left(polls, t - 1e-9)
    known = polls[i - 1] if i else -math.inf
    if not math.isfinite(known):
        return t - high
    gap_since = t - known
    offset, gap = 0.0, low
    while offset + gap < gap_since + _ON_SCHEDULE:
        offset += gap
        if abs(offset - gap_since) <= _ON_SCHEDULE:
            return known + offset - gap  # on the schedule: the poll one gap before
        gap = min(high, gap * 2)
    return max(known, t - high)


def observations(
    journal: Journal,
    scale_set_id: str,
    *,
    since: float | None = None,
    poll_interval: tuple[float, float] | None = None,
    limit: int = 1000,
) -> History:
    """Interval-censored upgrade times and health delays, and the failure and
    unhealthy counts, of the journaled rollouts of ``scale_set_id`` (started at
    or after ``since``). Surge waves (new instances, not upgrades) are skipped."""
    history = History()
    records: list[RolloutRecord] = journal.history(scale_set_id, limit=limit)
    for record in reversed(records):
        if since is not None and record.started_at < since:
            continue
        history.rollouts.append(record.id)
        poll, how = _poll_of(record.options, poll_interval)
        history.poll_notes.append(f"{record.id}: poll interval {poll[0]:g}:{poll[1]:g} ({how})")
        _add_rollout(history, journal.events(record.id), poll)
    return history


def _add_rollout(history: History, events: list[dict[str, Any]], poll: tuple[float, float]) -> None:
    by_attempt: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        if event["time"] is not None:
            by_attempt.setdefault(event["attempt"], []).append(event)
    for attempt_events in by_attempt.values():
        polls = sorted({e["time"] for e in attempt_events})
        started: dict[str, float] = {}  # instance -> its wave's start (engine time)
        upgraded: dict[str, tuple[float, float]] = {}  # instance -> (low, high] of its end
        for e in attempt_events:
            kind, t, ids = e["kind"], e["time"], e["instances"]
            if kind == "wave_started":
                if e["detail"] == "replace":  # surge: new instances, not upgrades
                    continue
                for iid in ids:
                    started[iid] = t
                    upgraded.pop(iid, None)
                continue
            if not ids or ids[0] not in started:
                continue
            iid = ids[0]
            seen = (_previous_poll(t, polls, poll), t)
            if kind == "instance_upgraded":
                upgraded[iid] = seen
                history.upgrade.append((seen[0] - started[iid], t - started[iid]))
                history.finished += 1
            elif kind in ("instance_healthy", "instance_unhealthy"):
                end = upgraded.get(iid)
                if end is None:  # one poll saw the upgrade end and the health
                    end = seen
                    history.upgrade.append((seen[0] - started[iid], t - started[iid]))
                    history.finished += 1
                if kind == "instance_healthy":
                    history.health_delay.append((max(0.0, seen[0] - end[1]), t - end[0]))
                elif _NEVER_HEALTHY in e["detail"]:
                    history.never_healthy += 1
                else:
                    history.unhealthy += 1
                del started[iid]
            elif kind == "instance_failed":
                history.finished += 1
                history.failed += 1
                del started[iid]
            elif kind == "instance_gone":
                del started[iid]


def parse_since(text: str | None) -> float | None:
    """``--since``: an ISO date or date-time (UTC unless it names a zone)."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"--since: expected a date such as 2026-11-01 or 2026-11-01T09:30, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# --------------------------------------------------------------------------- the scenario


def _rate(count: int, total: int) -> float:
    return count / total if total else 0.0


def _topology(instances: Sequence[Instance]) -> dict[str, Any]:
    zones = sorted({i.zone for i in instances if i.zone}, key=lambda z: (len(z), z))
    return {
        "instances": max(1, len(instances)),
        "update_domains": max(1, len({i.update_domain for i in instances})),
        "fault_domains": max(1, len({i.fault_domain for i in instances})),
        "zones": zones,
    }


@dataclass
class AzureFigures:
    """Coarse figures from Azure's own records of platform rolling upgrades."""

    #: seconds per instance upgrade (duration per batch), None when no record has an end
    seconds: float | None = None
    #: instances the records count as upgraded or failed, and failed
    finished: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)


def azure_figures(
    rolling_status: Mapping[str, Any] | None,
    os_history: Sequence[Mapping[str, Any]],
    max_batch_percent: float,
    capacity: int,
    pause: float = 0.0,
) -> AzureFigures:
    """Coarse figures from Azure's records when the journal has none.

    ``osUpgradeHistory`` entries (``UpgradeOperationHistoryStatus``: ``startTime``,
    ``endTime``; Compute REST spec, ``computeRPCommon``/``virtualMachineScaleSet``
    definitions) give each upgrade's duration: over its number of batches
    (``maxBatchInstancePercent`` of the capacity per batch), less the pause
    between batches, a time per instance. ``rollingUpgrades/latest``
    (``RollingUpgradeRunningStatus``) has no end time (``lastActionTime`` is its
    last Start or Cancel), so it only adds its instance counts when the history
    does not list it. Every record's progress gives failed and finished counts."""
    figures = AzureFigures()
    runs: list[Mapping[str, Any]] = []
    for entry in os_history:
        props = entry.get("properties", entry)
        if isinstance(props, Mapping):
            runs.append(props)
    started = {_key(_status(run), "start_time", "startTime") for run in runs}
    if rolling_status:
        latest = rolling_status.get("properties", rolling_status)
        if _key(_status(latest), "start_time", "startTime") not in started:
            runs.append(latest)
    per_batch: list[float] = []
    batch = max(1, math.floor(capacity * max_batch_percent / 100))
    for run in runs:
        status = _status(run)
        progress = run.get("progress") or {}
        done = int(_key(progress, "successful_instance_count", "successfulInstanceCount") or 0)
        failed = int(_key(progress, "failed_instance_count", "failedInstanceCount") or 0)
        figures.finished += done + failed
        figures.failed += failed
        start = _key(status, "start_time", "startTime")
        end = _key(status, "end_time", "endTime")
        if not start or not end or done + failed == 0:
            figures.notes.append(
                f"# Azure: a rolling upgrade ({_key(status, 'code', 'code') or 'unknown'}) of "
                f"{done + failed} instances with no end time: counted, not timed"
            )
            continue
        seconds = (_when(end) - _when(start)).total_seconds()
        batches = math.ceil((done + failed) / batch)
        per_batch.append(max(1.0, seconds / batches - pause))
        figures.notes.append(
            f"# Azure: a rolling upgrade of {done + failed} instances took {seconds:.0f}s "
            f"in {batches} batches of up to {batch}"
        )
    if per_batch:
        figures.seconds = sum(per_batch) / len(per_batch)
    return figures


def _status(run: Mapping[str, Any]) -> Mapping[str, Any]:
    status = _key(run, "running_status", "runningStatus")
    return status if isinstance(status, Mapping) else {}


def _key(data: Mapping[str, Any], snake: str, camel: str) -> Any:
    """A field of an SDK model's ``as_dict()`` (attribute or REST names)."""
    return data.get(snake, data.get(camel))


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def calibrated_scenario(
    history: History,
    *,
    name: str,
    instances: Sequence[Instance],
    upgrade_policy: str,
    scale_set_id: str,
    azure: AzureFigures | None = None,
    base: Scenario | None = None,
) -> tuple[str, Scenario]:
    """The scenario TOML (with comments) fitted from ``history`` on the live
    ``instances``' topology, and the scenario it loads as."""
    base = base or default_scenario()
    lines = [
        f"# Calibrated by `vmss-rollout calibrate` for {scale_set_id}",
        f"# from {len(history.rollouts)} journaled rollout(s): "
        + (", ".join(history.rollouts) or "none"),
        "# Times are interval-censored: an instance is seen only at a poll, so each",
        "# observation lies between the previous poll and the poll that saw it.",
        *(f"#   {note}" for note in history.poll_notes),
    ]
    changes: dict[str, Any] = {"name": f"calibrated-{name}", **_topology(instances)}
    changes["upgrade_policy"] = upgrade_policy
    timing: list[str] = []
    if history.upgrade:
        upgrade_fit = fit(history.upgrade)
        changes["upgrade"] = upgrade_fit.chosen
        timing += upgrade_fit.comment("upgrade time")
    elif azure is not None and azure.seconds is not None:
        changes["upgrade"] = Fixed(round(azure.seconds, 1))
        timing += [
            "# upgrade time: no journaled history; Azure's own coarse figure (osUpgradeHistory:",
            "# duration per batch), a fixed time per instance",
        ]
    else:
        timing.append(f"# upgrade time: no history at all; the default {base.upgrade}")
    if not history.upgrade and azure is not None:
        timing += azure.notes
    if history.health_delay:
        health_fit = fit(history.health_delay)
        changes["health_delay"] = health_fit.chosen
        timing += health_fit.comment("health delay")
    else:
        timing.append(f"# health delay: no history; the default {base.health_delay}")
    provisioned = history.provisioned
    changes["upgrade_failure"] = round(_rate(history.failed, history.finished), 6)
    if not history.finished and azure is not None and azure.finished:
        changes["upgrade_failure"] = round(_rate(azure.failed, azure.finished), 6)
        timing.append(
            f"# upgrade failure from Azure's records: {azure.failed} of {azure.finished} "
            "instances failed (rolling upgrade progress)"
        )
    changes["unhealthy_after_upgrade"] = round(
        _rate(history.unhealthy + history.never_healthy, provisioned), 6
    )
    faults = [
        f"# upgrade failure: {history.failed} of {history.finished} finished upgrades failed",
        f"# unhealthy after upgrade: {history.unhealthy} reported unhealthy and "
        f"{history.never_healthy} never healthy (health timeout) of {provisioned} provisioned",
    ]
    scenario = replace(base, **changes)
    text = "\n".join([*lines, *timing, *faults, "", scenario.to_toml()])
    return text, load_scenario_text(text, "calibrated scenario")


# --------------------------------------------------------------------------- synthetic history


def simulated_history(
    journal: Journal,
    scenario: Scenario,
    strategy: str,
    *,
    rollouts: int,
    seed: int,
    scale_set_id: str,
    poll_interval: tuple[float, float] = DEFAULT_POLL,
    options: EngineOptions | None = None,
    start: float = 1.7e9,
) -> list[str]:
    """Journal ``rollouts`` rollouts of ``strategy`` on the simulated scale set
    of ``scenario``, driven as ``backends/realtime.py`` drives Azure: a poll,
    then a wait of MIN after a change or an action, doubling to MAX, shortened
    to the engine's next deadline (``sim/runner.py``'s polled driver, with the
    scenario's request latency and page size). Returns the rollout ids."""
    from ..engine.rollout import Rollout
    from ..sim.runner import build, derive_seed, simulate_rollout
    from ..sim.scaleset import CURRENT_MODEL, TARGET_MODEL
    from ..strategies.registry import make

    opts = options or scenario.engine
    ids = []
    wall = start
    for n in range(rollouts):
        env, scale_set = build(scenario, derive_seed(seed, n))
        _, instances = scale_set.read()
        poll = f"{poll_interval[0]:g}:{poll_interval[1]:g}"
        mapping = {**opts.to_mapping(), "poll_interval": poll}
        record = journal.start(
            scale_set_id=scale_set_id,
            previous_model={"image": {"version": "1.0.0"}},
            target_model={"image": {"version": "2.0.0"}},
            strategy=strategy,
            options=mapping,
            now=wall,
        )
        base = wall

        def on_event(event: Any, rid: str = record.id, at: float = base) -> None:
            journal.record_event(rid, event, at + event.time)

        rollout = Rollout(
            CURRENT_MODEL, TARGET_MODEL, instances, make(strategy), opts, listener=on_event
        )
        # the simulator's polled driver: backends/realtime.py's loop in simulated time
        simulate_rollout(
            env,
            rollout,
            scale_set,
            poll=poll_interval,
            latency=scenario.request_latency,
            page_size=scenario.page_size,
        )
        outcome = rollout.outcome()
        state = "halted" if outcome.halted else "completed"
        journal.finish(record.id, state, outcome.reason, base + env.now)
        ids.append(record.id)
        wall = base + env.now + 3600
    return ids
