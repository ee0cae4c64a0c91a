"""Identity and ARM plumbing in the emulator: what a real client reads before it
reaches the scale set (``az cloud register`` endpoint discovery, ``az login
--identity``), and ARM's rate-limit headers. In process, with a fake clock;
tests/test_az_cli.py runs the real Azure CLI through the same paths."""

from __future__ import annotations

import json

import jwt
import pytest
from test_arm import Clock

from vmss_rollout.emulator import ArmEmulator, Request, Response
from vmss_rollout.emulator.identity import JWT_HEADER, TOKEN_PREFIX, decode_token
from vmss_rollout.sim.scenario import Scenario

SUB = "00000000-0000-0000-0000-000000000000"
RG = "vmss-rollout-rg"
BASE = "https://127.0.0.1:8443"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def arm(clock: Clock) -> ArmEmulator:
    scenario = Scenario(name="web", seed=3, instances=4, update_domains=2, fault_domains=2)
    return ArmEmulator(scenario, clock=clock, time_scale=1.0, identity_secret="s3cret-header")


def token_for(arm: ArmEmulator, resource: str = "https://management.azure.com/") -> str:
    answer = arm.handle_identity(
        Request(
            "GET",
            "/msi/token",
            {"api-version": "2019-08-01", "resource": resource},
            {"x-identity-header": "s3cret-header"},
        )
    )
    assert answer.status == 200, answer.body
    return str(answer.body["access_token"])


def get(arm: ArmEmulator, path: str, token: str | None, api: str = "2022-12-01") -> Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return arm.handle(Request("GET", path, {"api-version": api}, headers, base_url=BASE))


def test_tokens_are_jwts_with_the_claims_a_managed_identity_token_carries(
    arm: ArmEmulator, clock: Clock
) -> None:
    clock.t = 100.0
    token = token_for(arm, "https://management.core.windows.net/")
    assert token.startswith(TOKEN_PREFIX) and token.count(".") == 2
    # az login --identity decodes it exactly so (azure-cli core/_profile.py)
    claims = jwt.decode(token, algorithms=["RS256"], options={"verify_signature": False})
    assert claims == decode_token(token)
    assert jwt.get_unverified_header(token) == JWT_HEADER
    assert claims["aud"] == "https://management.core.windows.net/"
    assert claims["tid"] == arm.tenant_id and claims["iss"].endswith(f"/{arm.tenant_id}/")
    assert claims["oid"] == claims["sub"] == arm.identity_object_id
    assert claims["appid"] == arm.identity_client_id and claims["idtyp"] == "app"
    now = int(arm.epoch.timestamp() + 100.0)
    assert claims["iat"] == claims["nbf"] == now
    assert claims["exp"] - now == 24 * 3600
    # each token is its own (random signature and uti), and only issued ones work
    other = token_for(arm)
    assert other != token
    assert get(arm, "/subscriptions", token).status == 200
    forged = ".".join([*token.split(".")[:2], "AAAA"])
    assert get(arm, "/subscriptions", forged).status == 401


def test_subscriptions_tenants_and_the_resource_group_read_as_arm_answers(
    arm: ArmEmulator,
) -> None:
    token = token_for(arm)
    subs = get(arm, "/subscriptions", token)
    assert subs.status == 200
    assert subs.body["count"] == {"type": "Total", "value": 1}
    [sub] = subs.body["value"]
    assert sub["id"] == f"/subscriptions/{SUB}" and sub["subscriptionId"] == SUB
    assert sub["tenantId"] == arm.tenant_id and sub["state"] == "Enabled"
    assert get(arm, f"/subscriptions/{SUB}", token).body == sub
    missing = get(arm, "/subscriptions/11111111-1111-1111-1111-111111111111", token)
    assert missing.status == 404 and missing.body["error"]["code"] == "SubscriptionNotFound"
    tenants = get(arm, "/tenants", token).body["value"]
    assert [t["tenantId"] for t in tenants] == [arm.tenant_id]
    group = get(arm, f"/subscriptions/{SUB}/resourcegroups/{RG.upper()}", token, "2024-11-01")
    assert group.status == 200
    assert group.body["name"] == RG and group.body["type"] == "Microsoft.Resources/resourceGroups"
    assert group.body["properties"]["provisioningState"] == "Succeeded"
    other = get(arm, f"/subscriptions/{SUB}/resourcegroups/nope", token, "2024-11-01")
    assert other.status == 404 and other.body["error"]["code"] == "ResourceGroupNotFound"
    # all of them need a token, as ARM's do
    assert get(arm, "/subscriptions", None).status == 401
    assert get(arm, "/tenants", None).status == 401


