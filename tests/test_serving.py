"""aligngym envs served over OpenEnv: the real client and raw HTTP get the in-process scores; bad input gets a 4xx.

Servers run in-process (uvicorn in a thread) on 127.0.0.1 and a free port. Skipped without openenv-core.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

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
    ServerRefusedError,
    ServerThread,
    create_server_app,
    main,
)

SEQ_ID = "aligngym/Sentiment-Sequence-v0"
TOKEN_ID = "aligngym/Target-Token-v0"
COMPLETIONS = ["a wonderful, lovely evening", "terrible and sad", "", "fine I guess"]


@pytest.fixture(scope="module")
def seq_server():
    with ServerThread(create_server_app(SEQ_ID, max_concurrent_envs=8)) as srv:
        yield srv


@pytest.fixture(scope="module")
def token_server():
    with ServerThread(create_server_app(TOKEN_ID, max_concurrent_envs=8)) as srv:
        yield srv


def in_process_score(env_id: str, prompt_index: int, completion: str) -> float:
    env = gym.make(env_id)
    rt = env.unwrapped.runtime
    return float(rt.scorer([rt.rows[prompt_index]["prompt"]], [completion])[0])


def test_import_aligngym_envs_does_not_import_openenv():
    code = "import sys, aligngym.envs; assert 'openenv' not in sys.modules and 'aligngym.envs.serving' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_client_text_completions_score_as_in_process(seq_server):
    with AlignGymClient(base_url=seq_server.url).sync() as client:
        for i, text in enumerate(COMPLETIONS):
            first = client.reset(prompt_index=i)
            assert first.observation.prompt == gym.make(SEQ_ID).unwrapped.runtime.rows[i]["prompt"]
            assert not first.done and first.reward is None
            result = client.step(CompletionAction(completion=text))
            expected = in_process_score(SEQ_ID, i, text)
            assert result.done
            assert result.reward == pytest.approx(expected, abs=1e-6)
            assert result.observation.score == pytest.approx(expected, abs=1e-6)
            assert result.observation.reward_components == {"sentiment": pytest.approx(expected, abs=1e-6)}
            assert result.observation.completion == text


def test_client_sequence_actions_match_gym_step(seq_server):
    env = gym.make(SEQ_ID)
    rng = np.random.default_rng(0)
    with AlignGymClient(base_url=seq_server.url).sync() as client:
        for i in range(3):
            acts = rng.integers(0, env.action_space.nvec[0], size=env.action_space.shape[0])
            env.reset(options={"prompt_index": i})
            _, reward, terminated, _, info = env.step(acts)
            result = client.step(CompletionAction(actions=acts.tolist(), prompt_index=i))
            assert terminated and result.done
            assert result.reward == pytest.approx(float(reward), abs=1e-6)
            assert result.observation.completion == info["completion"]
            assert result.observation.completion_ids == list(info["completion_ids"])


def test_token_env_chunks_match_gym_steps(token_server):
    env = gym.make(TOKEN_ID)
    with AlignGymClient(base_url=token_server.url).sync() as client:
        for i, chunks in [(0, [[0], [4]]), (4, [[1, 0], [4, 3]]), (1, [[2, 2, 2, 2]])]:
            env.reset(options={"prompt_index": i})
            client.reset(prompt_index=i)
            for chunk in chunks:
                expected, done = 0.0, False
                for a in chunk:
                    _, r, done, _, info = env.step(a)
                    expected += float(r)
                    if done:
                        break
                result = client.step(CompletionAction(actions=chunk))
                assert result.reward == pytest.approx(expected, abs=1e-6)
                assert result.done == done
            assert result.observation.completion == info["completion"]


def test_token_env_text_outside_action_vocab_is_a_clear_error(token_server):
    with AlignGymClient(base_url=token_server.url).sync() as client:
        client.reset(prompt_index=0)
        with pytest.raises(RuntimeError, match="outside this env's action_vocab"):
            client.step(CompletionAction(completion=" purple"))
        assert client.step(CompletionAction(completion=" red")).reward == 0.0  # the session still works


def test_raw_http_step_is_self_contained_and_matches(seq_server):
    for i, text in enumerate(COMPLETIONS[:2]):
        body = {"action": {"completion": text, "prompt_index": i}}
        resp = httpx.post(f"{seq_server.url}/step", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert data["done"] is True
        assert data["reward"] == pytest.approx(in_process_score(SEQ_ID, i, text), abs=1e-6)
        assert data["observation"]["prompt_index"] == i


def test_same_seed_same_prompt_and_sessions_are_independent(seq_server):
    async def run() -> list:
        async with (
            AlignGymClient(base_url=seq_server.url) as a,
            AlignGymClient(base_url=seq_server.url) as b,
        ):
            ra = await a.reset(seed=7)
            rb = await b.reset(seed=7)
            await b.reset(prompt_index=5)
            sa = await a.step(CompletionAction(completion="great"))
            state_b = await b.state()
            return [ra, rb, sa, state_b]

    ra, rb, sa, state_b = asyncio.run(run())
    assert ra.observation.prompt == rb.observation.prompt  # same seed, same episode
    assert sa.observation.prompt == ra.observation.prompt  # b's reset did not move a's episode
    assert state_b.prompt_index == 5 and not state_b.done


def test_generic_openenv_client_works_with_plain_dicts(seq_server):
    from openenv.core.generic_client import GenericEnvClient

    with GenericEnvClient(base_url=seq_server.url).sync() as client:
        client.reset(prompt_index=2)
        result = client.step({"completion": "happy"})
    assert result.done
    assert result.reward == pytest.approx(in_process_score(SEQ_ID, 2, "happy"), abs=1e-6)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "json"),
        (json.dumps({"action": {"completion": 5}}).encode(), "valid string"),
        (json.dumps({"action": {"actions": "abc"}}).encode(), "valid list"),
        (json.dumps({"action": {"completion": "x", "colour": "red"}}).encode(), "extra"),
        (json.dumps({"action": {"completion": "x", "actions": [1]}}).encode(), "exactly one of"),
        (json.dumps({"action": {"actions": [99999], "prompt_index": 0}}).encode(), "out of range"),
        (json.dumps({"action": {"completion": "x", "prompt_index": 10**6}}).encode(), "out of range"),
        (json.dumps({"action": {"completion": "x", "prompt_index": -1}}).encode(), "greater than or equal"),
        (json.dumps({"nothing": 1}).encode(), "action"),
    ],
)
def test_malformed_http_requests_get_422_and_the_server_keeps_serving(seq_server, body, needle):
    resp = httpx.post(
        f"{seq_server.url}/step", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert resp.status_code == 422, resp.text
    assert needle in resp.text.lower()
    ok = httpx.post(
        f"{seq_server.url}/step", json={"action": {"completion": "ok", "prompt_index": 0}}, timeout=30
    )
    assert ok.status_code == 200


def test_bad_reset_options_get_422(seq_server):
    resp = httpx.post(f"{seq_server.url}/reset", json={"prompt_idx": 1}, timeout=30)
    assert resp.status_code == 422
    assert "unknown reset option" in resp.json()["detail"]


def test_websocket_errors_are_messages_and_the_session_survives(seq_server):
    from websockets.sync.client import connect

    ws_url = seq_server.url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, open_timeout=10) as ws:

        def send(msg: str) -> dict:
            ws.send(msg)
            return json.loads(ws.recv(timeout=30))

        assert send("{oops")["data"]["code"] == "INVALID_JSON"
        assert send(json.dumps({"type": "jump"}))["data"]["code"] == "UNKNOWN_TYPE"
        bad = send(json.dumps({"type": "step", "data": {"completion": 3}}))
        assert bad["type"] == "error" and "valid string" in json.dumps(bad["data"])
        send(json.dumps({"type": "reset", "data": {"prompt_index": 0}}))
        done = send(json.dumps({"type": "step", "data": {"completion": "good"}}))
        assert done["data"]["done"] is True
        again = send(json.dumps({"type": "step", "data": {"completion": "good"}}))
        assert again["type"] == "error" and "episode has ended" in again["data"]["message"]
        ok = send(json.dumps({"type": "step", "data": {"completion": "good", "prompt_index": 1}}))
        assert ok["type"] == "observation"


def test_unknown_session_is_reported_and_the_server_keeps_serving(seq_server):
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"session_id": "no-such-session"}}
    resp = httpx.post(f"{seq_server.url}/mcp", json=rpc, timeout=30)
    assert "unknown session_id: no-such-session" in resp.text.lower()
    assert httpx.get(f"{seq_server.url}/health", timeout=30).json()["status"] == "healthy"


def test_sessions_beyond_capacity_are_refused_with_503_and_the_server_keeps_serving():
    with ServerThread(create_server_app(SEQ_ID, max_concurrent_envs=1)) as srv:
        with AlignGymClient(base_url=srv.url).sync() as first:
            first.reset()
            with pytest.raises(ServerRefusedError, match="session cap reached") as refused:
                with AlignGymClient(base_url=srv.url).sync() as second:
                    second.reset()
            assert first.step(CompletionAction(completion="still here")).done
        assert refused.value.status_code == 503 and refused.value.retry_after_s == 1.0
        with AlignGymClient(base_url=srv.url).sync() as third:  # the slot was freed: served again
            assert third.step(CompletionAction(completion="good", prompt_index=0)).done
        metrics = httpx.get(f"{srv.url}/metrics", timeout=30).json()
    assert metrics["sessions"]["refused"] == 1 and metrics["errors"]["CAPACITY_REACHED"] == 1


def test_schema_lists_the_typed_fields(seq_server):
    schema = httpx.get(f"{seq_server.url}/schema", timeout=30).json()
    assert {"completion", "actions", "prompt_index", "seed"} <= set(schema["action"]["properties"])
    assert {"prompt", "prompt_ids", "score", "reward_components"} <= set(schema["observation"]["properties"])


def test_main_rejects_bad_arguments_before_serving():
    with pytest.raises(SystemExit, match="JSON object"):
        main([SEQ_ID, "--env-kwargs", "{bad"])
    with pytest.raises(SystemExit, match="unknown env id"):
        main(["aligngym/Nope-v0"])


@pytest.mark.slow
def test_python_dash_m_serves_over_http(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "aligngym.envs.serving",
        SEQ_ID,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, healthy = time.monotonic() + 120, False
        while time.monotonic() < deadline and not healthy:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.5)
        assert healthy, "the server did not answer /health within 120 s"
        # the scorers' weights load before /health answers, so the first step is quick; the timeout only
        # allows for a loaded CI machine
        resp = httpx.post(
            f"http://127.0.0.1:{port}/step",
            json={"action": {"completion": "nice", "prompt_index": 0}},
            timeout=60,
        )
        assert resp.status_code == 200
        assert resp.json()["reward"] == pytest.approx(in_process_score(SEQ_ID, 0, "nice"), abs=1e-6)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _CountingScorer:
    """A plain callable scorer that counts its calls (stands in for a model that loads on first use)."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompts, completions, **context):
        self.calls += 1
        return np.zeros(len(completions), dtype=np.float32)


def test_template_loads_scorers_before_serving():
    """The server's template scores once at build time, so weights load before /health says ready."""
    from aligngym.envs.serving_env import EnvTemplate

    reward, gold = _CountingScorer(), _CountingScorer()
    EnvTemplate(SEQ_ID, {"scorer": reward, "gold": gold})
    assert reward.calls == 1
    assert gold.calls == 1
