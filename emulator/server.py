"""The ARM emulator's HTTPS server: a Starlette app over :class:`ArmEmulator`,
served by uvicorn on loopback with a freshly generated TLS certificate.

Unmodified Azure tools work against it once the printed environment is
exported:

* ``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``: azure-identity's
  ``DefaultAzureCredential`` (``ManagedIdentityCredential``) takes them for an
  App Service managed identity and asks ``/msi/token`` here for a token;
* ``REQUESTS_CA_BUNDLE``: requests (azure-core's default transport) trusts the
  emulator's CA; the bundle is the CA plus certifi's roots, so other HTTPS
  traffic in that shell keeps working;
* ``VMSS_ROLLOUT_ARM_ENDPOINT``: the ``base_url`` for ``ComputeManagementClient``.

Every handler is ``async`` and the ARM model is synchronous, so requests are
handled one at a time on the event loop's thread (no lock needed).

Run it with ``vmss-rollout emulate`` or ``python -m vmss_rollout.emulator``
(the same options).
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.responses import Response as HttpResponse
from starlette.routing import Route

from ..engine.errors import InputError
from ..sim.scenario import Scenario
from .base import (
    DEFAULT_LOCATION,
    DEFAULT_PAGE_SIZE,
    DEFAULT_RESOURCE_GROUP,
    DEFAULT_SUBSCRIPTION,
    Request,
    Response,
)
from .core import ArmEmulator
from .operations import Faults

__all__ = ["EmulatorConfig", "TlsFiles", "create_app", "generate_tls", "serve"]

IDENTITY_PATH = "/msi/token"
#: ARM's cloud metadata (endpoint discovery), answered without a token
METADATA_PATH = "/metadata/endpoints"
ADMIN_PREFIX = "/_emulator"
_METHODS = ["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD", "OPTIONS"]


@dataclass(frozen=True)
class TlsFiles:
    #: the emulator's own certificate authority (PEM)
    ca: Path
    #: the CA plus certifi's public roots: what REQUESTS_CA_BUNDLE points at
    bundle: Path
    #: the server certificate chain and its private key
    cert: Path
    key: Path


def generate_tls(state_dir: Path, extra_hosts: tuple[str, ...] = ()) -> TlsFiles:
    """A new CA and a server certificate for localhost, 127.0.0.1 and ::1 (and
    ``extra_hosts``), written to ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="vmss-rollout ARM emulator")
    hosts = dict.fromkeys(("localhost", "127.0.0.1", "::1", *extra_hosts))
    leaf = ca.issue_cert(*hosts, common_name="localhost")
    files = TlsFiles(
        ca=state_dir / "ca.pem",
        bundle=state_dir / "ca-bundle.pem",
        cert=state_dir / "server.pem",
        key=state_dir / "server-key.pem",
    )
    ca.cert_pem.write_to_path(files.ca)
    files.cert.unlink(missing_ok=True)
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(files.cert, append=True)
    files.key.unlink(missing_ok=True)
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(leaf.private_key_pem.bytes())
    roots = b""
    try:
        import certifi

        roots = Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n"
    except (ImportError, OSError):  # no certifi: the bundle is the CA alone
        pass
    files.bundle.write_bytes(roots + ca.cert_pem.bytes())
    return files


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json; charset=utf-8",
    )


def _to_http(response: Response) -> HttpResponse:
    if response.body is None:
        return HttpResponse(status_code=response.status, headers=response.headers)
    return _json(response.body, response.status, response.headers)


async def _request(request: HttpRequest) -> Request:
    return Request(
        method=request.method,
        path=request.url.path,
        query=dict(request.query_params),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=await request.body(),
        base_url=f"{request.url.scheme}://{request.url.netloc}",
    )


class _Drop:
    """Set by a handler: close this request's connection instead of answering."""

    def __init__(self) -> None:
        self.drop = False


