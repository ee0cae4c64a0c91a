"""The ARM model of the emulator (the emulator/ package), without HTTP: a fake clock,
requests built by hand, JSON checked against what Azure sends."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from vmss_rollout.backends import armjson
from vmss_rollout.emulator import ArmEmulator, Faults, Request, Response, build_scale_set
from vmss_rollout.engine.errors import InputError
from vmss_rollout.engine.model import Health, ImageReference, PowerState, ProvisioningState
from vmss_rollout.sim.runner import build, derive_seed
from vmss_rollout.sim.scenario import Scenario

SUB = "00000000-0000-0000-0000-000000000000"
RG = "vmss-rollout-rg"
API = "2026-04-01"


class Clock:
    """Real seconds since start, moved by hand; time_scale 1 keeps the arithmetic plain."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def scenario(**changes: Any) -> Scenario:
    values: dict[str, Any] = {
        "name": "web",
        "seed": 3,
        "instances": 10,
        "update_domains": 5,
        "fault_domains": 3,
        "upgrade": "fixed(60s)",
        "health_delay": "fixed(30s)",
    }
    values.update(changes)
    return Scenario(**values)


class Arm:
    """An emulator plus a token, with request helpers."""

    def __init__(self, **kwargs: Any) -> None:
        self.clock = Clock()
        scen = kwargs.pop("scenario", None) or scenario()
        kwargs.setdefault("time_scale", 1.0)
        self.arm = ArmEmulator(
            scen, clock=self.clock, page_size=kwargs.pop("page_size", 4), **kwargs
        )
        self.token = self.arm.issue_token("https://management.azure.com")["access_token"]

    @property
    def vmss(self) -> str:
        return (
            f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/"
            f"virtualMachineScaleSets/{self.arm.name}"
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        token: bool = True,
    ) -> Response:
        q = {"api-version": API, **(query or {})}
        h = {"authorization": f"Bearer {self.token}"} if token else {}
        h.update({k.lower(): v for k, v in (headers or {}).items()})
        raw = b"" if body is None else json.dumps(body).encode()
        url = urlsplit(path)
        if url.query:
            q.update(dict(parse_qsl(url.query)))
        return self.arm.handle(Request(method, url.path, q, h, raw, "https://127.0.0.1:9"))

    def at(self, seconds: float) -> None:
        self.clock.t = seconds
        self.arm.advance()

    def operation(self, response: Response) -> dict[str, Any]:
        assert response.status == 202, response.body
        status = self.call("GET", response.headers["Azure-AsyncOperation"])
        assert status.status == 200
        body: dict[str, Any] = status.body
        return body


def error_code(response: Response) -> str:
    return str(response.body["error"]["code"])


# --------------------------------------------------------------------------- construction


def test_scale_set_is_built_like_the_simulator() -> None:
    scen = scenario(zones=["1", "2"])
    seed = derive_seed(scen.seed, 0)
    _, plain = build(scen, seed)
    _, emulated = build_scale_set(scen, seed)
    assert emulated.instances == plain.instances
    assert emulated.rng.getstate() == plain.rng.getstate()


def test_faults_validate_and_name_the_key() -> None:
    with pytest.raises(InputError, match=r"^throttle_rate:"):
        Faults(throttle_rate=1.5)
    with pytest.raises(InputError, match=r"^bogus: unknown fault"):
        Faults().with_changes({"bogus": 1})
    assert Faults.from_scenario(scenario(bad_image=True)).bad_image


# ------------------------------------------------------------------ auth, api-version, errors


def test_every_request_needs_a_token_issued_here() -> None:
    e = Arm()
    missing = e.call("GET", e.vmss, token=False)
    assert missing.status == 401 and error_code(missing) == "AuthenticationFailed"
    assert "WWW-Authenticate" in missing.headers
    bogus = e.call("GET", e.vmss, headers={"Authorization": "Bearer nope"}, token=False)
    assert bogus.status == 401 and error_code(bogus) == "InvalidAuthenticationToken"
    assert e.call("GET", e.vmss).status == 200