def test_the_scale_set_lists_its_skus(arm: ArmEmulator) -> None:
    path = (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/"
        f"virtualMachineScaleSets/{arm.name}/skus"
    )
    answer = get(arm, path, token_for(arm), "2026-04-01")
    assert answer.status == 200
    skus = answer.body["value"]
    assert skus[0]["sku"]["name"] == arm.doc["sku"]["name"]  # its own size first
    for sku in skus:
        assert sku["resourceType"] == "Microsoft.Compute/virtualMachineScaleSets"
        assert sku["capacity"]["maximum"] == 100  # a single placement group
        assert sku["capacity"]["scaleType"] == "Automatic"


@pytest.mark.parametrize("api", ["2022-09-01", "2019-05-01"])
def test_cloud_metadata_answers_without_a_token(arm: ArmEmulator, api: str) -> None:
    answer = arm.handle_metadata(
        Request("GET", "/metadata/endpoints", {"api-version": api}, {}, base_url=BASE)
    )
    assert answer.status == 200
    # 2022-09-01: one cloud (azure-cli's endpoint discovery); older: a list of clouds
    cloud = answer.body if api >= "2022-09-01" else answer.body[0]
    assert cloud["resourceManager"] == f"{BASE}/"
    assert cloud["authentication"]["loginEndpoint"] == f"{BASE}/"  # nothing leaves loopback
    assert cloud["authentication"]["audiences"][0] == "https://management.core.windows.net/"
    assert {"name", "suffixes"} <= set(cloud)
    # the audience it names is one the token endpoint serves
    token_for(arm, cloud["authentication"]["audiences"][0])
    assert arm.handle_metadata(Request("GET", "/metadata/endpoints", {}, {})).status == 400


def test_arm_reports_its_rate_limit_buckets(arm: ArmEmulator, clock: Clock) -> None:
    token = token_for(arm)
    first = get(arm, f"/subscriptions/{SUB}", token)
    reads = int(first.headers["x-ms-ratelimit-remaining-subscription-reads"])
    assert reads == 249  # a bucket of 250, one taken
    second = get(arm, f"/subscriptions/{SUB}", token)
    assert int(second.headers["x-ms-ratelimit-remaining-subscription-reads"]) == 248
    # no subscription id in the path: a tenant-level request, its own bucket
    for path in ("/tenants", "/subscriptions"):
        tenant = get(arm, path, token)
        assert "x-ms-ratelimit-remaining-subscription-reads" not in tenant.headers
    assert tenant.headers["x-ms-ratelimit-remaining-tenant-reads"] == "248"
    path = (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/"
        f"virtualMachineScaleSets/{arm.name}/manualupgrade"
    )
    write = arm.handle(
        Request(
            "POST",
            path,
            {"api-version": "2026-04-01"},
            {"authorization": f"Bearer {token}"},
            json.dumps({"instanceIds": ["0"]}).encode(),
        )
    )
    assert write.status < 300
    assert write.headers["x-ms-ratelimit-remaining-subscription-writes"] == "199"
    assert "x-ms-ratelimit-remaining-subscription-reads" not in write.headers
    clock.t += 1.0  # 25 reads a second refill, up to the bucket's 250
    refilled = get(arm, f"/subscriptions/{SUB}", token)
    assert refilled.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"


def test_decode_token_refuses_what_is_not_a_jwt() -> None:
    with pytest.raises(ValueError, match="not a JWT"):
        decode_token("vmss-emu-token.abc")
