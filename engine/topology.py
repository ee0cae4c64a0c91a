"""Waves the scale set's topology cannot give, refused before anything runs.

One check for every caller: ``upgrade``, ``plan`` and ``instances`` against a
live scale set, and ``simulate``/``compare``/``sweep`` against a scenario, so a
dry run refuses exactly what the real rollout would.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import InputError
from .options import Scope


def check_domains(
    subject: str,
    *,
    flexible: bool,
    fault_domain_count: int | None,
    strategy: str,
    scope: Scope,
    option: Callable[[str], str],
) -> None:
    """Refuse what the topology of ``subject`` (``scale set NAME`` or
    ``scenario NAME``) cannot give; ``strategy`` is a strategy's name ("" for
    none) and ``option(field)`` names the scope filter ``field``
    (``update_domains``...) as the caller's user wrote it.

    * Flexible orchestration: its members report no update domain ("The API
      responses don't include fault domain or update domain information":
      Microsoft docs, virtual-machine-scale-sets-manage-fault-domains), so
      update-domain waves and an update-domain scope are refused.
    * One fault domain (``platformFaultDomainCount`` 1, max spreading, the
      default of zonal sets): every instance reports fault domain 0 ("you only
      see one fault domain. This is expected behavior": same page), so one
      "fault domain" wave would be every instance at once.
    """
    refusals = []
    if flexible:
        refusals.append(
            (
                "update-domain",
                "update_domains",
                "uses Flexible orchestration, whose VMs have no update domains; use "
                "fault-domain, zone, batch or one-at-a-time waves",
            )
        )
    if fault_domain_count == 1:
        refusals.append(
            (
                "fault-domain",
                "fault_domains",
                "has one fault domain (platformFaultDomainCount 1, max spreading: every "
                "instance reports fault domain 0); use update-domain, zone or batch waves",
            )
        )
    for name, field, reason in refusals:
        what = [f"the {name} strategy"] if strategy == name else []
        if getattr(scope, field) is not None:
            what.append(option(field))
        if what:
            raise InputError(f"{' and '.join(what)}: {subject} {reason}")


def flag(field: str) -> str:
    """A scope filter as the operator commands spell it: ``--only-update-domains``."""
    return "--only-" + field.replace("_", "-")
