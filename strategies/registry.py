"""Strategy discovery (entry-point group ``vmss_rollout.strategies``) and spec
parsing (``NAME[:key=value[,key=value...]]``).

Built-ins register through the same entry-point group as third-party plugins.
Set ``VMSS_ROLLOUT_DISABLE_PLUGIN_AUTOLOAD=1`` to load only the strategies that
vmss-rollout itself ships (the test suite does, like pytest's
``PYTEST_DISABLE_PLUGIN_AUTOLOAD``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from ..engine.errors import InputError, StrategyLoadError
from .base import InstanceInfo, Strategy

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from ..engine.model import Instance, ModelVersion
    from ..engine.options import Scope

GROUP = "vmss_rollout.strategies"
DISABLE_ENV = "VMSS_ROLLOUT_DISABLE_PLUGIN_AUTOLOAD"
OWN_DISTRIBUTION = "vmss-rollout"


def _is_own(ep: EntryPoint) -> bool:
    dist = ep.dist
    name = dist.metadata["Name"] if dist is not None else ""
    return str(name).replace("_", "-").lower() == OWN_DISTRIBUTION


@cache
def _entry_points(autoload: bool) -> dict[str, EntryPoint]:
    # imported here: importlib.metadata costs about 15 ms, which ``--help`` does not need
    from importlib.metadata import entry_points

    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if not autoload and not _is_own(ep):
            continue
        # our own registration wins a name clash, so a plugin cannot shadow a built-in
        if ep.name in found and _is_own(found[ep.name]):
            continue
        found[ep.name] = ep
    return found


def available() -> dict[str, EntryPoint]:
    """Installed strategies by name."""
    return dict(sorted(_entry_points(not os.environ.get(DISABLE_ENV)).items()))


def load(name: str) -> Any:
    """The strategy class registered as ``name``."""
    eps = _entry_points(not os.environ.get(DISABLE_ENV))
    ep = eps.get(name)
    if ep is None:
        raise StrategyLoadError(
            f"unknown strategy {name!r} (installed: {', '.join(sorted(eps)) or 'none'})"
        )
    return _load(ep)


@cache
def _load(ep: EntryPoint) -> Any:
    """The class behind ``ep``, loaded once: ``make`` runs for every simulated run,
    and reading the distribution's metadata costs more than a small rollout.
    A failure is not cached (it raises again, with the same message)."""
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plugin must not take the CLI down with a traceback
        raise StrategyLoadError(
            f"strategy {ep.name!r} failed to load ({_where(ep)}): {exc}"
        ) from None
    if not hasattr(cls, "from_params") or not callable(cls.from_params):
        raise StrategyLoadError(
            f"strategy {ep.name!r} ({_where(ep)}) has no from_params(params) classmethod"
        )
    return cls


def _where(ep: EntryPoint) -> str:
    where = f"entry point {ep.name} = {ep.value}"
    if ep.dist is not None:
        where += f" in package {ep.dist.metadata['Name']}"
    return where


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME:key=value,key=value`` into the name and raw parameters."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise StrategyLoadError(f"strategy spec {spec!r}: missing strategy name")
    params: dict[str, str] = {}
    for part in (p.strip() for p in rest.split(",")) if rest.strip() else ():
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise StrategyLoadError(f"strategy spec {spec!r}: expected key=value, got {part!r}")
        if key.strip() in params:
            raise StrategyLoadError(f"strategy spec {spec!r}: {key.strip()!r} given twice")
        params[key.strip()] = value.strip()
    return name, params


def make(spec: str) -> Strategy:
    """Build a configured strategy from a spec such as ``batch:size=5``."""
    name, params = parse_spec(spec)
    cls = load(name)
    strategy = cls.from_params(params)
    if not isinstance(strategy, Strategy):
        raise StrategyLoadError(f"strategy {name!r} does not implement the Strategy protocol")
    return strategy


#: the domain kinds a strategy's ``order`` parameter lists
_ORDERED_KINDS = {
    "update_domain": "update domains",
    "fault_domain": "fault domains",
    "zone": "zones",
}


def check_for_scope(strategy: Strategy, scope: Sequence[InstanceInfo]) -> None:
    """The strategy's parameters against the instances it would roll out, before
    anything runs or changes: a fixed batch larger than the scope
    (``check_scope_size``, a strategy's optional hook) and an explicit ``order``
    naming domains the scope does not have (``update-domain:order=x/y``) are typos."""
    if not scope:
        return
    check = getattr(strategy, "check_scope_size", None)
    if callable(check):
        check(len(scope))
    order = getattr(strategy, "order", None)
    kind = getattr(strategy, "domain_kind", None)
    if not isinstance(order, str) or kind not in _ORDERED_KINDS:
        return
    text = order.strip().lower()
    if text in ("asc", "desc"):
        return
    listed = [p.strip() for p in order.replace(";", "/").split("/") if p.strip()]
    present = {str(i.domain(kind)) for i in scope}
    missing = [item for item in listed if item not in present]
    if missing:
        have = ", ".join(sorted(present, key=lambda v: (len(v), v)))
        raise InputError(
            f"{strategy.name}:order: {', '.join(missing)} not among the {_ORDERED_KINDS[kind]} "
            f"in scope ({have}); expected asc, desc or a list of them such as 2/0/1"
        )


def validate(
    spec: str,
    instances: Sequence[Instance],
    scope: Scope,
    target: ModelVersion | None = None,
) -> Strategy:
    """The one check of a strategy spec against a fleet, shared by ``simulate``,
    ``compare``, ``plan`` and ``upgrade``: the spec parses, the scope filters
    match instances, and the parameters fit the instances in scope (those not
    already on ``target``). Raises :class:`InputError`; returns the strategy."""
    from ..engine.rollout import check_scope  # the engine imports this package

    strategy = make(spec)
    check_scope(scope, instances)
    check_for_scope(strategy, in_scope(instances, scope, target))
    return strategy


def in_scope(
    instances: Sequence[Instance], scope: Scope, target: ModelVersion | None = None
) -> list[InstanceInfo]:
    """What a strategy knows of the instances a rollout to ``target`` covers."""
    from ..engine.rollout import runs

    return [
        InstanceInfo(i.instance_id, i.update_domain, i.fault_domain, i.zone, i.serving)
        for i in instances
        if scope.covers(i.instance_id, i.update_domain, i.fault_domain, i.zone)
        and (target is None or not runs(i, target))
    ]


_SHORT_KINDS = {"update_domain": "UDs", "fault_domain": "FDs", "zone": "zones"}


def resolved_spec(strategy: Strategy, scope: Sequence[InstanceInfo], fleet_size: int) -> str:
    """What the strategy does on this scope, for tables: its spec with scope-dependent
    defaults worked out (``batch:size=4``), and for domain strategies how many waves
    of how many instances (``update-domain (5 UDs, <=4 at once)``)."""
    resolved = getattr(strategy, "resolved", None)
    text = str(resolved(len(scope))) if callable(resolved) else strategy.spec()
    kind = strategy.domain_kind
    if kind is not None and kind != "healthy" and scope:
        domains = len({i.domain(kind) for i in scope})
        label = _SHORT_KINDS.get(kind, "zone UDs")
        text += f" ({domains} {label}, <={strategy.max_down(scope, fleet_size)} at once)"
    return text


def describe() -> list[dict[str, Any]]:
    """Every installed strategy with its summary, guarantee and parameters."""
    out = []
    for name in available():
        cls = load(name)
        default = cls.from_params({})
        params: list[tuple[str, str, str]] = cls.parameters() if hasattr(cls, "parameters") else []
        out.append(
            {
                "name": name,
                "summary": getattr(cls, "summary", ""),
                "guarantee": default.guarantee(),
                "parameters": [{"name": n, "default": d, "help": h} for n, d, h in params],
            }
        )
    return out


def builtin_names() -> Mapping[str, EntryPoint]:
    return {n: ep for n, ep in available().items() if _is_own(ep)}