def test_identity_endpoint_checks_the_secret_and_resource() -> None:
    e = Arm(identity_secret="s3cret")
    query = {"api-version": "2019-08-01", "resource": "https://management.azure.com"}
    ok = e.arm.handle_identity(Request("GET", "/msi/token", query, {"x-identity-header": "s3cret"}))
    assert ok.status == 200
    assert set(ok.body) >= {"access_token", "expires_on", "resource", "token_type"}
    assert int(ok.body["expires_on"]) > 0
    wrong = e.arm.handle_identity(Request("GET", "/msi/token", query, {"x-identity-header": "x"}))
    assert wrong.status == 401 and "access_token" not in wrong.body
    other = e.arm.handle_identity(
        Request(
            "GET",
            "/msi/token",
            {**query, "resource": "https://vault.azure.net"},
            {"x-identity-header": "s3cret"},
        )
    )
    assert other.status == 400


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("2016-03-30", True),
        ("2024-11-01", True),
        ("2024-11-01-preview", True),
        ("2026-04-01", True),
        ("2016-03-29", False),
        ("2026-04-02", False),
        ("2015-01-01", False),
        ("latest", False),
    ],
)
def test_api_version_range(version: str, ok: bool) -> None:
    e = Arm()
    response = e.call("GET", e.vmss, query={"api-version": version})
    if ok:
        assert response.status == 200
    else:
        assert response.status == 400 and error_code(response) == "InvalidApiVersionParameter"


def test_missing_api_version() -> None:
    e = Arm()
    response = e.arm.handle(Request("GET", e.vmss, {}, {"authorization": f"Bearer {e.token}"}))
    assert response.status == 400 and error_code(response) == "InvalidApiVersionParameter"


def test_not_found_errors_name_what_is_missing() -> None:
    e = Arm()
    other = e.vmss.replace("/web", "/nope")
    assert error_code(e.call("GET", other)) == "ResourceNotFound"
    assert e.call("GET", other).status == 404
    assert error_code(e.call("GET", e.vmss.replace(RG, "other-rg"))) == "ResourceGroupNotFound"
    assert error_code(e.call("GET", e.vmss.replace(SUB, "1" * 8))) == "SubscriptionNotFound"
    assert e.call("GET", f"{e.vmss}/virtualMachines/99").status == 404
    assert e.call("GET", f"{e.vmss}/rollingUpgrades/latest").status == 404


# --------------------------------------------------------------------------- documents


def test_scale_set_document_round_trips_through_armjson() -> None:
    e = Arm()
    response = e.call("GET", e.vmss)
    doc = response.body
    assert response.headers["ETag"] == '"1"' == doc["etag"]
    assert doc["type"] == "Microsoft.Compute/virtualMachineScaleSets"
    model = armjson.scale_set(doc)
    assert model.model == e.arm.ss.model
    assert model.capacity == 10
    assert armjson.health_source(doc) == armjson.HEALTH_EXTENSION


def test_vm_documents_parse_back_to_the_simulated_instances() -> None:
    e = Arm()
    vms: list[dict[str, Any]] = []
    url: str | None = f"{e.vmss}/virtualMachines"
    query = {"$expand": "instanceView"}
    pages = 0
    while url:
        response = e.call("GET", url, query=query)
        pages += 1
        vms += response.body["value"]
        url = response.body.get("nextLink")
        query = {}
        if url:
            assert url.startswith("https://127.0.0.1:9/subscriptions/")
            assert "$skiptoken=" in url and "api-version=" in url and "$expand=instanceView" in url
    assert pages == 3
    assert [vm["instanceId"] for vm in vms] == [str(i) for i in range(10)]
    for vm in vms:
        inst = armjson.instance(vm, use_vm_health=True)
        assert inst == e.arm.ss.instances[inst.instance_id]
        assert vm["name"] == f"web_{vm['instanceId']}"
        assert vm["properties"]["instanceView"]["vmHealth"]["status"]["code"] == (
            "HealthState/healthy"
        )


def test_without_health_extension_there_is_no_vm_health() -> None:
    e = Arm(health_extension=False)
    assert armjson.health_source(e.call("GET", e.vmss).body) == armjson.HEALTH_FALLBACK
    vm = e.call("GET", f"{e.vmss}/virtualMachines/0", query={"$expand": "instanceView"}).body
    assert "vmHealth" not in vm["properties"]["instanceView"]


def test_scale_set_instance_view_summarises_statuses() -> None:
    e = Arm()
    body = e.call("GET", f"{e.vmss}/instanceView").body
    summary = {s["code"]: s["count"] for s in body["virtualMachine"]["statusesSummary"]}
    assert summary == {"ProvisioningState/succeeded": 10, "PowerState/running": 10}


