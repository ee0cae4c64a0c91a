"""Test-suite setup: only the built-in strategies, and Hypothesis profiles.

* ``quick`` (default): few examples, for a fast local loop.
* ``thorough``: selected when ``CI=true``; more examples, still deterministic.

``HYPOTHESIS_PROFILE=thorough`` (or ``quick``) overrides the choice;
``HYPOTHESIS_PROFILE=explore`` draws 2000 new random examples per property.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Load only the strategies vmss-rollout ships, whatever else is installed
# (set before any test imports the registry).
os.environ["VMSS_ROLLOUT_DISABLE_PLUGIN_AUTOLOAD"] = "1"

_COMMON = {
    "deadline": None,
    "derandomize": True,  # the same examples on every run: no flaky CI
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow],
}
settings.register_profile("quick", max_examples=25, **_COMMON)
settings.register_profile("thorough", max_examples=400, **_COMMON)
# for hunting bugs by hand: new random examples each run (HYPOTHESIS_PROFILE=explore)
settings.register_profile("explore", max_examples=2000, **{**_COMMON, "derandomize": False})

_ci = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("thorough" if _ci else "quick"))
