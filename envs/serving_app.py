"""The served app and its guard rails: session cap, idle timeout, request size, metrics and a graceful drain.

``create_server_app`` puts :class:`ServingGuard` (ASGI middleware) in front of openenv-core's routes and adds
``/metrics``; :class:`GracefulServer` (uvicorn) lets steps in flight finish before it closes sessions;
:class:`ServerThread` runs one in a thread (tests, examples). Several processes on one port: ``serving_workers``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from aligngym.envs.serving_env import (
    ActionError,
    AlignGymEnvironment,
    CompletionAction,
    EnvTemplate,
    PromptObservation,
)

try:
    import uvicorn
    from fastapi import FastAPI, Request, WebSocketDisconnect
    from fastapi.responses import JSONResponse
    from openenv.core.env_server.http_server import create_app
    from uvicorn.protocols.utils import ClientDisconnected
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aligngym.envs.serving needs the optional 'serve' extra (openenv-core, uvicorn): "
        "pip install 'aligngym[serve]'"
    ) from _err

#: paths that are neither counted as requests nor timed (probes)
_PROBES = frozenset({"/health", "/metrics"})


class _RefusalLogFilter(logging.Filter):
    """Drops uvicorn's "returned without completing handshake" error, which uvicorn 0.54 logs after every WebSocket
    handshake answered with an HTTP response (our 503 refusals) although that answer is the ASGI extension's purpose.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


_REFUSAL_FILTER = _RefusalLogFilter()


@dataclass(frozen=True)
class ServerLimits:
    """Limits of one server; the session cap holds for all its worker processes together.

    :param max_sessions: WebSocket sessions open at once; one more is refused at the handshake with HTTP 503, a
        ``Retry-After`` header and a JSON ``detail`` (``AlignGymClient`` raises ``ServerRefusedError``).
    :param idle_timeout_s: a session that sends nothing for this many seconds is closed (WebSocket close code 1001,
        its env freed); ``None`` keeps idle sessions open.
    :param max_request_bytes: largest HTTP body (larger: 413 with a JSON ``detail``) and largest WebSocket message
        (larger: an error reply with code ``REQUEST_TOO_LARGE``, the session stays open; over 4x: the connection
        is closed with code 1009).
    :param drain_timeout_s: on shutdown (SIGTERM, Ctrl+C), how long steps in flight may take to finish and be
        answered before the remaining sessions are closed (code 1012).
    :param env_threads: threads per process that run resets and steps for all its sessions.
    """

    max_sessions: int = 64
    idle_timeout_s: float | None = 300.0
    max_request_bytes: int = 1 << 20
    drain_timeout_s: float = 30.0
    env_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_request_bytes", "env_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServerLimits.{name} must be a positive integer, got {value!r}")
        idle = self.idle_timeout_s
        if idle is not None and (isinstance(idle, bool) or not isinstance(idle, int | float) or idle <= 0):
            raise ValueError(f"ServerLimits.idle_timeout_s must be > 0 seconds or None, got {idle!r}")
        drain = self.drain_timeout_s
        if isinstance(drain, bool) or not isinstance(drain, int | float) or drain < 0:
            raise ValueError(f"ServerLimits.drain_timeout_s must be >= 0 seconds, got {drain!r}")


class SessionSlots:
    """Open sessions counted against the cap: in this process, or over all workers through a shared array.

    :param cap: sessions allowed at once (the whole server).
    :param shared: a ``multiprocessing`` ``Array("q", n_workers)``, one cell per worker, or ``None`` (one process).
    :param index: this worker's cell in ``shared``.
    """

    def __init__(self, cap: int, shared: Any = None, index: int = 0) -> None:
        self.cap = cap
        self.local = 0
        self._shared = shared
        self._index = index

    def try_acquire(self) -> bool:
        """Take a slot; ``False`` when the server already holds ``cap`` sessions."""
        if self._shared is None:
            if self.local >= self.cap:
                return False
        else:
            with self._shared.get_lock():
                cells = self._shared.get_obj()
                if sum(cells) >= self.cap:
                    return False
                cells[self._index] += 1
        self.local += 1
        return True

    def release(self) -> None:
        self.local -= 1
        if self._shared is not None:
            with self._shared.get_lock():
                self._shared.get_obj()[self._index] -= 1

    def total(self) -> int:
        """Sessions open in the whole server."""
        if self._shared is None:
            return self.local
        with self._shared.get_lock():
            return int(sum(self._shared.get_obj()))


