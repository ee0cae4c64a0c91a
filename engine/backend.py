"""The one backend interface the SimPy scale set and the Azure backend both
implement, and the one function that carries the engine's actions out on it.

Drivers differ only in how they wait (a SimPy timeout, or sleep-and-poll); what
they do with an action is :func:`execute`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import BackendError
from .events import Action, AddInstances, DeleteInstances, StartUpgrade, UpdateModel
from .model import Instance, ModelVersion, ScaleSetModel
from .rollout import Rollout


@dataclass(slots=True)
class Observations:
    """What changed since the last poll."""

    changed: list[Instance] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


class Backend(Protocol):
    def read(self) -> tuple[ScaleSetModel, list[Instance]]:
        """The scale set (model, policy, etag) and every instance."""

    def update_model(self, model: ModelVersion, etag: str | None) -> str | None:
        """Change the model's image or VM size if the etag still matches;
        return the new etag. Raises :class:`ConcurrencyError` on a mismatch."""

    def start_upgrade(self, instance_ids: Sequence[str]) -> None:
        """Bring these instances to the current model (manual upgrade)."""

    def reimage(self, instance_ids: Sequence[str]) -> None:
        """Reimage these instances' OS disks."""

    def add_instances(self, count: int) -> None:
        """Create ``count`` new instances on the current model (surge)."""

    def delete_instances(self, instance_ids: Sequence[str]) -> None:
        """Delete these instances."""

    def poll(self) -> Observations:
        """Instances that changed and ids that disappeared since the last poll."""


def execute(
    rollout: Rollout,
    backend: Backend,
    actions: Sequence[Action],
    clock: Callable[[], float],
    etag: str | None = None,
) -> str | None:
    """Carry ``actions`` out in order; report model updates back to the
    rollout. Returns the etag after any model update."""
    for action in actions:
        if isinstance(action, UpdateModel):
            try:
                etag = backend.update_model(action.model, etag)
            except BackendError as exc:
                rollout.model_updated(clock(), error=str(exc))
                continue
            rollout.model_updated(clock())
        elif isinstance(action, StartUpgrade):
            backend.start_upgrade(action.instance_ids)
        elif isinstance(action, AddInstances):
            backend.add_instances(action.count)
        elif isinstance(action, DeleteInstances):
            backend.delete_instances(action.instance_ids)
    return etag
