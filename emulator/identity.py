"""Identity and ARM plumbing: what a real client needs before it reaches the
scale set.

* The App Service managed-identity token endpoint (``IDENTITY_ENDPOINT``),
  issuing access tokens shaped as Microsoft Entra ID issues them to a managed
  identity: a JWT (header.payload.signature, base64url) whose payload carries
  ``aud``, ``iss``, ``iat``, ``nbf``, ``exp``, ``appid``, ``oid``, ``sub``,
  ``tid``, ``idtyp`` ... The signature is random bytes (nothing here verifies
  it; clients such as ``az login --identity`` only decode the payload, without
  verification, for ``tid``), and the token is also remembered, so only tokens
  this emulator issued are accepted.
* ARM's subscription-level resources a client reads while logging in:
  ``GET /subscriptions``, ``/subscriptions/{id}``, ``/tenants``, the resource
  group; the scale set's ``/skus``.
* ``GET /metadata/endpoints`` (no authentication), for ``az cloud register
  --endpoint-resource-manager`` endpoint discovery.
* ARM's ``x-ms-ratelimit-remaining-*`` headers from its token buckets.

Sources are named where each behaviour is implemented.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from .base import (
    _WRITES,
    ARM_RESOURCES,
    TOKEN_LIFETIME_S,
    VMSS_TYPE,
    ArmError,
    Request,
    Response,
)
from .state import EmulatorState

__all__ = ["JWT_HEADER", "TOKEN_PREFIX", "IdentityMixin", "decode_token"]

#: the JOSE header of every token: RS256 with a key id, as Entra ID signs access
#: tokens (learn.microsoft.com/entra/identity-platform/access-token-claims-reference,
#: "Header claims": typ, alg, kid, x5t); the key id names the emulator
JWT_HEADER = {
    "typ": "JWT",
    "alg": "RS256",
    "x5t": "vmss-rollout-emulator",
    "kid": "vmss-rollout-emulator",
}


def _b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


#: every token this emulator issues starts with it (the encoded header is the
#: same for all), so that tests can look for tokens in output and files
TOKEN_PREFIX = _b64url(json.dumps(JWT_HEADER, separators=(",", ":")).encode()) + "."


def decode_token(token: str) -> dict[str, Any]:
    """The payload (claims) of a token, unverified, as a client reads it."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT: expected header.payload.signature")
    claims = json.loads(_b64url_decode(parts[1]))
    if not isinstance(claims, dict):
        raise ValueError("not a JWT: the payload is not a JSON object")
    return claims


#: ARM's token buckets per subscription (and per tenant): (size, refill per
#: second) for reads, writes and deletes. MicrosoftDocs/azure-docs
#: articles/azure-resource-manager/management/request-limits-and-throttling.md,
#: "Regional throttling and token bucket algorithm" (2024): reads 250 / 25 per s,
#: writes 200 / 10 per s, deletes 200 / 10 per s, the same for tenant requests.
RATE_BUCKETS = {"reads": (250.0, 25.0), "writes": (200.0, 10.0), "deletes": (200.0, 10.0)}

#: sizes the scale set's /skus lists besides its own (a few general-purpose
#: sizes; the emulator does not model regional availability)
_SKUS = ("Standard_D2s_v3", "Standard_D4s_v3", "Standard_D8s_v3", "Standard_B2s")