_DROP: contextvars.ContextVar[_Drop] = contextvars.ContextVar("vmss_rollout_drop")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class DroppingApp:
    """ASGI wrapper for the ``drop_rate`` / ``drop_burst`` faults: when the
    handler marked the request, the response is swallowed and the TCP
    connection aborted, so the client sees a connection closed without an
    answer (requests: ``ConnectionError(ProtocolError('Connection aborted.'))``,
    azure-core: ``ServiceResponseError``). It reaches uvicorn's transport through
    the ``send`` callable uvicorn passes (a bound method of its request cycle);
    on another server a dropped request answers 500 instead."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        marker = _Drop()
        token = _DROP.set(marker)

        async def guarded(message: Message) -> None:
            if not marker.drop:
                await send(message)

        try:
            await self.app(scope, receive, guarded)
        finally:
            _DROP.reset(token)
        if not marker.drop:
            return
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None or not hasattr(transport, "abort"):
            raise RuntimeError("dropped connection (injected by the emulator)")
        transport.abort()
        await asyncio.sleep(0)  # let the server see the connection lost
        if cycle is not None and hasattr(cycle, "disconnected"):
            cycle.disconnected = True


class AnnouncedClock:
    """ASGI wrapper: every HTTP response (ARM answers, errors, tokens, metadata,
    the control endpoints) carries the emulator's clock
    (:meth:`~vmss_rollout.emulator.state.EmulatorState.clock_headers`), read as
    the response starts. Every handler advances the simulation first, so the
    time is the one the response's JSON timestamps are on. vmss-rollout's own
    plumbing (backends/clock.py waits in simulated time on it): Azure never
    sends these headers."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], arm: ArmEmulator
    ) -> None:
        self.app = app
        self.arm = arm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def announcing(message: Message) -> None:
            if message.get("type") == "http.response.start":
                extra = [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in self.arm.clock_headers().items()
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, announcing)