# --------------------------------------------------------------------------- model changes


def patch_version(e: Arm, version: str, **headers: str) -> Response:
    body = {
        "properties": {
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"version": version}}}
        }
    }
    return e.call("PATCH", e.vmss, body, headers=headers)


def test_patch_changes_the_model_under_if_match() -> None:
    e = Arm()
    stale = patch_version(e, "2.0.0", **{"If-Match": '"7"'})
    assert stale.status == 412 and error_code(stale) == "PreconditionFailed"
    ok = patch_version(e, "2.0.0", **{"If-Match": '"1"'})
    assert ok.status == 200
    assert ok.body["etag"] == '"2"'
    assert e.arm.ss.model.image.version == "2.0.0"
    assert not any(i.latest_model_applied for i in e.arm.ss.instances.values())
    # nothing changes: the etag stays
    assert patch_version(e, "2.0.0").body["etag"] == '"2"'


def test_publisher_and_offer_cannot_change() -> None:
    e = Arm()
    body = {
        "properties": {
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"publisher": "Other", "offer": "x"}}
            }
        }
    }
    response = e.call("PATCH", e.vmss, body)
    assert response.status == 400 and error_code(response) == "OperationNotAllowed"
    assert (
        "publisher and offer can only be set when you create the scale set"
        in (response.body["error"]["message"])
    )


def test_gallery_image_and_vm_size_change_the_model() -> None:
    e = Arm()
    gallery = (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute"
        "/galleries/g/images/app/versions/1.2.3"
    )
    body = {
        "sku": {"name": "Standard_D4s_v5"},
        "properties": {
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": gallery}}}
        },
    }
    doc = e.call("PATCH", e.vmss, body).body
    assert doc["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"] == {
        "id": gallery
    }
    assert e.arm.ss.model.image.id == gallery
    assert e.arm.ss.model.vm_size == "Standard_D4s_v5"
    assert armjson.scale_set_model(doc) == e.arm.ss.model


def test_capacity_scales_out_and_in() -> None:
    e = Arm()
    e.call("PATCH", e.vmss, {"sku": {"capacity": 12}})
    assert sorted(e.arm.ss.instances, key=int)[-2:] == ["10", "11"]
    e.call("PATCH", e.vmss, {"sku": {"capacity": 8}})
    assert sorted(e.arm.ss.instances, key=int) == [str(i) for i in range(8)]


def test_rolling_policy_is_validated() -> None:
    e = Arm()
    body = {
        "properties": {"upgradePolicy": {"rollingUpgradePolicy": {"maxBatchInstancePercent": 3}}}
    }
    response = e.call("PATCH", e.vmss, body)
    assert response.status == 400 and error_code(response) == "InvalidParameter"
    body = {
        "properties": {
            "upgradePolicy": {"rollingUpgradePolicy": {"pauseTimeBetweenBatches": "5 minutes"}}
        }
    }
    assert e.call("PATCH", e.vmss, body).status == 400


# ------------------------------------------------------------------ long-running operations


def test_manual_upgrade_operation_ends_when_its_instances_are_provisioned() -> None:
    e = Arm()
    patch_version(e, "2.0.0")
    e.at(10)
    accepted = e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["0", "1"]})
    assert accepted.status == 202
    assert accepted.headers["Retry-After"] == "1"
    assert (
        "/providers/Microsoft.Compute/locations/westeurope/operations/"
        in (accepted.headers["Azure-AsyncOperation"])
    )
    assert e.operation(accepted)["status"] == "InProgress"
    location = e.call("GET", accepted.headers["Location"])
    assert location.status == 202
    assert e.arm.ss.instances["0"].provisioning is ProvisioningState.UPDATING
    e.at(75)
    done = e.operation(accepted)
    assert done["status"] == "Succeeded"
    assert done["endTime"] == e.arm.iso(70.0)  # exactly when the 60 s upgrades ended
    assert e.call("GET", accepted.headers["Location"]).status == 200
    vm = e.call("GET", f"{e.vmss}/virtualMachines/0", query={"$expand": "instanceView"}).body
    assert vm["properties"]["latestModelApplied"] is True
    assert vm["properties"]["instanceView"]["vmHealth"]["status"]["code"] == (
        "HealthState/initializing"
    )
    e.at(101)
    assert e.arm.ss.instances["0"].health is Health.HEALTHY