class ServerMetrics:
    """Counters and a bounded latency window of one process, served as JSON at ``/metrics``.

    :param window: latencies kept for the quantiles (the most recent ones; memory stays bounded).
    """

    def __init__(self, window: int = 10_000) -> None:
        self.started = time.time()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latencies_s: deque[float] = deque(maxlen=window)

    def snapshot(self, slots: SessionSlots, worker: int, draining: bool) -> dict[str, Any]:
        lat = np.asarray(self.latencies_s, dtype=np.float64) * 1000.0
        q = (lambda p: round(float(np.percentile(lat, p)), 3)) if lat.size else (lambda p: None)
        return {
            "pid": os.getpid(),
            "worker": worker,
            "uptime_s": round(time.time() - self.started, 3),
            "draining": draining,
            "sessions": {
                "open": slots.local,
                "open_server": slots.total(),
                "max_server": slots.cap,
                "opened": self.counts["sessions_opened"],
                "refused": self.counts["sessions_refused"],
                "idle_closed": self.counts["sessions_idle_closed"],
            },
            "requests": {"http": self.counts["http_requests"], "ws_messages": self.counts["ws_messages"]},
            "errors": dict(self.errors),
            "latency_ms": {"window": int(lat.size), "p50": q(50), "p90": q(90), "p99": q(99), "max": q(100)},
        }


class ServingHub:
    """What the guard, the app's ``/metrics`` route and :class:`GracefulServer` share in one process.

    :param limits: the server's limits.
    :param slots: the session counter (shared between workers or not).
    :param worker: this process's worker index (0 with one process).
    """

    def __init__(self, limits: ServerLimits, slots: SessionSlots | None = None, worker: int = 0) -> None:
        self.limits = limits
        self.slots = slots or SessionSlots(limits.max_sessions)
        self.worker = worker
        self.metrics = ServerMetrics()
        self.draining = False
        #: ``id(scope)`` of WebSocket connections whose message is being handled (in flight)
        self.busy: set[int] = set()

    def snapshot(self) -> dict[str, Any]:
        return self.metrics.snapshot(self.slots, self.worker, self.draining) | {
            "in_flight": len(self.busy),
            "limits": asdict(self.limits),
        }


def _text_bytes(data: str | bytes) -> int:
    """UTF-8 size of a message without encoding it when the answer is clear from its length."""
    if isinstance(data, bytes):
        return len(data)
    return len(data) if data.isascii() else len(data.encode("utf-8"))


def _is_close(text: str) -> bool:
    """Whether a (short) WebSocket message is OpenEnv's ``{"type": "close"}``."""
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "close"


