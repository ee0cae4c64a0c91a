"""Target models from the upgrade flags, and Azure JSON <-> the domain model."""

from __future__ import annotations

import pytest

from vmss_rollout.backends import armjson
from vmss_rollout.engine.errors import InputError
from vmss_rollout.engine.model import (
    Health,
    ImageReference,
    ModelVersion,
    PowerState,
    ProvisioningState,
    UpgradeMode,
)
from vmss_rollout.engine.rollout import runs
from vmss_rollout.engine.target import target_model

PLATFORM = ModelVersion(
    ImageReference("Canonical", "ubuntu-24_04-lts", "server", "1.0.0"), "Standard_D2s_v5"
)
GALLERY = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/web"


def test_platform_version_and_sku() -> None:
    assert target_model(PLATFORM, image_version="1.2.3").image.version == "1.2.3"
    assert target_model(PLATFORM, image_version="latest").image.version == "latest"
    sku = target_model(PLATFORM, image_sku="server-arm64")
    assert (sku.image.sku, sku.image.version) == ("server-arm64", "latest")
    urn = target_model(PLATFORM, image_sku="canonical:ubuntu-24_04-lts:minimal:2.0.0")
    assert (urn.image.sku, urn.image.version) == ("minimal", "2.0.0")
    both = target_model(PLATFORM, image_sku="minimal", image_version="2.0.0")
    assert (both.image.sku, both.image.version) == ("minimal", "2.0.0")


def test_vm_size_alone_or_with_an_image() -> None:
    assert target_model(PLATFORM, vm_size="Standard_D4s_v5") == ModelVersion(
        PLATFORM.image, "Standard_D4s_v5"
    )
    both = target_model(PLATFORM, vm_size="Standard_D4s_v5", image_version="1.0.1")
    assert (both.vm_size, both.image.version) == ("Standard_D4s_v5", "1.0.1")


def test_gallery_and_managed_images() -> None:
    pinned = ModelVersion(ImageReference(id=GALLERY + "/versions/1.0.0"))
    assert target_model(pinned, image_version="1.1.0").image.id == GALLERY + "/versions/1.1.0"
    assert target_model(PLATFORM, image_id=GALLERY).image == ImageReference(id=GALLERY)
    uri = "https://acct.blob.core.windows.net/vhds/web.vhd"
    assert target_model(PLATFORM, image_uri=uri).image == ImageReference(uri=uri)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({}, "nothing to change"),
        ({"image_version": "1.2"}, "--image-version: expected MAJOR.MINOR.BUILD"),
        ({"image_version": "v1.2.3"}, "--image-version"),
        ({"image_sku": "MicrosoftWindowsServer:WindowsServer:2022"}, "publisher and offer"),
        ({"image_sku": "a:b"}, "--image-sku: expected SKU or PUBLISHER:OFFER:SKU"),
        ({"image_id": "/not/an/id"}, "--image-id: expected"),
        ({"image_uri": "http://x/y.vhd"}, "--image-uri"),
        ({"vm_size": "huge"}, "--vm-size"),
        ({"image_id": GALLERY, "image_version": "1.0.0"}, "one kind of image"),
    ],
)
def test_bad_targets_name_the_flag(kwargs: dict[str, str], needle: str) -> None:
    with pytest.raises(InputError) as err:
        target_model(PLATFORM, **kwargs)
    assert needle in str(err.value)


def test_version_of_a_managed_image_is_refused() -> None:
    managed = ModelVersion(
        ImageReference(
            id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/web"
        )
    )
    with pytest.raises(InputError, match="use --image-id"):
        target_model(managed, image_version="1.0.0")


