"""What an upgrade changes: the target model, from the current one and the
user's flags (image version, SKU, managed or gallery image id, legacy VHD uri,
VM size), validated before anything is touched."""

from __future__ import annotations

import re
from dataclasses import replace

from .errors import InputError
from .model import ImageReference, ModelVersion

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_IMAGE_ID = re.compile(
    r"^(/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"(images/[^/]+|galleries/[^/]+/images/[^/]+(/versions/[^/]+)?)"
    # direct-shared and community gallery images (imageReference.sharedGalleryImageId,
    # communityGalleryImageId: REST spec ComputeRP ImageReference)
    r"|/(SharedGalleries|CommunityGalleries)/[^/]+/Images/[^/]+(/Versions/[^/]+)?)$",
    re.IGNORECASE,
)
_GALLERY_VERSION = re.compile(r"(/versions/)[^/]+$", re.IGNORECASE)
_VM_SIZE = re.compile(r"^(Standard|Basic)_[A-Za-z0-9_]+$")


def target_model(
    current: ModelVersion,
    *,
    image_version: str | None = None,
    image_sku: str | None = None,
    image_id: str | None = None,
    image_uri: str | None = None,
    vm_size: str | None = None,
) -> ModelVersion:
    """The model an upgrade moves to. Raises :class:`InputError` (naming the
    flag) for malformed values and for changes Azure does not allow."""
    if not any((image_version, image_sku, image_id, image_uri, vm_size)):
        raise InputError(
            "nothing to change: give --image-version, --image-sku, --image-id, "
            "--image-uri or --vm-size"
        )
    if sum(bool(v) for v in (image_id, image_uri, image_version or image_sku)) > 1:
        raise InputError(
            "give one kind of image: --image-id, --image-uri, or --image-version/--image-sku"
        )
    image = current.image
    if image_id:
        if not _IMAGE_ID.match(image_id):
            raise InputError(
                f"--image-id: expected /subscriptions/.../providers/Microsoft.Compute/images/NAME, "
                f".../galleries/G/images/DEF[/versions/X.Y.Z], /SharedGalleries/G/Images/DEF"
                f"[/Versions/X.Y.Z] or /CommunityGalleries/G/Images/DEF[/Versions/X.Y.Z], "
                f"got {image_id!r}"
            )
        image = ImageReference(id=image_id)
    elif image_uri:
        if not image_uri.lower().startswith("https://") or not image_uri.lower().endswith(".vhd"):
            raise InputError(
                f"--image-uri: expected an https:// URL of a .vhd blob, got {image_uri!r}"
            )
        image = ImageReference(uri=image_uri)
    elif image_version or image_sku:
        image = _platform_change(image, image_version, image_sku)
    size = current.vm_size
    if vm_size:
        if not _VM_SIZE.match(vm_size):
            raise InputError(f"--vm-size: expected a size such as Standard_D4s_v5, got {vm_size!r}")
        size = vm_size
    return ModelVersion(image, size)


def _platform_change(image: ImageReference, version: str | None, sku: str | None) -> ImageReference:
    if version is not None and version != "latest" and not _VERSION.match(version):
        raise InputError(
            f"--image-version: expected MAJOR.MINOR.BUILD (e.g. 2024.11.05) or 'latest', "
            f"got {version!r}"
        )
    if image.id and version and not sku:
        if _GALLERY_VERSION.search(image.id):
            # a pinned gallery image version: same definition, another version
            return ImageReference(id=_GALLERY_VERSION.sub(rf"\g<1>{version}", image.id))
        raise InputError(
            "--image-version: the scale set runs a managed image or a gallery image's latest "
            "version (no version in its id); use --image-id"
        )
    if image.uri or image.id or not (image.publisher and image.offer):
        raise InputError(
            "--image-version/--image-sku: the scale set does not run a platform image; "
            "use --image-id or --image-uri"
        )
    new = image
    if sku:
        parts = sku.split(":")
        if len(parts) == 1:
            new = replace(new, sku=parts[0])
        elif len(parts) in (3, 4):
            publisher, offer = parts[0], parts[1]
            if (publisher.lower(), offer.lower()) != (
                str(image.publisher).lower(),
                str(image.offer).lower(),
            ):
                raise InputError(
                    f"--image-sku: {publisher}:{offer} differs from the scale set's "
                    f"{image.publisher}:{image.offer}; publisher and offer can only be set "
                    "when a scale set is created"
                )
            new = replace(new, sku=parts[2], version=parts[3] if len(parts) == 4 else new.version)
        else:
            raise InputError(
                f"--image-sku: expected SKU or PUBLISHER:OFFER:SKU[:VERSION], got {sku!r}"
            )
        if version is None and len(parts) != 4:
            version = "latest"  # the old version rarely exists for another SKU
    if version is not None:
        new = replace(new, version=version)
    return new
