"""Serving under faults and limits: oversize requests, long completions, dropped clients, idle sessions, a crashed
and restarted server, a graceful shutdown with a step in flight, metrics, and several worker processes.

In-process servers (uvicorn in a thread) on 127.0.0.1; the multi-process test starts ``python -m`` and is slow.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip(
    "openenv.core.env_server.http_server",
    reason="openenv-core is not installed (optional extra 'serve': pip install 'aligngym[serve]')",
)
httpx = pytest.importorskip("httpx", reason="httpx is not installed (optional extra 'serve')")

from aligngym.envs.serving import (  # noqa: E402
    AlignGymClient,
    CompletionAction,
    ServerLimits,
    ServerRefusedError,
    ServerThread,
    SessionLostError,
    create_server_app,
)

SEQ_ID = "aligngym/Sentiment-Sequence-v0"
TEXT_ID = "aligngym/Text-Sequence-v0"


class SlowScorer:
    """Takes ``delay`` seconds per call; the score is the completion's length / 100."""

    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __call__(self, prompts, completions, **context) -> np.ndarray:
        time.sleep(self.delay)
        return np.asarray([len(c) / 100 for c in completions], dtype=np.float32)


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


def metrics(srv: ServerThread) -> dict:
    return httpx.get(f"{srv.url}/metrics", timeout=30).json()


def ok_step(url: str) -> int:
    body = {"action": {"completion": "fine", "prompt_index": 0}}
    return httpx.post(f"{url}/step", json=body, timeout=30).status_code


@pytest.fixture(scope="module")
def small_limits_server():
    limits = ServerLimits(max_sessions=4, max_request_bytes=4096, idle_timeout_s=None)
    with ServerThread(create_server_app(SEQ_ID, limits=limits)) as srv:
        yield srv


# -- limits ---------------------------------------------------------------------------------------------------------
def test_oversize_http_body_gets_413_with_a_message_and_the_server_keeps_serving(small_limits_server):
    url = small_limits_server.url
    body = {"action": {"completion": "x" * 5000, "prompt_index": 0}}
    resp = httpx.post(f"{url}/step", json=body, timeout=30)
    assert resp.status_code == 413
    assert "limit of 4096 bytes" in resp.json()["detail"]

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(10):
            yield b"x" * 1000

    resp = httpx.post(
        f"{url}/step", content=chunks(), headers={"content-type": "application/json"}, timeout=30
    )
    assert resp.status_code == 413 and "max_request_bytes" in resp.json()["detail"]
    assert ok_step(url) == 200
    assert metrics(small_limits_server)["errors"]["http_413"] >= 2


