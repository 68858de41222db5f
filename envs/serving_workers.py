"""``aligngym serve``: an aligngym env served over OpenEnv by one process or by several on one port.

With ``--workers N`` each worker binds the port with ``SO_REUSEPORT`` (the kernel spreads new connections over the
workers, and a WebSocket session stays in the process that accepted it); the session cap is shared, a worker that
dies is restarted, and SIGTERM / Ctrl+C drains every worker (steps in flight finish) before the server exits.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym

import aligngym.envs
from aligngym.envs.serving_app import (
    GracefulServer,
    ServerLimits,
    ServingHub,
    SessionSlots,
    create_server_app,
)

#: a worker that exits this soon after its start counts as a failed start; this many in a row stop the server
_FAST_EXIT_S = 20.0
_MAX_FAILED_STARTS = 3


@dataclass(frozen=True)
class ServeConfig:
    """Everything a worker process needs to build its server (picklable: workers are spawned).

    :param env_id: registered aligngym id.
    :param env_kwargs: ``gym.make`` options.
    :param host: bind address.
    :param port: port (0: the OS picks one).
    :param limits: the server's limits (session cap over all workers).
    :param workers: processes serving the port.
    :param log_level: uvicorn log level.
    :param backlog: listen queue per process (connections not yet accepted).
    :param ws_ping_interval_s: WebSocket keepalive ping interval (and timeout); ``None`` turns pings off.
    """

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    limits: ServerLimits = field(default_factory=ServerLimits)
    workers: int = 1
    log_level: str = "info"
    backlog: int = 4096
    ws_ping_interval_s: float | None = 20.0

    def uvicorn_config(self, app: Any, **overrides: Any) -> Any:
        import uvicorn

        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "log_level": self.log_level,
            "backlog": self.backlog,
            "ws_max_size": 4 * self.limits.max_request_bytes,
            "ws_ping_interval": self.ws_ping_interval_s,
            "ws_ping_timeout": self.ws_ping_interval_s,
            "timeout_graceful_shutdown": self.limits.drain_timeout_s + 5.0,
        }
        return uvicorn.Config(app, **(options | overrides))


def _bind(host: str, port: int, *, listen: bool, backlog: int = 4096) -> socket.socket:
    """A TCP socket on (host, port) with SO_REUSEPORT; listening or only holding the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(backlog)
        sock.set_inheritable(True)
    return sock


def _worker(cfg: ServeConfig, index: int, shared: Any) -> None:
    """One worker process: its own listening socket on the shared port, its own app, the shared session cap."""
    hub = ServingHub(cfg.limits, SessionSlots(cfg.limits.max_sessions, shared, index), worker=index)
    app = create_server_app(cfg.env_id, env_kwargs=cfg.env_kwargs, limits=cfg.limits, hub=hub)
    sock = _bind(cfg.host, cfg.port, listen=True, backlog=cfg.backlog)
    GracefulServer(cfg.uvicorn_config(app), hub).run(sockets=[sock])


def serve(cfg: ServeConfig) -> int:
    """Serve until SIGTERM / SIGINT; returns the exit status (0 after a clean drain).

    :param cfg: what to serve and how (:class:`ServeConfig`).
    """
    if cfg.workers == 1:
        hub = ServingHub(cfg.limits)
        app = create_server_app(cfg.env_id, env_kwargs=cfg.env_kwargs, limits=cfg.limits, hub=hub)
        print(
            f"serving {cfg.env_id} over OpenEnv on http://{cfg.host}:{cfg.port} (WebSocket sessions at /ws)"
        )
        GracefulServer(cfg.uvicorn_config(app), hub).run()
        return 0
    if not hasattr(socket, "SO_REUSEPORT"):
        raise SystemExit("--workers > 1 needs SO_REUSEPORT (Linux, macOS, BSD); serve with --workers 1 here")
    return _Supervisor(cfg).run()


