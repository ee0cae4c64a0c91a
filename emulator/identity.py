"""Identity: the managed-identity token endpoint and bearer-token checks."""

from __future__ import annotations

import hmac
import secrets
import uuid
from typing import Any

from .base import (
    ARM_RESOURCES,
    TOKEN_LIFETIME_S,
    TOKEN_PREFIX,
    ArmError,
    Request,
    Response,
)
from .state import EmulatorState


class IdentityMixin(EmulatorState):
    """Tokens: issued by the identity endpoint, checked on every ARM request."""

    def issue_token(self, resource: str) -> dict[str, Any]:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = int(self.epoch.timestamp() + self.clock()) + TOKEN_LIFETIME_S
        self.tokens[token] = self.clock() + TOKEN_LIFETIME_S
        return {
            "access_token": token,
            "expires_on": str(expires),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmss-rollout:{self.name}:mi")),
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