def test_manual_upgrade_needs_known_instance_ids() -> None:
    e = Arm()
    response = e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["0", "42", "77"]})
    assert response.status == 400 and error_code(response) == "InvalidParameter"
    assert "42, 77" in response.body["error"]["message"]
    assert e.call("POST", f"{e.vmss}/manualupgrade").status == 400  # body required


def test_failed_upgrades_fail_the_operation_naming_them() -> None:
    e = Arm(scenario=scenario(upgrade_failure=1.0))
    patch_version(e, "2.0.0")
    accepted = e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["3", "4"]})
    e.at(61)
    status = e.operation(accepted)
    assert status["status"] == "Failed"
    assert "3, 4" in status["error"]["message"]
    assert e.call("GET", accepted.headers["Location"]).status == 400


def test_injected_lro_failure() -> None:
    e = Arm(faults=Faults(lro_failure_rate=1.0))
    accepted = e.call("POST", f"{e.vmss}/restart", {"instanceIds": ["1"]})
    e.at(100)
    status = e.operation(accepted)
    assert status["status"] == "Failed"
    assert status["error"]["code"] == "InternalExecutionError"


def test_bad_image_makes_every_new_model_unhealthy() -> None:
    e = Arm(scenario=scenario(bad_image=True))
    patch_version(e, "3.1.4")
    e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["0"]})
    e.at(100)
    assert e.arm.ss.instances["0"].health is Health.UNHEALTHY
    # back to the initial image: healthy again
    patch_version(e, "1.0.0")
    e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["0"]})
    e.at(200)
    assert e.arm.ss.instances["0"].health is Health.HEALTHY


def test_power_operations_change_power_state() -> None:
    e = Arm()
    accepted = e.call("POST", f"{e.vmss}/virtualMachines/2/poweroff")
    assert e.arm.ss.instances["2"].power is PowerState.STOPPING
    e.at(20)
    assert e.operation(accepted)["status"] == "Succeeded"
    view = e.call("GET", f"{e.vmss}/virtualMachines/2/instanceView").body
    assert "PowerState/stopped" in [s["code"] for s in view["statuses"]]
    assert view["vmHealth"]["status"]["code"] == "HealthState/unknown"
    e.call("POST", f"{e.vmss}/start", {"instanceIds": ["2"]})
    e.at(60)
    assert e.arm.ss.instances["2"].power is PowerState.RUNNING
    # all instances when no ids are given
    e.call("POST", f"{e.vmss}/deallocate")
    e.at(200)
    assert {i.power for i in e.arm.ss.instances.values()} == {PowerState.DEALLOCATED}


def test_power_operation_on_an_upgrading_instance_conflicts() -> None:
    e = Arm()
    patch_version(e, "2.0.0")
    e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["5"]})
    response = e.call("POST", f"{e.vmss}/virtualMachines/5/restart")
    assert response.status == 409 and error_code(response) == "OperationNotAllowed"


def test_delete_instances() -> None:
    e = Arm()
    accepted = e.call("POST", f"{e.vmss}/delete", {"instanceIds": ["8", "9"]})
    assert e.operation(accepted)["status"] == "Succeeded"
    assert e.call("DELETE", f"{e.vmss}/virtualMachines/7").status == 202
    assert sorted(e.arm.ss.instances, key=int) == [str(i) for i in range(7)]
    assert e.call("GET", e.vmss).body["sku"]["capacity"] == 7


def test_concurrent_change_after_the_nth_manual_upgrade() -> None:
    e = Arm(faults=Faults(concurrent_change_after=2))
    patch_version(e, "2.0.0")
    etag = e.call("GET", e.vmss).body["etag"]
    e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["0"]})
    assert e.call("GET", e.vmss).body["etag"] == etag
    e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["1"]})
    doc = e.call("GET", e.vmss).body
    assert doc["etag"] != etag and doc["tags"]["changedBy"] == "another-client"
    assert patch_version(e, "2.1.0", **{"If-Match": etag}).status == 412


# --------------------------------------------------------------------------- rolling upgrades