class _Supervisor:
    """Starts the workers, restarts any that die, forwards SIGTERM / SIGINT and waits for their drain."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.ctx = mp.get_context("spawn")  # never fork a process that may have started threads
        try:
            self.reserve = _bind(cfg.host, cfg.port, listen=False)  # holds the port; port 0 gets one here
        except OSError as err:
            raise SystemExit(f"cannot serve on {cfg.host}:{cfg.port}: {err}") from err
        self.cfg = replace(cfg, port=int(self.reserve.getsockname()[1]))
        self.shared = self.ctx.Array("q", cfg.workers)
        self.procs: list[Any] = [None] * cfg.workers
        self.started_at = [0.0] * cfg.workers
        self.stop = threading.Event()

    def _start(self, index: int) -> None:
        with self.shared.get_lock():
            self.shared.get_obj()[index] = 0  # a dead worker's sessions are gone
        proc = self.ctx.Process(
            target=_worker, args=(self.cfg, index, self.shared), name=f"aligngym-serve-{index}", daemon=False
        )
        proc.start()
        self.procs[index], self.started_at[index] = proc, time.monotonic()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop.set()

    def run(self) -> int:
        cfg = self.cfg
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        status, failed = 0, 0
        try:
            for i in range(cfg.workers):
                self._start(i)
            pids = ", ".join(str(p.pid) for p in self.procs)
            print(
                f"serving {cfg.env_id} over OpenEnv on http://{cfg.host}:{cfg.port} with {cfg.workers} worker "
                f"processes (pids {pids}; supervisor {os.getpid()}); WebSocket sessions at /ws",
                flush=True,
            )
            while not self.stop.wait(0.2):
                for i, proc in enumerate(self.procs):
                    if proc.is_alive():
                        continue
                    fast = time.monotonic() - self.started_at[i] < _FAST_EXIT_S
                    failed = failed + 1 if fast else 0
                    print(
                        f"worker {i} (pid {proc.pid}) exited with code {proc.exitcode}; restarting",
                        flush=True,
                    )
                    if failed >= _MAX_FAILED_STARTS:
                        print(
                            f"{failed} workers exited right after starting; stopping the server", flush=True
                        )
                        status = 1
                        self.stop.set()
                        break
                    self._start(i)
        finally:
            self._drain()
            self.reserve.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return status

    def _drain(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.limits.drain_timeout_s + 10.0
        for proc in self.procs:
            if proc is None:
                continue
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                print(f"worker pid {proc.pid} did not drain in time; killing it", flush=True)
                proc.kill()
                proc.join(5)


# -- command line ---------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aligngym serve",
        description="Serve an aligngym env over the OpenEnv protocol (HTTP /reset /step /state /metrics, WebSocket /ws).",
    )
    p.add_argument("env_id", help="registered id, e.g. aligngym/Sentiment-Sequence-v0")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--workers", type=int, default=1, help="processes serving the port (default 1)")
    p.add_argument(
        "--max-sessions",
        type=int,
        default=64,
        help="WebSocket sessions open at once, all workers (default 64)",
    )
    p.add_argument(
        "--idle-timeout", type=float, default=300.0, help="close sessions idle this many seconds (0: never)"
    )
    p.add_argument(
        "--max-request-bytes", type=int, default=1 << 20, help="largest HTTP body / WebSocket message (1 MiB)"
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight steps get on shutdown (default 30)",
    )
    p.add_argument(
        "--env-threads", type=int, default=2, help="threads per worker running env steps (default 2)"
    )
    p.add_argument("--backlog", type=int, default=4096, help="listen queue per worker (default 4096)")
    p.add_argument(
        "--ws-ping-interval", type=float, default=20.0, help="WebSocket keepalive ping seconds (0: off)"
    )
    p.add_argument(
        "--env-kwargs", default="{}", help="JSON object of gym.make options, e.g. '{\"max_new_tokens\": 8}'"
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def config_from_args(argv: Sequence[str] | None = None) -> ServeConfig:
    """Parse and check ``aligngym serve`` arguments; bad ones end in ``SystemExit`` with the reason."""
    args = _parser().parse_args(argv)
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}: {err}") from err
    if not isinstance(env_kwargs, dict):
        raise SystemExit(f"--env-kwargs must be a JSON object, got {type(env_kwargs).__name__}")
    if args.env_id not in gym.registry:
        raise SystemExit(f"unknown env id {args.env_id!r}; ids: {', '.join(aligngym.envs.list_envs())}")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    try:
        limits = ServerLimits(
            max_sessions=args.max_sessions,
            idle_timeout_s=args.idle_timeout or None,
            max_request_bytes=args.max_request_bytes,
            drain_timeout_s=args.drain_timeout,
            env_threads=args.env_threads,
        )
    except ValueError as err:
        raise SystemExit(str(err)) from err
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(
            f"warning: serving on {args.host}, which other machines may reach; the server has no authentication"
        )
    return ServeConfig(
        env_id=args.env_id,
        env_kwargs=env_kwargs,
        host=args.host,
        port=args.port,
        limits=limits,
        workers=args.workers,
        log_level=args.log_level,
        backlog=args.backlog,
        ws_ping_interval_s=args.ws_ping_interval or None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``aligngym serve ENV_ID [--workers N] [--max-sessions N] [--idle-timeout S] ...``: serve until stopped."""
    return serve(config_from_args(argv))


if __name__ == "__main__":
    sys.exit(main())
