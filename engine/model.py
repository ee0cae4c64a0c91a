"""The domain model: a scale set's model (what new instances run) and its
instances (what each one runs now and how it is doing).

These are plain frozen records; backends build them from what they read
(simulated state or Azure's JSON) and the engine only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum


class UpgradeMode(StrEnum):
    """``upgradePolicy.mode``."""

    MANUAL = "Manual"
    AUTOMATIC = "Automatic"
    ROLLING = "Rolling"


class ProvisioningState(StrEnum):
    CREATING = "Creating"
    UPDATING = "Updating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"


class PowerState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    DEALLOCATED = "deallocated"
    STARTING = "starting"
    STOPPING = "stopping"


class Health(StrEnum):
    """What the health source says (Application Health extension, LB probe, or
    provisioning + power state when neither is configured)."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"


#: ``imageReference`` fields an image id goes in, by the id's form (REST spec
#: ``ImageReference``: ``id`` is an ARM resource id; direct-shared and community
#: gallery images have ids of their own, ``/SharedGalleries/...`` and
#: ``/CommunityGalleries/...``, in their own fields)
ID_FIELDS = ("id", "sharedGalleryImageId", "communityGalleryImageId")
_ID_PREFIXES = (
    ("/sharedgalleries/", "sharedGalleryImageId"),
    ("/communitygalleries/", "communityGalleryImageId"),
)


def _fold(value: str | None) -> str | None:
    return value.lower() if value else value


@dataclass(frozen=True, slots=True, eq=False)
class ImageReference:
    """What an instance boots from. Exactly one form is set:

    * a platform image: ``publisher``/``offer``/``sku``/``version``;
    * a managed custom or gallery image: ``id`` (an ARM resource id, or a
      direct-shared / community gallery image id: see :attr:`id_field`);
    * a legacy unmanaged image: ``uri`` (``osDisk.image.uri``).

    Equality ignores case except in ``uri``: ARM resource ids, publisher, offer
    and SKU names are case-insensitive, and Azure may echo an id with another
    casing than the one it was sent (``resourcegroups``); a blob path is not.
    """

    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None
    id: str | None = None
    uri: str | None = None

    @property
    def id_field(self) -> str:
        """The ``imageReference`` field :attr:`id` belongs in, from the id's form."""
        lowered = (self.id or "").lower()
        for prefix, name in _ID_PREFIXES:
            if lowered.startswith(prefix):
                return name
        return "id"

    def _key(self) -> tuple[str | None, ...]:
        return (
            _fold(self.publisher),
            _fold(self.offer),
            _fold(self.sku),
            _fold(self.version),
            _fold(self.id),
            self.uri,
        )

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, ImageReference):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        if self.id:
            return self.id
        if self.uri:
            return self.uri
        return ":".join(p or "" for p in (self.publisher, self.offer, self.sku, self.version))


@dataclass(frozen=True, slots=True)
class RollingPolicy:
    """``rollingUpgradePolicy`` with the defaults Azure documents."""

    max_batch_instance_percent: int = 20
    max_unhealthy_instance_percent: int = 20
    max_unhealthy_upgraded_instance_percent: int = 20
    pause_time_between_batches: float = 0.0
    prioritize_unhealthy_instances: bool = False
    enable_cross_zone_upgrade: bool = False
    max_surge: bool = False
    rollback_failed_instances_on_policy_breach: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class ModelVersion:
    """What the scale set model says an instance should run: its image and VM
    size. Two instances run "the same model" when these are equal (VM size
    names, like the image's names and ids, compare without case)."""

    image: ImageReference
    vm_size: str = "Standard_D2s_v5"

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, ModelVersion):
            return NotImplemented
        return self.image == other.image and self.vm_size.lower() == other.vm_size.lower()

    def __hash__(self) -> int:
        return hash((self.image, self.vm_size.lower()))

    def __str__(self) -> str:
        return f"{self.image} ({self.vm_size})"


@dataclass(frozen=True, slots=True)
class ScaleSetModel:
    """The scale set as a whole: its model, policy and concurrency token."""

    name: str
    model: ModelVersion
    upgrade_mode: UpgradeMode = UpgradeMode.MANUAL
    rolling_policy: RollingPolicy = field(default_factory=RollingPolicy)
    etag: str | None = None
    capacity: int = 0
    zones: tuple[str, ...] = ()
    #: ``platformFaultDomainCount`` (None: not reported). 1 is "max spreading",
    #: the default of zonal Uniform sets: every instance reports fault domain 0
    fault_domain_count: int | None = None
    #: ``overprovision``: a scale-out creates extra VMs and deletes them again
    overprovision: bool = False


@dataclass(frozen=True, slots=True)
class Instance:
    """One VM of the scale set as last observed."""

    instance_id: str
    update_domain: int
    fault_domain: int
    zone: str = ""
    model: ModelVersion | None = None
    latest_model_applied: bool = True
    provisioning: ProvisioningState = ProvisioningState.SUCCEEDED
    power: PowerState = PowerState.RUNNING
    health: Health = Health.HEALTHY
    #: ``protectionPolicy.protectFromScaleSetActions``: Azure refuses scale set
    #: actions (upgrade, reimage, delete, ...) naming it
    protected: bool = False

    @property
    def serving(self) -> bool:
        """Counts as serving capacity: provisioned, running and healthy."""
        return (
            self.provisioning is ProvisioningState.SUCCEEDED
            and self.power is PowerState.RUNNING
            and self.health is Health.HEALTHY
        )

    def evolve(self, **changes: object) -> Instance:
        """A copy with ``changes``; a hot path of the simulator, so it skips
        :func:`dataclasses.replace`'s per-call field introspection."""
        new = object.__new__(Instance)
        for name in _INSTANCE_FIELDS:
            object.__setattr__(new, name, changes.pop(name, getattr(self, name)))
        if changes:
            raise TypeError(f"Instance has no field(s) {', '.join(changes)}")
        return new


_INSTANCE_FIELDS = tuple(f.name for f in fields(Instance))


def instance_sort_key(instance_id: str) -> tuple[int, int | str]:
    """Azure's instance ids are decimal strings; order them numerically."""
    return (0, int(instance_id)) if instance_id.isdigit() else (1, instance_id)