async def _send_json(send: Any, status: int, payload: Mapping[str, Any], headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class ServingGuard:
    """ASGI middleware: request-size limit, session cap, idle timeout, in-flight tracking and metrics.

    :param app: the ASGI app it guards.
    :param hub: shared state (limits, counters, the draining flag).
    """

    def __init__(self, app: Any, hub: ServingHub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # -- HTTP --------------------------------------------------------------------------------------------------------
    async def _http(self, scope: Any, receive: Any, send: Any) -> None:
        hub, path = self.hub, scope.get("path", "")
        if path == "/health" and hub.draining:
            await _send_json(send, 503, {"status": "draining", "detail": "the server is shutting down"})
            return
        if path in _PROBES:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        hub.metrics.counts["http_requests"] += 1
        limit = hub.limits.max_request_bytes
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, int(declared))
            return
        chunks, size, more = [], 0, scope.get("method") in ("POST", "PUT", "PATCH")
        while more:  # buffer the body (bounded by the limit) so that an oversize one never reaches the app
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send, size)
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive() -> Any:
            return replay.pop() if replay else await receive()

        status = [500]

        async def status_send(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, replay_receive, status_send)
        finally:
            if status[0] >= 400:
                hub.metrics.errors[f"http_{status[0]}"] += 1
            hub.metrics.latencies_s.append(time.perf_counter() - t0)

    async def _too_large(self, send: Any, size: int) -> None:
        self.hub.metrics.errors["http_413"] += 1
        limit = self.hub.limits.max_request_bytes
        detail = (
            f"request body of {size} bytes is over this server's limit of {limit} bytes (max_request_bytes)"
        )
        await _send_json(send, 413, {"detail": detail})

    # -- WebSocket ---------------------------------------------------------------------------------------------------
    async def _websocket(self, scope: Any, receive: Any, send: Any) -> None:
        hub = self.hub
        if hub.draining or not hub.slots.try_acquire():
            await self._refuse(scope, receive, send)
            return
        hub.metrics.counts["sessions_opened"] += 1
        key, idle, limit = id(scope), hub.limits.idle_timeout_s, hub.limits.max_request_bytes
        closed, started, held = [False], [0.0], [True]

        def release() -> None:
            # freed when the close is sent, before the client can see it and reconnect (churn at the cap)
            if held[0]:
                held[0] = False
                hub.slots.release()

        async def guarded_receive() -> Any:
            while True:
                try:
                    msg = await (asyncio.wait_for(receive(), idle) if idle else receive())
                except TimeoutError:
                    hub.metrics.counts["sessions_idle_closed"] += 1
                    closed[0] = True
                    release()
                    reason = f"idle for more than {idle:g} s"
                    try:
                        await send({"type": "websocket.close", "code": 1001, "reason": reason})
                    except (ClientDisconnected, OSError, RuntimeError):
                        pass
                    return {"type": "websocket.disconnect", "code": 1001}
                if msg["type"] != "websocket.receive":
                    if msg["type"] == "websocket.disconnect":
                        release()
                    return msg
                if hub.draining:  # no new work once the drain has begun: the session ends here
                    closed[0] = True
                    release()
                    try:
                        await send(
                            {"type": "websocket.close", "code": 1012, "reason": "the server is shutting down"}
                        )
                    except (ClientDisconnected, OSError, RuntimeError):
                        pass
                    return {"type": "websocket.disconnect", "code": 1012}
                data = msg.get("text")
                size = _text_bytes(data if data is not None else msg.get("bytes") or b"")
                if size > limit:
                    hub.metrics.errors["REQUEST_TOO_LARGE"] += 1
                    message = f"message of {size} bytes is over this server's limit of {limit} bytes (max_request_bytes)"
                    error = {"type": "error", "data": {"message": message, "code": "REQUEST_TOO_LARGE"}}
                    await send({"type": "websocket.send", "text": json.dumps(error)})
                    continue
                if data is not None and len(data) < 64 and '"close"' in data and _is_close(data):
                    release()  # the client ends its session: its slot is free before its close handshake ends
                hub.busy.add(key)
                hub.metrics.counts["ws_messages"] += 1
                started[0] = time.perf_counter()
                return msg

        async def guarded_send(msg: Any) -> None:
            if closed[0]:
                return
            if key in hub.busy and msg["type"] in ("websocket.send", "websocket.close"):
                hub.busy.discard(key)
                if msg["type"] == "websocket.send":
                    hub.metrics.latencies_s.append(time.perf_counter() - started[0])
                    text = msg.get("text") or ""
                    if text.startswith('{"type":"error"'):
                        code = json.loads(text).get("data", {}).get("code", "ERROR")
                        hub.metrics.errors[str(code)] += 1
            if msg["type"] == "websocket.close":
                release()
            await send(msg)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except (WebSocketDisconnect, ClientDisconnected):
            pass  # the client left; openenv-core has already freed its session
        finally:
            hub.busy.discard(key)
            release()

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        hub = self.hub
        await receive()  # websocket.connect
        if hub.draining:
            code, detail = "SHUTTING_DOWN", "the server is shutting down; connect again once it is back"
        else:
            code = "CAPACITY_REACHED"
            detail = (
                f"session cap reached: {hub.slots.total()} of max_sessions={hub.slots.cap} sessions are open; "
                "retry later or ask for a larger --max-sessions"
            )
        hub.metrics.counts["sessions_refused"] += 1
        hub.metrics.errors[code] += 1
        payload = {"detail": detail, "code": code, "max_sessions": hub.slots.cap}
        if "websocket.http.response" in scope.get("extensions", {}):
            body = json.dumps(payload).encode()
            head = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
            await send({"type": "websocket.http.response.start", "status": 503, "headers": head})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # a server without the extension: close before accepting (the client sees HTTP 403)
            await send({"type": "websocket.close", "code": 1013, "reason": detail[:120]})