def test_policy_rolling_runs_the_platform_rolling_upgrade_with_the_engine() -> None:
    e = Arm()
    body = {
        "properties": {
            "upgradePolicy": {"mode": "Rolling"},
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"version": "2.0.0"}}},
        }
    }
    assert e.call("PATCH", e.vmss, body).status == 200
    e.at(95)
    latest = e.call("GET", f"{e.vmss}/rollingUpgrades/latest").body["properties"]
    assert latest["runningStatus"]["code"] == "RollingForward"
    assert latest["progress"]["successfulInstanceCount"] == 2  # 20% of 10 per batch
    assert latest["policy"]["maxBatchInstancePercent"] == 20
    e.at(1000)
    latest = e.call("GET", f"{e.vmss}/rollingUpgrades/latest").body["properties"]
    assert latest["runningStatus"]["code"] == "Completed"
    assert latest["progress"]["successfulInstanceCount"] == 10
    assert all(i.latest_model_applied for i in e.arm.ss.instances.values())
    batches = [ids for _, op, ids in e.arm.ss.requests if op == "upgrade"]
    assert len(batches) == 5 and all(len(b) == 2 for b in batches)
    # one update domain per batch
    for batch in batches:
        assert len({e.arm.ss.instances[i].update_domain for i in batch}) == 1


def test_os_rolling_upgrade_and_cancel() -> None:
    e = Arm()
    body = {
        "properties": {
            "upgradePolicy": {
                "rollingUpgradePolicy": {
                    "maxBatchInstancePercent": 10,
                    "pauseTimeBetweenBatches": "PT5M",
                }
            },
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"version": "2.0.0"}}},
        }
    }
    e.call("PATCH", e.vmss, body)
    started = e.call("POST", f"{e.vmss}/osRollingUpgrade")
    assert started.status == 202
    assert e.call("POST", f"{e.vmss}/osRollingUpgrade").status == 409  # one at a time
    e.at(100)
    cancel = e.call("POST", f"{e.vmss}/rollingUpgrades/cancel")
    assert cancel.status == 202
    e.at(500)
    latest = e.call("GET", f"{e.vmss}/rollingUpgrades/latest").body["properties"]
    assert latest["runningStatus"]["code"] == "Cancelled"
    assert latest["runningStatus"]["lastAction"] == "Cancel"
    assert e.operation(cancel)["status"] == "Succeeded"
    assert e.operation(started)["status"] == "Canceled"
    assert latest["progress"]["successfulInstanceCount"] == 1


def test_faulted_rolling_upgrade_reports_the_gate() -> None:
    e = Arm(scenario=scenario(bad_image=True))
    patch_version(e, "2.0.0")
    started = e.call("POST", f"{e.vmss}/osRollingUpgrade")
    e.at(2000)
    latest = e.call("GET", f"{e.vmss}/rollingUpgrades/latest").body["properties"]
    assert latest["runningStatus"]["code"] == "Faulted"
    assert latest["error"]["code"] == (
        "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade"
    )
    assert e.operation(started)["status"] == "Failed"


# ------------------------------------------------------------------ faults, counts, determinism


def test_throttling_and_errors_are_deterministic() -> None:
    def statuses() -> list[int]:
        e = Arm(faults=Faults(throttle_rate=0.3, error_rate=0.2, throttle_retry_after=0.25))
        out = []
        for i in range(40):
            e.clock.t = i * 0.5
            response = e.call("GET", e.vmss)
            if response.status == 429:
                assert response.headers["retry-after-ms"] == "250"
                assert "Retry-After" not in response.headers
            out.append(response.status)
        return out

    first = statuses()
    assert first == statuses()
    assert {200, 429} <= set(first) and ({500, 503} & set(first))


def test_request_log_records_operations_and_instance_ids() -> None:
    e = Arm()
    e.call("GET", e.vmss)
    e.at(5)
    e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["3"]})
    counts = e.arm.request_counts()
    assert counts["total"] == 2
    assert counts["by_operation"] == {"vmss.get": 1, "vmss.manualupgrade": 1}
    last = counts["log"][-1]
    assert last["operation"] == "vmss.manualupgrade"
    assert last["instance_ids"] == ["3"] and last["status"] == 202
    assert last["t_wall"] == 5 and last["t_sim"] == 5
    assert counts["platform"][-1]["instance_ids"] == ["3"]
    e.arm.reset_counts()
    assert e.arm.request_counts()["total"] == 0


