"""The one stream of events every rollout emits: decisions and state changes,
in order, with the time they happened. Timelines, the journal and live views
are all built from it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .model import ModelVersion


class EventKind(StrEnum):
    ROLLOUT_STARTED = "rollout_started"
    MODEL_UPDATE_REQUESTED = "model_update_requested"
    MODEL_UPDATED = "model_updated"
    WAVE_STARTED = "wave_started"
    SURGE_CREATED = "surge_created"
    INSTANCE_UPGRADED = "instance_upgraded"
    INSTANCE_HEALTHY = "instance_healthy"
    INSTANCE_UNHEALTHY = "instance_unhealthy"
    INSTANCE_FAILED = "instance_failed"
    INSTANCE_GONE = "instance_gone"
    INSTANCE_DELETE_REQUESTED = "instance_delete_requested"
    WAVE_COMPLETED = "wave_completed"
    CHECKPOINT = "checkpoint"
    HALTED = "halted"
    ROLLBACK_STARTED = "rollback_started"
    ROLLOUT_FINISHED = "rollout_finished"


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    kind: EventKind
    phase: str
    instances: tuple[str, ...] = ()
    wave: int | None = None
    detail: str = ""


# --- actions: what the engine asks a driver to do -------------------------------


@dataclass(frozen=True, slots=True)
class UpdateModel:
    """Change the scale set model (image or VM size) under the read etag."""

    model: ModelVersion


@dataclass(frozen=True, slots=True)
class StartUpgrade:
    """Bring these instances to the current model (manual upgrade)."""

    instance_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AddInstances:
    """Surge: create this many new instances on the current model."""

    count: int


@dataclass(frozen=True, slots=True)
class DeleteInstances:
    instance_ids: tuple[str, ...]


Action = UpdateModel | StartUpgrade | AddInstances | DeleteInstances