VMSS = {
    "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/"
    "virtualMachineScaleSets/web",
    "name": "web",
    "etag": '"7"',
    "sku": {"name": "Standard_D2s_v5", "capacity": 3},
    "zones": ["1", "2"],
    "properties": {
        "upgradePolicy": {
            "mode": "Rolling",
            "rollingUpgradePolicy": {
                "maxBatchInstancePercent": 40,
                "pauseTimeBetweenBatches": "PT1M30S",
            },
        },
        "virtualMachineProfile": {
            "storageProfile": {
                "imageReference": {
                    "publisher": "Canonical",
                    "offer": "ubuntu-24_04-lts",
                    "sku": "server",
                    "version": "1.0.0",
                }
            },
            "extensionProfile": {
                "extensions": [
                    {
                        "name": "health",
                        "properties": {
                            "publisher": "Microsoft.ManagedServices",
                            "type": "ApplicationHealthLinux",
                        },
                    }
                ]
            },
        },
    },
}


def test_scale_set_json() -> None:
    ss = armjson.scale_set(VMSS)
    assert ss.model == PLATFORM
    assert ss.upgrade_mode is UpgradeMode.ROLLING
    assert ss.rolling_policy.max_batch_instance_percent == 40
    assert ss.rolling_policy.pause_time_between_batches == 90
    assert ss.rolling_policy.max_unhealthy_instance_percent == 20  # Azure's default
    assert (ss.etag, ss.capacity, ss.zones) == ('"7"', 3, ("1", "2"))
    assert armjson.health_source(VMSS) == armjson.HEALTH_EXTENSION


def test_model_patch_changes_only_what_differs() -> None:
    new = target_model(PLATFORM, image_version="2.0.0")
    assert armjson.model_patch(new, PLATFORM) == {
        "properties": {
            "virtualMachineProfile": {
                "storageProfile": {
                    "imageReference": {
                        "publisher": "Canonical",
                        "offer": "ubuntu-24_04-lts",
                        "sku": "server",
                        "version": "2.0.0",
                    }
                }
            }
        }
    }
    assert armjson.model_patch(ModelVersion(PLATFORM.image, "Standard_D4s_v5"), PLATFORM) == {
        "sku": {"name": "Standard_D4s_v5"}
    }
    assert armjson.model_patch(PLATFORM, PLATFORM) == {}


def vm(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "instanceId": "4",
        "zones": ["2"],
        "sku": {"name": "Standard_D2s_v5"},
        "properties": {
            "latestModelApplied": True,
            "provisioningState": "Succeeded",
            "storageProfile": {
                "imageReference": {
                    "publisher": "Canonical",
                    "offer": "ubuntu-24_04-lts",
                    "sku": "server",
                    "version": "1.0.0",
                    "exactVersion": "1.0.0",
                }
            },
            "instanceView": {
                "platformUpdateDomain": 3,
                "platformFaultDomain": 1,
                "statuses": [
                    {"code": "ProvisioningState/succeeded"},
                    {"code": "PowerState/running"},
                ],
                "vmHealth": {"status": {"code": "HealthState/unhealthy"}},
            },
        },
    }
    base.update(over)
    return base


def test_instance_json_with_and_without_vm_health() -> None:
    inst = armjson.instance(vm(), use_vm_health=True)
    assert (inst.instance_id, inst.update_domain, inst.fault_domain, inst.zone) == ("4", 3, 1, "2")
    assert inst.model == PLATFORM
    assert inst.health is Health.UNHEALTHY
    assert armjson.instance(vm(), use_vm_health=False).health is Health.HEALTHY
    stopped = vm()
    stopped["properties"]["instanceView"]["statuses"][1]["code"] = "PowerState/deallocated"  # type: ignore[index]
    s = armjson.instance(stopped, use_vm_health=False)
    assert (s.power, s.health) == (PowerState.DEALLOCATED, Health.UNKNOWN)
    updating = vm()
    updating["properties"]["provisioningState"] = "Updating"  # type: ignore[index]
    assert armjson.instance(updating, use_vm_health=True).provisioning is ProvisioningState.UPDATING


def test_iso_durations() -> None:
    assert armjson.iso_duration("PT0S") == 0
    assert armjson.iso_duration("PT2S") == 2
    assert armjson.iso_duration("PT1H2M3S") == 3723
    assert armjson.iso_duration("P1D") == 86400
    with pytest.raises(InputError):
        armjson.iso_duration("2 minutes")


