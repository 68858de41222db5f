"""Bounded loopback load test of an aligngym env served over OpenEnv (``aligngym.envs.serving``).

N concurrent WebSocket sessions (the real OpenEnv client) each send one reset and S self-contained steps (prompt index
+ completion text); reports requests/s, p50/p99 latency and errors. The server runs as a separate process on
127.0.0.1 (``--in-process`` for a thread), and the run stops by itself (count-bounded, with a wall-clock cap).

    python -m aligngym.benchmarks.serve_load --sessions 32 --steps 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np

COMPLETIONS = (
    "a wonderful evening with friends",
    "was cold and the service was slow",
    "fine, nothing special",
    "the best meal I have had in years!",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server at {url} did not become healthy within {timeout} s")


async def _session(url: str, k: int, steps: int, n_prompts: int, deadline: float) -> tuple[list[float], int]:
    from aligngym.envs.serving import AlignGymClient, CompletionAction

    latencies: list[float] = []
    errors = 0
    async with AlignGymClient(base_url=url, message_timeout_s=60) as client:
        t = time.perf_counter()
        try:
            await client.reset(seed=k)
            latencies.append(time.perf_counter() - t)
        except Exception:
            errors += 1
        for i in range(steps):
            if time.monotonic() > deadline:
                break
            action = CompletionAction(
                completion=COMPLETIONS[(k + i) % len(COMPLETIONS)], prompt_index=(k + i) % n_prompts
            )
            t = time.perf_counter()
            try:
                result = await client.step(action)
                if not result.done or result.reward is None:
                    errors += 1
            except Exception:
                errors += 1
            latencies.append(time.perf_counter() - t)
    return latencies, errors


async def _run(url: str, sessions: int, steps: int, n_prompts: int, max_seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + max_seconds
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *[_session(url, k, steps, n_prompts, deadline) for k in range(sessions)], return_exceptions=True
    )
    wall = time.perf_counter() - t0
    lat: list[float] = []
    errors = 0
    for r in results:
        if isinstance(r, BaseException):
            errors += 1
            continue
        lat.extend(r[0])
        errors += r[1]
    arr = np.asarray(lat) * 1000.0
    return {
        "sessions": sessions,
        "steps_per_session": steps,
        "requests": int(arr.size),
        "expected_requests": sessions * (steps + 1),
        "errors": errors,
        "wall_s": round(wall, 3),
        "requests_per_s": round(arr.size / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(arr, 50)), 2) if arr.size else None,
        "p99_ms": round(float(np.percentile(arr, 99)), 2) if arr.size else None,
        "max_ms": round(float(arr.max()), 2) if arr.size else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-id", default="aligngym/Sentiment-Sequence-v0")
    p.add_argument("--sessions", type=int, default=32, help="concurrent WebSocket sessions")
    p.add_argument("--steps", type=int, default=200, help="steps per session (plus one reset)")
    p.add_argument("--max-seconds", type=float, default=300.0, help="wall-clock cap; the run stops by itself")
    p.add_argument("--in-process", action="store_true", help="run the server in a thread of this process")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    import gymnasium as gym

    from aligngym.envs import AlignmentEnv

    base = gym.make(args.env_id).unwrapped
    if not isinstance(base, AlignmentEnv):
        raise SystemExit(f"{args.env_id!r} is not an aligngym env")
    n_prompts = len(base.runtime.rows)
    proc = None
    server = None
    if args.in_process:
        from aligngym.envs.serving import ServerThread, create_server_app

        server = ServerThread(create_server_app(args.env_id, max_concurrent_envs=args.sessions)).start()
        url = server.url
    else:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "aligngym.envs.serving", args.env_id, "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--max-sessions", str(args.sessions), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_healthy(url, timeout=180)
        figures = asyncio.run(_run(url, args.sessions, args.steps, n_prompts, args.max_seconds))
    finally:
        if server is not None:
            server.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    figures.update(env_id=args.env_id, server="thread" if args.in_process else "subprocess")
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)
    return figures


if __name__ == "__main__":
    result = main()
    sys.exit(1 if result["errors"] or result["requests"] < result["expected_requests"] else 0)
