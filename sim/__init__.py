"""The SimPy scale set, scenarios and the Monte Carlo runner."""

from .distributions import Distribution, parse_distribution
from .runner import RunResult, derive_seed, run_many, run_once, summarize
from .scaleset import CURRENT_MODEL, TARGET_MODEL, Monitor, SimScaleSet, placement
from .scenario import Scenario, default_scenario, load_scenario, load_scenario_text

__all__ = [
    "CURRENT_MODEL",
    "TARGET_MODEL",
    "Distribution",
    "Monitor",
    "RunResult",
    "Scenario",
    "SimScaleSet",
    "default_scenario",
    "derive_seed",
    "load_scenario",
    "load_scenario_text",
    "parse_distribution",
    "placement",
    "run_many",
    "run_once",
    "summarize",
]