def test_same_requests_same_results() -> None:
    def run() -> list[Any]:
        e = Arm(
            scenario=scenario(upgrade="lognormal(mean=60s, sd=20s)", unhealthy_after_upgrade=0.3),
            epoch=datetime(2026, 1, 1, tzinfo=UTC),
        )
        patch_version(e, "2.0.0")
        e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": [str(i) for i in range(10)]})
        e.at(400)
        return [e.call("GET", f"{e.vmss}/virtualMachines", query={"$expand": "instanceView"}).body]

    assert run() == run()


def test_put_replaces_the_model_and_ignores_read_only_fields() -> None:
    e = Arm()
    doc = e.call("GET", e.vmss).body
    doc["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]["version"] = (
        "2.0.0"
    )
    doc["tags"] = {"team": "web"}
    response = e.call("PUT", e.vmss, doc, headers={"If-Match": doc["etag"]})
    assert response.status == 200
    assert response.body["tags"] == {"team": "web"}
    assert response.body["etag"] == '"2"'
    assert e.arm.ss.model.image.version == "2.0.0"
    assert e.call("PUT", e.vmss, doc, headers={"If-Match": '"1"'}).status == 412
    other = e.call("PUT", e.vmss.replace("/web", "/new"), doc)
    assert other.status == 400 and error_code(other) == "OperationNotAllowed"


def test_legacy_unmanaged_image_uri() -> None:
    e = Arm()
    uri = "https://account.blob.core.windows.net/images/app-2.vhd"
    body = {
        "properties": {
            "virtualMachineProfile": {
                "storageProfile": armjson.storage_profile_patch(ImageReference(uri=uri))
            }
        }
    }
    doc = e.call("PATCH", e.vmss, body).body
    storage = doc["properties"]["virtualMachineProfile"]["storageProfile"]
    assert "imageReference" not in storage and storage["osDisk"]["image"]["uri"] == uri
    assert e.arm.ss.model.image == ImageReference(uri=uri)
    e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["0"]})
    e.at(61)
    vm = e.call("GET", f"{e.vmss}/virtualMachines/0").body
    assert armjson.instance(vm, use_vm_health=False).model == e.arm.ss.model


def test_control_endpoints_answer_loopback_only() -> None:
    pytest.importorskip("starlette")
    from vmss_rollout.emulator.server import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("10.0.0.5") and not _is_loopback(None)


def test_emulate_input_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("starlette")
    from vmss_rollout.cli.emulate import main

    for args, needle in (
        (["--throttle-rate", "2"], "--throttle-rate:"),
        (["--port", "70000"], "--port:"),
        (["--instances", "0"], "--instances:"),
        (["--upgrade-policy", "sometimes"], "--upgrade-policy:"),
    ):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


# ------------------------------------------------- issue 9: Azure's handling of PUT/PATCH bodies


def test_deleting_instances_lowers_the_capacity_a_later_patch_keeps() -> None:
    e = Arm()
    e.call("POST", f"{e.vmss}/delete", {"instanceIds": ["8", "9"]})
    e.call("DELETE", f"{e.vmss}/virtualMachines/7")
    assert e.call("GET", e.vmss).body["sku"]["capacity"] == 7
    # a model PATCH without sku.capacity must not scale the set back out to 10
    patch_version(e, "2.0.0")
    e.call("PATCH", e.vmss, {"tags": {"owner": "me"}})
    e.at(300)
    assert sorted(e.arm.ss.instances, key=int) == [str(i) for i in range(7)]
    assert e.call("GET", e.vmss).body["sku"]["capacity"] == 7


def test_put_with_a_partial_body_leaves_the_rest_unchanged() -> None:
    e = Arm()
    before = e.call("GET", e.vmss).body
    # az vmss scale --new-capacity 12: a PUT of only location and sku
    scaled = e.call("PUT", e.vmss, {"location": "westeurope", "sku": {"capacity": 12}})
    assert scaled.status == 200, scaled.body
    assert len(e.arm.ss.instances) == 12
    assert (
        scaled.body["properties"]["virtualMachineProfile"]
        == (before["properties"]["virtualMachineProfile"])
    )
    # az vmss update --set ...imageReference.version=2.0.0: only the version
    body = {
        "location": "westeurope",
        "properties": {
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"version": "2.0.0"}}}
        },
    }
    updated = e.call("PUT", e.vmss, body)
    assert updated.status == 200, updated.body
    ref = updated.body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
    assert ref == {
        **before["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"],
        "version": "2.0.0",
    }
    assert e.arm.ss.model.image.version == "2.0.0"
    assert e.arm.ss.model.image.publisher == "Canonical"
    assert e.call("PUT", e.vmss, {"sku": {"capacity": 3}}).status == 400  # location required


