"""Per-instance duration distributions (how long an upgrade or a health probe takes).

Every distribution samples seconds from a caller-supplied :class:`random.Random`
using only its stdlib methods, so one seed reproduces a simulation bit for bit
on every platform. ``str(d)`` is a canonical spec that :func:`parse_distribution`
reads back to an equal object, which is how scenarios are written to TOML.
"""

from __future__ import annotations

import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from ..engine.errors import InputError
from ..engine.options import format_duration, parse_duration

__all__ = [
    "Distribution",
    "Exponential",
    "Fixed",
    "LogNormal",
    "Uniform",
    "duration_text",
    "parse_distribution",
]

_VALID_FORMS = (
    "valid forms: a duration (90, 90s, 5m, 1h), fixed(D), uniform(A, B), "
    "exponential(mean=D), lognormal(mean=D, sd=D)"
)


def duration_text(seconds: float) -> str:
    """``seconds`` as :func:`format_duration` writes it when that reads back exactly.

    ``format_duration`` rounds fractions to 6 significant digits (and writes
    ``1e+06s`` for big ones, which ``parse_duration`` rejects), so fall back to
    the exact ``repr`` of the number (a plain number of seconds) in that case.
    """
    text = format_duration(seconds)
    try:
        if parse_duration(text) == seconds:
            return text
    except InputError:
        pass
    return repr(float(seconds))


