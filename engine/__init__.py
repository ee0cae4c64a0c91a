"""The rollout engine: domain model, options, the sans-I/O rollout state
machine and the backend interface. Imports neither simpy, azure, time nor
asyncio: drivers own the clock and the I/O."""

from .backend import Backend, Observations, execute
from .errors import BackendError, ConcurrencyError, InputError, RolloutError, StrategyLoadError
from .events import (
    Action,
    AddInstances,
    DeleteInstances,
    Event,
    EventKind,
    StartUpgrade,
    UpdateModel,
)
from .model import (
    Health,
    ImageReference,
    Instance,
    ModelVersion,
    PowerState,
    ProvisioningState,
    RollingPolicy,
    ScaleSetModel,
    UpgradeMode,
)
from .options import Amount, EngineOptions, Scope, format_duration, parse_duration
from .rollout import Outcome, Phase, Rollout, Step

__all__ = [
    "Action",
    "AddInstances",
    "Amount",
    "Backend",
    "BackendError",
    "ConcurrencyError",
    "DeleteInstances",
    "EngineOptions",
    "Event",
    "EventKind",
    "Health",
    "ImageReference",
    "InputError",
    "Instance",
    "ModelVersion",
    "Observations",
    "Outcome",
    "Phase",
    "PowerState",
    "ProvisioningState",
    "RollingPolicy",
    "Rollout",
    "RolloutError",
    "ScaleSetModel",
    "Scope",
    "StartUpgrade",
    "Step",
    "StrategyLoadError",
    "UpdateModel",
    "UpgradeMode",
    "execute",
    "format_duration",
    "parse_duration",
]