def test_numbers_and_booleans_as_json_strings() -> None:
    e = Arm()
    body = {
        "sku": {"capacity": "12"},
        "properties": {
            "upgradePolicy": {
                "rollingUpgradePolicy": {"maxBatchInstancePercent": "50", "maxSurge": "false"}
            }
        },
    }
    response = e.call("PATCH", e.vmss, body)
    assert response.status == 200, response.body
    assert response.body["sku"]["capacity"] == 12
    policy = response.body["properties"]["upgradePolicy"]["rollingUpgradePolicy"]
    assert policy["maxBatchInstancePercent"] == 50 and policy["maxSurge"] is False
    assert len(e.arm.ss.instances) == 12
    bad = e.call("PATCH", e.vmss, {"sku": {"capacity": "twelve"}})
    assert bad.status == 400 and bad.body["error"]["target"] == "sku.capacity"


@pytest.mark.parametrize(
    "field, gallery_id",
    [
        ("sharedGalleryImageId", "/SharedGalleries/abc-123/Images/app/Versions/1.2.3"),
        ("communityGalleryImageId", "/CommunityGalleries/pub-9/Images/app/Versions/1.2.3"),
        (
            "id",
            f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute"
            "/galleries/g/images/app/versions/1.2.3",
        ),
    ],
)
def test_gallery_image_ids_are_stored_in_their_own_field(field: str, gallery_id: str) -> None:
    e = Arm()
    ref = {k: None for k in ("id", "sharedGalleryImageId", "communityGalleryImageId")}
    ref[field] = gallery_id
    body = {"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": ref}}}}
    doc = e.call("PATCH", e.vmss, body).body
    stored = doc["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
    assert stored == {field: gallery_id}
    assert e.arm.ss.model.image.id == gallery_id
    # back to a platform image: the id goes
    patch_version(e, "3.0.0")
    platform = {
        "publisher": "Canonical",
        "offer": "ubuntu-24_04-lts",
        "sku": "server",
        "version": "3.0.0",
    }
    body = {
        "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": platform}}}
    }
    doc = e.call("PATCH", e.vmss, body).body
    assert doc["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"] == (
        platform
    )


def test_vms_report_when_they_were_created() -> None:
    e = Arm()
    e.at(100)
    e.call("PATCH", e.vmss, {"sku": {"capacity": 11}})
    vms = {vm["instanceId"]: vm for vm in e.call("GET", f"{e.vmss}/virtualMachines").body["value"]}
    assert vms["0"]["properties"]["timeCreated"] == e.arm.iso(0.0)
    new = e.call("GET", f"{e.vmss}/virtualMachines/10").body
    assert new["properties"]["timeCreated"] == e.arm.iso(100.0)


# ------------------------------------------------------------------ issue 9: instance protection


def vm_doc(e: Arm, iid: str) -> dict[str, Any]:
    response = e.call("GET", f"{e.vmss}/virtualMachines/{iid}")
    assert response.status == 200, response.body
    body: dict[str, Any] = response.body
    return body


def test_protected_instances_refuse_scale_set_actions_naming_them() -> None:
    e = Arm(scenario=scenario(protected_instances=["3", "7"]))
    assert vm_doc(e, "3")["properties"]["protectionPolicy"] == {
        "protectFromScaleIn": True,
        "protectFromScaleSetActions": True,
    }
    assert "protectionPolicy" not in vm_doc(e, "0")["properties"]
    patch_version(e, "2.0.0")
    for action in ("manualupgrade", "reimage", "restart", "deallocate", "delete"):
        refused = e.call("POST", f"{e.vmss}/{action}", {"instanceIds": ["2", "3", "7"]})
        assert refused.status == 400, (action, refused.body)
        assert error_code(refused) == "OperationNotAllowed"
        assert refused.body["error"]["message"] == (
            "InstanceIds may not contain instances that are protected from scale set actions. "
            "The following instance ids are protected from scale set action: 3, 7."
        )
    assert e.arm.ss.instances["2"].provisioning is ProvisioningState.SUCCEEDED  # nothing done
    # without ids: every unprotected instance
    e.call("POST", f"{e.vmss}/restart")
    assert e.arm.ss.instances["3"].power is PowerState.RUNNING
    assert e.arm.ss.instances["4"].power is PowerState.STARTING
    e.at(100)
    # the instance's own operations are not blocked
    assert e.call("POST", f"{e.vmss}/virtualMachines/3/restart").status == 202
    assert e.call("DELETE", f"{e.vmss}/virtualMachines/7").status == 202
    assert "7" not in e.arm.ss.instances


