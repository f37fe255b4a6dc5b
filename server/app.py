"""Wiring: create_app(config) builds the Quart app; serve(config) runs it under hypercorn
with the embedded SFU workers as children."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import socket
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response, has_request_context, jsonify, request, websocket
from quart_schema import QuartSchema, RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from yahaml_voice import __version__
from yahaml_voice.core.aio import Service, cancel_and_wait, every
from yahaml_voice.core.config import Config
from yahaml_voice.core.protocol import JsonError, check_depth, decode_text, describe
from yahaml_voice.core.tokens import AuthError, bearer

from . import api_admin, api_recordings  # noqa: F401  (add their routes to the API blueprint)
from .admin import AdminService
from .api import blueprint as api_blueprint
from .api import test_blueprint
from .api_netlog import OpenAPI
from .catalog import RoomCatalog
from .certs import CertificateWatch
from .context import EXTENSION, Services
from .errors import ApiError
from .hosts import allowed_hosts, host_allowed
from .limits import Limits
from .logs import setup_logging
from .metrics import metrics_blueprint
from .origins import origin_allowed
from .rooms import RoomService
from .static import static_blueprint
from .store import StoreError, StoreUnavailable
from .stores import make_catalog, make_store
from .transport import BoundedWebsocketConnection, hypercorn_settings, install
from .ws import blueprint as ws_blueprint
from .ws import hold_workers

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5
# Operator pages: not for the public (bearer metrics.token, or the metrics listener).
PRIVATE_PATHS = ("/metrics", "/docs")
# Exceptions that can only come from what a client sent (decoding, nesting).
INPUT_ERRORS = (UnicodeError, RecursionError, JsonError)


def _render(exc: ApiError) -> tuple[Response, int]:
    """Every error answer: `{"error": code, "message": ...}`, its status and headers."""
    response = jsonify(exc.body())
    response.headers.update(exc.headers)
    return response, exc.status


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return _render(ApiError(status, code, message))


def _validation_message(exc: RequestSchemaValidationError) -> str:
    inner = exc.validation_error
    if isinstance(inner, ValidationError):
        return describe(inner, limit=5)
    if isinstance(inner, TypeError | ValueError):
        return f"the body must be a JSON object matching the schema ({inner})"
    return str(inner)


def create_app(config: Config) -> Quart:
    """A ready app; its store, bus and room service start with the server."""
    app = Quart(__name__, static_folder=None)
    app.asgi_websocket_class = BoundedWebsocketConnection
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.config["QUART_SCHEMA_CONVERT_CASING"] = False
    QuartSchema(
        app,
        info={"title": "yahaml-voice", "version": "1"},
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        openapi_provider_class=OpenAPI,
    )
    config.token_secret()
    config.worker_secret()
    store, bus = make_store(config)
    rooms = RoomService(config, store, bus, Limits(config))
    admin = AdminService(config, store, rooms, RoomCatalog(config, make_catalog(config)))
    svc = Services(
        config=config,
        store=store,
        bus=bus,
        rooms=rooms,
        admin=admin,
        node_id=uuid.uuid4().hex[:12],
    )
    if config.metrics.enabled:
        svc.certificates = CertificateWatch(config)
    app.extensions[EXTENSION] = svc

    app.register_blueprint(api_blueprint)
    app.register_blueprint(ws_blueprint)
    if config.server.test_hooks:
        app.register_blueprint(test_blueprint)
    if config.metrics.enabled:
        app.register_blueprint(metrics_blueprint)
    app.register_blueprint(static_blueprint(config))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        workers = await store.workers()
        return {
            "status": "ok",
            "version": __version__,  # what an upgrade checks it now runs
            "store": store.name,
            "node": svc.node_id,
            "sockets": len(svc.local_sockets),
            "workers": len(workers),
            "authMode": config.auth.mode,
            "bus": bus.health(),
        }

    hosts = allowed_hosts(config)

    def check_host(host: str | None) -> None:
        if not host_allowed(host, hosts):
            raise ApiError(421, "misdirected", "this server does not answer to that host name")

    @app.before_request
    async def before_request() -> None:
        check_host(request.headers.get("Host"))
        if request.path.startswith(PRIVATE_PATHS) and not _private_allowed(
            config, request.headers.get("Authorization"), request.scope
        ):
            raise ApiError(
                401,
                "unauthorized",
                "a metrics token is needed",
                {"WWW-Authenticate": 'Bearer realm="yahaml-voice metrics"'},
            )

    @app.before_websocket
    async def before_websocket() -> None:
        check_host(websocket.headers.get("Host"))

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> tuple[Response, int]:
        # Route refusals, room rules (rooms.py) and limits (RateLimited, with Retry-After).
        return _render(exc)

    @app.errorhandler(AuthError)
    async def auth_error(exc: AuthError) -> tuple[Response, int]:
        # Also a WebSocket's answer before the upgrade (ws.py): nothing held for a caller
        # without a valid token, and a page learns why from GET /api/sessions/me alike.
        return _error(401, exc.code, str(exc))

    @app.errorhandler(StoreError)
    async def store_error(exc: StoreError) -> tuple[Response, int]:
        # The shared store (Redis) is unreachable or restarting: retry shortly.
        # Also a WebSocket's answer before the upgrade (ws.py registers the socket first).
        where = request if has_request_context() else websocket
        log.warning("store error on %s %s: %s", where.method, where.path, exc)
        return _error(503, "unavailable", "the state store is unavailable; retry shortly")

    @app.errorhandler(RequestSchemaValidationError)
    async def schema_error(exc: RequestSchemaValidationError) -> tuple[Response, int]:
        return _error(400, "bad_request", _validation_message(exc))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        names = {413: "too_large", 404: "not_found", 405: "method_not_allowed"}
        message = exc.description or exc.name
        if status == 400:
            message = "the request body is not valid JSON"
        if status == 413:
            message = f"the request body is larger than {config.server.max_body_bytes} bytes"
        return _error(status, names.get(status, exc.name.lower().replace(" ", "_")), message)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> tuple[Response, int]:
        if isinstance(exc, INPUT_ERRORS):
            # Input that slipped past the checks above is still the client's fault: a 400
            # and one log line, not a traceback.
            log.warning("bad input on %s %r: %s", request.method, request.path, exc)
            return _error(400, "bad_request", "the request could not be decoded")
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal", "internal error; it has been logged")

    @app.before_request
    async def check_body() -> None:
        """Every body is UTF-8 and shallow before any handler decodes it (400 otherwise)."""
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return
        raw = await request.get_data()
        if raw:
            try:
                check_depth(decode_text(raw))
            except JsonError as exc:
                raise ApiError(400, exc.code, exc.message) from exc

    @app.after_request
    async def cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and origin_allowed(origin, None, config.server.allowed_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
        return response

    @app.while_serving
    async def lifecycle() -> AsyncGenerator[None, None]:
        await store.start()
        await bus.start()
        # The room definitions (config.rooms) before anything reads them.
        await admin.start()
        await rooms.nets.start()
        await rooms.start()
        watcher = asyncio.create_task(
            every(
                WATCH_INTERVAL,
                lambda: _watch(svc),
                what="worker watch",
                log=log,
                quiet=(StoreUnavailable,),
            ),
            name="watch-workers",
        )
        if svc.certificates is not None:
            svc.certificates.start()
        log.info("serving: store=%s auth=%s node=%s", store.name, config.auth.mode, svc.node_id)
        try:
            yield
        finally:
            await cancel_and_wait(watcher)
            if svc.certificates is not None:
                await svc.certificates.stop()
            await rooms.stop()
            await rooms.nets.stop()
            await admin.stop()
            await bus.stop()
            await store.stop()

    return app


def _private_allowed(config: Config, authorization: str | None, scope: Any) -> bool:
    """The metrics listener, or the metrics token (compared in constant time)."""
    server: Any = scope.get("server") or ()
    if config.metrics.port is not None and len(server) > 1 and server[1] == config.metrics.port:
        return True
    token = bearer(authorization)
    expected = config.metrics.token
    return bool(token and expected and hmac.compare_digest(token.encode(), expected.encode()))


async def _watch(svc: Services) -> None:
    """Heartbeat this node and re-place rooms of silent workers (every WATCH_INTERVAL)."""
    await svc.store.node_alive(svc.node_id, ttl=max(5.0, svc.config.sfu.heartbeat_timeout * 2))
    await svc.rooms.modes.check_workers()


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As hypercorn binds: TIME_WAIT leftovers of a restart must not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve(config: Config, companions: Callable[[str], Sequence[Service]] | None = None) -> None:
    """Run hypercorn until SIGINT/SIGTERM.

    `companions(url)` gives services that live exactly as long as the server (the embedded
    SFU workers, which register at `url`): the entry point wires them, so this package
    never imports the SFU."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config as HypercornConfig

    setup_logging(config)
    if not _port_free(config.server.host, config.server.port):
        raise SystemExit(f"error: {config.server.host}:{config.server.port} is already in use")
    app = create_app(config)
    hconf = HypercornConfig()
    hconf.bind = [_bind(config.server.host, config.server.port)]
    if config.metrics.port is not None:
        hconf.bind.append(_bind(config.metrics.host, config.metrics.port))
    hconf.accesslog = None
    hconf.websocket_ping_interval = 20.0
    hypercorn_settings(hconf)
    install(
        write_timeout=config.server.write_timeout,
        stall_timeout=config.server.write_timeout,
        close_timeout=2.0,
    )
    # Open WebSockets reconnect to another process anyway; do not hold shutdown for them.
    hconf.graceful_timeout = 1.0
    hconf.include_server_header = False
    base = f"http://{config.server.host}:{config.server.port}"
    log.info("yahaml-voice on %s (open %s/ in a browser)", base, base)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            # hypercorn cancels connections still open at its graceful timeout and asyncio
            # reports each as an error; during shutdown that is expected, not news.
            if stop.is_set() and isinstance(context.get("exception"), asyncio.CancelledError):
                return
            loop.default_exception_handler(context)

        loop.set_exception_handler(on_loop_error)
        url = config.sfu.server_url or base.replace("http", "ws", 1)
        started: list[Service] = []
        for companion in companions(url) if companions else ():
            await companion.start()
            started.append(companion)

        async def stop_companions() -> None:
            while started:
                await started.pop().stop()

        async def shutdown() -> None:
            await stop.wait()
            log.info("shutting down")
            # First: sockets opened from now on would be cut again in a moment; refused,
            # clients and workers go to the next process at once.
            svc = app.extensions[EXTENSION]
            svc.stopping = True
            await stop_companions()
            # Only now: the embedded workers' rooms were re-placed as they died.
            svc.keep_worker_rooms = True
            with contextlib.suppress(StoreError):  # then they expire: rooms are re-placed
                await hold_workers(svc)
            # Tell clients to reconnect (1012) rather than have hypercorn cut them off.
            svc.close_sockets(1012, "server restarting")
            await asyncio.sleep(0.2)

        try:
            await hypercorn_serve(app, hconf, shutdown_trigger=shutdown)
        finally:
            await stop_companions()

    asyncio.run(main())