class IdentityMixin(EmulatorState):
    """Tokens, subscriptions, tenants, the resource group, SKUs, cloud metadata
    and rate-limit headers."""

    @property
    def _rate_buckets(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(scope, kind) -> (tokens left, wall time of the last request)."""
        buckets: dict[tuple[str, str], tuple[float, float]] | None = self.__dict__.get(
            "_rate_bucket_state"
        )
        if buckets is None:
            buckets = self.__dict__["_rate_bucket_state"] = {}
        return buckets

    # ------------------------------------------------------------------ ids
    @property
    def tenant_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmss-rollout:{self.subscription}:tenant"))

    @property
    def identity_client_id(self) -> str:
        """The managed identity's application (client) id."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmss-rollout:{self.name}:mi"))

    @property
    def identity_object_id(self) -> str:
        """The managed identity's service principal object id."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmss-rollout:{self.name}:mi-object"))

    # ------------------------------------------------------------------ tokens
    def issue_token(self, resource: str) -> dict[str, Any]:
        """An access token for ``resource``, as the App Service managed-identity
        endpoint answers (api-version 2019-08-01: access_token, expires_on,
        resource, token_type, client_id; learn.microsoft.com/azure/app-service/
        overview-managed-identity, "REST endpoint reference")."""
        now = int(self.epoch.timestamp() + self.clock())
        expires = now + TOKEN_LIFETIME_S
        issuer = f"https://sts.windows.net/{self.tenant_id}/"
        # the v1.0 app-only access token claims Entra ID puts in a managed
        # identity's token (access-token-claims-reference, "Payload claims")
        claims = {
            "aud": resource,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "aio": _b64url(secrets.token_bytes(24)),
            "appid": self.identity_client_id,
            "appidacr": "2",
            "idp": issuer,
            "idtyp": "app",
            "oid": self.identity_object_id,
            "rh": "0.vmss-rollout-emulator.",
            "sub": self.identity_object_id,
            "tid": self.tenant_id,
            "uti": _b64url(secrets.token_bytes(16)),
            "ver": "1.0",
        }
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        token = f"{TOKEN_PREFIX}{payload}.{_b64url(secrets.token_bytes(256))}"
        self.tokens[token] = self.clock() + TOKEN_LIFETIME_S
        return {
            "access_token": token,
            "expires_on": str(expires),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": self.identity_client_id,
        }

    def handle_identity(self, request: Request) -> Response:
        """The App Service managed-identity endpoint azure-identity / MSAL call
        (``GET IDENTITY_ENDPOINT?api-version=2019-08-01&resource=...`` with the
        ``X-IDENTITY-HEADER`` secret)."""
        self.advance()
        status = 200
        body: dict[str, Any]
        secret = request.header("x-identity-header") or ""
        resource = request.query.get("resource", "")
        if request.method != "GET":
            status, body = 405, {"statusCode": 405, "message": "Use GET."}
        elif not hmac.compare_digest(secret.encode(), self.identity_secret.encode()):
            status, body = 401, {"statusCode": 401, "message": "Invalid X-IDENTITY-HEADER."}
        elif request.query.get("api-version") != "2019-08-01":
            status, body = 400, {"statusCode": 400, "message": "api-version must be 2019-08-01."}
        elif resource not in ARM_RESOURCES:
            status = 400
            body = {
                "statusCode": 400,
                "message": f"This emulator issues tokens for {ARM_RESOURCES[0]} only, "
                f"not {resource!r}.",
            }
        else:
            body = self.issue_token(resource)
        response = Response(status, body)
        self._record(request, "identity.token", status, ())
        return response

    def _check_auth(self, request: Request) -> None:
        header = request.header("authorization")
        if not header:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                    'common", error="invalid_token", error_description="The authentication failed '
                    "because of missing 'Authorization' header.\""
                },
            )
        scheme, _, token = header.partition(" ")
        expiry = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry < self.clock():
            raise ArmError(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid."
                if expiry is None
                else "The access token expiry has passed.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                    'common", error="invalid_token", error_description="The access token is '
                    'invalid."'
                },
            )

    # ------------------------------------------------------------------ cloud metadata
    def handle_metadata(self, request: Request) -> Response:
        """``GET /metadata/endpoints?api-version=V``, unauthenticated, as ARM
        answers it: the cloud's endpoints, for endpoint discovery.

        Shape: azure-cli ``command_modules/cloud/custom.py``
        (``_populate_from_metadata_endpoint`` GETs
        ``{arm}/metadata/endpoints?api-version=2022-09-01`` with no credential
        and maps one object with ``_arm_to_cli_mapper``, which needs ``name``,
        ``authentication.loginEndpoint``, ``authentication.audiences`` and
        ``suffixes``) and ``core/cloud.py`` (``ARM_CLOUD_METADATA_URL`` at
        api-version 2019-05-01 answers a list of clouds); field names as in
        MicrosoftDocs azure-resource-manager templates ``environment()``.
        ``resourceManager`` is this emulator, and so is ``loginEndpoint``, so
        that nothing a client derives from the document leaves loopback; the
        audiences are the ones the token endpoint accepts."""
        self.advance()
        version = request.query.get("api-version", "")
        if not version:
            status = 400
            body: Any = {
                "error": {
                    "code": "InvalidApiVersionParameter",
                    "message": "The api-version query parameter (?api-version=) is required.",
                }
            }
        else:
            status = 200
            base = request.base_url.rstrip("/") + "/"
            cloud = {
                "name": "VmssRolloutEmulator",
                "portal": base,
                "resourceManager": base,
                "authentication": {
                    "loginEndpoint": base,
                    "audiences": [ARM_RESOURCES[3], ARM_RESOURCES[1]],
                    "tenant": "common",
                    "identityProvider": "AAD",
                },
                "gallery": base,
                "graph": base,
                "graphAudience": base,
                "microsoftGraphResourceId": base,
                "batch": base,
                "media": base,
                "sqlManagement": base,
                "activeDirectoryDataLake": base,
                "vmImageAliasDoc": base,
                "suffixes": {
                    "acrLoginServer": ".azurecr.io",
                    "keyVaultDns": ".vault.azure.net",
                    "sqlServerHostname": ".database.windows.net",
                    "storage": "core.windows.net",
                },
            }
            body = cloud if version >= "2022-09-01" else [cloud]
        self._record(request, "metadata.endpoints", status, ())
        return Response(status, body)

    # ------------------------------------------------------------------ subscriptions
    def _subscription_json(self) -> dict[str, Any]:
        """A subscription as ``Subscriptions - Get`` answers it
        (azure-rest-api-specs, resources/.../subscriptions/stable/2022-12-01/
        subscriptions.json, definition ``Subscription``)."""
        return {
            "id": f"/subscriptions/{self.subscription}",
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionId": self.subscription,
            "tenantId": self.tenant_id,
            "displayName": "vmss-rollout emulator",
            "state": "Enabled",
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off",
            },
        }

    def _tenant_json(self) -> dict[str, Any]:
        """A tenant as ``Tenants - List`` answers it (examples/GetTenants.json)."""
        return {
            "id": f"/tenants/{self.tenant_id}",
            "tenantId": self.tenant_id,
            "tenantCategory": "Home",
            "countryCode": "US",
            "displayName": "vmss-rollout emulator",
            "domains": ["vmssrollout.onmicrosoft.com"],
            "defaultDomain": "vmssrollout.onmicrosoft.com",
            "tenantType": "AAD",
        }

    def _resource_group_json(self) -> dict[str, Any]:
        """The resource group as ``Resource Groups - Get`` answers it
        (resources/.../resources/stable/2024-11-01 ``ResourceGroup``)."""
        return {
            "id": f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}",
            "name": self.resource_group,
            "type": "Microsoft.Resources/resourceGroups",
            "location": self.location,
            "properties": {"provisioningState": "Succeeded"},
        }

    def _no_subscription(self, sub: str) -> ArmError:
        return ArmError(
            404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found."
        )

    def route_plumbing(
        self, method: str, parts: list[str], lower: list[str]
    ) -> tuple[str, Callable[[], Response]] | None:
        """(operation, handler) for the subscription-, tenant- and resource-group
        level reads, or None when ``parts`` is not one of them."""
        if method != "GET":
            return None
        if lower == ["tenants"]:
            return "tenants.list", lambda: Response(200, {"value": [self._tenant_json()]})
        if lower == ["subscriptions"]:
            # count as Subscriptions - List 2022-12-01 answers it
            return "subscriptions.list", lambda: Response(
                200,
                {"value": [self._subscription_json()], "count": {"type": "Total", "value": 1}},
            )
        if len(parts) < 2 or lower[0] != "subscriptions":
            return None
        sub = parts[1]

        def mine() -> None:
            if sub.lower() != self.subscription.lower():
                raise self._no_subscription(sub)

        if len(parts) == 2:

            def subscription() -> Response:
                mine()
                return Response(200, self._subscription_json())

            return "subscriptions.get", subscription
        if lower[2:] == ["resourcegroups"]:

            def groups() -> Response:
                mine()
                return Response(200, {"value": [self._resource_group_json()]})

            return "resourcegroups.list", groups
        if len(parts) == 4 and lower[2] == "resourcegroups":
            rg = parts[3]

            def group() -> Response:
                mine()
                if rg.lower() != self.resource_group.lower():
                    raise ArmError(
                        404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
                    )
                return Response(200, self._resource_group_json())

            return "resourcegroups.get", group
        return None

    def _list_skus(self) -> Response:
        """``GET .../virtualMachineScaleSets/{name}/skus``: the sizes the scale
        set can be resized to (virtualMachineScaleSet.json 2024-11-01,
        ``VirtualMachineScaleSetListSkusResult``: value of {resourceType, sku,
        capacity{minimum, maximum, defaultCapacity, scaleType}}). The maximum is
        100 in a single placement group, else 1000
        (DOCS/virtual-machine-scale-sets-placement-groups.md)."""
        props = self.doc.get("properties", {})
        maximum = 100 if props.get("singlePlacementGroup", True) else 1000
        current = self.doc["sku"]
        names = dict.fromkeys((current["name"], *_SKUS))
        value = [
            {
                "resourceType": VMSS_TYPE,
                "sku": {"name": size, "tier": current.get("tier", "Standard")},
                "capacity": {
                    "minimum": 0,
                    "maximum": maximum,
                    "defaultCapacity": 1,
                    "scaleType": "Automatic",
                },
            }
            for size in names
        ]
        return Response(200, {"value": value})

    # ------------------------------------------------------------------ rate limits
    def rate_limit_headers(self, request: Request) -> dict[str, str]:
        """ARM's remaining-request headers for this request, from per-scope
        token buckets refilled on the wall clock (request-limits-and-throttling.md:
        ``x-ms-ratelimit-remaining-subscription-reads`` on reads, ``-writes`` on
        writes, ``-deletes`` on deletes; ``tenant-`` for requests outside a
        subscription). The buckets are reported, not enforced: the
        ``throttle_rate`` fault answers 429 when a test wants throttling."""
        method = request.method.upper()
        kind = "deletes" if method == "DELETE" else "writes" if method in _WRITES else "reads"
        scope = "subscription" if request.path.lower().startswith("/subscriptions/") else "tenant"
        size, rate = RATE_BUCKETS[kind]
        buckets = self._rate_buckets
        now = self.clock()
        tokens, last = buckets.get((scope, kind), (size, now))
        tokens = min(size, tokens + (now - last) * rate)
        tokens = max(0.0, tokens - 1.0)
        buckets[(scope, kind)] = (tokens, now)
        return {f"x-ms-ratelimit-remaining-{scope}-{kind}": str(int(tokens))}