def test_protection_is_set_on_the_instance_model() -> None:
    e = Arm()
    body = {"properties": {"protectionPolicy": {"protectFromScaleSetActions": True}}}
    put = e.call("PUT", f"{e.vmss}/virtualMachines/5", body)
    assert put.status == 200, put.body
    assert put.body["properties"]["protectionPolicy"]["protectFromScaleSetActions"] is True
    assert e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["5"]}).status == 400
    conflicting = {
        "properties": {
            "protectionPolicy": {"protectFromScaleIn": False, "protectFromScaleSetActions": True}
        }
    }
    response = e.call("PUT", f"{e.vmss}/virtualMachines/6", conflicting)
    assert response.status == 400
    assert "protectFromScaleIn cannot be false" in response.body["error"]["message"]
    unprotect = {"properties": {"protectionPolicy": {"protectFromScaleSetActions": False}}}
    assert e.call("PUT", f"{e.vmss}/virtualMachines/5", unprotect).status == 200
    assert e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": ["5"]}).status == 202


def test_platform_upgrades_and_scale_in_skip_protected_instances() -> None:
    e = Arm(scenario=scenario(protected_instances=["0", "9"], upgrade_policy="Rolling"))
    patch_version(e, "2.0.0")
    e.at(3000)
    latest = e.call("GET", f"{e.vmss}/rollingUpgrades/latest").body["properties"]
    assert latest["runningStatus"]["code"] == "Completed"
    assert latest["progress"]["successfulInstanceCount"] == 8
    stale = {i for i, inst in e.arm.ss.instances.items() if inst.model != e.arm.ss.model}
    assert stale == {"0", "9"}
    e.call("PATCH", e.vmss, {"sku": {"capacity": 7}})
    assert sorted(e.arm.ss.instances, key=int) == ["0", "1", "2", "3", "4", "5", "9"]

    auto = Arm(scenario=scenario(protected_instances=["4"], upgrade_policy="Automatic"))
    patch_version(auto, "2.0.0")
    auto.at(1000)
    assert {i for i, x in auto.arm.ss.instances.items() if x.model != auto.arm.ss.model} == {"4"}


# ------------------------------------------------------------------ issue 9: fault domains


def test_zonal_sets_default_to_one_fault_domain() -> None:
    zonal = scenario(zones=["1", "2", "3"], fault_domains=None)
    assert zonal.fault_domains == 1
    e = Arm(scenario=zonal)
    assert e.call("GET", e.vmss).body["properties"]["platformFaultDomainCount"] == 1
    views = e.call("GET", f"{e.vmss}/virtualMachines", query={"$expand": "instanceView"})
    assert {
        vm["properties"]["instanceView"]["platformFaultDomain"] for vm in views.body["value"]
    } == {0}
    # the simulator follows the same rule, so plans match the emulated set
    _, sim = build(zonal, derive_seed(zonal.seed, 0))
    assert {i.fault_domain for i in sim.instances.values()} == {0}
    # the default scenario is regional (5); adding zones makes it 1 unless it was set
    base = Scenario()
    assert base.fault_domains == 5
    assert base.with_overrides(zones="1,2").fault_domains == 1
    assert Scenario(fault_domains=5).with_overrides(zones="1,2").fault_domains == 5
    assert "fault_domains" not in base.to_toml()


def test_fault_domain_counts_azure_allows() -> None:
    assert Arm(scenario=scenario(zones=["1"], fault_domains=5)).arm.ss.fault_domains == 5
    assert Arm(scenario=scenario(fault_domains=3)).arm.ss.fault_domains == 3
    with pytest.raises(InputError, match=r"^scale_set.fault_domains: a zonal scale set has 1 or 5"):
        Arm(scenario=scenario(zones=["1"], fault_domains=3))