def _check_duration(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite duration >= 0, got {value!r}")


class Distribution(ABC):
    """A distribution of non-negative durations in seconds."""

    @abstractmethod
    def sample(self, rng: random.Random) -> float:
        """One duration in seconds (>= 0), deterministic given ``rng``'s state."""

    @abstractmethod
    def mean(self) -> float:
        """The expected duration in seconds."""

    @abstractmethod
    def __str__(self) -> str:
        """The canonical spec, e.g. ``lognormal(mean=4m, sd=1m)``."""


@dataclass(frozen=True)
class Fixed(Distribution):
    """Always ``seconds``."""

    seconds: float

    def __post_init__(self) -> None:
        _check_duration("fixed duration", self.seconds)

    def sample(self, rng: random.Random) -> float:
        """``seconds``; does not consume randomness."""
        return float(self.seconds)

    def mean(self) -> float:
        """``seconds``."""
        return float(self.seconds)

    def __str__(self) -> str:
        return f"fixed({duration_text(self.seconds)})"


@dataclass(frozen=True)
class Uniform(Distribution):
    """Uniform between ``low`` and ``high`` seconds (``low <= high``)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_duration("uniform low", self.low)
        _check_duration("uniform high", self.high)
        if self.low > self.high:
            raise ValueError(
                f"uniform low must be <= high, got {duration_text(self.low)} > "
                f"{duration_text(self.high)}"
            )

    def sample(self, rng: random.Random) -> float:
        """``rng.uniform(low, high)``."""
        return rng.uniform(self.low, self.high)

    def mean(self) -> float:
        """``(low + high) / 2``."""
        return (self.low + self.high) / 2

    def __str__(self) -> str:
        return f"uniform({duration_text(self.low)}, {duration_text(self.high)})"


@dataclass(frozen=True)
class Exponential(Distribution):
    """Exponential with mean ``mean_s`` seconds (> 0)."""

    mean_s: float

    def __post_init__(self) -> None:
        _check_duration("exponential mean", self.mean_s)
        if self.mean_s <= 0:
            raise ValueError(f"exponential mean must be > 0, got {self.mean_s!r}")

    def sample(self, rng: random.Random) -> float:
        """``rng.expovariate(1 / mean)``."""
        return rng.expovariate(1.0 / self.mean_s)

    def mean(self) -> float:
        """``mean_s``."""
        return float(self.mean_s)

    def __str__(self) -> str:
        return f"exponential(mean={duration_text(self.mean_s)})"


@dataclass(frozen=True)
class LogNormal(Distribution):
    """Log-normal given by its own mean and standard deviation in seconds.

    Users think in "about 4 minutes, give or take 1", not in the parameters of
    the underlying normal, so those are derived: ``sigma^2 = ln(1 + sd^2/mean^2)``
    and ``mu = ln(mean) - sigma^2 / 2``. ``sd = 0`` means always ``mean``.
    """

    mean_s: float
    sd_s: float

    def __post_init__(self) -> None:
        _check_duration("lognormal mean", self.mean_s)
        _check_duration("lognormal sd", self.sd_s)
        if self.mean_s <= 0:
            raise ValueError(f"lognormal mean must be > 0, got {self.mean_s!r}")

    def sample(self, rng: random.Random) -> float:
        """``rng.lognormvariate(mu, sigma)``; exactly ``mean`` when ``sd`` is 0."""
        if self.sd_s == 0:
            # exp(log(mean)) need not equal mean exactly; skip the round trip.
            return float(self.mean_s)
        sigma2 = math.log1p((self.sd_s / self.mean_s) ** 2)
        mu = math.log(self.mean_s) - sigma2 / 2
        return rng.lognormvariate(mu, math.sqrt(sigma2))

    def mean(self) -> float:
        """``mean_s``."""
        return float(self.mean_s)

    def __str__(self) -> str:
        return f"lognormal(mean={duration_text(self.mean_s)}, sd={duration_text(self.sd_s)})"


# name -> (parameter names in positional order, constructor)
_FORMS: dict[str, tuple[tuple[str, ...], Callable[..., Distribution]]] = {
    "fixed": (("seconds",), Fixed),
    "uniform": (("low", "high"), Uniform),
    "exponential": (("mean",), Exponential),
    "lognormal": (("mean", "sd"), LogNormal),
}

_CALL_RE = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.DOTALL)


def _parse_call(text: str) -> Distribution:
    """Parse ``name(arg, name=arg)``; raises ValueError with a detail message."""
    match = _CALL_RE.match(text.lower())
    if match is None:
        raise ValueError(f"not a duration or a distribution: {text!r}")
    name, body = match.groups()
    if name not in _FORMS:
        raise ValueError(f"unknown distribution {name!r}")
    params, build = _FORMS[name]
    args: dict[str, float] = {}
    raw_args = [a.strip() for a in body.split(",")] if body.strip() else []
    named = False
    for position, raw in enumerate(raw_args):
        param, eq, value = raw.partition("=")
        if eq:
            named = True
            param = param.strip()
            if param not in params:
                raise ValueError(f"{name}() has no parameter {param!r}")
        elif named:
            raise ValueError(f"{name}(): positional argument after a named one")
        elif position < len(params):
            param, value = params[position], raw
        else:
            raise ValueError(f"{name}() takes {len(params)} argument(s), got {len(raw_args)}")
        if param in args:
            raise ValueError(f"{name}(): {param} given twice")
        args[param] = parse_duration(value, f"{name} {param}")
    missing = [p for p in params if p not in args]
    if missing:
        raise ValueError(f"{name}() is missing {', '.join(missing)}")
    return build(*(args[p] for p in params))


def parse_distribution(text: object, key: str) -> Distribution:
    """Parse a distribution spec: ``fixed(D)``, ``uniform(A, B)``,
    ``exponential(mean=D)`` (or ``exponential(D)``), ``lognormal(mean=D, sd=D)``,
    or a bare duration (``90``, ``"90s"``, ``"5m"``) meaning fixed.

    A :class:`Distribution` is returned unchanged. Any problem raises a one-line
    :class:`InputError` starting with ``f"{key}: "`` that lists the valid forms.
    """
    if isinstance(text, Distribution):
        return text
    try:
        if isinstance(text, bool) or not isinstance(text, int | float | str):
            raise ValueError(f"expected a string or a number, got {text!r}")
        if isinstance(text, str) and "(" in text:
            return _parse_call(text)
        value = text.lower() if isinstance(text, str) else text
        return Fixed(parse_duration(value, "_"))
    except ValueError as exc:  # includes InputError from parse_duration
        # One line, without the placeholder key of a bare duration's error.
        detail = " ".join(str(exc).removeprefix("_: ").split())
        raise InputError(f"{key}: {detail} ({_VALID_FORMS})") from None
