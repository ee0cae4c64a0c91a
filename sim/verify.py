"""Property-based verification of one strategy: search random fleets and
faults for a rollout that breaks the strategy's guarantee, does not complete,
or misses a serving SLO; return the smallest counterexample as a scenario file.

Needs Hypothesis (``pip install vmss-rollout[verify]``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import hypothesis
import hypothesis.errors
from hypothesis import HealthCheck, Phase, Verbosity, given, settings

from ..engine.errors import InputError
from ..engine.options import Amount
from ..strategies.registry import make
from .scenario import Scenario
from .testing import check_rollout, fault_scenarios, fleets, guarantee_for, has_faults

__all__ = ["MAX_EXAMPLES", "MAX_INSTANCES", "VerifyReport", "default_min_instances", "verify"]


@dataclass(frozen=True)
class VerifyReport:
    #: no counterexample was found (and the property could be checked)
    ok: bool
    #: test cases run (on failure including the ones spent shrinking)
    examples: int
    #: one line: what was checked, or what the counterexample breaks
    message: str
    #: a scenario file that reproduces the counterexample with
    #: ``vmss-rollout simulate FILE --runs 1`` (None when ok or infeasible)
    counterexample_toml: str | None
    #: the SLO cannot hold on any fleet drawn: the strategy's own guarantee lets
    #: more instances down than the SLO allows (``message`` says why)
    infeasible: bool = False
    #: examples skipped because the SLO was infeasible by construction on them
    skipped: int = 0
    #: the smallest fleet the examples were drawn from
    min_instances: int = 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


#: the largest fleet the examples draw (:func:`~.testing.fleets`)
MAX_INSTANCES = 500
#: the most examples one search runs (100 take seconds; this takes hours)
MAX_EXAMPLES = 100_000


def default_min_instances(
    required: Amount | None, max_outage: float | None, least_down: int = 1
) -> int | None:
    """The smallest fleet on which a rollout that takes ``least_down`` instances
    down at a time (1 in place, 0 for surge) can keep the SLO: ``n - least_down
    >= required(n)`` serving, and at least one serving when an outage is
    bounded. 1 without an SLO; None when no fleet up to :data:`MAX_INSTANCES` can."""
    for n in range(1, MAX_INSTANCES + 1):
        want = 0 if required is None else required.of(n, minimum=0)
        if max_outage is not None:
            want = max(want, 1)
        if n - least_down >= want:
            return n
    return None


def verify(
    strategy: str,
    *,
    min_serving: Amount | None = None,
    max_outage: float | None = None,
    examples: int = 100,
    seed: int | None = None,
    min_instances: int | None = None,
) -> VerifyReport:
    """Check ``strategy`` over ``examples`` random fleets, with and without faults.

    Each example is one simulated rollout (:func:`~vmss_rollout.sim.testing.check_rollout`):
    in-scope instances down at once stay within the strategy's guarantee; without
    faults the rollout completes with everything on the target; with faults it
    completes or halts at a safety gate; serving never drops below
    ``min_serving`` (a count, or a percentage of the fleet; checked on fault-free
    examples, since a failed upgrade takes an instance down whatever the
    strategy) and nothing serves for at most ``max_outage`` seconds.

    Fleets have ``min_instances`` instances or more (default:
    :func:`default_min_instances`, the smallest fleet where the SLO is
    achievable at all). An example where the strategy's own guarantee lets more
    instances down than the SLO allows is infeasible by construction: it is
    skipped and counted, and when no example is feasible the report says so
    (``infeasible``) instead of printing a counterexample.

    Without ``seed`` the search is derandomized (the same answer every time);
    with one, ``seed`` picks the examples. Raises :class:`InputError` for an
    invalid spec or argument before searching.
    """
    chosen = make(strategy)  # an invalid spec is the caller's error, not a counterexample
    required = (
        None if min_serving is None else Amount.parse(min_serving, "min_serving", allow_zero=True)
    )
    if not 1 <= examples <= MAX_EXAMPLES:
        raise InputError(
            f"examples: expected a whole number from 1 to {MAX_EXAMPLES:,}, got {examples!r}"
        )
    if max_outage is not None and not max_outage >= 0:
        raise InputError(f"max_outage: expected seconds >= 0, got {max_outage!r}")
    least_down = 0 if chosen.replaces else 1  # an in-place rollout takes one down at least
    slo = []
    if required is not None:
        slo.append(f"serving >= {required} without faults")
    if max_outage is not None:
        slo.append(f"outage <= {max_outage:g}s")
    feasible_from = default_min_instances(required, max_outage, least_down)
    if feasible_from is None:
        return VerifyReport(
            False,
            0,
            f"{strategy}: the SLO ({', '.join(slo)}) is infeasible by construction: an "
            f"in-place rollout has at least {least_down} instance down at a time, so no scale "
            f"set of 1-{MAX_INSTANCES} instances can keep it (surge, which adds instances "
            "first, can)",
            None,
            infeasible=True,
        )
    smallest = feasible_from if min_instances is None else min_instances
    if not 1 <= smallest <= MAX_INSTANCES:
        raise InputError(
            f"min_instances: expected a whole number from 1 to {MAX_INSTANCES}, got {smallest!r}"
        )

    runs = 0
    skipped = 0
    skipped_example = ""
    failure: tuple[Scenario, str] | None = None
    by_construction = False
    slo_checked = 0

    def slo_count(scenario: Scenario) -> int | None:
        if required is None or has_faults(scenario):
            return None
        return required.of(scenario.instances, minimum=0)

    def needed(scenario: Scenario) -> int:
        """Instances that must serve at every moment under the SLO."""
        count = slo_count(scenario) or 0
        return max(count, 1) if max_outage is not None else count

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=seed is None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        report_multiple_bugs=False,
        # no explain phase: the shrunk example is the last one run
        phases=(Phase.explicit, Phase.generate, Phase.target, Phase.shrink),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    @given(fleets(min_instances=smallest) | fault_scenarios(min_instances=smallest))
    def search(scenario: Scenario) -> None:
        nonlocal runs, failure, skipped, skipped_example, by_construction, slo_checked
        n, want = scenario.instances, needed(scenario)
        if n - least_down < want:  # no rollout of this kind could keep the SLO here
            skipped += 1
            skipped_example = skipped_example or (
                f"{n} instances, {want} must serve while at least {least_down} is down"
            )
            hypothesis.assume(False)
        runs += 1
        down = guarantee_for(scenario, chosen)
        if n - down < want:  # the strategy's own guarantee allows the violation
            failure = (
                scenario,
                f"{strategy}: the SLO is infeasible by construction on {n} instances: the "
                f"strategy may take {down} down at once ({chosen.guarantee()}), leaving "
                f"{n - down}, but {want} must serve",
            )
            by_construction = True
            raise AssertionError(failure[1])
        by_construction = False
        slo_checked += want > 0
        try:
            check_rollout(
                scenario, strategy, min_serving=slo_count(scenario), max_outage=max_outage
            )
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
    except hypothesis.errors.Unsatisfiable:
        failure = None
    except Exception:
        if failure is None:  # hypothesis itself failed (a health check, say)
            raise
    if failure is None and slo and slo_checked == 0:
        return VerifyReport(
            False,
            0,
            f"{strategy}: the SLO ({', '.join(slo)}) is infeasible by construction on every "
            f"fleet tried ({skipped} examples from {smallest} instances), e.g. "
            f"{skipped_example}; raise --min-instances or lower the SLO",
            None,
            infeasible=True,
            skipped=skipped,
            min_instances=smallest,
        )
    if failure is None:
        checks = "guarantee, completion" + (
            f", SLO ({', '.join(slo)}; on {slo_checked} fault-free examples)" if slo else ""
        )
        note = f"; {skipped} examples skipped ({skipped_example})" if skipped else ""
        return VerifyReport(
            True,
            runs,
            f"{strategy}: {runs} examples of {smallest}-{MAX_INSTANCES} instances passed: "
            f"{checks}{note}",
            None,
            skipped=skipped,
            min_instances=smallest,
        )
    scenario, message = failure
    if by_construction:  # the shrunk example: the smallest fleet where it cannot hold
        return VerifyReport(
            False,
            runs,
            f"{message}; a strategy that takes fewer instances down at once (a percentage, "
            "or surge), a larger scale set or a lower SLO would",
            None,
            infeasible=True,
            skipped=skipped,
            min_instances=smallest,
        )
    reproducer = dataclasses.replace(scenario, strategy=strategy, runs=1)
    if required is not None and (required.percent or required.value <= scenario.instances):
        # so `simulate` reports "degraded" against the SLO that was broken
        reproducer = dataclasses.replace(reproducer, required=required)
    toml = (
        f"# vmss-rollout verify counterexample: {message}\n"
        "# reproduce: vmss-rollout simulate --scenario THIS_FILE --runs 1\n" + reproducer.to_toml()
    )
    return VerifyReport(False, runs, message, toml, skipped=skipped, min_instances=smallest)
