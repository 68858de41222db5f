"""Bounded loopback load and soak test of an aligngym env served over OpenEnv (``aligngym.envs.serving``).

N concurrent WebSocket sessions (the real OpenEnv client) each send one reset and S self-contained steps (prompt
index + completion text), or with ``--duration`` keep stepping until it is over (soak). Reports requests/s and
p50/p99 latency of the successful requests only, failed requests by type, and the server's peak RSS (all its
processes). The server runs as ``python -m aligngym.envs.serving --workers W`` on 127.0.0.1 and the run stops by
itself (count-bounded, with a wall-clock cap); nothing leaves this machine.

    python -m aligngym.benchmarks.serve_load --sessions 1024 --steps 10 --workers 2
    python -m aligngym.benchmarks.serve_load --sessions 64 --duration 600 --reconnect-every 50   # 10-minute soak
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

COMPLETIONS = (
    "a wonderful evening with friends",
    "was cold and the service was slow",
    "fine, nothing special",
    "the best meal I have had in years!",
)
#: hard bounds of this benchmark (it is a load test for one machine, not a flood tool)
MAX_SESSIONS = 4096
MAX_SECONDS = 3600.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was healthy")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server at {url} did not become healthy within {timeout} s")


class RssSampler:
    """Samples the resident memory of a process and its children (MB) from a thread until stopped.

    :param pid: the root process (the server, or its supervisor with its workers).
    :param interval_s: seconds between samples.
    """

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def tree_rss_mb(self) -> float:
        import psutil

        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def tree_cpu_s(self) -> float:
        import psutil

        total = 0.0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self._t0, self.tree_rss_mb()))
            self._stop.wait(self.interval_s)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def peak_mb(self) -> float:
        return max((mb for _, mb in self.samples), default=0.0)

    def mark(self) -> float:
        return time.monotonic() - self._t0


def _error_type(err: BaseException) -> str:
    """A short, stable name for a failed request."""
    from aligngym.envs.serving import ServerRefusedError, SessionLostError

    if isinstance(err, ServerRefusedError):
        return f"refused_http_{err.status_code}"
    if isinstance(err, SessionLostError):
        return "session_lost"
    if isinstance(err, TimeoutError):
        return "timeout"
    if isinstance(err, ConnectionError):
        return "connect_failed"
    if isinstance(err, RuntimeError) and "(code: " in str(err):
        return "server_error_" + str(err).rsplit("(code: ", 1)[1].rstrip(")").lower()
    return type(err).__name__


class _RawResult:
    def __init__(self, data: dict[str, Any]) -> None:
        self.done = bool(data.get("done"))
        self.reward = data.get("reward")


class RawClient:
    """The OpenEnv WebSocket protocol with pre-serialized messages: what the server sees is the same as from
    :class:`~aligngym.envs.serving.AlignGymClient`, the client spends less CPU per message.

    :param url: the server's ``http://`` URL.
    """

    def __init__(self, url: str) -> None:
        self.ws_url = url.replace("http://", "ws://") + "/ws"
        self.ws: Any = None

    async def connect(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        from aligngym.envs.serving import ServerRefusedError

        try:
            self.ws = await connect(self.ws_url, open_timeout=120, max_size=None)
        except InvalidStatus as err:
            code = err.response.status_code
            raise ServerRefusedError(f"HTTP {code}", status_code=code) from err
        except OSError as err:
            raise ConnectionError(f"Failed to connect to {self.ws_url}: {err}") from err

    async def _call(self, message: str) -> _RawResult:
        from websockets.exceptions import ConnectionClosed

        from aligngym.envs.serving import SessionLostError

        try:
            await self.ws.send(message)
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 120))
        except (ConnectionClosed, OSError) as err:
            raise SessionLostError(str(err)) from err
        if reply.get("type") == "error":
            data = reply.get("data", {})
            raise RuntimeError(f"{data.get('message')} (code: {data.get('code', 'UNKNOWN')})")
        return _RawResult(reply.get("data", {}))

    async def reset(self, seed: int) -> _RawResult:
        return await self._call(json.dumps({"type": "reset", "data": {"seed": seed}}))

    async def step(self, action: Any) -> _RawResult:
        data = {"completion": action.completion, "prompt_index": action.prompt_index}
        return await self._call(json.dumps({"type": "step", "data": data}))

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await self.ws.send('{"type": "close"}')
                await self.ws.close()
            except Exception:
                pass


class _Tally:
    """Latencies of successful requests and failures by type, kept apart."""

    def __init__(self) -> None:
        self.ok_s: list[float] = []
        self.errors: Counter[str] = Counter()
        self.first: float | None = None
        self.last = 0.0

    def ok(self, t0: float) -> None:
        t1 = time.perf_counter()
        self.ok_s.append(t1 - t0)
        self.first = t0 if self.first is None else min(self.first, t0)
        self.last = max(self.last, t1)


async def _run(
    url: str,
    sessions: int,
    steps: int | None,
    n_prompts: int,
    max_seconds: float,
    connect_concurrency: int,
    raw: bool = False,
    reconnect_every: int = 0,
) -> dict[str, Any]:
    tally = _Tally()
    opened = asyncio.Event()
    gate = asyncio.Semaphore(connect_concurrency)  # connections are opened in waves, not as one SYN flood
    deadline = time.monotonic() + max_seconds
    connected = [0]
    t_connect = time.perf_counter()
    tasks = [
        asyncio.ensure_future(
            _session(url, k, steps, n_prompts, deadline, opened, tally, gate, connected, raw, reconnect_every)
        )
        for k in range(sessions)
    ]
    while connected[0] < sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    connect_s = time.perf_counter() - t_connect
    opened.set()
    unsent = sum(await asyncio.gather(*tasks))
    lat = np.asarray(tally.ok_s) * 1000.0
    span = (tally.last - tally.first) if tally.first is not None else 0.0
    expected = None if steps is None else sessions * (steps + 1)
    return {
        "sessions": sessions,
        "steps_per_session": steps,
        "expected_requests": expected,
        "ok_requests": int(lat.size),
        "errors": int(sum(tally.errors.values())),
        "errors_by_type": dict(sorted(tally.errors.items())),
        "unsent_at_deadline": unsent,
        "connect_s": round(connect_s, 3),
        "run_s": round(span, 3),
        "requests_per_s": round(lat.size / span, 1) if span > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        "max_ms": round(float(lat.max()), 2) if lat.size else None,
    }


async def _session(
    url: str,
    k: int,
    steps: int | None,
    n_prompts: int,
    deadline: float,
    opened: asyncio.Event,
    tally: _Tally,
    gate: asyncio.Semaphore,
    connected: list[int],
    raw: bool,
    reconnect_every: int,
) -> int:
    """One session: connect (holding a slot of ``gate``), wait until all are open, reset, then steps.

    Returns the requests it did not send because the deadline passed.
    """
    from aligngym.envs.serving import AlignGymClient

    async with gate:
        client: Any = (
            RawClient(url)
            if raw
            else AlignGymClient(
                base_url=url, connect_timeout_s=120, message_timeout_s=120, retry_lost_steps=False
            )
        )
        try:
            await client.connect()
        except Exception as err:
            tally.errors["connect_" + _error_type(err)] += 1
            connected[0] += 1
            return 0  # its requests were never sent: the connect error stands for them
    connected[0] += 1
    return await _body(client, k, steps, n_prompts, deadline, opened, tally, reconnect_every)


async def _body(
    client: Any,
    k: int,
    steps: int | None,
    n_prompts: int,
    deadline: float,
    opened: asyncio.Event,
    tally: _Tally,
    reconnect_every: int = 0,
) -> int:
    """Reset, then steps until ``steps`` are done or the deadline passes; returns the requests left unsent."""
    from aligngym.envs.serving import CompletionAction

    await opened.wait()
    i, unsent = 0, 0
    try:
        t0 = time.perf_counter()
        try:
            await client.reset(seed=k)
            tally.ok(t0)
        except Exception as err:
            tally.errors[_error_type(err)] += 1
        while steps is None or i < steps:
            if time.monotonic() > deadline:
                unsent = 0 if steps is None else steps - i
                break
            if reconnect_every and i and i % reconnect_every == 0:  # session churn: a new session
                await client.close()
                try:
                    await client.connect()
                except Exception as err:
                    tally.errors["connect_" + _error_type(err)] += 1
                    break
            action = CompletionAction(
                completion=COMPLETIONS[(k + i) % len(COMPLETIONS)], prompt_index=(k + i) % n_prompts
            )
            i += 1
            t0 = time.perf_counter()
            try:
                result = await client.step(action)
            except Exception as err:
                tally.errors[_error_type(err)] += 1
                continue
            if result.done and result.reward is not None:
                tally.ok(t0)
            else:
                tally.errors["bad_result"] += 1
    finally:
        await client.close()
    return unsent


def _start_server(args: argparse.Namespace, sessions: int) -> tuple[str, subprocess.Popen]:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "aligngym.envs.serving",
        args.env_id,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cmd += ["--workers", str(args.workers), "--max-sessions", str(sessions), "--log-level", "warning"]
    cmd += ["--env-threads", str(args.env_threads)]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return f"http://127.0.0.1:{port}", proc


def _soak_figures(sampler: RssSampler, t_start: float, warmup_s: float) -> dict[str, Any]:
    """RSS after warm-up vs at the end of a soak, and a coarse timeline."""
    run = [(t, mb) for t, mb in sampler.samples if t >= t_start]
    after = [mb for t, mb in run if t >= t_start + warmup_s] or [mb for _, mb in run]
    if not after:
        return {}
    first, last = after[0], after[-1]
    step = max(1, len(run) // 10)
    return {
        "rss_after_warmup_mb": round(first, 1),
        "rss_end_mb": round(last, 1),
        "rss_growth_pct": round(100.0 * (last - first) / first, 2),
        "rss_timeline_mb": [[round(t - t_start, 1), round(mb, 1)] for t, mb in run[::step]],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-id", default="aligngym/Sentiment-Sequence-v0")
    p.add_argument(
        "--sessions", type=int, default=32, help=f"concurrent WebSocket sessions (1..{MAX_SESSIONS})"
    )
    p.add_argument("--steps", type=int, default=200, help="steps per session (plus one reset)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="soak: step until this many seconds have passed (RSS growth)",
    )
    p.add_argument(
        "--reconnect-every",
        type=int,
        default=0,
        help="each session closes and opens a new one after this many steps (session churn; 0: never)",
    )
    p.add_argument(
        "--warmup", type=float, default=60.0, help="soak: seconds before the RSS baseline is taken"
    )
    p.add_argument("--workers", type=int, default=1, help="server worker processes (--workers of the server)")
    p.add_argument("--env-threads", type=int, default=2, help="server threads per worker that run env steps")
    p.add_argument(
        "--client",
        choices=["openenv", "raw"],
        default="openenv",
        help="openenv: the typed AlignGymClient (pydantic per message); raw: pre-serialized JSON over websockets, "
        "so that the client's own CPU (it shares the machine) weighs less",
    )
    p.add_argument("--connect-concurrency", type=int, default=256, help="connections opened at once")
    p.add_argument("--max-seconds", type=float, default=600.0, help="wall-clock cap; the run stops by itself")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS:
        p.error(f"--sessions must be in 1..{MAX_SESSIONS}, got {args.sessions}")
    if not 0 < args.max_seconds <= MAX_SECONDS:
        p.error(f"--max-seconds must be in (0, {MAX_SECONDS:g}], got {args.max_seconds}")
    if args.duration is not None and not 0 < args.duration < args.max_seconds:
        p.error(f"--duration must be in (0, --max-seconds={args.max_seconds:g}), got {args.duration}")

    import gymnasium as gym

    import aligngym.envs.serving  # noqa: F401  (imported here, not inside the timed connect phase)
    from aligngym.envs import AlignmentEnv

    base = gym.make(args.env_id).unwrapped
    if not isinstance(base, AlignmentEnv):
        raise SystemExit(f"{args.env_id!r} is not an aligngym env")
    n_prompts = len(base.runtime.rows)
    url, proc = _start_server(args, args.sessions)
    sampler: RssSampler | None = None
    try:
        _wait_healthy(url, timeout=300, proc=proc)
        sampler = RssSampler(proc.pid).start()
        cpu0, t_start = sampler.tree_cpu_s(), sampler.mark()
        client_cpu0 = time.process_time()
        steps = None if args.duration is not None else args.steps
        cap = args.max_seconds if args.duration is None else args.duration
        figures = asyncio.run(
            _run(
                url,
                args.sessions,
                steps,
                n_prompts,
                cap,
                args.connect_concurrency,
                raw=args.client == "raw",
                reconnect_every=args.reconnect_every,
            )
        )
        figures["server_cpu_s"] = round(sampler.tree_cpu_s() - cpu0, 1)
        figures["client_cpu_s"] = round(time.process_time() - client_cpu0, 1)
        sampler.stop()
        figures["server_peak_rss_mb"] = round(sampler.peak_mb(), 1)
        if args.duration is not None:
            figures.update(duration_s=args.duration, **_soak_figures(sampler, t_start, args.warmup))
    finally:
        if sampler is not None:
            sampler.stop()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    figures.update(
        env_id=args.env_id,
        client=args.client,
        reconnect_every=args.reconnect_every,
        workers=args.workers,
        env_threads=args.env_threads,
        cpus=os.cpu_count(),
    )
    print(json.dumps({k: v for k, v in figures.items() if k != "rss_timeline_mb"}, indent=2))
    if "rss_timeline_mb" in figures:
        print("rss_timeline_mb [s, MB]:", json.dumps(figures["rss_timeline_mb"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)
    return figures


if __name__ == "__main__":
    result = main()
    incomplete = (
        result["expected_requests"] is not None and result["ok_requests"] < result["expected_requests"]
    )
    sys.exit(1 if result["errors"] or incomplete else 0)
