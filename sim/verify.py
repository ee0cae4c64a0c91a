"""Property-based verification of one strategy: search random fleets and
faults for a rollout that breaks the strategy's guarantee, does not complete,
or misses a serving SLO; return the smallest counterexample as a scenario file.

Needs Hypothesis (``pip install vmss-rollout[verify]``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import hypothesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings

from ..engine.errors import InputError
from ..engine.options import Amount
from ..strategies.registry import make
from .scenario import Scenario
from .testing import check_rollout, fault_scenarios, fleets

__all__ = ["VerifyReport", "verify"]


@dataclass(frozen=True)
class VerifyReport:
    #: no counterexample was found
    ok: bool
    #: test cases run (on failure including the ones spent shrinking)
    examples: int
    #: one line: what was checked, or what the counterexample breaks
    message: str
    #: a scenario file that reproduces the counterexample with
    #: ``vmss-rollout simulate FILE --runs 1`` (None when ok)
    counterexample_toml: str | None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def verify(
    strategy: str,
    *,
    min_serving: Amount | None = None,
    max_outage: float | None = None,
    examples: int = 100,
    seed: int | None = None,
) -> VerifyReport:
    """Check ``strategy`` over ``examples`` random fleets, with and without faults.

    Each example is one simulated rollout (:func:`~vmss_rollout.sim.testing.check_rollout`):
    in-scope instances down at once stay within the strategy's guarantee; without
    faults the rollout completes with everything on the target; with faults it
    completes or halts at a safety gate; serving never drops below
    ``min_serving`` (a count, or a percentage of the fleet) and nothing serves
    for at most ``max_outage`` seconds.

    Without ``seed`` the search is derandomized (the same answer every time);
    with one, ``seed`` picks the examples. Raises :class:`InputError` for an
    invalid spec or argument before searching.
    """
    make(strategy)  # an invalid spec is the caller's error, not a counterexample
    required = (
        None if min_serving is None else Amount.parse(min_serving, "min_serving", allow_zero=True)
    )
    if examples < 1:
        raise InputError(f"examples: expected a whole number >= 1, got {examples!r}")
    if max_outage is not None and not max_outage >= 0:
        raise InputError(f"max_outage: expected seconds >= 0, got {max_outage!r}")

    runs = 0
    failure: tuple[Scenario, str] | None = None

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=seed is None,
        suppress_health_check=[HealthCheck.too_slow],
        report_multiple_bugs=False,
        # no explain phase: the shrunk example is the last one run
        phases=(Phase.explicit, Phase.generate, Phase.target, Phase.shrink),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    @given(fleets() | fault_scenarios())
    def search(scenario: Scenario) -> None:
        nonlocal runs, failure
        runs += 1
        count = None if required is None else required.of(scenario.instances, minimum=0)
        try:
            check_rollout(scenario, strategy, min_serving=count, max_outage=max_outage)
        except AssertionError as exc:
            failure = (scenario, _one_line(str(exc)))
            raise
        except Exception as exc:
            crash = f"{type(exc).__name__}: {_one_line(str(exc))}"
            failure = (scenario, f"{strategy}: crashed: {crash}")
            raise

    if seed is not None:
        search = hypothesis.seed(seed)(search)
    try:
        search()
    except Exception:
        if failure is None:  # hypothesis itself failed (a health check, say)
            raise
    if failure is None:
        slo = []
        if required is not None:
            slo.append(f"serving >= {required}")
        if max_outage is not None:
            slo.append(f"outage <= {max_outage:g}s")
        checks = "guarantee, completion" + (f", SLO ({', '.join(slo)})" if slo else "")
        return VerifyReport(True, runs, f"{strategy}: {runs} examples passed: {checks}", None)
    scenario, message = failure
    reproducer = dataclasses.replace(scenario, strategy=strategy, runs=1)
    if required is not None and (required.percent or required.value <= scenario.instances):
        # so `simulate` reports "degraded" against the SLO that was broken
        reproducer = dataclasses.replace(reproducer, required=required)
    toml = (
        f"# vmss-rollout verify counterexample: {message}\n"
        "# reproduce: vmss-rollout simulate THIS_FILE --runs 1\n" + reproducer.to_toml()
    )
    return VerifyReport(False, runs, message, toml)