def create_app(arm: ArmEmulator) -> DroppingApp:
    """The ASGI app: the token endpoint, the ARM API and the loopback-only
    ``/_emulator`` control endpoints (request counts, faults)."""

    async def identity(request: HttpRequest) -> HttpResponse:
        return _to_http(arm.handle_identity(await _request(request)))

    async def metadata(request: HttpRequest) -> HttpResponse:
        return _to_http(arm.handle_metadata(await _request(request)))

    async def resource_manager(request: HttpRequest) -> HttpResponse:
        latency = arm.faults.latency
        if latency > 0:
            await asyncio.sleep(latency)
        response = arm.handle(await _request(request))
        if response.drop:
            marker = _DROP.get(None)
            if marker is not None:
                marker.drop = True
        return _to_http(response)

    def admin(
        handler: Callable[[HttpRequest, Any], Any],
    ) -> Callable[[HttpRequest], Any]:
        async def endpoint(request: HttpRequest) -> HttpResponse:
            client = request.client.host if request.client else None
            if not _is_loopback(client):
                return _json(
                    {"error": {"code": "Forbidden", "message": "loopback clients only"}}, 403
                )
            body: Any = None
            raw = await request.body()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    return _json(
                        {"error": {"code": "InvalidRequestContent", "message": "invalid JSON"}},
                        400,
                    )
            try:
                result = handler(request, body)
            except InputError as exc:
                return _json({"error": {"code": "InvalidParameter", "message": str(exc)}}, 400)
            return JSONResponse(result)

        return endpoint

    def requests(request: HttpRequest, body: Any) -> Any:
        arm.advance()
        return arm.request_counts()

    def reset_counts(request: HttpRequest, body: Any) -> Any:
        arm.reset_counts()
        return {"total": 0}

    def faults(request: HttpRequest, body: Any) -> Any:
        if request.method == "POST":
            if not isinstance(body, dict):
                raise InputError("faults: expected a JSON object of fault knobs")
            arm.advance()
            arm.set_faults(arm.faults.with_changes(body))
        return arm.faults.to_dict()

    def state(request: HttpRequest, body: Any) -> Any:
        arm.advance()
        return arm.state()

    def history(request: HttpRequest, body: Any) -> Any:
        arm.advance()
        return arm.history_json()

    def delete_scale_set(request: HttpRequest, body: Any) -> Any:
        arm.advance()
        arm.deleted = True
        return {"deleted": True}

    def restore_scale_set(request: HttpRequest, body: Any) -> Any:
        arm.advance()
        arm.deleted = False
        if isinstance(body, dict) and body.get("recreate"):
            arm.recreate()
        return {"deleted": False, "uniqueId": arm.unique_id}

    routes = [
        Route(IDENTITY_PATH, identity, methods=["GET", "POST"]),
        Route(METADATA_PATH, metadata, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/requests", admin(requests), methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/reset-counts", admin(reset_counts), methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/faults", admin(faults), methods=["GET", "POST"]),
        Route(f"{ADMIN_PREFIX}/state", admin(state), methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/history", admin(history), methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/delete-scale-set", admin(delete_scale_set), methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/restore-scale-set", admin(restore_scale_set), methods=["POST"]),
        Route("/{path:path}", resource_manager, methods=_METHODS),
    ]
    return DroppingApp(AnnouncedClock(Starlette(routes=routes), arm))


@dataclass(frozen=True)
class EmulatorConfig:
    scenario: Scenario
    host: str = "127.0.0.1"
    port: int = 8443
    time_scale: float = 60.0
    page_size: int = DEFAULT_PAGE_SIZE
    health_extension: bool = True
    overprovision: bool = True
    faults: Faults | None = None
    subscription: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP
    name: str | None = None
    location: str = DEFAULT_LOCATION
    env_file: Path | None = None
    state_dir: Path | None = None
    log_level: str = "warning"


SHUTDOWN_GRACE_S = 1


def _quiet_idle_shutdown(record: logging.LogRecord) -> bool:
    """Drop uvicorn's error about cancelling zero tasks at the shutdown timeout
    (only idle keep-alive connections were left)."""
    return not (
        "timeout graceful shutdown exceeded" in record.getMessage()
        and record.args is not None
        and tuple(record.args)[:1] == (0,)
    )


def _url_host(host: str) -> str:
    """The host to put in URLs: wildcard binds are reached over loopback."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host:
        return f"[{host}]"
    return host


def _environment(arm: ArmEmulator, endpoint: str, tls: TlsFiles) -> dict[str, str]:
    return {
        "VMSS_ROLLOUT_ARM_ENDPOINT": endpoint,
        "AZURE_SUBSCRIPTION_ID": arm.subscription,
        "IDENTITY_ENDPOINT": f"{endpoint}{IDENTITY_PATH}",
        "IDENTITY_HEADER": arm.identity_secret,
        "REQUESTS_CA_BUNDLE": str(tls.bundle),
    }


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def serve(config: EmulatorConfig, *, out: TextIO | None = None, err: TextIO | None = None) -> None:
    """Generate the certificate, start the server, print the environment to
    export once it listens (and write it to ``config.env_file``), serve until
    interrupted (Ctrl-C, SIGTERM)."""
    out = out or sys.stdout
    err = err or sys.stderr
    state_dir = (
        config.state_dir or Path(tempfile.mkdtemp(prefix="vmss-rollout-emulator-"))
    ).resolve()
    extra = () if config.host in ("0.0.0.0", "::", "localhost", "") else (config.host,)
    tls = generate_tls(state_dir, extra)
    t0 = time.monotonic()
    arm = ArmEmulator(
        config.scenario,
        clock=lambda: time.monotonic() - t0,
        time_scale=config.time_scale,
        subscription=config.subscription,
        resource_group=config.resource_group,
        name=config.name,
        location=config.location,
        page_size=config.page_size,
        health_extension=config.health_extension,
        overprovision=config.overprovision,
        faults=config.faults,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(arm),
            host=config.host,
            port=config.port,
            ssl_certfile=str(tls.cert),
            ssl_keyfile=str(tls.key),
            log_level=config.log_level,
            access_log=False,
            lifespan="off",
            server_header=False,
            # idle keep-alive TLS connections would otherwise hold a shutdown for
            # asyncio's 30 s TLS close timeout
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
    )
    logging.getLogger("uvicorn.error").addFilter(_quiet_idle_shutdown)

    def ready() -> None:
        port = config.port
        for listener in getattr(server, "servers", []):
            for sock in listener.sockets:
                port = sock.getsockname()[1]
                break
        endpoint = f"https://{_url_host(config.host)}:{port}"
        env = _environment(arm, endpoint, tls)
        instances = len(arm.ss.instances)
        lines = [f"export {key}={value}" for key, value in env.items()]
        lines.append(f"# scale set: -g {arm.resource_group} -n {arm.name} ({instances} instances)")
        print("\n".join(lines), file=out, flush=True)
        if config.env_file is not None:
            document = {
                "env": env,
                "endpoint": endpoint,
                "port": port,
                "subscription": arm.subscription,
                "resource_group": arm.resource_group,
                "name": arm.name,
                "location": arm.location,
                "instances": instances,
                "ca_cert": str(tls.ca),
                "pid": os.getpid(),
            }
            _write_private(config.env_file, json.dumps(document, indent=2) + "\n")
        notes = [
            f"vmss-rollout emulator: scale set {arm.name} ({instances} instances) at {endpoint}, "
            f"simulated time x{config.time_scale:g}",
            f"CA certificate: {tls.ca} (REQUESTS_CA_BUNDLE adds it to certifi's roots)",
            f"request counts: {endpoint}/_emulator/requests; Ctrl-C to stop",
        ]
        if not _is_loopback(config.host):
            notes.append(
                f"warning: listening on {config.host}: anyone who can reach this port can use "
                "the emulator's API; the control endpoints answer loopback clients only"
            )
        print("\n".join(notes), file=err, flush=True)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            ready()
        await task

    try:
        asyncio.run(run())
    except (OSError, SystemExit) as exc:  # uvicorn exits when it cannot bind
        if server.started:
            raise
        raise InputError(
            f"--port: cannot listen on {config.host}:{config.port} (see the message above)"
            if isinstance(exc, SystemExit)
            else f"--port: cannot listen on {config.host}:{config.port} ({exc})"
        ) from None