def test_oversize_websocket_message_is_an_error_reply_and_the_session_survives(small_limits_server):
    from websockets.sync.client import connect

    with connect(small_limits_server.url.replace("http://", "ws://") + "/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "step", "data": {"completion": "y" * 5000, "prompt_index": 0}}))
        reply = json.loads(ws.recv(timeout=30))
        assert reply["type"] == "error" and reply["data"]["code"] == "REQUEST_TOO_LARGE"
        assert "limit of 4096 bytes" in reply["data"]["message"]
        ws.send(json.dumps({"type": "step", "data": {"completion": "good", "prompt_index": 0}}))
        assert json.loads(ws.recv(timeout=30))["data"]["done"] is True


def test_long_completion_is_cut_at_the_token_budget_not_scored_whole(small_limits_server):
    rt = gym.make(SEQ_ID).unwrapped.runtime
    text = "a wonderful evening with friends, " * 3000  # ~100,000 characters; VADER on it takes seconds
    app = create_server_app(SEQ_ID, limits=ServerLimits(max_request_bytes=1 << 20))
    with ServerThread(app) as srv, AlignGymClient(base_url=srv.url).sync() as client:
        t0 = time.perf_counter()
        result = client.step(CompletionAction(completion=text[:100_000], prompt_index=0))
        elapsed = time.perf_counter() - t0
    obs = result.observation
    assert obs.finish_reason == "length"
    assert len(obs.completion_ids) == rt.max_new_tokens
    assert text.startswith(obs.completion) and len(obs.completion) < 200
    assert result.reward == pytest.approx(
        float(rt.scorer([rt.rows[0]["prompt"]], [obs.completion])[0]), abs=1e-6
    )
    assert elapsed < 5.0


def test_limits_reject_bad_values_with_the_name_and_value():
    with pytest.raises(ValueError, match=r"max_sessions must be a positive integer, got 0"):
        ServerLimits(max_sessions=0)
    with pytest.raises(ValueError, match=r"idle_timeout_s must be > 0 seconds or None, got -1"):
        ServerLimits(idle_timeout_s=-1)
    with pytest.raises(ValueError, match="disagrees"):
        create_server_app(SEQ_ID, max_concurrent_envs=3, limits=ServerLimits(max_sessions=4))


# -- dropped clients and idle sessions ------------------------------------------------------------------------------
def test_client_that_disconnects_mid_episode_frees_its_session():
    with ServerThread(create_server_app(SEQ_ID, max_concurrent_envs=1)) as srv:

        async def drop() -> None:
            client = AlignGymClient(base_url=srv.url)
            await client.connect()
            await client.reset(prompt_index=0)
            client._ws.transport.abort()  # gone without a close frame, mid-episode

        asyncio.run(drop())
        wait_for(lambda: metrics(srv)["sessions"]["open"] == 0)
        with AlignGymClient(base_url=srv.url).sync() as client:  # the cap of 1 admits a new session
            assert client.step(CompletionAction(completion="good", prompt_index=0)).done


def test_client_that_disconnects_during_a_step_frees_its_session():
    app = create_server_app(
        TEXT_ID, env_kwargs={"prompts": ["hi", "hello"], "scorer": SlowScorer(0.5)}, max_concurrent_envs=1
    )
    with ServerThread(app) as srv:

        async def drop_in_flight() -> None:
            client = AlignGymClient(base_url=srv.url)
            await client.connect()
            await client._ws.send(
                json.dumps({"type": "step", "data": {"completion": "x", "prompt_index": 0}})
            )
            await asyncio.sleep(0.2)
            client._ws.transport.abort()

        asyncio.run(drop_in_flight())
        wait_for(lambda: metrics(srv)["sessions"]["open"] == 0 and metrics(srv)["in_flight"] == 0)
        with AlignGymClient(base_url=srv.url).sync() as client:
            assert client.step(CompletionAction(completion="abc", prompt_index=1)).reward == pytest.approx(
                0.03
            )


def test_a_closed_session_frees_its_slot_before_the_client_can_reconnect():
    with ServerThread(create_server_app(SEQ_ID, max_concurrent_envs=1)) as srv:

        async def churn() -> None:
            client = AlignGymClient(base_url=srv.url, retry_lost_steps=False)
            for i in range(10):  # at the cap of 1: close, reconnect at once, never refused
                await client.connect()
                assert (await client.step(CompletionAction(completion='"close"', prompt_index=i))).done
                if i == 0:  # a step whose text says "close" is no close: the slot is still held
                    with pytest.raises(ServerRefusedError):
                        await AlignGymClient(base_url=srv.url).connect()
                await client.close()

        asyncio.run(churn())
        assert metrics(srv)["sessions"]["refused"] == 1


def test_idle_session_is_closed_and_the_client_starts_again_with_reset():
    limits = ServerLimits(max_sessions=1, idle_timeout_s=0.5)
    with ServerThread(create_server_app(SEQ_ID, limits=limits)) as srv:
        with AlignGymClient(base_url=srv.url).sync() as client:
            client.reset(prompt_index=0)
            time.sleep(1.5)
            with pytest.raises(SessionLostError, match="call reset"):
                client.step(CompletionAction(completion="late"))
            snap = metrics(srv)
            assert snap["sessions"]["idle_closed"] == 1 and snap["sessions"]["open"] == 0
            assert client.reset(prompt_index=2).observation.prompt_index == 2  # reconnects by itself
            assert client.step(CompletionAction(completion="now")).done
            time.sleep(1.5)  # idle again: a self-contained step is sent once more on a new session
            assert (
                client.step(CompletionAction(completion="again", prompt_index=3)).observation.prompt_index
                == 3
            )
        assert metrics(srv)["sessions"]["idle_closed"] == 2


# -- server faults --------------------------------------------------------------------------------------------------
def test_crashed_server_gives_a_clear_error_and_the_client_reconnects_after_restart():
    srv = ServerThread(create_server_app(SEQ_ID)).start()
    port = srv.port
    with AlignGymClient(base_url=srv.url).sync() as client:
        client.reset(prompt_index=0)
        srv.crash()  # connections dropped without a close frame, nothing listening
        with pytest.raises(SessionLostError, match="episode is gone"):
            client.step(CompletionAction(completion="lost"))
        with pytest.raises(ConnectionError, match="Failed to connect"):
            client.reset()
        restarted = ServerThread(create_server_app(SEQ_ID), port=port).start()
        try:
            assert client.reset(prompt_index=1).observation.prompt_index == 1
            assert client.step(CompletionAction(completion="back")).done
        finally:
            restarted.stop()


def test_graceful_shutdown_answers_the_step_in_flight_then_closes_the_session():
    app = create_server_app(
        TEXT_ID,
        env_kwargs={"prompts": ["hi", "hello"], "scorer": SlowScorer(1.0)},
        limits=ServerLimits(drain_timeout_s=10.0),
    )
    srv = ServerThread(app).start()

    async def run() -> tuple:
        async with AlignGymClient(base_url=srv.url) as client:
            await client.reset(prompt_index=0)
            step = asyncio.create_task(client.step(CompletionAction(completion="four")))
            await asyncio.sleep(0.3)  # the step is in the scorer now
            stopper = threading.Thread(target=srv.stop)
            stopper.start()
            result = await step
            try:
                await client.step(CompletionAction(completion="again"))  # not self-contained: no retry
                after: Exception | None = None
            except Exception as err:
                after = err
            await asyncio.get_running_loop().run_in_executor(None, stopper.join)
            return result, after

    result, after = asyncio.run(run())
    assert result.done and result.reward == pytest.approx(0.04)
    assert isinstance(after, SessionLostError)


# -- metrics --------------------------------------------------------------------------------------------------------
def test_metrics_report_sessions_requests_errors_by_type_and_latency(small_limits_server):
    before = metrics(small_limits_server)
    assert ok_step(small_limits_server.url) == 200
    bad = httpx.post(f"{small_limits_server.url}/step", json={"action": {"completion": 3}}, timeout=30)
    assert bad.status_code == 422
    with AlignGymClient(base_url=small_limits_server.url).sync() as client:
        client.step(CompletionAction(completion="nice", prompt_index=0))
        with pytest.raises(RuntimeError):
            client.step(CompletionAction(completion="ended"))  # the episode is over: an error reply
    after = metrics(small_limits_server)
    assert after["requests"]["http"] - before["requests"]["http"] == 2
    assert after["requests"]["ws_messages"] - before["requests"]["ws_messages"] == 3  # 2 steps and the close
    assert after["errors"]["http_422"] - before["errors"].get("http_422", 0) == 1
    assert after["errors"]["EXECUTION_ERROR"] - before["errors"].get("EXECUTION_ERROR", 0) == 1
    assert after["sessions"]["opened"] - before["sessions"]["opened"] == 1
    lat = after["latency_ms"]
    assert lat["window"] >= 4 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert after["pid"] == os.getpid() and after["limits"]["max_sessions"] == 4


# -- several worker processes ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_workers_share_port_and_cap_survive_a_killed_worker_and_drain_on_sigterm():
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "aligngym.envs.serving", SEQ_ID, "--workers", "2", "--port", str(port)]
    cmd += ["--max-sessions", "10", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def worker_metrics(timeout: float = 180.0) -> dict[int, dict]:
        """Metrics of both workers (each request is a new connection; the kernel spreads them)."""
        seen: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < 2 and time.monotonic() < deadline:
            try:
                snap = httpx.get(f"{url}/metrics", timeout=5).json()
                seen[snap["pid"]] = snap
            except httpx.HTTPError:
                time.sleep(0.25)
        assert len(seen) == 2, f"saw workers {sorted(seen)}"
        return seen

    try:
        first = worker_metrics()

        async def scenario() -> tuple[int, int, int]:
            clients = [AlignGymClient(base_url=url) for _ in range(12)]
            refused, opened = 0, []
            for c in clients:
                try:
                    await c.reset(prompt_index=0)
                    opened.append(c)
                except ServerRefusedError as err:
                    assert err.status_code == 503
                    refused += 1
            per_worker = {pid: m["sessions"]["open"] for pid, m in worker_metrics(30).items()}
            victim = max(per_worker, key=lambda pid: per_worker[pid])
            os.kill(victim, signal.SIGKILL)
            lost = 0
            for c in opened:
                try:
                    assert (await c.step(CompletionAction(completion="ok"))).done
                except SessionLostError:
                    lost += 1
                    # the supervisor frees the dead worker's slots within ~0.2 s; until its replacement serves, a
                    # connection the kernel hands to the new process can fail (a loaded machine): retry, bounded
                    for _ in range(100):
                        try:
                            await c.reset(prompt_index=1)  # reconnects to a live worker
                            break
                        except (ServerRefusedError, ConnectionError, SessionLostError):
                            await asyncio.sleep(0.2)
                    assert (await c.step(CompletionAction(completion="ok"))).done
            for c in opened:
                await c.close()
            return refused, lost, per_worker[victim]

        refused, lost, on_victim = asyncio.run(scenario())
        assert refused == 2  # the cap of 10 holds over both workers
        assert lost == on_victim > 0
        restarted = worker_metrics(120)
        assert set(restarted) != set(first)  # the killed worker was replaced by a new process
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_serve_arguments_and_a_busy_port_end_with_the_reason():
    from aligngym.envs.serving import ServeConfig, config_from_args, serve

    with pytest.raises(SystemExit, match="--workers must be >= 1, got 0"):
        config_from_args([SEQ_ID, "--workers", "0"])
    with pytest.raises(SystemExit, match="max_sessions must be a positive integer, got 0"):
        config_from_args([SEQ_ID, "--max-sessions", "0"])
    cfg = config_from_args([SEQ_ID, "--workers", "2", "--idle-timeout", "0", "--port", "0"])
    assert cfg.workers == 2 and cfg.limits.idle_timeout_s is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"cannot serve on 127.0.0.1:{port}"):
            serve(ServeConfig(SEQ_ID, port=port, workers=2))