# --------------------------------------------------------------------------- ids and "on target"

SHARED = "/SharedGalleries/0a1b2c-WEBIMAGES/Images/web/Versions/1.0.0"
COMMUNITY = "/CommunityGalleries/contoso-5f1e/Images/web/Versions/1.0.0"


def _vm_with_image(ref: dict[str, object], *, latest: bool = True) -> dict[str, object]:
    doc = vm()
    props = doc["properties"]
    props["storageProfile"] = {"imageReference": ref}  # type: ignore[index]
    props["latestModelApplied"] = latest  # type: ignore[index]
    return doc


@pytest.mark.parametrize(
    ("field", "image_id"),
    [("sharedGalleryImageId", SHARED), ("communityGalleryImageId", COMMUNITY), ("id", GALLERY)],
)
def test_gallery_ids_round_trip_in_their_own_field(field: str, image_id: str) -> None:
    pinned = image_id if "/versions/" in image_id.lower() else image_id + "/versions/1.0.0"
    vmss = {
        "sku": {"name": "Standard_D2s_v5"},
        "properties": {
            "virtualMachineProfile": {"storageProfile": {"imageReference": {field: pinned}}}
        },
    }
    current = armjson.scale_set_model(vmss)
    assert current.image.id == pinned and current.image.id_field == field
    target = target_model(current, image_version="1.1.0")
    assert target.image.id_field == field
    patch = armjson.model_patch(target, current)
    ref = patch["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
    # the id in its own field; the other kinds nulled so a merge cannot keep a stale one
    assert ref[field].endswith("/1.1.0")
    assert {k: v for k, v in ref.items() if k != field} == dict.fromkeys(
        {"id", "sharedGalleryImageId", "communityGalleryImageId"} - {field}
    )
    # an instance reports the image in the same field, and is then on the target
    inst = armjson.instance(_vm_with_image(armjson.image_json(target.image)), use_vm_health=False)
    assert inst.model is not None and inst.model.image == target.image
    assert target_model(current, image_id=image_id).image.id_field == field


def test_ids_and_names_compare_without_case() -> None:
    model = ModelVersion(ImageReference(id=GALLERY + "/versions/2.0.0"), "Standard_D2s_v5")
    echoed = {"id": GALLERY.lower() + "/Versions/2.0.0"}
    inst = armjson.instance(_vm_with_image(echoed), use_vm_health=False)
    inst = inst.evolve(model=ModelVersion(inst.model.image, "standard_d2s_v5"))  # type: ignore[union-attr]
    assert inst.model == model and hash(inst.model) == hash(model)
    assert runs(inst, model)
    platform = armjson.instance(
        _vm_with_image(
            {
                "publisher": "canonical",
                "offer": "UBUNTU-24_04-lts",
                "sku": "Server",
                "version": "1.0.0",
            }
        ),
        use_vm_health=False,
    )
    assert runs(platform, PLATFORM)
    # a blob path is case-sensitive
    assert ImageReference(uri="https://a.blob.core.windows.net/v/Web.vhd") != ImageReference(
        uri="https://a.blob.core.windows.net/v/web.vhd"
    )
    assert not runs(platform, target_model(PLATFORM, image_version="1.0.1"))


def test_on_target_is_the_applied_image_and_size_not_latest_model_applied() -> None:
    """Azure turns latestModelApplied false on any model change (an extension
    added by Policy): an instance on the target image and size still runs it,
    and one on another image does not, whatever the flag says."""
    drifted = armjson.instance(
        _vm_with_image(armjson.image_json(PLATFORM.image), latest=False), use_vm_health=False
    )
    assert not drifted.latest_model_applied
    assert runs(drifted, PLATFORM)
    assert not runs(drifted, target_model(PLATFORM, image_version="2.0.0"))
    assert not runs(drifted, target_model(PLATFORM, vm_size="Standard_D4s_v5"))
    failed = drifted.evolve(provisioning=ProvisioningState.FAILED)
    assert not runs(failed, PLATFORM)