def create_server_app(
    env_id: str,
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    max_concurrent_envs: int | None = None,
    limits: ServerLimits | None = None,
    hub: ServingHub | None = None,
) -> FastAPI:
    """FastAPI app serving ``env_id`` with OpenEnv's routes (``/reset``, ``/step``, ``/state``, ``/schema``,
    ``/health``, ``/metadata``, ``/ws``), ``/metrics`` and the guard rails of ``limits``.

    :param env_id: registered aligngym id.
    :param env_kwargs: ``gym.make`` options for every session.
    :param max_concurrent_envs: WebSocket sessions open at once (shorthand for ``limits.max_sessions``).
    :param limits: the server's limits (:class:`ServerLimits`; defaults when ``None``).
    :param hub: shared state to use (the multi-process server passes one with a cross-process session counter).
    """
    if limits is None:
        limits = ServerLimits(max_sessions=max_concurrent_envs if max_concurrent_envs is not None else 64)
    elif max_concurrent_envs is not None and max_concurrent_envs != limits.max_sessions:
        raise ValueError(
            f"max_concurrent_envs={max_concurrent_envs} disagrees with limits.max_sessions={limits.max_sessions}; "
            "give one of them"
        )
    hub = hub or ServingHub(limits)
    template = EnvTemplate(env_id, env_kwargs, env_threads=limits.env_threads)
    app = create_app(
        functools.partial(AlignGymEnvironment, template),
        CompletionAction,
        PromptObservation,
        env_name=env_id,
        max_concurrent_envs=limits.max_sessions,  # the guard enforces the cap first (over all workers)
    )

    async def _action_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    async def _metrics() -> dict[str, Any]:
        return hub.snapshot()

    app.add_exception_handler(ActionError, _action_error)
    app.add_api_route("/metrics", _metrics, methods=["GET"], tags=["Health"], summary="Server metrics")
    app.router.on_shutdown.append(template.shutdown)
    app.add_middleware(ServingGuard, hub=hub)
    logging.getLogger("uvicorn.error").addFilter(_REFUSAL_FILTER)  # the same object each time: added once
    app.state.aligngym_template = template
    app.state.aligngym_hub = hub
    return app


class GracefulServer(uvicorn.Server):
    """uvicorn server whose shutdown first lets steps in flight finish and be answered.

    On shutdown it stops accepting, refuses new sessions (503), closes idle sessions at once (code 1012) and each
    busy one as soon as its answer is sent, for at most ``drain_timeout_s``; then uvicorn's own shutdown runs.

    :param config: the uvicorn config.
    :param hub: the app's shared state (``app.state.aligngym_hub``).
    """

    def __init__(self, config: uvicorn.Config, hub: ServingHub) -> None:
        super().__init__(config)
        self.hub = hub
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    async def shutdown(self, sockets: list | None = None) -> None:
        hub = self.hub
        hub.draining = True
        for server in getattr(self, "servers", []):
            server.close()
        deadline = time.monotonic() + hub.limits.drain_timeout_s
        closed: set[int] = set()
        while True:
            for conn in list(self.server_state.connections):
                scope = getattr(conn, "scope", None)
                if not scope or scope.get("type") != "websocket" or id(conn) in closed:
                    continue
                if id(scope) not in hub.busy:
                    closed.add(id(conn))
                    conn.shutdown()
            if not hub.busy or self.force_exit or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        settle = time.monotonic() + 1.0  # let the closed ones leave before uvicorn shuts the rest
        while time.monotonic() < settle and any(id(c) in closed for c in self.server_state.connections):
            await asyncio.sleep(0.02)
        await super().shutdown(sockets)


class ServerThread:
    """A :class:`GracefulServer` serving an app from a daemon thread (tests, examples, the load test).

    Loopback by default; ``port=0`` lets the OS pick a free port; :attr:`url` is ``http://host:port`` once
    :meth:`start` returns.
    """

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", **config: Any
    ) -> None:
        hub = getattr(app.state, "aligngym_hub", None) or ServingHub(ServerLimits())
        self._server = GracefulServer(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, **config), hub
        )
        self._thread = threading.Thread(target=self._server.run, name="aligngym-openenv-server", daemon=True)
        self.host = host
        self.port = port
        self.hub = hub

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the OpenEnv server did not start on {self.host}:{self.port} within {timeout} s"
                )
            time.sleep(0.02)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: steps in flight finish (within the drain timeout), then every session is closed."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def crash(self) -> None:
        """Drop every connection without a close frame and stop listening, as a killed process would (tests)."""
        server, loop = self._server, self._server.loop
        assert loop is not None, "crash() needs a started server"

        def abort_all() -> None:
            for listener in server.servers:
                listener.close()
            for conn in list(server.server_state.connections):
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.abort()

        loop.call_soon_threadsafe(abort_all)
        server.force_exit = True
        self.stop()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
